"""Checks run in their asset's step: one process per backup or publication, not one per check."""

from pathlib import Path

import dagster as dg
import pytest

from ducklake_assets.backup_assets import build_backup_definitions
from ducklake_assets.core.backup import backup_referenced_files
from ducklake_assets.core.errors import ConfigurationError
from ducklake_assets.core.storage import ObjectStore
from ducklake_assets.pipeline import with_automation
from ducklake_assets.publish_assets import build_publish_definitions
from ducklake_assets.resources import DuckLakeResource
from ducklake_assets_tests.backup_lakes import fill, lake_settings

SNAPSHOT = dg.AssetKey(["lake", "catalog_snapshot"])
BACKUP = dg.AssetKey(["lake", "static_backup"])
FROZEN = dg.AssetKey(["lake", "frozen_lake"])
BACKUP_CHECKS = ["backup_files_exist", "backup_is_fresh", "backup_is_restorable"]


@dg.asset(key=SNAPSHOT)
def catalog_snapshot() -> None:
    """Stands in for the pipeline's catalog snapshot asset."""


@dg.asset(key=["lake", "trips"])
def trips() -> None:
    """Stands in for a table asset that writes the lake."""


def lake(tmp_path: Path) -> DuckLakeResource:
    settings = lake_settings("duckdb", tmp_path / "lake")
    fill(settings)
    return DuckLakeResource(
        catalog=settings.catalog.path, data_path=settings.data_path, attach_options=dict(settings.attach_options)
    )


def backup_and_publish(tmp_path: Path, *, blocking: bool = False) -> dg.Definitions:
    backups = str(tmp_path / "backups")
    return dg.Definitions.merge(
        build_backup_definitions("lake", backups, blocking=blocking),
        build_publish_definitions("lake", str(tmp_path / "public" / "lake.ducklake"), backup_uri=backups),
        dg.Definitions(assets=[catalog_snapshot], resources={"ducklake": lake(tmp_path)}),
    )


def run(defs: dg.Definitions, selection=None, instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        list(defs.assets),
        resources=defs.resources,
        selection=selection,
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def step_of(result: dg.ExecuteInProcessResult, event_type: str) -> dict[str, str]:
    """Which step reported each materialization or check evaluation, keyed by asset key or check name."""
    steps = {}
    for event in result.all_events:
        if event.event_type_value != event_type:
            continue
        data = event.event_specific_data
        name = data.materialization.asset_key if event_type == "ASSET_MATERIALIZATION" else data.check_name
        steps[name if isinstance(name, str) else name.to_user_string()] = event.step_key
    return steps


def test_one_backup_runs_its_three_checks_in_its_own_step(tmp_path: Path) -> None:
    defs = backup_and_publish(tmp_path)

    result = run(defs, selection=[SNAPSHOT, BACKUP])

    assert result.success
    materialized = step_of(result, "ASSET_MATERIALIZATION")
    checked = step_of(result, "ASSET_CHECK_EVALUATION")
    assert sorted(checked) == BACKUP_CHECKS
    assert set(checked.values()) == {materialized["lake/static_backup"]}, "the checks ran in the backup's step"
    started = [event.step_key for event in result.all_events if event.event_type_value == "STEP_START"]
    assert sorted(started) == ["lake__catalog_snapshot", "lake__static_backup"], "no step per check"


def test_a_publication_runs_its_checks_in_its_own_step(tmp_path: Path) -> None:
    result = run(backup_and_publish(tmp_path))

    assert result.success
    checked = step_of(result, "ASSET_CHECK_EVALUATION")
    materialized = step_of(result, "ASSET_MATERIALIZATION")
    assert checked["frozen_lake_opens_read_only"] == checked["frozen_lake_matches_catalog"]
    assert checked["frozen_lake_opens_read_only"] == materialized["lake/frozen_lake"]
    assert len({event.step_key for event in result.all_events if event.event_type_value == "STEP_START"}) == 3


def test_checks_run_alone_without_backing_up_or_publishing_again(tmp_path: Path) -> None:
    defs = backup_and_publish(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    assert run(defs, instance=instance).success
    before = sorted((path, path.stat().st_mtime_ns) for path in tmp_path.glob("[bp]*/**/*") if path.is_file())
    check_keys = [key for key in defs.resolve_asset_graph().asset_check_keys if key.asset_key == BACKUP]
    job = dg.Definitions.merge(
        defs, dg.Definitions(jobs=[dg.define_asset_job("checks_only", selection=dg.AssetSelection.checks(*check_keys))])
    ).resolve_job_def("checks_only")

    from_ui = job.execute_in_process(instance=instance)
    frozen_checks = run(defs, selection=dg.AssetSelection.checks_for_assets(FROZEN), instance=instance)

    assert from_ui.success and frozen_checks.success
    assert from_ui.get_asset_materialization_events() == []
    assert frozen_checks.get_asset_materialization_events() == []
    assert sorted(step_of(from_ui, "ASSET_CHECK_EVALUATION")) == BACKUP_CHECKS
    assert sorted(step_of(frozen_checks, "ASSET_CHECK_EVALUATION")) == [
        "frozen_lake_matches_catalog",
        "frozen_lake_opens_read_only",
    ]
    assert all(evaluation.passed for evaluation in from_ui.get_asset_check_evaluations())
    assert all(evaluation.passed for evaluation in frozen_checks.get_asset_check_evaluations())
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.glob("[bp]*/**/*") if p.is_file()) == before
    (only,) = [key for key in check_keys if key.name == "backup_is_fresh"]
    one = dg.materialize(
        list(defs.assets), resources=defs.resources, instance=instance, selection=dg.AssetSelection.checks(only)
    )
    assert [evaluation.check_name for evaluation in one.get_asset_check_evaluations()] == ["backup_is_fresh"]


def test_a_failing_blocking_check_stops_the_publication_in_the_same_run(tmp_path: Path) -> None:
    defs = backup_and_publish(tmp_path, blocking=True)
    instance = dg.DagsterInstance.ephemeral()
    assert run(defs, selection=[SNAPSHOT, BACKUP], instance=instance).success
    lost = next(path for path in backup_referenced_files(str(tmp_path / "backups"), ObjectStore()) if "trips" in path)
    Path(lost).unlink()

    result = run(defs, instance=instance)

    assert not result.success
    evaluations = {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}
    assert not evaluations["backup_files_exist"].passed and evaluations["backup_files_exist"].blocking
    assert lost in evaluations["backup_files_exist"].metadata["missing_files"].value
    assert "lake/frozen_lake" not in step_of(result, "ASSET_MATERIALIZATION")
    started = {event.step_key for event in result.all_events if event.event_type_value == "STEP_START"}
    assert started == {"lake__catalog_snapshot", "lake__static_backup"}, "the publication's step never started"
    assert not (tmp_path / "public").exists(), "nothing was published from a backup that failed its checks"


def test_every_check_says_what_it_checks_and_the_specs_keep_their_settings(tmp_path: Path) -> None:
    defs = backup_and_publish(tmp_path, blocking=True)
    graph = defs.resolve_asset_graph()

    checks = {key.name: graph.get(key) for key in graph.asset_check_keys}

    assert sorted(checks) == [*BACKUP_CHECKS, "frozen_lake_matches_catalog", "frozen_lake_opens_read_only"]
    assert all(check.description and len(check.description) > 40 for check in checks.values())
    assert {check.blocking for key, check in checks.items() if key.startswith("backup")} == {True}
    backup, frozen = graph.get(BACKUP), graph.get(FROZEN)
    assert backup.kinds == {"duckdb"} and frozen.kinds == {"ducklake"}
    assert backup.freshness_policy is not None and "Static backup (full)" in backup.description
    assert graph.get(BACKUP).parent_keys == {SNAPSHOT} and graph.get(FROZEN).parent_keys == {BACKUP}
    (backup_def,) = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and BACKUP in a.keys]
    assert backup_def.op.pool == "lake_static_backup" and backup_def.can_subset


