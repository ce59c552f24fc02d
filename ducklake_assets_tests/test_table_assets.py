"""Every lake table an asset: table assets, the translator, producers upstream and the writers' loop."""

import logging
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from ducklake_assets import SourceOptions
from ducklake_assets.component import DuckLakePipelineComponent
from ducklake_assets.core.extensions import load_extension
from ducklake_assets.core.progress import ProgressLog
from ducklake_assets.core.s3 import S3Settings
from ducklake_assets.core.storage import ObjectStore
from ducklake_assets.pipeline import build_ducklake_pipeline
from ducklake_assets.resources import DuckLakeResource, S3Resource
from ducklake_assets.snapshot_assets import written_paths_metadata
from ducklake_assets.translator import DuckLakeTranslator, LakeTable
from ducklake_assets_tests.parquet_files import crew, parquet
from ducklake_assets_tests.services import S3Bucket

SNAPSHOT = dg.AssetKey(["space", "catalog_snapshot"])
ASTRONAUTS = dg.AssetKey(["space", "astronauts"])
MISSIONS = dg.AssetKey(["space", "missions"])


def pipeline(tmp_path: Path, source: Path | SourceOptions, **kwargs) -> dg.Definitions:
    return build_ducklake_pipeline(
        name="space",
        source=source if isinstance(source, SourceOptions) else str(source),
        catalog=str(tmp_path / "lake" / "space.ducklake"),
        data_path=str(tmp_path / "lake" / "data"),
        **kwargs,
    )


def materialized(result: dg.ExecuteInProcessResult) -> dict[dg.AssetKey, dict]:
    return {
        event.asset_key: {key: getattr(value, "value", value) for key, value in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }


def lake_rows(defs: dg.Definitions, sql: str) -> list[tuple]:
    lake: DuckLakeResource = defs.resources["space_ducklake"]
    with lake.get_connection() as connection:
        return connection.execute(sql).fetchall()


def test_each_table_is_an_asset_made_in_the_one_snapshot_of_its_run(tmp_path: Path, space: Path) -> None:
    defs = pipeline(tmp_path, space)
    graph = defs.resolve_asset_graph()

    assert {ASTRONAUTS, MISSIONS, SNAPSHOT} <= set(graph.get_all_asset_keys())
    assert graph.get(ASTRONAUTS).kinds == {"ducklake"}
    assert dg.AssetKey(["space", "source_files"]) in graph.get(ASTRONAUTS).parent_keys
    assert graph.get(ASTRONAUTS).freshness_policy is not None
    result = dg.materialize(list(defs.assets), resources=defs.resources)

    assert result.success
    metadata = materialized(result)
    assert set(metadata) == {SNAPSHOT, ASTRONAUTS, MISSIONS}
    astronauts = metadata[ASTRONAUTS]
    assert astronauts["dagster/row_count"] == 20 and astronauts["files_added"] == 2
    assert astronauts["dagster/table_name"] == "main.astronauts"
    assert [column.name for column in astronauts["dagster/column_schema"].columns] == ["id", "name"]
    assert metadata[MISSIONS]["dagster/row_count"] == 4
    snapshot_ids = {values["snapshot_id"] for values in metadata.values()}
    assert len(snapshot_ids) == 1
    assert lake_rows(defs, "SELECT count(*) FROM lake.snapshots() WHERE snapshot_id > 0") == [(1,)]
    assert lake_rows(defs, "SELECT sum(id) FROM astronauts") == [(sum(range(20)),)]


def test_selecting_one_table_registers_only_its_files(tmp_path: Path, space: Path) -> None:
    defs = pipeline(tmp_path, space)

    result = dg.materialize(list(defs.assets), resources=defs.resources, selection=[MISSIONS])

    assert set(materialized(result)) == {MISSIONS}
    assert lake_rows(defs, "SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake'") == [("missions",)]


def test_a_new_table_appears_after_a_reload_and_explicit_tables_need_no_listing(tmp_path: Path, space: Path) -> None:
    defs = pipeline(tmp_path, space)
    dg.materialize(list(defs.assets), resources=defs.resources)
    parquet(space / "rockets.parquet", "SELECT 1 AS rocket_id")

    reloaded = pipeline(tmp_path, space)
    explicit = pipeline(tmp_path, tmp_path / "not-there-yet", tables=["astronauts"])

    assert dg.AssetKey(["space", "rockets"]) in reloaded.resolve_asset_graph().get_all_asset_keys()
    assert {key for key in explicit.resolve_asset_graph().get_all_asset_keys() if key.path[0] == "space"} == {
        SNAPSHOT,
        ASTRONAUTS,
        dg.AssetKey(["space", "source_files"]),
    }


def test_tables_of_the_catalog_stay_assets_when_their_files_leave_the_source(tmp_path: Path, space: Path) -> None:
    defs = pipeline(tmp_path, space)
    dg.materialize(list(defs.assets), resources=defs.resources)
    archive = tmp_path / "archive"
    archive.mkdir()
    (space / "missions.p1.parquet").rename(archive / "missions.p1.parquet")

    reloaded = pipeline(tmp_path, space)

    assert MISSIONS in reloaded.resolve_asset_graph().get_all_asset_keys()


def test_a_missing_source_folder_loads_and_the_sensor_says_why_it_skips(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "data" / "later"
    with caplog.at_level(logging.WARNING, logger="ducklake_assets"):
        defs = pipeline(tmp_path, missing)
    sensor = defs.resolve_sensor_def("space_new_files")

    result = sensor(dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral()))

    assert f"Listing {missing}" in caplog.text
    assert isinstance(result, dg.SkipReason)
    assert str(missing) in (result.skip_message or "") and "does not exist yet" in (result.skip_message or "")
    crew(missing / "astronauts.parquet")
    requested = sensor(dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral()))
    assert set(requested.run_requests[0].asset_selection) == {SNAPSHOT}


