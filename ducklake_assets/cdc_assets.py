"""Dagster assets, job and sensor for PostgreSQL change data capture into DuckLake.

How changes are captured, moved and applied lives in :mod:`ducklake_assets.core.cdc`; this module only
turns it into a capture asset, a transfer asset, a mirror asset and a sensor that runs the last two.
"""

from collections.abc import Sequence
from typing import Any

import dagster as dg
from pydantic import Field

from .core.catalog import PostgresCatalog
from .core.cdc import (
    CHANGE_TABLE,
    CaptureSettings,
    MirrorResult,
    SetupResult,
    TransferResult,
    apply_to_mirrors,
    pending_changes,
    setup_capture,
    transfer_batch,
)
from .core.errors import CDCError, ConfigurationError
from .core.sql import qualified_name
from .metadata import Metadata, markdown_table
from .resources import DuckLakeResource

_OPERATIONS = {"I": "inserts", "U": "updates", "D": "deletes", "T": "truncates"}
_RUNNING = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
_LOG_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("batch_id", "VARCHAR", description="Mini-batch the change was moved in."),
        dg.TableColumn("ingested_at", "TIMESTAMPTZ", description="When the batch was committed to the lake."),
        dg.TableColumn("change_id", "UUID", description="Unique id given at capture."),
        dg.TableColumn("change_seq", "BIGINT", description="Capture order within the source."),
        dg.TableColumn("captured_at", "TIMESTAMPTZ", description="When the trigger recorded the change."),
        dg.TableColumn("operation", "VARCHAR", description="I, U, D or T (truncate)."),
        dg.TableColumn("table_schema", "VARCHAR", description="Source schema."),
        dg.TableColumn("table_name", "VARCHAR", description="Source table."),
        dg.TableColumn("row_data", "JSON", description="The row after the change (before it, for a delete)."),
    ]
)


class PostgresSourceResource(dg.ConfigurableResource):
    """The PostgreSQL database changes are captured from.

    ``dsn`` is a libpq keyword string or ``postgresql://`` URL; keep the password out of it and pass it as
    ``password=dg.EnvVar("SOURCE_PASSWORD")`` so it never shows in the UI, a log or an error.

    .. code-block:: python

        import dagster as dg
        from ducklake_assets import PostgresSourceResource

        source = PostgresSourceResource(dsn="host=db dbname=shop user=cdc", password=dg.EnvVar("SHOP_PASSWORD"))
    """

    dsn: str = Field(description="libpq DSN ('host=db dbname=shop user=cdc') or postgresql:// URL.")
    password: str | None = Field(default=None, description="Password; pass it as dg.EnvVar('SOURCE_PASSWORD').")

    def source(self) -> PostgresCatalog:
        """The connection description the core takes (password held apart)."""
        return PostgresCatalog.from_dsn(self.dsn, self.password)


