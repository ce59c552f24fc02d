"""Dagster definitions for static backups: the ``static_backup`` asset with its three checks (one step),
a restore job and a schedule. How a backup is made lives in ``core/backup/`` and ``core/restore.py``; this module
only turns it into assets and reports it.
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
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
from .core.lake import LakeSettings
from .core.restore import RestoreResult, restore_backup
from .core.storage import ObjectStore, join_uri
from .metadata import Metadata, markdown_table
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


class StaticBackupConfig(dg.Config):
    """Run config of the ``static_backup`` asset (launchpad); automation runs and schedules use the defaults."""

    force: bool = Field(
        default=False,
        description="Write a new backup even when the newest one already holds the catalog's latest snapshot.",
    )


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


def _backup_metadata(result: BackupResult) -> Metadata:
    manifest = result.manifest
    metadata: Metadata = {
        "up_to_date": result.up_to_date,
        "mode": manifest.mode,
        "ducklake_format": manifest.ducklake_version,
        "snapshot_id": manifest.snapshot_id,
        "snapshot_time": dg.MetadataValue.timestamp(manifest.snapshot_time),
        "snapshots_since_previous_backup": dg.MetadataValue.int(result.snapshots_since_previous)
        if result.snapshots_since_previous is not None
        else dg.MetadataValue.text("first backup"),
        "size_bytes": dg.MetadataValue.int(result.backup.size_bytes),
        "duration_seconds": dg.MetadataValue.float(round(result.duration_seconds, 3)),
        "backup_uri": dg.MetadataValue.path(result.backup.uri),
        "latest_uri": dg.MetadataValue.path(result.latest_uri),
        "catalog": manifest.catalog,
        "manifest": dg.MetadataValue.json(manifest.to_dict()),
    }
    if result.table_rows is not None:
        rows = result.table_rows
        metadata |= {
            "tables": dg.MetadataValue.md(markdown_table(["table", "rows"], [[name, n] for name, n in rows.items()])),
            "dagster/row_count": sum(rows.values()),
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


def backup_is_fresh(
    key: dg.AssetCheckKey,
    settings: LakeSettings,
    store: ObjectStore,
    backup_uri: str,
    max_snapshot_lag: int = 0,
    max_age: timedelta | None = None,
) -> dg.AssetCheckResult:
    """Whether the newest backup holds the catalog's latest snapshot, or lags by at most ``max_snapshot_lag``
    snapshots none of which waited longer than ``max_age``."""
    latest = latest_backup(backup_uri, store)
    if latest is None:
        return _result(key, passed=False, description=f"No backup under {backup_uri} yet.")
    lag = backup_lag(settings, latest.snapshot_id)
    now = datetime.now(UTC)
    waited = now - lag.oldest_missing_time if lag.oldest_missing_time else timedelta(0)
    age = now - latest.created_at
    passed = lag.snapshots_behind == 0 or (
        lag.snapshots_behind <= max_snapshot_lag and (max_age is None or waited <= max_age)
    )
    allowed = f"allowed: {max_snapshot_lag} snapshot(s)" + (f" waiting at most {max_age}" if max_age else "")
    return _result(
        key,
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


def backup_is_restorable(
    key: dg.AssetCheckKey, settings: LakeSettings, store: ObjectStore, backup_uri: str
) -> dg.AssetCheckResult:
    """Whether the newest backup opens read-only and every table's row count equals the catalog's at its snapshot."""
    try:
        report = check_backup_restorable(backup_uri, settings, store)
    except DuckLakeAssetsError as error:
        return _result(key, passed=False, description=f"The latest backup cannot be opened: {error}")
    rows = [
        [t.table, t.backup_rows, t.catalog_rows, "ok" if t.matches else (t.error or "row counts differ")]
        for t in report.tables
    ]
    differing = [t.table for t in report.tables if not t.matches]
    return _result(
        key,
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


def backup_files_exist(
    key: dg.AssetCheckKey, settings: LakeSettings, store: ObjectStore, backup_uri: str
) -> dg.AssetCheckResult:
    """Whether every data and delete file the newest backup references is where it should be."""
    try:
        report = check_backup_files(backup_uri, store, ObjectStore(settings.s3))
    except DuckLakeAssetsError as error:
        return _result(key, passed=False, description=f"Could not check the backup's files: {error}")
    problems = [(path, "missing") for path in report.missing] + [(path, "size differs") for path in report.damaged]
    listed = problems[:_LISTED_FILES]
    more = len(problems) - len(listed)
    where = "the backup store" if report.location == "backup store" else "the lake's storage"
    return _result(
        key,
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
                "\n".join(f"- `{path}` ({why})" for path, why in listed) + (f"\n- ... and {more} more" if more else "")
                if listed
                else "none"
            ),
        },
    )


def _row_counts_of_latest(
    context: dg.AssetExecutionContext, key: dg.AssetKey, snapshot_id: int
) -> dict[str, dg.MetadataValue]:
    """The row counts the last materialization reported, when it holds the same snapshot: an up-to-date backup
    counts nothing, yet its row count belongs in the asset's history."""
    event = context.instance.get_latest_materialization_event(key)
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    recorded = metadata.get("snapshot_id")
    if recorded is None or recorded.value != snapshot_id:
        return {}
    return {name: metadata[name] for name in ("tables", "dagster/row_count") if name in metadata}


