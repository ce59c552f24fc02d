"""Dagster definitions for static backups: the ``static_backup`` asset, its three checks, a restore job
and a schedule. How a backup is made lives in ``core/backup.py`` and ``core/restore.py``; this module
only turns it into assets and reports it.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from .core.backup import (
    BackupMode,
    BackupResult,
    backup_lag,
    check_backup_files,
    check_backup_restorable,
    check_mode,
    check_retention,
    create_backup,
    latest_backup,
)
from .core.errors import ConfigurationError, DuckLakeAssetsError
from .core.restore import RestoreResult, restore_backup
from .core.storage import ObjectStore, join_uri
from .metadata import markdown_table
from .resources import lake_and_store

_LISTED_FILES = 50


def _human(duration: timedelta) -> str:
    """``timedelta(seconds=5400)`` -> ``'1h 30m'``: how old a backup is, for a person."""
    seconds = int(duration.total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours) + [f"{minutes}m"] * bool(minutes)
    return " ".join(parts[:2]) or f"{seconds}s"


class RestoreCatalogConfig(dg.Config):
    """Which backup to restore into the pipeline's catalog, and how carefully."""

    backup: str = Field(
        default="latest",
        description="'latest', or the URI of one versioned backup (see the static_backup asset's metadata).",
    )
    dry_run: bool = Field(
        default=True,
        description="Only report what the restore would do, including the snapshots it would drop.",
    )
    force: bool = Field(
        default=False,
        description="Restore even though the catalog has snapshots the backup lacks (they are dropped).",
    )


def _backup_metadata(result: BackupResult) -> dict[str, object]:
    manifest = result.manifest
    rows = result.table_rows or {}
    metadata: dict[str, object] = {
        "mode": manifest.mode,
        "ducklake_format": manifest.ducklake_version,
        "snapshot_id": manifest.snapshot_id,
        "snapshot_time": dg.MetadataValue.timestamp(manifest.snapshot_time),
        "snapshots_since_previous_backup": dg.MetadataValue.int(result.snapshots_since_previous)
        if result.snapshots_since_previous is not None
        else dg.MetadataValue.text("first backup"),
        "size_bytes": dg.MetadataValue.int(result.backup.size_bytes),
        "duration_seconds": dg.MetadataValue.float(round(result.duration_seconds, 3)),
        "tables": dg.MetadataValue.md(markdown_table(["table", "rows"], [[name, n] for name, n in rows.items()])),
        "dagster/row_count": sum(rows.values()),
        "backup_uri": dg.MetadataValue.path(result.backup.uri),
        "latest_uri": dg.MetadataValue.path(result.latest_uri),
        "catalog": manifest.catalog,
        "manifest": dg.MetadataValue.json(manifest.to_dict()),
    }
    if result.files is not None:
        metadata |= {
            "files_copied": dg.MetadataValue.int(len(result.files.copied)),
            "bytes_copied": dg.MetadataValue.int(result.files.bytes_copied),
            "files_reused": dg.MetadataValue.int(len(result.files.reused)),
            "bytes_reused": dg.MetadataValue.int(result.files.bytes_reused),
            "files_removed_by_retention": dg.MetadataValue.int(result.removed_files),
        }
    if result.store_bytes is not None:
        metadata["backup_store_bytes"] = dg.MetadataValue.int(result.store_bytes)
    if result.removed:
        metadata["removed_by_retention"] = dg.MetadataValue.md("\n".join(f"- {info.uri}" for info in result.removed))
    return metadata


