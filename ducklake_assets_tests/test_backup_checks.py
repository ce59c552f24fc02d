"""The ``static_backup`` asset, its checks, the restore job and the schedule, run through Dagster."""

from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from ducklake_assets.backup_assets import build_backup_definitions
from ducklake_assets.core.backup import backup_referenced_files, create_backup, list_backups
from ducklake_assets.core.catalog import DuckDBCatalog
from ducklake_assets.core.errors import ConfigurationError
from ducklake_assets.core.lake import LakeSettings
from ducklake_assets.core.restore import restore_backup
from ducklake_assets.core.s3 import S3Settings
from ducklake_assets.core.storage import ObjectStore
from ducklake_assets.resources import DuckLakeResource, S3Resource
from ducklake_assets_tests.backup_lakes import (
    NO_INLINING,
    fill,
    lake_settings,
    latest_snapshot,
    row_counts,
    run,
    settings_for_kind,
)
from ducklake_assets_tests.services import S3Bucket

BACKUP_KEY = dg.AssetKey(["lake", "static_backup"])


@dg.asset(key=["lake", "catalog_snapshot"])
def catalog_snapshot() -> None:
    """Stands in for the pipeline's catalog snapshot asset the backup depends on."""


def resource_for(settings: LakeSettings) -> DuckLakeResource:
    catalog = settings.catalog
    if catalog.kind == "postgres":
        return DuckLakeResource(catalog=f"postgres:{catalog.conninfo(with_password=True)}")
    return DuckLakeResource(catalog=f"{catalog.kind}:{catalog.path}", attach_options=dict(settings.attach_options))


def materialize(defs: dg.Definitions, resources: dict, *, checks_only: bool = False) -> dg.ExecuteInProcessResult:
    selection = dg.AssetSelection.checks_for_assets(BACKUP_KEY) if checks_only else None
    return dg.materialize(
        [catalog_snapshot, *defs.assets, *defs.asset_checks],
        resources=resources,
        selection=selection,
        raise_on_error=False,
    )


def checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def test_the_backup_asset_reports_what_it_wrote_and_every_check_passes(tmp_path: Path) -> None:
    settings = lake_settings("duckdb", tmp_path / "lake")
    fill(settings)
    defs = build_backup_definitions("lake", str(tmp_path / "backups"), keep=5)

    result = materialize(defs, {"ducklake": resource_for(settings)})

    assert result.success
    (materialization,) = [
        event.materialization
        for event in result.get_asset_materialization_events()
        if event.materialization.asset_key == BACKUP_KEY
    ]
    metadata = materialization.metadata
    assert metadata["snapshot_id"].value == 4
    assert metadata["snapshots_since_previous_backup"].value == "first backup"
    assert "| main.trips | 90 |" in metadata["tables"].value and "| main.stations | 7 |" in metadata["tables"].value
    assert metadata["dagster/row_count"].value == 97
    (backup,) = list_backups(str(tmp_path / "backups"), ObjectStore())
    assert metadata["backup_uri"].value == backup.uri
    assert metadata["size_bytes"].value == backup.size_bytes
    assert metadata["manifest"].value["catalog_kind"] == "duckdb"
    assert metadata["duration_seconds"].value > 0
    evaluations = checks(result)
    assert sorted(evaluations) == ["backup_files_exist", "backup_is_fresh", "backup_is_restorable"]
    assert all(evaluation.passed for evaluation in evaluations.values())
    assert evaluations["backup_is_fresh"].metadata["snapshots_behind"].value == 0
    assert "| main.trips | 90 | 90 | ok |" in evaluations["backup_is_restorable"].metadata["tables"].value
    assert evaluations["backup_files_exist"].metadata["referenced_files"].value == 3

    assert metadata["mode"].value == "full" and metadata["ducklake_format"].value == "1.0"
    assert metadata["files_copied"].value == 3 and metadata["files_reused"].value == 0
    assert metadata["bytes_copied"].value == sum(
        p.stat().st_size for p in (tmp_path / "backups" / "data").rglob("*.parquet")
    )
    assert metadata["backup_store_bytes"].value == sum(
        p.stat().st_size for p in (tmp_path / "backups").rglob("*") if p.is_file()
    )
    assert evaluations["backup_is_fresh"].metadata["backup_age_seconds"].value >= 0
    assert "the backup is" in evaluations["backup_is_fresh"].description
    assert evaluations["backup_files_exist"].metadata["checked_in"].value == "backup store"

    run(settings, "INSERT INTO trips VALUES (500, 'later')")
    second = materialize(defs, {"ducklake": resource_for(settings)})
    (event,) = [e for e in second.get_asset_materialization_events() if e.materialization.asset_key == BACKUP_KEY]
    assert event.materialization.metadata["snapshots_since_previous_backup"].value == 1
    assert event.materialization.metadata["files_copied"].value == 1, "only the new insert's file is copied"
    assert event.materialization.metadata["files_reused"].value == 3


