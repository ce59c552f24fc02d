"""The ``frozen_lake`` asset and its checks, run by Dagster as a user runs them."""

import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ducklake_assets import ConfigurationError, DuckLakeResource, PublishOptions
from ducklake_assets.backup_assets import build_backup_definitions
from ducklake_assets.core.extensions import load_extensions
from ducklake_assets.core.sql import quote_literal
from ducklake_assets.pipeline import build_ducklake_pipeline
from ducklake_assets.publish_assets import build_publish_definitions
from ducklake_assets_tests.static_site import serve_folder

FROZEN = dg.AssetKey(["space", "frozen_lake"])


def lake_resource(folder: Path) -> DuckLakeResource:
    return DuckLakeResource(
        catalog=str(folder / "space.ducklake"),
        data_path=str(folder / "data"),
        attach_options={"DATA_INLINING_ROW_LIMIT": 0},
    )


@dg.asset(key=["space", "catalog_snapshot"], required_resource_keys={"space_ducklake"})
def catalog_snapshot(context: dg.AssetExecutionContext) -> None:
    """Adds ten missions and, the first time, a crew table: one more snapshot per run."""
    with context.resources.space_ducklake.get_connection() as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS crew AS SELECT range AS crew_id FROM range(3)")
        connection.execute("CREATE TABLE IF NOT EXISTS missions (mission_id BIGINT)")
        connection.execute("INSERT INTO missions SELECT range + (SELECT count(*) FROM missions) FROM range(10)")


def publish_all(defs: dg.Definitions, instance: dg.DagsterInstance, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [catalog_snapshot, *defs.assets, *defs.asset_checks],
        resources=kwargs.pop("resources"),
        instance=instance,
        **kwargs,
    )