def _result(
    key: dg.AssetCheckKey, *, passed: bool, description: str, metadata: Metadata | None = None
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=key.asset_key, check_name=key.name, passed=passed, description=description, metadata=metadata
    )


def upstream_asset_keys(
    upstream_keys: Sequence[dg.AssetKey | str | Sequence[str]] | None, default: Sequence[str]
) -> list[dg.AssetKey]:
    """``upstream_keys`` (each an ``AssetKey``, a one-part name or a sequence of parts) as asset keys;
    ``[default]`` when it is ``None``."""
    if upstream_keys is None:
        return [dg.AssetKey(list(default))]
    if isinstance(upstream_keys, str | dg.AssetKey):
        raise ConfigurationError(
            f"upstream_keys must be a list of asset keys, got {upstream_keys!r}: wrap it in a list"
        )
    return [dg.AssetKey.from_coercible(key) for key in upstream_keys]


def run_checks(
    context: dg.AssetExecutionContext,
    checks: Mapping[dg.AssetCheckKey, Callable[[], dg.AssetCheckResult]],
) -> Iterator[dg.AssetCheckResult]:
    """Evaluate the checks this step was asked for, in order. A check that cannot be evaluated fails with the
    reason instead of failing the step, so the other checks still report."""
    for key, evaluate in checks.items():
        if key not in context.selected_asset_check_keys:
            continue
        try:
            yield evaluate()
        except DuckLakeAssetsError as error:
            yield _result(key, passed=False, description=f"The check could not be evaluated: {error}")