def test_a_metadata_backup_copies_no_data_file_and_says_so(tmp_path: Path) -> None:
    settings = lake_settings("duckdb", tmp_path / "lake")
    fill(settings)
    defs = build_backup_definitions("lake", str(tmp_path / "backups"), mode="metadata")

    result = materialize(defs, {"ducklake": resource_for(settings)})

    (event,) = [e for e in result.get_asset_materialization_events() if e.materialization.asset_key == BACKUP_KEY]
    assert event.materialization.metadata["mode"].value == "metadata"
    assert "files_copied" not in event.materialization.metadata
    assert not (tmp_path / "backups" / "data").exists()
    assert checks(result)["backup_files_exist"].metadata["checked_in"].value == "data path"
    with pytest.raises(ConfigurationError, match="backup mode must be 'full'"):
        build_backup_definitions("lake", str(tmp_path / "backups"), mode="data")


def test_backup_is_fresh_fails_once_the_catalog_moves_on_unless_within_the_allowed_lag(tmp_path: Path) -> None:
    settings = lake_settings("duckdb", tmp_path / "lake")
    fill(settings)
    resources = {"ducklake": resource_for(settings)}
    strict = build_backup_definitions("lake", str(tmp_path / "backups"))
    assert materialize(strict, resources).success
    run(settings, "INSERT INTO trips VALUES (500, 'later')")
    run(settings, "INSERT INTO trips VALUES (501, 'later')")

    behind = checks(materialize(strict, resources, checks_only=True))["backup_is_fresh"]
    lenient = checks(
        materialize(
            build_backup_definitions("lake", str(tmp_path / "backups"), max_snapshot_lag=5), resources, checks_only=True
        )
    )["backup_is_fresh"]
    too_old = checks(
        materialize(
            build_backup_definitions(
                "lake", str(tmp_path / "backups"), max_snapshot_lag=5, max_age=timedelta(microseconds=1)
            ),
            resources,
            checks_only=True,
        )
    )["backup_is_fresh"]

    assert not behind.passed
    assert behind.metadata["snapshots_behind"].value == 2
    assert behind.metadata["backup_snapshot_id"].value == 4 and behind.metadata["catalog_snapshot_id"].value == 6
    assert "2 snapshot(s) behind" in behind.description
    assert lenient.passed
    assert not too_old.passed and too_old.metadata["seconds_waiting_for_backup"].value > 0


def test_backup_files_exist_names_a_copy_gone_from_the_backup_store(tmp_path: Path) -> None:
    settings = lake_settings("duckdb", tmp_path / "lake")
    fill(settings)
    defs = build_backup_definitions("lake", str(tmp_path / "backups"))
    resources = {"ducklake": resource_for(settings)}
    assert materialize(defs, resources).success
    deleted = next(
        path for path in backup_referenced_files(str(tmp_path / "backups"), ObjectStore()) if "/main/stations/" in path
    )
    Path(deleted).unlink()

    evaluations = checks(materialize(defs, resources, checks_only=True))

    files = evaluations["backup_files_exist"]
    assert not files.passed
    assert files.metadata["missing_files_count"].value == 1
    assert deleted in files.metadata["missing_files"].value
    assert deleted.startswith(str(tmp_path / "backups" / "data"))
    assert files.metadata["checked_in"].value == "backup store"
    assert "1 of 3 files the backup references are missing from or damaged in the backup store" in files.description
    # Row counts come from the catalog's metadata, so only backup_files_exist notices the lost file.
    assert evaluations["backup_is_restorable"].passed


def test_backup_is_restorable_fails_when_the_catalog_no_longer_matches_the_backup(tmp_path: Path) -> None:
    settings = lake_settings("duckdb", tmp_path / "lake")
    fill(settings)
    older_backups = str(tmp_path / "older-backups")
    create_backup(settings, older_backups, store=ObjectStore())
    run(settings, "INSERT INTO trips SELECT range, 'good data' FROM range(1000)")
    defs = build_backup_definitions("lake", str(tmp_path / "backups"))
    resources = {"ducklake": resource_for(settings)}
    assert materialize(defs, resources).success
    # Someone rolls the catalog back and commits different data under the same snapshot id.
    restore_backup(older_backups, settings, force=True, store=ObjectStore())
    run(settings, "INSERT INTO trips VALUES (1, 'different data')")
    assert latest_snapshot(settings) == 5

    restorable = checks(materialize(defs, resources, checks_only=True))["backup_is_restorable"]

    assert not restorable.passed
    assert "main.trips" in restorable.description
    assert "| main.trips | 1090 | 91 | row counts differ |" in restorable.metadata["tables"].value


def test_a_backup_to_s3_through_the_s3_resource_passes_its_checks(
    tmp_path: Path,
    s3_bucket: S3Bucket,
    s3_settings: S3Settings,
    s3_resource: S3Resource,
    request: pytest.FixtureRequest,
) -> None:
    settings = settings_for_kind(request, "postgres", tmp_path / "lake")
    fill(settings)
    defs = build_backup_definitions("lake", s3_bucket.uri("backups"), s3_resource_key="backup_s3", blocking=True)

    result = materialize(defs, {"ducklake": resource_for(settings), "backup_s3": s3_resource})

    assert result.success
    assert all(evaluation.passed for evaluation in checks(result).values())
    assert [info.snapshot_id for info in list_backups(s3_bucket.uri("backups"), ObjectStore(s3_settings))] == [4]
    text = "\n".join(str(event) for event in result.all_events)
    assert settings.catalog.password not in text
    assert s3_settings.aws_secret_access_key not in text