def _restore_metadata(result: RestoreResult) -> dict[str, object]:
    dropped = [
        [s.snapshot_id, s.snapshot_time.isoformat(), s.author, s.commit_message] for s in result.dropped_snapshots
    ]
    metadata: dict[str, object] = {
        "backup_uri": dg.MetadataValue.path(result.backup_uri),
        "snapshot_id": result.snapshot_id,
        "catalog": result.target,
        "dry_run": result.dry_run,
        "restored": result.restored,
        "catalog_latest_snapshot_before": dg.MetadataValue.int(result.catalog_latest_snapshot)
        if result.catalog_latest_snapshot is not None
        else dg.MetadataValue.text("no catalog"),
        "dropped_snapshots": dg.MetadataValue.md(
            markdown_table(["snapshot", "time", "author", "message"], dropped) if dropped else "none"
        ),
        "mode": result.mode,
    }
    if result.data_path is not None:
        metadata |= {
            "data_path": dg.MetadataValue.path(result.data_path),
            "files_to_copy": dg.MetadataValue.int(result.files_to_copy),
            "bytes_to_copy": dg.MetadataValue.int(result.bytes_to_copy),
        }
    if result.safety_backup is not None:
        metadata["safety_backup_uri"] = dg.MetadataValue.path(result.safety_backup.backup.uri)
    return metadata