def test_the_sensor_asks_for_every_table_asset(tmp_path: Path, space: Path) -> None:
    defs = pipeline(tmp_path, space)
    sensor = defs.resolve_sensor_def("space_new_files")

    result = sensor(dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral()))

    assert set(result.run_requests[0].asset_selection) == {SNAPSHOT, ASTRONAUTS, MISSIONS}


def test_a_translator_changes_keys_groups_and_owners_per_table(tmp_path: Path, space: Path) -> None:
    class Crew(DuckLakeTranslator):
        def get_asset_spec(self, table: LakeTable) -> dg.AssetSpec:
            spec = super().get_asset_spec(table)
            if table.name == "astronauts":
                return spec.replace_attributes(key=["crew", "people"], group_name="crew", owners=["team:crew"])
            return spec

    defs = pipeline(tmp_path, space, translator=Crew(freshness_fail_window=timedelta(hours=2)))
    graph = defs.resolve_asset_graph()
    people = dg.AssetKey(["crew", "people"])

    assert people in graph.get_all_asset_keys() and ASTRONAUTS not in graph.get_all_asset_keys()
    assert graph.get(people).group_name == "crew" and graph.get(people).owners == ["team:crew"]
    assert graph.get(MISSIONS).group_name == "space"
    result = dg.materialize(list(defs.assets), resources=defs.resources)
    assert materialized(result)[people]["dagster/row_count"] == 20


def test_tables_outside_schema_main_are_keyed_by_schema(tmp_path: Path, space: Path) -> None:
    defs = pipeline(tmp_path, SourceOptions(uri=str(space), schema="crew"))

    result = dg.materialize(list(defs.assets), resources=defs.resources)

    assert dg.AssetKey(["space", "crew", "astronauts"]) in materialized(result)


def test_the_yaml_translation_tables_and_writers(tmp_path: Path, space: Path) -> None:
    component = DuckLakePipelineComponent.resolve_from_yaml(
        f"""
name: space
source: {space}
catalog: {tmp_path / "lake.ducklake"}
data_path: {tmp_path / "files"}
tables: [astronauts, missions]
source_deps: [exports/astronauts_export]
lake_writers: [reports/crew_stats]
backup: {{uri: {tmp_path / "backups"}}}
translation:
  group_name: lake
  tags: {{team: space}}
  tables:
    astronauts: {{key: crew/people, owners: ["team:crew"]}}
"""
    )

    defs = dg.build_defs_for_component(component)
    graph = defs.resolve_asset_graph()
    people = dg.AssetKey(["crew", "people"])

    assert graph.get(people).group_name == "lake" and graph.get(people).owners == ["team:crew"]
    assert graph.get(people).tags["team"] == "space"
    assert dg.AssetKey(["exports", "astronauts_export"]) in graph.get(people).parent_keys
    backup = graph.get(dg.AssetKey(["space", "static_backup"]))
    assert {people, MISSIONS, SNAPSHOT, dg.AssetKey(["reports", "crew_stats"])} <= backup.parent_keys