def test_automation_conditions_set_by_the_pipeline_reach_the_multi_assets(tmp_path: Path) -> None:
    condition = dg.AutomationCondition.eager()
    backups = str(tmp_path / "backups")
    defs = dg.Definitions.merge(
        with_automation(build_backup_definitions("lake", backups), condition),
        with_automation(
            build_publish_definitions("lake", str(tmp_path / "public" / "lake.ducklake"), backup_uri=backups), condition
        ),
        dg.Definitions(assets=[catalog_snapshot], resources={"ducklake": lake(tmp_path)}),
    )
    graph = defs.resolve_asset_graph()
    assert graph.get(BACKUP).automation_condition == condition
    assert graph.get(FROZEN).automation_condition == condition
    instance = dg.DagsterInstance.ephemeral()
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)

    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=SNAPSHOT))
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)

    assert after.get_num_requested(BACKUP) == 1 and after.get_num_requested(FROZEN) == 1


def test_backups_and_publications_depend_on_every_lake_writer(tmp_path: Path) -> None:
    writers = [SNAPSHOT, "trips_report", ["lake", "trips"]]
    backup = build_backup_definitions("lake", str(tmp_path / "b"), upstream_keys=writers)
    catalog_publication = build_publish_definitions("lake", str(tmp_path / "p.ducklake"), upstream_keys=writers)
    backup_publication = build_publish_definitions(
        "lake", str(tmp_path / "p.ducklake"), backup_uri=str(tmp_path / "b"), upstream_keys=writers
    )
    named = build_publish_definitions("lake", str(tmp_path / "p.ducklake"), upstream_key=dg.AssetKey(["x", "y"]))

    def deps(defs: dg.Definitions) -> list[dg.AssetKey]:
        (spec,) = defs.assets[0].specs
        return [dep.asset_key for dep in spec.deps]

    expected = [SNAPSHOT, dg.AssetKey("trips_report"), dg.AssetKey(["lake", "trips"])]
    assert deps(backup) == deps(catalog_publication) == expected
    assert deps(backup_publication) == [BACKUP]
    assert deps(named) == [dg.AssetKey(["x", "y"])]
    assert deps(build_backup_definitions("lake", str(tmp_path / "b"))) == [SNAPSHOT]
    with pytest.raises(ConfigurationError, match="upstream_keys must be a list of asset keys"):
        build_backup_definitions("lake", str(tmp_path / "b"), upstream_keys="lake/catalog_snapshot")
    with pytest.raises(ConfigurationError, match="not both"):
        build_publish_definitions("lake", str(tmp_path / "p.ducklake"), upstream_key=SNAPSHOT, upstream_keys=writers)