def run_checks(defs: dg.Definitions, instance: dg.DagsterInstance, resources) -> dict[str, dg.AssetCheckEvaluation]:
    result = dg.materialize(
        [catalog_snapshot, *defs.assets, *defs.asset_checks],
        resources=resources,
        instance=instance,
        selection=dg.AssetSelection.checks_for_assets(FROZEN),
    )
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def checks_of(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def stranger(s3_settings=None) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    load_extensions(connection, ["ducklake", "httpfs"])
    if s3_settings is not None:
        s3_settings.create_duckdb_secret(connection, "stranger")
    return connection


def test_the_frozen_lake_on_s3_is_attached_with_the_line_its_metadata_shows(
    tmp_path, s3_bucket, s3_settings, s3_resource
):
    publish_uri = s3_bucket.uri("lakes/space.ducklake")
    defs = build_publish_definitions(
        "space",
        publish_uri,
        lake_resource_key="space_ducklake",
        s3_resource_key="space_s3",
        keep_revisions=2,
        self_contained=True,
    )
    resources = {"space_ducklake": lake_resource(tmp_path / "lake"), "space_s3": s3_resource}
    instance = dg.DagsterInstance.ephemeral()

    for _ in range(3):
        result = publish_all(defs, instance, resources=resources)

    metadata = result.asset_materializations_for_node("space__frozen_lake")[0].metadata
    attach_sql = f"ATTACH 'ducklake:{publish_uri}' AS \"space\" (READ_ONLY)"
    assert metadata["attach_sql"].value == attach_sql
    assert metadata["attach"].value == f"```sql\n{attach_sql}\n```"
    assert metadata["revision"].value == 3
    assert metadata["format_version"].value == "1.0"
    assert metadata["size_bytes"].value > 0
    assert metadata["dagster/row_count"].value == 33
    assert metadata["tables"].value == "| table | rows |\n|---|---|\n| main.crew | 3 |\n| main.missions | 30 |"
    assert metadata["pruned_revisions"].value == 1
    snapshot_id = metadata["snapshot_id"].value
    assert metadata["pinned_attach_sql"].value == (
        f"ATTACH 'ducklake:{s3_bucket.uri(f'lakes/revisions/space-r000003-s{snapshot_id}.ducklake')}' "
        'AS "space" (READ_ONLY)'
    )
    assert metadata["files_copied"].value == 1 and metadata["files_reused"].value == 3, "only the new file"
    checks = checks_of(result)
    assert checks["frozen_lake_opens_read_only"].passed, checks["frozen_lake_opens_read_only"].description
    assert checks["frozen_lake_matches_catalog"].passed, checks["frozen_lake_matches_catalog"].description
    assert checks["frozen_lake_matches_catalog"].description == (
        f"Snapshot {snapshot_id} and all 2 tables' row counts equal the catalog's."
    )

    shutil.rmtree(tmp_path / "lake")
    connection = stranger(s3_settings)
    connection.execute(attach_sql)
    assert connection.execute("SELECT count(*), sum(mission_id) FROM space.missions").fetchone() == (30, sum(range(30)))
    assert connection.execute(
        "SELECT count(*) FROM space.missions AT (VERSION => ?)", [snapshot_id - 1]
    ).fetchone() == (20,)


def test_a_folder_of_parquet_files_becomes_a_frozen_lake_on_s3(tmp_path, s3_bucket, s3_settings, s3_resource):
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    for name, first, last in (("missions.2025-01", 0, 100), ("missions.2025-02", 100, 150), ("crew.2025-01", 0, 10)):
        duckdb.execute(
            f"COPY (SELECT range AS id FROM range(?, ?)) TO {quote_literal(str(parquet / f'{name}.parquet'))}",
            [first, last],
        )
    publish_uri = s3_bucket.uri("lakes/space.ducklake")
    defs = build_ducklake_pipeline(
        name="space",
        source=str(parquet),
        catalog=str(tmp_path / "lake" / "space.ducklake"),
        data_path=str(tmp_path / "lake" / "data"),
        publish=PublishOptions(uri=publish_uri, self_contained=True),
        s3=s3_resource,
    )

    result = dg.materialize(
        [*defs.assets, *defs.asset_checks], resources=defs.resources, instance=dg.DagsterInstance.ephemeral()
    )

    assert all(check.passed for check in checks_of(result).values()), checks_of(result)
    metadata = result.asset_materializations_for_node("space__frozen_lake")[0].metadata
    shutil.rmtree(parquet)
    shutil.rmtree(tmp_path / "lake")
    connection = stranger(s3_settings)
    connection.execute(metadata["attach_sql"].value)
    assert connection.execute("SELECT count(*), sum(id) FROM space.missions").fetchone() == (150, sum(range(150)))
    assert connection.execute("SELECT count(*), sum(id) FROM space.crew").fetchone() == (10, 45)


def test_a_frozen_lake_on_s3_of_local_files_is_refused_with_the_fix(tmp_path, s3_bucket, s3_resource):
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    duckdb.execute(f"COPY (SELECT range AS id FROM range(5)) TO {quote_literal(str(parquet / 'crew.parquet'))}")
    defs = build_ducklake_pipeline(
        name="space",
        source=str(parquet),
        catalog=str(tmp_path / "lake" / "space.ducklake"),
        data_path=str(tmp_path / "lake" / "data"),
        publish=s3_bucket.uri("lakes/space.ducklake"),
        s3=s3_resource,
    )

    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        resources=defs.resources,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )

    failure = next(event for event in result.all_events if event.is_step_failure)
    message = failure.step_failure_data.error.to_string()
    assert f"{parquet / 'crew.parquet'}" in message and "self_contained=True" in message
    listed = s3_bucket.client().list_objects_v2(Bucket=s3_bucket.name).get("Contents", [])
    assert [item["Key"] for item in listed] == [], "nothing was published"


def test_a_pipeline_on_postgres_publishes_only_from_a_backup():
    with pytest.raises(ConfigurationError, match="publish needs backup when the catalog is not a DuckDB file"):
        build_ducklake_pipeline(
            name="space",
            source="/data/parquet",
            catalog="postgres:dbname=lake host=db.internal",
            data_path="/data/lake",
            publish="/srv/space.ducklake",
        )