def produced_pipeline(tmp_path: Path, space: Path) -> tuple[dg.Definitions, dg.AssetsDefinition]:
    @dg.asset(key=["exports", "astronauts_export"])
    def astronauts_export() -> dg.MaterializeResult:
        path = crew(space / "astronauts.p3.parquet", 20, 5)
        return dg.MaterializeResult(metadata=written_paths_metadata([str(path)]))

    defs = pipeline(tmp_path, space, source_deps=[astronauts_export])
    return dg.Definitions.merge(defs, dg.Definitions(assets=[astronauts_export])), astronauts_export


def test_a_producer_in_source_deps_is_registered_in_the_same_run_after_it(tmp_path: Path, space: Path) -> None:
    defs, producer = produced_pipeline(tmp_path, space)
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize(list(defs.assets), resources=defs.resources, instance=instance, selection=[SNAPSHOT])
    crew(space / "astronauts.unreported.parquet", 100, 1)

    result = dg.materialize(list(defs.assets), resources=defs.resources, instance=instance)

    assert result.success
    order = [event.asset_key for event in result.get_asset_materialization_events()]
    assert order.index(producer.key) < order.index(ASTRONAUTS)
    assert materialized(result)[ASTRONAUTS]["files_added"] == 1
    assert lake_rows(defs, "SELECT sum(id) FROM astronauts") == [(sum(range(25)),)]
    graph = defs.resolve_asset_graph()
    assert producer.key in graph.get(ASTRONAUTS).parent_keys


def test_eager_automation_registers_after_each_producer_materialization(tmp_path: Path, space: Path) -> None:
    defs, producer = produced_pipeline(tmp_path, space)
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize(list(defs.assets), resources=defs.resources, instance=instance)
    quiet = dg.evaluate_automation_conditions(defs=defs, instance=instance)

    dg.materialize([producer], instance=instance)
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=quiet.cursor)

    assert quiet.total_requested == 0
    requested = {result.key for result in after.results if result.true_subset.size}
    assert {SNAPSHOT, ASTRONAUTS, MISSIONS} <= requested


def test_progress_lines_come_every_few_seconds_even_inside_one_long_call() -> None:
    lines: list[str] = []

    with ProgressLog(lines.append, "Registered", "new files", every_seconds=0.2, every_files=500) as progress:
        progress(0, 2000)
        time.sleep(0.7)
        progress(400, 2000)
        progress(1000, 2000)
        progress(2000, 2000)

    assert any(line.startswith("Still working: Registered 0 of 2,000 new files") for line in lines)
    assert lines[-2].startswith("Registered 1,000 of 2,000 new files (")
    assert lines[-1].startswith("Registered 2,000 of 2,000 new files (") and "new files/s" in lines[-1]