def build_cdc_definitions(
    name: str,
    *,
    source: str | PostgresSourceResource,
    source_password: str | None = None,
    schema: str = "public",
    tables: str | Sequence[str] = ("*",),
    audit_schema: str = "audit",
    lake_schema: str = "cdc",
    lake_resource_key: str = "ducklake",
    interval_seconds: int = 60,
    lock_timeout: str = "5s",
    snapshot_existing_rows: bool = True,
    default_sensor_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.Definitions:
    """Capture changes of the ``schema`` tables matching ``tables`` in a PostgreSQL database into a lake.

    ``source`` is a DSN (its password given apart as ``source_password``, e.g. ``dg.EnvVar(...)``) or a
    :class:`PostgresSourceResource`; it is registered as resource ``<name>_cdc_source``. The lake is the
    :class:`DuckLakeResource` at ``lake_resource_key``, supplied by the caller. The definitions hold:

    * ``<name>/cdc_capture``: installs the triggers (again: adds tables that are new, leaves the rest);
    * ``<name>/cdc_changes``: moves one mini-batch into ``<lake>.<lake_schema>.changes``, exactly once;
    * ``<name>/cdc_mirrors``: applies the new batches to ``<lake>.<source schema>.<table>`` mirrors;
    * job ``<name>_cdc_job`` (changes, then mirrors) and sensor ``<name>_cdc_sensor``, which runs the job
      every ``interval_seconds`` when changes wait in PostgreSQL and no run of it is in progress.

    .. code-block:: python

        import dagster as dg
        from ducklake_assets import DuckLakeResource, build_cdc_definitions

        defs = dg.Definitions.merge(
            build_cdc_definitions(
                "shop",
                source="host=db dbname=shop user=cdc",
                source_password=dg.EnvVar("SHOP_PASSWORD"),
                tables=["customers", "order*"],
                interval_seconds=30,
            ),
            dg.Definitions(resources={"ducklake": DuckLakeResource(catalog="lake.ducklake", data_path="lake/")}),
        )
    """
    if isinstance(source, PostgresSourceResource):
        if source_password is not None:
            raise ConfigurationError("source_password is for a DSN source; set password on the PostgresSourceResource")
        source_resource = source
    else:
        source_resource = PostgresSourceResource(dsn=source, password=source_password)
    if interval_seconds < 1:
        raise ConfigurationError(f"CDC interval_seconds must be at least 1, got {interval_seconds}")
    source_key = f"{name}_cdc_source"
    capture_key = dg.AssetKey([name, "cdc_capture"])
    changes_key = dg.AssetKey([name, "cdc_changes"])
    mirrors_key = dg.AssetKey([name, "cdc_mirrors"])
    table_list = (tables,) if isinstance(tables, str) else tuple(tables)

    def settings_of(context: Any) -> CaptureSettings:
        return CaptureSettings(
            source=getattr(context.resources, source_key).source(),
            schema=schema,
            tables=table_list,
            audit_schema=audit_schema,
            lake_schema=lake_schema,
        )

    @dg.asset(
        key=capture_key,
        group_name=name,
        required_resource_keys={source_key},
        kinds={"postgres"},
        description=(
            f"Triggers recording every change of {schema}.{list(table_list)} in the UNLOGGED table "
            f"{audit_schema}.{CHANGE_TABLE}. Materialize again to capture tables created since."
        ),
    )
    def cdc_capture(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        settings = settings_of(context)
        result = setup_capture(settings, snapshot_existing_rows=snapshot_existing_rows)
        context.log.info(f"Capture on {settings.describe()}: {len(result.added)} tables added")
        return dg.MaterializeResult(metadata=capture_metadata(result, settings))

    @dg.asset(
        key=changes_key,
        group_name=name,
        deps=[capture_key],
        required_resource_keys={source_key, lake_resource_key},
        kinds={"postgres", "duckdb"},
        description=(
            f"Change log {lake_schema}.{CHANGE_TABLE} in the lake: each materialization moves one mini-batch "
            "of captured changes out of PostgreSQL, exactly once."
        ),
    )
    def cdc_changes(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        settings = settings_of(context)
        ducklake: DuckLakeResource = getattr(context.resources, lake_resource_key)
        with ducklake.get_connection(context.log) as connection:
            result = transfer_batch(
                settings,
                connection,
                lake_alias=ducklake.alias,
                lock_timeout=lock_timeout,
                policy=ducklake.retry_policy(),
                log=context.log,
            )
            [(log_rows,)] = connection.execute(
                f"SELECT count(*) FROM {qualified_name(ducklake.alias, lake_schema, CHANGE_TABLE)}"
            ).fetchall()
        context.log.info(f"Moved {result.changes} changes in {len(result.batches)} batches")
        metadata = transfer_metadata(result)
        metadata["dagster/row_count"] = log_rows
        metadata["dagster/column_schema"] = _LOG_SCHEMA
        metadata["dagster/table_name"] = f"{ducklake.alias}.{lake_schema}.{CHANGE_TABLE}"
        return dg.MaterializeResult(metadata=metadata)

    @dg.asset(
        key=mirrors_key,
        group_name=name,
        deps=[changes_key],
        required_resource_keys={source_key, lake_resource_key},
        kinds={"duckdb"},
        description=(
            f"Current-state copies of the captured tables in the lake, as <lake>.{schema}.<table>, kept up to "
            "date by applying the change log in capture order per primary key."
        ),
    )
    def cdc_mirrors(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        settings = settings_of(context)
        ducklake: DuckLakeResource = getattr(context.resources, lake_resource_key)
        with ducklake.get_connection(context.log) as connection:
            result = apply_to_mirrors(
                settings, connection, lake_alias=ducklake.alias, policy=ducklake.retry_policy(), log=context.log
            )
        if result.skipped:
            context.log.warning(f"Tables gone from the source, mirrors left as they were: {list(result.skipped)}")
        return dg.MaterializeResult(metadata=mirror_metadata(result))

    job = dg.define_asset_job(f"{name}_cdc_job", selection=dg.AssetSelection.assets(changes_key, mirrors_key))

    @dg.sensor(
        name=f"{name}_cdc_sensor",
        job=job,
        minimum_interval_seconds=interval_seconds,
        required_resource_keys={source_key},
        default_status=default_sensor_status,
        description=f"Runs {name}_cdc_job when captured changes wait in PostgreSQL.",
    )
    def cdc_sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        if context.instance.get_runs(filters=dg.RunsFilter(job_name=job.name, statuses=_RUNNING), limit=1):
            return dg.SkipReason(f"A run of {job.name} is still in progress.")
        try:
            pending = pending_changes(settings_of(context))
        except CDCError as error:
            return dg.SkipReason(str(error))
        if not pending.changes and not pending.leftover_batches:
            return dg.SkipReason("No captured changes wait in PostgreSQL.")
        return dg.RunRequest(
            tags={"cdc/pending_changes": str(pending.changes), "cdc/lag_seconds": f"{pending.lag_seconds or 0:.1f}"}
        )

    return dg.Definitions(
        assets=[cdc_capture, cdc_changes, cdc_mirrors],
        jobs=[job],
        sensors=[cdc_sensor],
        resources={source_key: source_resource},
    )


def capture_metadata(result: SetupResult, settings: CaptureSettings) -> Metadata:
    """Materialization metadata of the capture asset: the captured tables and what this run added."""
    rows = [[f"{t.schema}.{t.name}", ", ".join(t.key_columns), "added"] for t in result.added]
    rows += [[f"{t.schema}.{t.name}", ", ".join(t.key_columns), "already captured"] for t in result.already_captured]
    return {
        "tables": dg.MetadataValue.md(markdown_table(["table", "primary key", "status"], sorted(rows))),
        "tables_added": len(result.added),
        "tables_captured": len(result.added) + len(result.already_captured),
        "snapshot_rows": result.snapshot_rows,
        "change_table": f"{settings.audit_schema}.{CHANGE_TABLE}",
        "source": settings.describe(),
    }


def transfer_metadata(result: TransferResult) -> Metadata:
    """Changes per table and operation, the capture-time range, and the lag of what still waits."""
    per_table: dict[str, dict[str, int]] = {}
    for (schema, table, operation), count in result.counts().items():
        per_table.setdefault(f"{schema}.{table}", {})[operation] = count
    rows = [
        [table, *(counts.get(code, 0) for code in _OPERATIONS), sum(counts.values())]
        for table, counts in sorted(per_table.items())
    ]
    metadata: Metadata = {
        "changes": dg.MetadataValue.md(markdown_table(["table", *_OPERATIONS.values(), "total"], rows)),
        "changes_moved": result.changes,
        "batches": dg.MetadataValue.md(
            markdown_table(
                ["batch", "changes", "note"],
                [[b.batch_id, b.changes, _batch_note(b.resumed, b.copied_before)] for b in result.batches],
            )
        ),
        "pending_changes": result.pending.changes,
        "pending_lag_seconds": float(result.pending.lag_seconds or 0.0),
    }
    if result.first_captured_at and result.last_captured_at:
        metadata["first_captured_at"] = dg.MetadataValue.timestamp(result.first_captured_at)
        metadata["last_captured_at"] = dg.MetadataValue.timestamp(result.last_captured_at)
    return metadata


def mirror_metadata(result: MirrorResult) -> Metadata:
    """One line per mirror: changes applied, rows written and deleted, rows now, columns added."""
    rows = [
        [
            f"{m.schema}.{m.table}",
            m.changes,
            m.rows_written,
            m.rows_deleted,
            m.rows,
            ", ".join(m.added_columns),
            "yes" if m.truncated else "",
        ]
        for m in result.mirrors
    ]
    metadata: Metadata = {
        "mirrors": dg.MetadataValue.md(
            markdown_table(
                ["mirror", "changes", "rows written", "rows deleted", "rows", "new columns", "truncated"], rows
            )
        ),
        "batches_applied": len(result.batches),
    }
    if result.skipped:
        metadata["skipped_tables"] = ", ".join(result.skipped)
    return metadata


def _batch_note(resumed: bool, copied_before: bool) -> str:
    if copied_before:
        return "left by an interrupted run; already in the lake, dropped from PostgreSQL"
    if resumed:
        return "left by an interrupted run; copied now"
    return ""