def test_a_metadata_backup_notices_objects_missing_from_an_s3_data_path(
    tmp_path: Path, s3_bucket: S3Bucket, s3_settings: S3Settings, s3_resource: S3Resource
) -> None:
    settings = LakeSettings(
        catalog=DuckDBCatalog(str(tmp_path / "lake.ducklake")),
        data_path=s3_bucket.uri("lake/"),
        attach_options=NO_INLINING,
        s3=s3_settings,
    )
    fill(settings)
    lake = DuckLakeResource(catalog=str(tmp_path / "lake.ducklake"), data_path=s3_bucket.uri("lake/"), s3=s3_resource)
    defs = build_backup_definitions("lake", str(tmp_path / "backups"), mode="metadata")
    first = materialize(defs, {"ducklake": lake})
    assert first.success and all(evaluation.passed for evaluation in checks(first).values())
    lost = next(
        path
        for path in backup_referenced_files(str(tmp_path / "backups"), ObjectStore())
        if "/main/trips/" in path and not path.endswith("-delete.parquet")
    )
    s3_bucket.client().delete_object(Bucket=s3_bucket.name, Key=lost.removeprefix(s3_bucket.uri()))

    files = checks(materialize(defs, {"ducklake": lake}, checks_only=True))["backup_files_exist"]

    assert not files.passed
    assert files.metadata["missing_files"].value == f"- `{lost}` (missing)"
    assert files.metadata["checked_in"].value == "data path"


def test_the_restore_job_is_a_dry_run_until_told_otherwise(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    settings = settings_for_kind(request, "postgres", tmp_path / "lake")
    fill(settings)
    backup_defs = build_backup_definitions("lake", str(tmp_path / "backups"))
    resources = {"ducklake": resource_for(settings)}
    assert materialize(backup_defs, resources).success
    run(settings, "INSERT INTO trips VALUES (500, 'after the backup')", message="late trip")
    job = dg.Definitions.merge(
        backup_defs, dg.Definitions(assets=[catalog_snapshot], resources=resources)
    ).resolve_job_def("lake_restore_catalog")

    def restore(**config) -> dg.ExecuteInProcessResult:
        run_config = {"ops": {"lake_restore_catalog_op": {"config": config}}}
        return job.execute_in_process(run_config=run_config, raise_on_error=False)

    dry = restore()
    assert dry.success and latest_snapshot(settings) == 5
    (output,) = [e for e in dry.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata
    assert metadata["dry_run"].value is True and metadata["restored"].value is False
    assert "| 5 |" in metadata["dropped_snapshots"].value and "late trip" in metadata["dropped_snapshots"].value

    refused = restore(dry_run=False)
    assert not refused.success and latest_snapshot(settings) == 5
    failure = next(e for e in refused.all_events if e.event_type_value == "STEP_FAILURE")
    assert "Refusing to restore snapshot 4" in str(failure.event_specific_data.error)

    forced = restore(dry_run=False, force=True)
    assert forced.success
    assert latest_snapshot(settings) == 4 and row_counts(settings)["main.trips"] == 90
    assert list_backups(str(tmp_path / "backups" / "safety"), ObjectStore())[0].snapshot_id == 5
    text = "\n".join(str(event) for run_result in (dry, refused, forced) for event in run_result.all_events)
    assert settings.catalog.password not in text


def test_the_definitions_carry_a_schedule_a_freshness_policy_and_refuse_bad_settings(tmp_path: Path) -> None:
    defs = build_backup_definitions(
        "lake", str(tmp_path / "backups"), backup_cron="15 2 * * *", freshness_fail_window=timedelta(hours=30)
    )

    dg.Definitions.validate_loadable(
        dg.Definitions.merge(
            defs,
            dg.Definitions(
                assets=[catalog_snapshot],
                resources={"ducklake": DuckLakeResource(catalog=str(tmp_path / "lake.ducklake"))},
            ),
        )
    )
    (schedule,) = defs.schedules
    assert schedule.name == "lake_static_backup_schedule" and schedule.cron_schedule == "15 2 * * *"
    (spec,) = defs.assets[0].specs
    assert spec.key == BACKUP_KEY
    assert spec.freshness_policy.fail_window.to_timedelta() == timedelta(hours=30)
    assert [dep.asset_key for dep in spec.deps] == [dg.AssetKey(["lake", "catalog_snapshot"])]
    assert defs.assets[0].op.pool == "lake_static_backup", "two backups of one store can be kept apart"
    assert build_backup_definitions("lake", str(tmp_path / "b")).schedules == []
    with pytest.raises(ConfigurationError, match="keep must be at least 1"):
        build_backup_definitions("lake", str(tmp_path / "b"), keep=0)
    with pytest.raises(ConfigurationError, match="max_snapshot_lag must be 0 or more"):
        build_backup_definitions("lake", str(tmp_path / "b"), max_snapshot_lag=-1)
