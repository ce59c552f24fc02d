"""Checks run in their asset's step: one process per backup or publication, not one per check."""

from pathlib import Path

import dagster as dg
import pytest

from ducklake_assets.backup_assets import build_backup_definitions
from ducklake_assets.core.backup import backup_referenced_files
from ducklake_assets.core.errors import ConfigurationError
from ducklake_assets.core.publish import verify_as_stranger
from ducklake_assets.core.storage import ObjectStore
from ducklake_assets.pipeline import with_automation
from ducklake_assets.publish_assets import build_publish_definitions
from ducklake_assets.resources import DuckLakeResource
from ducklake_assets_tests.backup_lakes import fill, lake_settings
from ducklake_assets_tests.services import S3Bucket

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


def backup_and_publish(tmp_path: Path, *, blocking: bool = False, mode: str = "full") -> dg.Definitions:
    backups = str(tmp_path / "backups")
    return dg.Definitions.merge(
        build_backup_definitions("lake", backups, blocking=blocking, mode=mode),
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
    defs = backup_and_publish(tmp_path, blocking=True, mode="metadata")
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


def frozen_lake_of_the_catalog(tmp_path: Path, *, self_contained: bool = False, s3: S3Bucket | None = None, **kwargs):
    """A frozen lake published from the catalog file (no backup), locally or to a moto S3 bucket."""
    publish_uri = s3.uri("public/lake.ducklake") if s3 else str(tmp_path / "public" / "lake.ducklake")
    resources = {"ducklake": lake(tmp_path), **({"s3": kwargs.pop("s3_resource")} if s3 else {})}
    return dg.Definitions.merge(
        build_publish_definitions(
            "lake", publish_uri, self_contained=self_contained, s3_resource_key="s3" if s3 else None
        ),
        dg.Definitions(assets=[catalog_snapshot], resources=resources),
    )


def materialized(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, object]:
    (event,) = [e for e in result.get_asset_materialization_events() if e.materialization.asset_key == key]
    return {name: value.value for name, value in event.materialization.metadata.items()}


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def test_after_an_up_to_date_publication_the_checks_read_the_frozen_lake_again(tmp_path: Path) -> None:
    defs = frozen_lake_of_the_catalog(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    assert run(defs, instance=instance).success
    lost = next(path for path in sorted((tmp_path / "lake" / "data").rglob("*.parquet")) if "stations" in str(path))
    lost.unlink()

    result = run(defs, instance=instance)

    assert result.success and materialized(result, FROZEN)["up_to_date"] is True, "the catalog did not change"
    opens = evaluations(result)["frozen_lake_opens_read_only"]
    assert not opens.passed, "a verification recorded by an earlier run says nothing about the files now"
    assert str(lost) in " ".join(opens.metadata["unreadable_files"].value)
    assert "verified_as_stranger" not in materialized(result, FROZEN), "nothing was verified before the checks"


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_self_contained_frozen_lake_missing_a_copied_file_is_published_again_by_the_asset(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    bucket = request.getfixturevalue("s3_bucket") if where == "s3" else None
    extra = {"s3_resource": request.getfixturevalue("s3_resource")} if bucket else {}
    defs = frozen_lake_of_the_catalog(tmp_path, self_contained=True, s3=bucket, **extra)
    store = ObjectStore(request.getfixturevalue("s3_settings")) if bucket else ObjectStore()
    files = bucket.uri("public/lake/") if bucket else str(tmp_path / "public" / "lake")
    publish_uri = bucket.uri("public/lake.ducklake") if bucket else str(tmp_path / "public" / "lake.ducklake")
    instance = dg.DagsterInstance.ephemeral()
    first = run(defs, instance=instance)
    assert first.success and all(evaluation.passed for evaluation in first.get_asset_check_evaluations())
    copies = [item.uri for item in store.list_prefix(files) if item.uri.endswith(".parquet")]
    lost = next(uri for uri in copies if "stations" in uri)
    if bucket:
        bucket.client().delete_object(Bucket=bucket.name, Key=lost.removeprefix(f"s3://{bucket.name}/"))
    else:
        Path(lost).unlink()
    assert not verify_as_stranger(publish_uri, store.s3).ok, "a reader fails: No such file"

    second = run(defs, instance=instance)

    assert second.success
    metadata = materialized(second, FROZEN)
    assert metadata["up_to_date"] is False and metadata["revision"] == 2
    assert metadata["files_copied"] == 1, "only the missing file is copied again"
    assert all(evaluation.passed for evaluation in second.get_asset_check_evaluations())
    assert verify_as_stranger(publish_uri, store.s3).ok


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_backup_asset_copies_back_a_data_file_deleted_from_its_store(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    bucket: S3Bucket | None = request.getfixturevalue("s3_bucket") if where == "s3" else None
    backups = bucket.uri("backups") if bucket else str(tmp_path / "backups")
    resources: dict[str, object] = {"ducklake": lake(tmp_path)}
    if bucket:
        resources["s3"] = request.getfixturevalue("s3_resource")
    defs = dg.Definitions.merge(
        build_backup_definitions("lake", backups, s3_resource_key="s3" if bucket else None),
        dg.Definitions(assets=[catalog_snapshot], resources=resources),
    )
    store = ObjectStore(request.getfixturevalue("s3_settings")) if bucket else ObjectStore()
    instance = dg.DagsterInstance.ephemeral()
    assert run(defs, instance=instance).success
    lost = next(path for path in backup_referenced_files(backups, store) if "trips" in path)
    if bucket:
        bucket.client().delete_object(Bucket=bucket.name, Key=lost.removeprefix(f"s3://{bucket.name}/"))
    else:
        Path(lost).unlink()

    result = run(defs, instance=instance)

    assert result.success
    metadata = materialized(result, BACKUP)
    assert metadata["up_to_date"] is False and metadata["files_copied"] == 1
    checks = evaluations(result)
    assert sorted(checks) == BACKUP_CHECKS and all(check.passed for check in checks.values()), checks
    assert store.exists(lost)


def test_force_in_the_run_config_backs_up_and_publishes_an_unchanged_lake(tmp_path: Path) -> None:
    defs = backup_and_publish(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    first = run(defs, instance=instance)
    unchanged = run(defs, instance=instance)
    assert materialized(unchanged, BACKUP)["up_to_date"] and materialized(unchanged, FROZEN)["up_to_date"]

    forced = dg.materialize(
        list(defs.assets),
        resources=defs.resources,
        instance=instance,
        run_config={
            "ops": {
                "lake__static_backup": {"config": {"force": True}},
                "lake__frozen_lake": {"config": {"force": True}},
            }
        },
    )

    assert forced.success
    backup, frozen = materialized(forced, BACKUP), materialized(forced, FROZEN)
    assert backup["up_to_date"] is False and backup["backup_uri"] != materialized(first, BACKUP)["backup_uri"]
    assert frozen["up_to_date"] is False and frozen["revision"] == materialized(first, FROZEN)["revision"] + 1
    assert all(evaluation.passed for evaluation in forced.get_asset_check_evaluations())
    graph = {key: a for a in defs.assets if isinstance(a, dg.AssetsDefinition) for key in a.keys}
    for key, sentence in [(BACKUP, "Write a new backup even when"), (FROZEN, "Publish a new revision even when")]:
        field = graph[key].op.config_schema.config_type.fields["force"]
        assert sentence in field.description and field.default_value is False


def test_a_lost_file_and_a_damaged_one_are_both_named_by_the_probe(tmp_path: Path) -> None:
    """One listing per folder names the lost file, halving the damaged one (no request per file)."""
    defs = frozen_lake_of_the_catalog(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    assert run(defs, instance=instance).success
    files = sorted((tmp_path / "lake" / "data").rglob("*.parquet"))
    lost, damaged = files[0], files[-1]
    lost.unlink()
    damaged.write_bytes(b"PAR1 not a parquet file any more PAR1")

    result = run(defs, instance=instance)

    named = " ".join(evaluations(result)["frozen_lake_opens_read_only"].metadata["unreadable_files"].value)
    assert str(lost) in named and str(damaged) in named
