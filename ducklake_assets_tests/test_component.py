"""The YAML component, as a user meets it: the example project copied to a temp folder and run for real."""

import contextlib
import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster.components.testing import create_defs_folder_sandbox

from ducklake_assets.component import DuckLakePipelineComponent
from ducklake_assets.core.errors import ConfigurationError
from ducklake_assets.core.extensions import load_extensions
from ducklake_assets.core.s3 import S3Settings
from ducklake_assets.core.sql import qualified_name
from ducklake_assets_tests.parquet_files import crew
from ducklake_assets_tests.services import PostgresDatabase, S3Bucket

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ducklake_project"
DG = Path(sys.executable).with_name("dg")
PIPELINE = [dg.AssetKey(["space", step]) for step in ("catalog_snapshot", "static_backup", "frozen_lake")]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of examples/ducklake_project, as a user would have after cloning it."""
    copy = tmp_path / "ducklake_project"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return copy


def defs_yaml(project: Path) -> Path:
    return project / "src" / "ducklake_project" / "defs" / "space" / "defs.yaml"


@contextlib.contextmanager
def project_definitions(project: Path) -> Iterator[dg.Definitions]:
    """The project's definitions, loaded the way its definitions.py loads them."""
    source = str(project / "src")
    sys.path.insert(0, source)
    try:
        yield dg.load_from_defs_folder(path_within_project=project / "src")
    finally:
        sys.path.remove(source)
        for module in [name for name in sys.modules if name.split(".")[0] == "ducklake_project"]:
            del sys.modules[module]
        importlib.invalidate_caches()


def materialize_pipeline(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*defs.assets, *defs.asset_checks], resources=defs.resources, selection=PIPELINE, instance=instance
    )


def frozen_lake_rows(result: dg.ExecuteInProcessResult, s3: S3Settings | None = None) -> dict[str, int]:
    """Row counts per table, read by a stranger through the ATTACH line the frozen lake reports."""
    (frozen,) = [event for event in result.get_asset_materialization_events() if event.asset_key == PIPELINE[2]]
    attach_sql = frozen.materialization.metadata["attach_sql"].value
    with duckdb.connect() as reader:
        load_extensions(reader, ["ducklake", "httpfs"])
        if s3 is not None:
            s3.create_duckdb_secret(reader, "reader")
        reader.execute(attach_sql)
        tables = [row[0] for row in reader.execute("SHOW TABLES FROM space").fetchall()]
        return {
            table: reader.execute(f"SELECT count(*) FROM {qualified_name('space', table)}").fetchone()[0]
            for table in tables
        }