def test_a_user_asset_reads_a_table_and_its_output_is_backed_up_after_the_next_evaluation(
    tmp_path: Path, space: Path
) -> None:
    stats_key = dg.AssetKey(["reports", "crew_stats"])

    @dg.asset(key=stats_key, ins={"astronauts": dg.AssetIn(key=ASTRONAUTS)}, io_manager_key="space_io_manager")
    def crew_stats(astronauts: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"crew": [len(astronauts)], "id_sum": [int(astronauts["id"].sum())]})

    backups = tmp_path / "backups"
    lake = pipeline(tmp_path, space, backup=str(backups), lake_writers=[crew_stats])
    defs = dg.Definitions.merge(lake, dg.Definitions(assets=[crew_stats]))
    instance = dg.DagsterInstance.ephemeral()
    backup_key = dg.AssetKey(["space", "static_backup"])

    first = dg.materialize(list(defs.assets), resources=defs.resources, instance=instance)

    order = [event.asset_key for event in first.get_asset_materialization_events()]
    assert order.index(ASTRONAUTS) < order.index(stats_key) < order.index(backup_key)
    assert lake_rows(defs, "SELECT crew, id_sum FROM crew_stats") == [(20, sum(range(20)))]
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)

    dg.materialize([crew_stats, *lake.assets], resources=defs.resources, instance=instance, selection=[stats_key])
    evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    requested = [result.key for result in evaluation.results if result.true_subset.size]
    assert backup_key in requested
    followed = dg.materialize(list(defs.assets), resources=defs.resources, instance=instance, selection=requested)

    fresh = [
        event
        for event in followed.get_asset_check_evaluations()
        if event.check_name == "backup_is_fresh" and event.asset_key == backup_key
    ]
    assert fresh and all(event.passed for event in fresh), [event.description for event in fresh]
    latest = backups / "latest.ducklake"
    with duckdb.connect() as reader:
        load_extension(reader, "ducklake")
        reader.execute(f"ATTACH 'ducklake:{latest}' AS backup (READ_ONLY)")
        assert reader.execute("SELECT sum(id_sum) FROM backup.crew_stats").fetchone() == (sum(range(20)),)


def test_a_producer_in_another_code_location_triggers_registration_of_just_its_paths(
    tmp_path: Path, space: Path
) -> None:
    """The producer is only a key here (it is defined in another code location); its materializations,
    recorded in the same Dagster instance, drive the eager automation and name the paths to register."""
    producer = dg.AssetKey(["exports", "astronauts_export"])
    defs = pipeline(tmp_path, space, source_deps=["exports/astronauts_export"])
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize(list(defs.assets), resources=defs.resources, instance=instance)
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    written = crew(space / "astronauts.p3.parquet", 20, 5)
    crew(space / "astronauts.unreported.parquet", 100, 1)

    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=producer, metadata=written_paths_metadata([str(written)]))
    )
    evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    requested = [result.key for result in evaluation.results if result.true_subset.size]
    result = dg.materialize(list(defs.assets), resources=defs.resources, instance=instance, selection=requested)

    assert {SNAPSHOT, ASTRONAUTS} <= set(requested)
    assert materialized(result)[ASTRONAUTS]["files_added"] == 1
    assert lake_rows(defs, "SELECT sum(id) FROM astronauts") == [(sum(range(25)),)]


def test_secrets_from_the_environment_let_an_s3_source_show_its_tables_when_they_are_set(
    tmp_path: Path,
    s3_bucket: S3Bucket,
    s3_settings: S3Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ObjectStore(s3_settings).put_file(crew(tmp_path / "astronauts.parquet"), s3_bucket.uri("space/astronauts.parquet"))
    s3 = S3Resource(
        endpoint_url=s3_settings.endpoint_url,
        region_name=s3_settings.region_name,
        aws_access_key_id=s3_settings.aws_access_key_id,
        aws_secret_access_key=dg.EnvVar("SPACE_S3_SECRET"),
        addressing_style="path",
    )

    def build() -> dg.Definitions:
        return build_ducklake_pipeline(
            name="space",
            source=s3_bucket.uri("space"),
            catalog=str(tmp_path / "space.ducklake"),
            data_path=str(tmp_path / "data"),
            s3=s3,
        )

    monkeypatch.delenv("SPACE_S3_SECRET", raising=False)
    with caplog.at_level(logging.WARNING, logger="ducklake_assets"):
        unset = build()
    monkeypatch.setenv("SPACE_S3_SECRET", s3_settings.aws_secret_access_key or "")
    found = build()

    assert ASTRONAUTS not in unset.resolve_asset_graph().get_all_asset_keys()
    assert "pass tables=[...]" in caplog.text
    assert ASTRONAUTS in found.resolve_asset_graph().get_all_asset_keys()
    result = dg.materialize(list(found.assets), resources=found.resources)
    assert materialized(result)[ASTRONAUTS]["dagster/row_count"] == 10


def test_a_table_with_nothing_new_reports_no_files_added_and_the_backup_still_follows(
    tmp_path: Path, space: Path
) -> None:
    defs = pipeline(tmp_path, space, backup=str(tmp_path / "backups"))
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize(list(defs.assets), resources=defs.resources, instance=instance)
    parquet(space / "missions.p2.parquet", "SELECT 9 AS mission_id, 'mission 9' AS name")

    result = dg.materialize(list(defs.assets), resources=defs.resources, instance=instance)

    metadata = materialized(result)
    assert metadata[MISSIONS]["files_added"] == 1 and metadata[ASTRONAUTS]["files_added"] == 0
    assert dg.AssetKey(["space", "static_backup"]) in metadata


def test_a_source_behind_a_symbolic_link_registers_each_file_once(tmp_path: Path) -> None:
    real = tmp_path / "real" / "space"
    crew(real / "astronauts.p1.parquet", 0)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    linked = tmp_path / "link" / "space"

    @dg.asset(key=["exports", "astronauts_export"])
    def astronauts_export() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata=written_paths_metadata([str(crew(linked / "astronauts.p2.parquet", 10))]))

    defs = dg.Definitions.merge(
        pipeline(tmp_path, linked, source_deps=[astronauts_export]), dg.Definitions(assets=[astronauts_export])
    )
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize(list(defs.assets), resources=defs.resources, instance=instance)
    dg.materialize(list(defs.assets), resources=defs.resources, instance=instance)
    crew(real / "astronauts.p3.parquet", 20)
    dg.materialize(list(defs.assets), resources=defs.resources, instance=instance, selection=[SNAPSHOT])

    assert lake_rows(defs, "SELECT count(*), sum(id) FROM astronauts") == [(30, sum(range(30)))]