def build_backup_definitions(
    name: str,
    backup_uri: str,
    *,
    lake_resource_key: str = "ducklake",
    s3_resource_key: str | None = None,
    mode: BackupMode = "full",
    keep_last: int | None = None,
    keep_within: timedelta | None = None,
    storage_version: str | None = None,
    max_snapshot_lag: int = 0,
    max_age: timedelta | None = None,
    blocking: bool = False,
    backup_cron: str | None = None,
    schedule_default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.RUNNING,
    freshness_fail_window: timedelta | None = timedelta(hours=26),
    freshness_warn_window: timedelta | None = None,
    group_name: str | None = None,
    pool: str | None = None,
) -> dg.Definitions:
    """Static backups of the lake behind resource ``lake_resource_key`` (a ``DuckLakeResource``).

    Creates asset ``[name, "static_backup"]`` (downstream of ``[name, "catalog_snapshot"]``) that writes a
    backup under ``backup_uri`` (a folder or ``s3://bucket/prefix``, reached through the ``S3Resource``
    ``s3_resource_key``, else the lake's own S3 settings), keeping ``keep_last`` backups and/or those younger
    than ``keep_within``; ``storage_version`` is the DuckDB storage version of the file (default DuckDB's).
    ``mode`` is ``"full"`` (the catalog and a copy of every data file it references, incrementally) or
    ``"metadata"`` (the catalog only). The asset runs in the concurrency pool ``pool`` (default
    ``<name>_static_backup``): give it a limit of 1 (``dagster instance concurrency set
    <name>_static_backup 1``) so two backups never share the store at once.

    Checks: ``backup_is_fresh`` passes when the backup holds the catalog's latest snapshot, or lags by at
    most ``max_snapshot_lag`` snapshots none of which waited longer than ``max_age``;
    ``backup_is_restorable``; ``backup_files_exist``. ``blocking`` makes failing checks stop downstream
    assets in the same run. Also a job ``<name>_restore_catalog`` (config: backup, dry_run, force), a
    schedule ``<name>_static_backup_schedule`` when ``backup_cron`` is set (status
    ``schedule_default_status``, RUNNING: a schedule you configure is one you want to run), and a freshness policy.
    """
    check_mode(mode)
    check_retention(keep_last, keep_within)
    if not isinstance(max_snapshot_lag, int) or max_snapshot_lag < 0:
        raise ConfigurationError(f"max_snapshot_lag must be 0 or more snapshots (got {max_snapshot_lag!r})")
    if max_age is not None and max_age <= timedelta(0):
        raise ConfigurationError(f"max_age must be a positive duration (got {max_age})")
    backup_key = dg.AssetKey([name, "static_backup"])
    resource_keys = {lake_resource_key} | ({s3_resource_key} if s3_resource_key else set())

    freshness = (
        dg.FreshnessPolicy.time_window(fail_window=freshness_fail_window, warn_window=freshness_warn_window)
        if freshness_fail_window
        else None
    )

    @dg.asset(
        key=backup_key,
        pool=pool or f"{name}_static_backup",
        deps=[dg.AssetKey([name, "catalog_snapshot"])],
        required_resource_keys=resource_keys,
        freshness_policy=freshness,
        group_name=group_name,
        kinds={"duckdb"},
        description=(
            f"Static backup ({mode}) of the DuckLake under {backup_uri}: "
            + (
                "the catalog and a copy of every data file it references. "
                if mode == "full"
                else "the catalog only; it reads the lake's own data files. "
            )
            + "Open the newest with `ATTACH 'ducklake:latest.ducklake' AS backup (READ_ONLY)` in that folder."
        ),
    )
    def static_backup(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        settings, store = lake_and_store(context.resources, lake_resource_key, s3_resource_key)
        result = create_backup(
            settings,
            backup_uri,
            mode=mode,
            store=store,
            keep_last=keep_last,
            keep_within=keep_within,
            storage_version=storage_version,
            count_rows=True,
        )
        copied = (
            f"; copied {len(result.files.copied)} data file(s) ({result.files.bytes_copied} bytes), reused "
            f"{len(result.files.reused)} already in the store"
            if result.files is not None
            else ""
        )
        context.log.info(
            f"Backed up snapshot {result.manifest.snapshot_id} of {result.manifest.catalog} to {result.backup.uri}"
            + copied
        )
        return dg.MaterializeResult(
            metadata=_backup_metadata(result), data_version=dg.DataVersion(str(result.manifest.snapshot_id))
        )

    @dg.asset_check(asset=backup_key, name="backup_is_fresh", blocking=blocking, required_resource_keys=resource_keys)
    def backup_is_fresh(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        settings, store = lake_and_store(context.resources, lake_resource_key, s3_resource_key)
        latest = latest_backup(backup_uri, store)
        if latest is None:
            return dg.AssetCheckResult(passed=False, description=f"No backup under {backup_uri} yet.")
        lag = backup_lag(settings, latest.snapshot_id)
        now = datetime.now(UTC)
        waited = now - lag.oldest_missing_time if lag.oldest_missing_time else timedelta(0)
        age = now - latest.created_at
        passed = lag.snapshots_behind == 0 or (
            lag.snapshots_behind <= max_snapshot_lag and (max_age is None or waited <= max_age)
        )
        allowed = f"allowed: {max_snapshot_lag} snapshot(s)" + (f" waiting at most {max_age}" if max_age else "")
        return dg.AssetCheckResult(
            passed=passed,
            description=(
                f"Backup holds snapshot {lag.backup_snapshot_id}, the catalog is at {lag.catalog_snapshot_id}: "
                f"{lag.snapshots_behind} snapshot(s) behind; the backup is {_human(age)} old"
                + (f", oldest un-backed-up change committed {waited} ago" if lag.oldest_missing_time else "")
                + f" ({allowed})."
            ),
            metadata={
                "backup_snapshot_id": lag.backup_snapshot_id,
                "catalog_snapshot_id": lag.catalog_snapshot_id,
                "snapshots_behind": lag.snapshots_behind,
                "seconds_waiting_for_backup": dg.MetadataValue.float(round(waited.total_seconds(), 3)),
                "backup_age_seconds": dg.MetadataValue.float(round(age.total_seconds(), 3)),
                "backup_created_at": dg.MetadataValue.timestamp(latest.created_at),
                "backup_uri": dg.MetadataValue.path(latest.uri),
            },
        )

    @dg.asset_check(
        asset=backup_key, name="backup_is_restorable", blocking=blocking, required_resource_keys=resource_keys
    )
    def backup_is_restorable(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        settings, store = lake_and_store(context.resources, lake_resource_key, s3_resource_key)
        try:
            report = check_backup_restorable(backup_uri, settings, store)
        except DuckLakeAssetsError as error:
            return dg.AssetCheckResult(passed=False, description=f"The latest backup cannot be opened: {error}")
        rows = [
            [t.table, t.backup_rows, t.catalog_rows, "ok" if t.matches else (t.error or "row counts differ")]
            for t in report.tables
        ]
        differing = [t.table for t in report.tables if not t.matches]
        return dg.AssetCheckResult(
            passed=report.passed,
            description=(
                f"All {len(report.tables)} tables of the backup match the catalog at snapshot {report.snapshot_id}."
                if report.passed
                else f"{len(differing)} table(s) differ from the catalog at snapshot {report.snapshot_id}: "
                + ", ".join(differing)
            ),
            metadata={
                "snapshot_id": report.snapshot_id,
                "backup_uri": dg.MetadataValue.path(report.backup_uri),
                "tables": dg.MetadataValue.md(markdown_table(["table", "backup rows", "catalog rows", "result"], rows)),
                "tables_differing": len(differing),
            },
        )

    @dg.asset_check(
        asset=backup_key, name="backup_files_exist", blocking=blocking, required_resource_keys=resource_keys
    )
    def backup_files_exist(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        settings, store = lake_and_store(context.resources, lake_resource_key, s3_resource_key)
        try:
            report = check_backup_files(backup_uri, store, ObjectStore(settings.s3))
        except DuckLakeAssetsError as error:
            return dg.AssetCheckResult(passed=False, description=f"Could not check the backup's files: {error}")
        problems = [(path, "missing") for path in report.missing] + [(path, "size differs") for path in report.damaged]
        listed = problems[:_LISTED_FILES]
        more = len(problems) - len(listed)
        where = "the backup store" if report.location == "backup store" else "the lake's storage"
        return dg.AssetCheckResult(
            passed=report.ok,
            description=(
                f"All {report.referenced} data and delete files of the backup at snapshot {report.snapshot_id} are in "
                f"{where}."
                if report.ok
                else f"{len(problems)} of {report.referenced} files the backup references are missing from or "
                f"damaged in {where}"
                + (" (deleted by cleanup?)" if report.location != "backup store" else "")
                + "; restoring this backup would fail to read them."
            ),
            metadata={
                "snapshot_id": report.snapshot_id,
                "backup_uri": dg.MetadataValue.path(report.backup_uri),
                "mode": report.mode,
                "checked_in": report.location,
                "referenced_files": report.referenced,
                "missing_files_count": len(report.missing),
                "damaged_files_count": len(report.damaged),
                "missing_files": dg.MetadataValue.md(
                    "\n".join(f"- `{path}` ({why})" for path, why in listed)
                    + (f"\n- ... and {more} more" if more else "")
                    if listed
                    else "none"
                ),
            },
        )

    @dg.op(name=f"{name}_restore_catalog_op", required_resource_keys=resource_keys)
    def restore_catalog(context: dg.OpExecutionContext, config: RestoreCatalogConfig) -> None:
        settings, store = lake_and_store(context.resources, lake_resource_key, s3_resource_key)
        source = backup_uri if config.backup == "latest" else config.backup
        result = restore_backup(
            source,
            settings,
            dry_run=config.dry_run,
            force=config.force,
            store=store,
            safety_backup_uri=join_uri(backup_uri, "safety"),
        )
        context.log.info(result.summary())
        context.add_output_metadata(_restore_metadata(result))

    @dg.job(
        name=f"{name}_restore_catalog",
        description="Restore a static backup into the catalog. Dry run by default; see the restore runbook.",
    )
    def restore_job() -> None:
        restore_catalog()

    schedules = []
    if backup_cron:
        schedules.append(
            dg.ScheduleDefinition(
                name=f"{name}_static_backup_schedule",
                cron_schedule=backup_cron,
                target=dg.AssetSelection.assets(backup_key),
                default_status=schedule_default_status,
            )
        )
    return dg.Definitions(
        assets=[static_backup],
        asset_checks=[backup_is_fresh, backup_is_restorable, backup_files_exist],
        jobs=[restore_job],
        schedules=schedules,
    )