def test_the_frozen_lake_is_published_from_the_latest_static_backup(tmp_path):
    backup_uri = str(tmp_path / "backups")
    publish_uri = str(tmp_path / "site" / "space.ducklake")
    backups = build_backup_definitions("space", backup_uri, lake_resource_key="space_ducklake")
    frozen = build_publish_definitions("space", publish_uri, lake_resource_key="space_ducklake", backup_uri=backup_uri)
    assert frozen.assets[0].asset_deps[FROZEN] == {dg.AssetKey(["space", "static_backup"])}
    resources = {"space_ducklake": lake_resource(tmp_path / "lake")}

    result = dg.materialize(
        [catalog_snapshot, *backups.assets, *frozen.assets, *frozen.asset_checks],
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
    )

    backup_snapshot = result.asset_materializations_for_node("space__static_backup")[0].metadata["snapshot_id"]
    frozen_metadata = result.asset_materializations_for_node("space__frozen_lake")[0].metadata
    assert frozen_metadata["snapshot_id"].value == backup_snapshot.value
    assert all(check.passed for check in checks_of(result).values()), checks_of(result)


def test_a_table_deleted_from_the_published_copy_fails_both_checks(tmp_path):
    publish_uri = str(tmp_path / "site" / "space.ducklake")
    defs = build_publish_definitions("space", publish_uri, lake_resource_key="space_ducklake")
    resources = {"space_ducklake": lake_resource(tmp_path / "lake")}
    instance = dg.DagsterInstance.ephemeral()
    published = publish_all(defs, instance, resources=resources)
    snapshot_id = published.asset_materializations_for_node("space__frozen_lake")[0].metadata["snapshot_id"].value
    editor = stranger()
    editor.execute(f"ATTACH {quote_literal('ducklake:' + publish_uri)} AS edited")
    editor.execute("DROP TABLE edited.crew")
    editor.close()

    checks = run_checks(defs, instance, resources)

    opens = checks["frozen_lake_opens_read_only"]
    assert not opens.passed
    assert opens.description == "A stranger cannot use the frozen lake: tables missing: main.crew."
    assert opens.metadata["missing_tables"].value == ["main.crew"]
    matches = checks["frozen_lake_matches_catalog"]
    assert not matches.passed
    assert matches.description.startswith(
        f"The frozen lake holds snapshot {snapshot_id + 1}, which cannot be compared: Snapshot {snapshot_id + 1} "
        "is not in catalog"
    )
    assert "was changed after publication" in matches.description


def test_a_stale_frozen_lake_fails_matches_catalog_with_a_warning(tmp_path):
    publish_uri = str(tmp_path / "site" / "space.ducklake")
    defs = build_publish_definitions("space", publish_uri, lake_resource_key="space_ducklake")
    lake = lake_resource(tmp_path / "lake")
    resources = {"space_ducklake": lake}
    instance = dg.DagsterInstance.ephemeral()
    published = publish_all(defs, instance, resources=resources)
    snapshot_id = published.asset_materializations_for_node("space__frozen_lake")[0].metadata["snapshot_id"].value
    with lake.get_connection() as connection:
        connection.execute("INSERT INTO missions VALUES (100)")

    checks = run_checks(defs, instance, resources)

    assert checks["frozen_lake_opens_read_only"].passed
    matches = checks["frozen_lake_matches_catalog"]
    assert not matches.passed and matches.severity == dg.AssetCheckSeverity.WARN
    assert matches.description == (
        f"The frozen lake does not match the catalog: the frozen lake holds snapshot {snapshot_id} but the catalog "
        f"is at {snapshot_id + 1} (1 snapshot(s) behind): materialize space/frozen_lake again."
    )
    assert matches.metadata["snapshots_behind"].value == 1