def test_a_producer_report_made_while_a_registration_runs_is_registered_by_the_next_one(
    tmp_path: Path, space: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ducklake_assets.snapshot_assets as snapshot_assets

    defs, producer = produced_pipeline(tmp_path, space)
    other = dg.AssetKey(["exports", "astronauts_export"])
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize(list(defs.assets), resources=defs.resources, instance=instance)
    register = snapshot_assets.register_files
    during = crew(space / "astronauts.during.parquet", 100, 1)

    def report_while_registering(*args, **kwargs):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=other, metadata=written_paths_metadata([str(during)]))
        )
        return register(*args, **kwargs)

    monkeypatch.setattr(snapshot_assets, "register_files", report_while_registering)
    dg.materialize(list(defs.assets), resources=defs.resources, instance=instance)
    monkeypatch.setattr(snapshot_assets, "register_files", register)
    dg.materialize(list(defs.assets), resources=defs.resources, instance=instance)

    assert producer.key == other
    assert lake_rows(defs, "SELECT max(id) FROM astronauts") == [(100,)]


def test_a_table_renamed_by_the_translator_still_loads_through_the_io_manager(tmp_path: Path, space: Path) -> None:
    class Roster(DuckLakeTranslator):
        def get_asset_spec(self, table: LakeTable) -> dg.AssetSpec:
            return super().get_asset_spec(table).replace_attributes(key=["crew", f"{table.name}_roster"])

    @dg.asset(ins={"roster": dg.AssetIn(key=["crew", "astronauts_roster"])}, io_manager_key="space_io_manager")
    def crew_size(roster: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"crew": [len(roster)], "id_sum": [int(roster["id"].sum())]})

    defs = dg.Definitions.merge(pipeline(tmp_path, space, translator=Roster()), dg.Definitions(assets=[crew_size]))

    assert dg.materialize(list(defs.assets), resources=defs.resources).success
    assert lake_rows(defs, "SELECT crew, id_sum FROM crew_size") == [(20, sum(range(20)))]


def test_a_file_whose_name_gives_no_table_is_skipped_under_bad_files_skip(tmp_path: Path, space: Path) -> None:
    crew(space / "bad\x01name.parquet", 50)
    failing = pipeline(tmp_path / "failing", space)
    skipping = pipeline(tmp_path, SourceOptions(uri=str(space), bad_files="skip"))

    failed = dg.materialize(list(failing.assets), resources=failing.resources, raise_on_error=False)
    result = dg.materialize(list(skipping.assets), resources=skipping.resources)

    assert not failed.success
    snapshot = materialized(result)[SNAPSHOT]
    assert snapshot["files_skipped"] == 1 and "control characters" in snapshot["skipped_files"]
    assert lake_rows(skipping, "SELECT sum(id) FROM astronauts") == [(sum(range(20)),)]
