"""Dagster definitions for lake maintenance: four assets, a job and a schedule.

How maintenance is done, and what it refuses to remove, lives in ``core/maintenance.py``; this module
turns it into assets and reports each step.
"""

from collections.abc import Iterator, Sequence
from datetime import timedelta

import dagster as dg
from pydantic import Field

from .core.maintenance import (
    STEPS,
    FileAction,
    MaintenancePolicy,
    MaintenanceReport,
    Step,
    retained_copies,
    run_maintenance,
)
from .metadata import Metadata, markdown_table
from .resources import lake_and_store

_LISTED_FILES = 100
_DESCRIPTIONS: dict[Step, str] = {
    "flush_inlined_data": "Writes rows inlined in the catalog out to Parquet files (ducklake_flush_inlined_data).",
    "merge_adjacent_files": "Merges small adjacent data files, table by table (ducklake_merge_adjacent_files); "
    "tables holding registered files outside the data path are skipped unless configured.",
    "expire_snapshots": "Expires old snapshots (ducklake_expire_snapshots), never one a retained backup or "
    "published revision holds.",
    "cleanup_old_files": "Deletes files no snapshot needs any more, only under the data path and never one a "
    "retained backup or published revision references; registered files outside it are handed back.",
}


class MaintenanceConfig(dg.Config):
    """Run-time choice between doing maintenance and reporting what it would do."""

    dry_run: bool = Field(
        default=False,
        description="Change nothing; record an observation per step listing what would be flushed, merged, "
        "expired, deleted, kept and handed back.",
    )


def build_maintenance_definitions(
    name: str,
    *,
    lake_resource_key: str = "ducklake",
    s3_resource_key: str | None = None,
    backup_uris: Sequence[str] = (),
    publish_uris: Sequence[str] = (),
    cron_schedule: str | None = "0 3 * * *",
    execution_timezone: str = "UTC",
    schedule_default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
    expire_older_than: timedelta | None = timedelta(days=7),
    keep_last_snapshots: int | None = None,
    cleanup_older_than: timedelta = timedelta(hours=1),
    merge_external_files: bool = False,
    pool: str | None = None,
    group_name: str | None = None,
) -> dg.Definitions:
    """Maintenance of the lake behind resource ``lake_resource_key`` (a ``DuckLakeResource``).

    Assets ``[name, "flush_inlined_data"]``, ``[name, "merge_adjacent_files"]``, ``[name, "expire_snapshots"]``
    and ``[name, "cleanup_old_files"]``, run in that order by one step (any subset can be materialized), a
    job ``<name>_maintenance`` and, unless ``cron_schedule`` is ``None``, a schedule
    ``<name>_maintenance_schedule`` (03:00 UTC daily by default; it starts as ``schedule_default_status``,
    STOPPED, so deleting old files begins only when someone turns it on or asks for it).

    ``backup_uris`` (backup folders) and ``publish_uris`` (published frozen lakes) are read at every run:
    the snapshots their retained backups and revisions hold are never expired and the files they
    reference never deleted. They are reached through the ``S3Resource`` ``s3_resource_key``, else the
    lake's own S3 settings. ``expire_older_than``, ``keep_last_snapshots``, ``cleanup_older_than`` and
    ``merge_external_files`` are the :class:`~ducklake_assets.core.maintenance.MaintenancePolicy`.
    ``pool`` puts the step in a Dagster concurrency pool (share it with the writers to keep maintenance
    from competing with them). Run config ``dry_run: true`` changes nothing and records observations
    instead of materializations.

    .. code-block:: python

        from ducklake_assets import build_maintenance_definitions

        maintenance = build_maintenance_definitions(
            "trips", backup_uris=["s3://backups/trips"], cron_schedule="30 2 * * *", pool="ducklake_writers"
        )
    """
    policy = MaintenancePolicy(
        expire_older_than=expire_older_than,
        keep_last_snapshots=keep_last_snapshots,
        cleanup_older_than=cleanup_older_than,
        merge_external_files=merge_external_files,
    )
    keys = {step: dg.AssetKey([name, step]) for step in STEPS}
    specs = [
        dg.AssetSpec(
            keys[step],
            deps=[keys[STEPS[position - 1]]] if position else [],
            description=_DESCRIPTIONS[step],
            skippable=True,
            group_name=group_name,
            kinds={"duckdb"},
        )
        for position, step in enumerate(STEPS)
    ]
    resource_keys = {lake_resource_key} | ({s3_resource_key} if s3_resource_key else set())

    @dg.multi_asset(
        name=f"{name}_maintenance_steps",
        specs=specs,
        can_subset=True,
        required_resource_keys=resource_keys,
        pool=pool,
    )
    def maintenance(
        context: dg.AssetExecutionContext, config: MaintenanceConfig
    ) -> Iterator[dg.AssetObservation | dg.MaterializeResult]:
        ducklake = getattr(context.resources, lake_resource_key)
        settings, store = lake_and_store(context.resources, lake_resource_key, s3_resource_key)
        steps = [step for step in STEPS if keys[step] in context.selected_asset_keys]
        retained = retained_copies(backup_uris=backup_uris, publish_uris=publish_uris, store=store)
        report = run_maintenance(
            settings,
            policy=policy,
            retained=retained,
            steps=steps,
            dry_run=config.dry_run,
            store=store,
            retry=ducklake.retry_policy(),
            log=context.log,
        )
        for step in report.steps:
            metadata = maintenance_metadata(step, report)
            if report.dry_run:
                yield dg.AssetObservation(asset_key=keys[step], metadata=metadata)
            else:
                yield dg.MaterializeResult(asset_key=keys[step], metadata=metadata)

    job = dg.define_asset_job(f"{name}_maintenance", selection=dg.AssetSelection.assets(*keys.values()))
    schedules = (
        [
            dg.ScheduleDefinition(
                name=f"{name}_maintenance_schedule",
                cron_schedule=cron_schedule,
                job=job,
                execution_timezone=execution_timezone,
                default_status=schedule_default_status,
            )
        ]
        if cron_schedule
        else []
    )
    return dg.Definitions(assets=[maintenance], jobs=[job], schedules=schedules)