def _restore_metadata(result: RestoreResult) -> Metadata:
    dropped = [
        [s.snapshot_id, s.snapshot_time.isoformat(), s.author, s.commit_message] for s in result.dropped_snapshots
    ]
    metadata: Metadata = {
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
    keep: int | None = None,
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
    upstream_keys: Sequence[dg.AssetKey | str | Sequence[str]] | None = None,
) -> dg.Definitions:
    """Static backups of the lake behind resource ``lake_resource_key`` (a ``DuckLakeResource``).

    Creates asset ``[name, "static_backup"]`` (downstream of ``upstream_keys``: every asset that writes to
    the lake, default ``[[name, "catalog_snapshot"]]``; each an ``AssetKey``, a name or a list of parts) that
    writes a backup under ``backup_uri`` (a folder or ``s3://bucket/prefix``, reached through the ``S3Resource``
    ``s3_resource_key``, else the lake's own S3 settings), keeping ``keep`` backups and/or those younger
    than ``keep_within``; ``storage_version`` is the DuckDB storage version of the file (default DuckDB's).
    ``mode`` is ``"full"`` (the catalog and a copy of every data file it references, incrementally) or
    ``"metadata"`` (the catalog only). The asset runs in the concurrency pool ``pool`` (default
    ``<name>_static_backup``): give it a limit of 1 (``dagster instance concurrency set
    <name>_static_backup 1``) so two backups never share the store at once. When the newest backup already
    holds the catalog's latest snapshot (and, for a full backup, the store still holds its files) nothing is
    written: the materialization says ``up_to_date``. The run config ``force`` (:class:`StaticBackupConfig`)
    writes a new backup anyway.

    Checks, evaluated in the asset's own step right after the backup (or alone, when only they are
    selected): ``backup_is_fresh`` passes when the backup holds the catalog's latest snapshot, or lags by at
    most ``max_snapshot_lag`` snapshots none of which waited longer than ``max_age``;
    ``backup_is_restorable``; ``backup_files_exist``. ``blocking`` makes failing checks stop downstream
    assets in the same run. Also a job ``<name>_restore_catalog`` (config: backup, dry_run, force), a
    schedule ``<name>_static_backup_schedule`` when ``backup_cron`` is set (status
    ``schedule_default_status``, RUNNING: a schedule you configure is one you want to run), and a freshness policy.
    """
    check_mode(mode)
    check_retention(keep, keep_within)
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

    fresh_key = dg.AssetCheckKey(backup_key, "backup_is_fresh")
    restorable_key = dg.AssetCheckKey(backup_key, "backup_is_restorable")
    files_key = dg.AssetCheckKey(backup_key, "backup_files_exist")
    lag_allowed = f"at most {max_snapshot_lag} snapshot(s)" + (
        f" none waiting longer than {max_age}" if max_age else ""
    )
    check_specs = [
        dg.AssetCheckSpec(
            fresh_key.name,
            asset=backup_key,
            blocking=blocking,
            description=(
                "Passes when the newest backup holds the catalog's latest snapshot"
                + (f", or lags by {lag_allowed}." if max_snapshot_lag else ".")
                + " Says how many snapshots behind the backup is and how long changes have waited."
            ),
        ),
        dg.AssetCheckSpec(
            restorable_key.name,
            asset=backup_key,
            blocking=blocking,
            description=(
                "Opens the newest backup read-only as a fresh client would and compares every table's row count "
                "with the catalog at the backup's snapshot."
            ),
        ),
        dg.AssetCheckSpec(
            files_key.name,
            asset=backup_key,
            blocking=blocking,
            description=(
                "Passes when every data and delete file the newest backup references exists (in the backup store "
                "for a full backup, with the size it was copied with; in the lake's storage for a metadata backup) "
                "and names the files that do not."
            ),
        ),
    ]
    spec = dg.AssetSpec(
        backup_key,
        deps=upstream_asset_keys(upstream_keys, [name, "catalog_snapshot"]),
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

    @dg.multi_asset(
        name=f"{name}__static_backup",
        specs=[spec],
        check_specs=check_specs,
        can_subset=True,
        pool=pool or f"{name}_static_backup",
        required_resource_keys=resource_keys,
    )
    def static_backup(
        context: dg.AssetExecutionContext, config: StaticBackupConfig
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        settings, store = lake_and_store(context.resources, lake_resource_key, s3_resource_key)
        if backup_key in context.selected_asset_keys:
            result = create_backup(
                settings,
                backup_uri,
                mode=mode,
                store=store,
                keep=keep,
                keep_within=keep_within,
                storage_version=storage_version,
                count_rows=True,
                force=config.force,
            )
            if result.up_to_date:
                context.log.info(
                    f"Backup under {backup_uri} is up to date at snapshot {result.manifest.snapshot_id} "
                    f"({result.backup.uri}): nothing new to back up, nothing written"
                )
            else:
                copied = (
                    f"; copied {len(result.files.copied)} data file(s) ({result.files.bytes_copied} bytes), reused "
                    f"{len(result.files.reused)} already in the store"
                    if result.files is not None
                    else ""
                )
                context.log.info(
                    f"Backed up snapshot {result.manifest.snapshot_id} of {result.manifest.catalog} to "
                    f"{result.backup.uri}" + copied
                )
            metadata = _backup_metadata(result)
            if result.up_to_date:
                metadata |= _row_counts_of_latest(context, backup_key, result.manifest.snapshot_id)
            yield dg.MaterializeResult(
                asset_key=backup_key,
                metadata=metadata,
                data_version=dg.DataVersion(str(result.manifest.snapshot_id)),
            )
        yield from run_checks(
            context,
            {
                fresh_key: lambda: backup_is_fresh(fresh_key, settings, store, backup_uri, max_snapshot_lag, max_age),
                restorable_key: lambda: backup_is_restorable(restorable_key, settings, store, backup_uri),
                files_key: lambda: backup_files_exist(files_key, settings, store, backup_uri),
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
        asset_checks=[],
        jobs=[restore_job],
        schedules=schedules,
    )