def dg_check_defs(project: Path, environment: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``dg check defs`` in the project, with the Python environment running the tests."""
    return subprocess.run(
        [str(DG), "check", "defs", "--use-active-venv"],
        cwd=project,
        env={**(os.environ if environment is None else environment), "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_example_project_runs_the_whole_pipeline_from_its_yaml(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    incoming = project / "data" / "incoming"
    crew(incoming / "astronauts" / "part-0.parquet", 0, 10)
    crew(incoming / "astronauts" / "part-1.parquet", 10, 10)
    crew(incoming / "missions" / "part-0.parquet", 0, 4)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    with project_definitions(project) as defs:
        sensors = {sensor.name: sensor.default_status for sensor in defs.sensors}
        result = materialize_pipeline(defs, dg.DagsterInstance.ephemeral())

    assert result.success
    snapshot = result.asset_materializations_for_node("space__catalog_snapshot")[0].metadata
    assert snapshot["dagster/row_count"].value == 24
    assert "| astronauts | 20 |" in snapshot["tables"].value and "| missions | 4 |" in snapshot["tables"].value
    checks = {evaluation.check_name: evaluation.passed for evaluation in result.get_asset_check_evaluations()}
    assert checks == {
        "backup_is_fresh": True,
        "backup_is_restorable": True,
        "backup_files_exist": True,
        "frozen_lake_opens_read_only": True,
        "frozen_lake_matches_catalog": True,
    }
    assert list((project / "backups").glob("backup-*.ducklake")), "the static backup is in the project's backups/"
    assert (project / "public" / "space.ducklake").is_file()
    assert frozen_lake_rows(result) == {"astronauts": 20, "missions": 4}
    assert list(elsewhere.iterdir()) == [], "relative paths are taken from the project root, not the working folder"
    assert sensors["space_new_files"] == dg.DefaultSensorStatus.RUNNING
    assert sensors["space_automation"] == dg.DefaultSensorStatus.RUNNING


def test_dg_check_defs_passes_on_the_example_project(project: Path) -> None:
    checked = dg_check_defs(project)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All component YAML validated successfully." in checked.stdout
    assert "All definitions loaded successfully." in checked.stdout + checked.stderr


def test_the_production_yaml_checks_without_its_secrets_being_set(project: Path) -> None:
    shutil.copy(project / "production.yaml", defs_yaml(project))
    settings = {
        "DUCKLAKE_BUCKET": "lake-bucket",
        "DUCKLAKE_CATALOG_DSN": "host=db.internal dbname=lake user=etl",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
    }
    without_secrets = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "DUCKLAKE_"))}

    checked = dg_check_defs(project, without_secrets | settings)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully." in checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("original", "mistake", "reported"),
    [
        ("schema_drift: evolve", "schema_drift: sometimes", "attributes.source.schema_drift 'sometimes' is not one of"),
        ("    keep: 14", "    kept: 14", "attributes.backup.kept Additional properties are not allowed ('kept'"),
        ("  data_path: lake/data", "  data_pth: lake/data", "('data_pth' was unexpected)"),
        ("    keep: 14", "    keep: 0", "attributes.backup.keep 0 is less than the minimum of 1"),
        ("keep_within: 7d", "keep_within: a week", "must be a positive number of hours or a duration"),
        ("    keep_revisions: 3", "    keep_revisions: 3\n    automation: nightly", "must be 'eager', a cron string"),
    ],
    ids=["wrong-choice", "unknown-nested-key", "unknown-key", "too-few", "wrong-duration", "wrong-automation"],
)
def test_a_mistake_in_the_yaml_is_reported_at_its_line(
    project: Path, original: str, mistake: str, reported: str
) -> None:
    path = defs_yaml(project)
    text = path.read_text()
    assert original in text
    changed = text.replace(original, mistake)
    path.write_text(changed)
    line = changed[: changed.index(mistake.split("\n")[-1])].count("\n") + 1

    checked = dg_check_defs(project)

    output = checked.stdout + checked.stderr
    assert checked.returncode != 0
    assert reported in output, output
    assert f"defs.yaml:{line} " in output, f"the error names line {line}:\n{output}"
    assert f"{line:>4} | {changed.splitlines()[line - 1]}" in output, "the error shows the line itself"
    assert not (project / "lake").exists() and not (project / "backups").exists()


def test_secrets_from_the_environment_reach_postgres_and_s3_but_nothing_a_user_sees(
    project: Path,
    tmp_path: Path,
    pg_database: PostgresDatabase,
    s3_bucket: S3Bucket,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    endpoint = s3_bucket.endpoint
    shutil.copy(project / "production.yaml", defs_yaml(project))
    for table, first, count in (("astronauts", 0, 10), ("astronauts", 10, 10), ("missions", 0, 4)):
        local = crew(tmp_path / "upload" / table / f"part-{first}.parquet", first, count)
        s3_bucket.client().upload_file(str(local), s3_bucket.name, f"incoming/{table}/{local.name}")
    monkeypatch.setenv("DUCKLAKE_BUCKET", s3_bucket.name)
    monkeypatch.setenv(
        "DUCKLAKE_CATALOG_DSN",
        f"host={pg_database.host} port={pg_database.port} dbname={pg_database.dbname} user={pg_database.user}",
    )
    monkeypatch.setenv("DUCKLAKE_CATALOG_PASSWORD", pg_database.password)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint.endpoint_url)
    monkeypatch.setenv("AWS_REGION", endpoint.region_name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", endpoint.aws_access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", endpoint.aws_secret_access_key)
    secrets = [pg_database.password, endpoint.aws_secret_access_key]
    instance = dg.DagsterInstance.ephemeral()

    with project_definitions(project) as defs:
        ui_snapshot = dg.serialize_value(RepositorySnap.from_def(defs.get_repository_def()))
        result = materialize_pipeline(defs, instance)

    assert result.success
    reader_s3 = S3Settings(
        endpoint_url=endpoint.endpoint_url,
        region_name=endpoint.region_name,
        aws_access_key_id=endpoint.aws_access_key_id,
        aws_secret_access_key=endpoint.aws_secret_access_key,
        path_style=True,
    )
    assert frozen_lake_rows(result, reader_s3) == {"astronauts": 20, "missions": 4}
    assert all(evaluation.passed for evaluation in result.get_asset_check_evaluations())
    assert "DUCKLAKE_CATALOG_PASSWORD" in ui_snapshot and "AWS_SECRET_ACCESS_KEY" in ui_snapshot
    seen = {
        "the definitions the UI shows": ui_snapshot,
        "the run's events and metadata": "\n".join(
            dg.serialize_value(entry) for entry in instance.all_logs(result.run_id)
        ),
        "the console": "".join(capfd.readouterr()),
    }
    assert "RUN_SUCCESS" in seen["the console"] and s3_bucket.name in seen["the run's events and metadata"]
    for where, text in seen.items():
        for secret in secrets:
            assert secret not in text, f"a secret appears in {where}"


def test_short_forms_durations_and_templates_read_as_a_user_means_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPACE_DRIFT", "evolve")
    component = DuckLakePipelineComponent.resolve_from_yaml(
        """
name: space
source: data/space
catalog: lake/space.ducklake
data_path: lake/data
backup:
  uri: backups
  keep_within: 1d12h
  max_age: 6
"""
    )
    templated = DuckLakePipelineComponent.resolve_from_yaml(
        """
name: space
source: {uri: data/space, schema_drift: "{{ env.SPACE_DRIFT }}"}
catalog: lake/space.ducklake
data_path: lake/data
"""
    )

    assert component.source.uri == "data/space" and component.source.schema_drift == "fail"
    assert component.backup is not None
    assert component.backup.keep_within == timedelta(hours=36) and component.backup.max_age == timedelta(hours=6)
    assert component.backup.keep == 30 and component.backup.automation == "eager"
    assert component.backup.mode == "full"
    assert templated.source.schema_drift == "evolve"


@pytest.mark.parametrize("mode", ["full", "metadata"])
def test_the_backup_mode_comes_from_the_yaml(mode: str, tmp_path: Path) -> None:
    crew(tmp_path / "data" / "astronauts.parquet")
    component = DuckLakePipelineComponent.resolve_from_yaml(
        f"""
name: space
source: {tmp_path / "data"}
catalog: {tmp_path / "lake.ducklake"}
data_path: {tmp_path / "files"}
backup: {{uri: {tmp_path / "backups"}, mode: {mode}}}
"""
    )

    defs = dg.build_defs_for_component(component)
    result = dg.materialize([*defs.assets, *defs.asset_checks], resources=defs.resources, selection=PIPELINE[:2])

    assert result.success
    (backup,) = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "static_backup"]
    assert backup.materialization.metadata["mode"].value == mode
    copies = list((tmp_path / "backups").rglob("*.parquet"))
    assert [path.name for path in copies] == (["astronauts.parquet"] if mode == "full" else [])


def test_first_start_states_come_from_the_yaml(tmp_path: Path) -> None:
    component = DuckLakePipelineComponent.resolve_from_yaml(
        f"""
name: space
source:
  uri: {tmp_path / "data"}
  sensor: {{default_status: stopped, interval_seconds: 300}}
catalog: {tmp_path / "lake.ducklake"}
data_path: {tmp_path / "files"}
backup: {{uri: {tmp_path / "backups"}, cron: "0 1 * * *"}}
schedules: {{default_status: stopped, automation_sensor_status: stopped}}
"""
    )

    defs = dg.build_defs_for_component(component)

    sensors = {sensor.name: sensor for sensor in defs.sensors}
    assert sensors["space_new_files"].default_status == dg.DefaultSensorStatus.STOPPED
    assert sensors["space_new_files"].minimum_interval_seconds == 300
    assert sensors["space_automation"].default_status == dg.DefaultSensorStatus.STOPPED
    assert [(schedule.cron_schedule, schedule.default_status) for schedule in defs.schedules] == [
        ("0 1 * * *", dg.DefaultScheduleStatus.STOPPED)
    ]


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ("data_path: s3://lake/files/", "data_path is on S3: add an s3: block to the attributes"),
        ("data_path: files\ncatalog_password: secret", "catalog_password applies to a postgres: catalog only"),
    ],
    ids=["s3-without-settings", "password-for-a-file-catalog"],
)
def test_settings_that_cannot_work_together_are_refused_in_yaml_terms(
    tmp_path: Path, attributes: str, message: str
) -> None:
    component = DuckLakePipelineComponent.resolve_from_yaml(
        f"name: space\nsource: {tmp_path}\ncatalog: {tmp_path / 'lake.ducklake'}\n{attributes}\n"
    )

    with pytest.raises(ConfigurationError, match=message):
        dg.build_defs_for_component(component)
    assert list(tmp_path.iterdir()) == []


def test_a_scaffolded_pipeline_loads_as_it_is() -> None:
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(component_cls=DuckLakePipelineComponent, defs_path="moon_lake")
        with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
            assert isinstance(component, DuckLakePipelineComponent)
            assert component.name == "moon_lake" and component.source.uri == "data/moon_lake"
            assert {key.to_user_string() for key in defs.resolve_all_asset_keys()} >= {
                "moon_lake/catalog_snapshot",
                "moon_lake/static_backup",
                "moon_lake/frozen_lake",
            }