def maintenance_metadata(step: Step, report: MaintenanceReport) -> Metadata:
    """What one maintenance step shows in the UI."""
    metadata: Metadata = {"dry_run": report.dry_run}
    if step == "flush_inlined_data":
        metadata["rows_flushed"] = sum(report.flushed.values())
        metadata["tables"] = dg.MetadataValue.md(
            markdown_table(["table", "rows"], [[table, rows] for table, rows in sorted(report.flushed.items())])
        )
    elif step == "merge_adjacent_files":
        metadata["files_merged"] = sum(merged for merged, _ in report.merged.values())
        metadata["files_written"] = sum(written for _, written in report.merged.values())
        metadata["tables"] = dg.MetadataValue.md(
            markdown_table(
                ["table", "files current" if report.dry_run else "files merged", "files written"],
                [[table, merged, written] for table, (merged, written) in sorted(report.merged.items())],
            )
        )
        metadata["tables_skipped"] = dg.MetadataValue.md(
            markdown_table(["table", "why"], sorted(report.merge_skipped.items()))
        )
    elif step == "expire_snapshots":
        metadata["snapshots_expired"] = len(report.expired_snapshots)
        metadata["expired_snapshot_ids"] = id_ranges(report.expired_snapshots)
        metadata["snapshots_kept_for_retained_copies"] = id_ranges(report.protected_snapshots)
        metadata["retained_copies"] = dg.MetadataValue.md(
            "\n".join(f"- `{source}`" for source in report.retained_sources) or "none"
        )
    else:
        listed = list(report.files[:_LISTED_FILES])
        labels: tuple[tuple[FileAction, str], ...] = (
            ("delete", "files_deleted"),
            ("keep", "files_kept"),
            ("release", "files_handed_back"),
        )
        for action, label in labels:
            metadata[label] = len(report.files_with(action))
        metadata["files"] = dg.MetadataValue.md(
            markdown_table(["action", "file", "why"], [[d.action, f"`{d.path}`", d.reason] for d in listed])
            + (f"\n\n... and {len(report.files) - len(listed)} more" if len(report.files) > len(listed) else "")
        )
    return metadata


def id_ranges(ids: Sequence[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``"1-3, 7, 9-10"`` (``"none"`` when empty)."""
    ranges: list[list[int]] = []
    for snapshot in sorted(ids):
        if ranges and snapshot == ranges[-1][1] + 1:
            ranges[-1][1] = snapshot
        else:
            ranges.append([snapshot, snapshot])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges) or "none"