def test_a_published_lake_that_lost_rows_fails_matches_catalog_as_an_error(tmp_path):
    publish_uri = str(tmp_path / "site" / "space.ducklake")
    defs = build_publish_definitions("space", publish_uri, lake_resource_key="space_ducklake")
    resources = {"space_ducklake": lake_resource(tmp_path / "lake")}
    instance = dg.DagsterInstance.ephemeral()
    publish_all(defs, instance, resources=resources)
    publish_all(defs, instance, resources=resources)
    with duckdb.connect(publish_uri) as copy:
        copy.execute(
            "DELETE FROM ducklake_data_file WHERE data_file_id = (SELECT max(data_file_id) FROM ducklake_data_file)"
        )

    matches = run_checks(defs, instance, resources)["frozen_lake_matches_catalog"]

    assert not matches.passed and matches.severity == dg.AssetCheckSeverity.ERROR
    assert "1 table(s) differ from the catalog" in matches.description and "main.missions" in matches.description
    assert "| main.missions | 10 | 20 | differs |" in matches.metadata["tables"].value


def test_a_frozen_lake_that_is_gone_fails_both_checks(tmp_path):
    publish_uri = tmp_path / "site" / "space.ducklake"
    defs = build_publish_definitions("space", str(publish_uri), lake_resource_key="space_ducklake")
    resources = {"space_ducklake": lake_resource(tmp_path / "lake")}
    instance = dg.DagsterInstance.ephemeral()
    publish_all(defs, instance, resources=resources)
    publish_uri.unlink()

    checks = run_checks(defs, instance, resources)

    for name in ("frozen_lake_opens_read_only", "frozen_lake_matches_catalog"):
        assert not checks[name].passed
        assert f"cannot attach {publish_uri}" in checks[name].description
        assert checks[name].metadata["snapshot_id"].value == "not opened"


def test_a_frozen_lake_served_over_http_passes_both_checks(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    resources = {"space_ducklake": lake_resource(tmp_path / "lake")}
    with serve_folder(site) as (base_url, served):
        defs = build_publish_definitions(
            "space",
            str(site / "space.ducklake"),
            lake_resource_key="space_ducklake",
            reader_url=f"{base_url}/space.ducklake",
            self_contained=True,
        )
        result = publish_all(defs, dg.DagsterInstance.ephemeral(), resources=resources)
    metadata = result.asset_materializations_for_node("space__frozen_lake")[0].metadata
    assert metadata["attach_sql"].value == f"ATTACH 'ducklake:{base_url}/space.ducklake' AS \"space\" (READ_ONLY)"
    assert all(check.passed for check in checks_of(result).values()), checks_of(result)
    assert any(line.startswith("GET /space.ducklake bytes=") for line in served)


def test_a_missing_bucket_fails_the_materialization_with_a_clear_message(tmp_path, s3_settings, s3_resource):
    defs = build_publish_definitions(
        "space", "s3://no-such-bucket/space.ducklake", lake_resource_key="space_ducklake", s3_resource_key="space_s3"
    )
    resources = {"space_ducklake": lake_resource(tmp_path / "lake"), "space_s3": s3_resource}

    result = dg.materialize(
        [catalog_snapshot, *defs.assets],
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )

    assert not result.success
    failure = next(event for event in result.all_events if event.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.cause.message
    assert "bucket 'no-such-bucket' does not exist; create it first" in message
    assert s3_settings.aws_secret_access_key not in message


def test_bad_settings_are_refused_when_the_definitions_are_built():
    with pytest.raises(ConfigurationError, match="keep_revisions must be at least 1, not 0"):
        build_publish_definitions("space", "/tmp/space.ducklake", keep_revisions=0)


def test_the_frozen_lake_runs_in_its_own_concurrency_pool():
    assert build_publish_definitions("space", "/tmp/space.ducklake").assets[0].op.pool == "space_frozen_lake"
    assert build_publish_definitions("space", "/tmp/space.ducklake", pool="publishers").assets[0].op.pool == (
        "publishers"
    )


def test_the_upstream_is_given_as_an_asset_key_or_as_its_parts():
    for upstream in (dg.AssetKey(["space", "exports"]), ["space", "exports"]):
        (spec,) = build_publish_definitions("space", "/tmp/space.ducklake", upstream_key=upstream).assets[0].specs
        assert [dep.asset_key for dep in spec.deps] == [dg.AssetKey(["space", "exports"])]
