"""The ``catalog_snapshot`` asset and the new-file sensor: how registering source files shows in Dagster.

The asset lists the source, registers every file the catalog does not know yet (see
:func:`ducklake_assets.core.registration.register_files`) and reports the snapshot. The sensor only
watches the source for new files and asks for a run; which files a run registers is decided by the
catalog, so a run requested twice, or a file seen by two ticks, never registers anything twice.
"""

import hashlib

import dagster as dg

from .core.registration import BadFiles, RegistrationResult, SchemaDrift, register_files
from .core.sources import FileSource, NewFileOrder, find_new_files
from .core.storage import ObjectStore
from .metadata import markdown_table
from .resources import DuckLakeResource, S3Resource


def ducklake_resource_key(name: str) -> str:
    """Resource key of a pipeline's lake."""
    return f"{name}_ducklake"


def s3_resource_key(name: str) -> str:
    """Resource key of a pipeline's S3 store."""
    return f"{name}_s3"


def catalog_snapshot_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([name, "catalog_snapshot"])


def source_files_spec(name: str, source: FileSource) -> dg.AssetSpec:
    """The source Parquet files, written by another system: shown upstream of the snapshot for lineage."""
    return dg.AssetSpec(
        key=[name, "source_files"],
        description=f"Parquet files written by another system, registered into the lake by reference: {source.root}",
        group_name=name,
        kinds={"parquet"},
        metadata={"source": source.root, "pattern": source.pattern if source.kind != "manifest" else "(manifest)"},
    )


def catalog_snapshot_asset(
    name: str,
    source: FileSource,
    *,
    schema_drift: SchemaDrift = "fail",
    bad_files: BadFiles = "fail",
) -> dg.AssetsDefinition:
    """The asset ``[name, "catalog_snapshot"]``: one DuckLake snapshot holding every source file.

    It needs the resource ``f"{name}_ducklake"`` (a :class:`DuckLakeResource`, whose ``s3`` settings
    are also used to list an S3 source). Each materialization registers the files not registered yet,
    in one snapshot whose author and message name the Dagster run.
    """
    lake_key = ducklake_resource_key(name)
    asset_key = catalog_snapshot_key(name)

    @dg.asset(
        key=asset_key,
        deps=[dg.AssetKey([name, "source_files"])],
        required_resource_keys={lake_key},
        group_name=name,
        kinds={"ducklake"},
        description=(
            f"The DuckLake catalog after registering the new files of {source.root} by reference "
            f"(schema drift: {schema_drift}, bad files: {bad_files})."
        ),
    )
    def catalog_snapshot(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        lake: DuckLakeResource = getattr(context.resources, lake_key)
        settings = lake.lake_settings()
        files = source.list_files(ObjectStore(settings.s3))
        context.log.info(f"Listed {len(files)} source files in {source.root}")

        def log_progress(done: int, total: int) -> None:
            context.log.info(f"Registered {done} of {total} new files")

        with lake.get_connection() as connection:
            result = register_files(
                connection,
                settings,
                files,
                schema_drift=schema_drift,
                bad_files=bad_files,
                author=f"dagster run {context.run_id}",
                message=f"{asset_key.to_user_string()}: register new source files (run {context.run_id})",
                extra_info={"dagster_run_id": context.run_id, "dagster_asset": asset_key.to_user_string()},
                progress=log_progress,
                log=context.log,
            )
        for skipped in result.skipped:
            context.log.warning(f"Skipped {skipped.uri}: {skipped.reason}")
        context.log.info(
            f"Snapshot {result.snapshot_id}: {len(result.files_added)} files added, "
            f"{len(result.already_registered)} already registered, {len(result.skipped)} skipped"
        )
        return dg.MaterializeResult(metadata=snapshot_metadata(result))

    return catalog_snapshot


def snapshot_metadata(result: RegistrationResult) -> dict[str, object]:
    """What a person wants to see about a registration in the Dagster UI."""
    metadata: dict[str, object] = {
        "snapshot_id": result.snapshot_id,
        "new_snapshot": result.created_snapshot,
        "files_added": len(result.files_added),
        "files_already_registered": len(result.already_registered),
        "files_skipped": len(result.skipped),
        "tables_created": ", ".join(result.tables_created) or "none",
        "tables": dg.MetadataValue.md(_tables_markdown(result)),
        "dagster/row_count": result.row_count,
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn(name=f"{table.display_name}.{column}", type=column_type)
                for table in result.tables
                for column, column_type in table.columns
            ]
        ),
    }
    if result.columns_added:
        metadata["columns_added"] = ", ".join(result.columns_added)
    if result.skipped:
        metadata["skipped_files"] = dg.MetadataValue.md(
            markdown_table(["file", "reason"], [[f"`{item.uri}`", item.reason] for item in result.skipped])
        )
    return metadata


def _tables_markdown(result: RegistrationResult) -> str:
    if not result.tables:
        return "The lake has no tables yet."
    return markdown_table(
        ["table", "rows", "files", "files added"],
        [
            [table.display_name, f"{table.row_count:,}", f"{table.file_count:,}", f"{table.files_added:,}"]
            for table in result.tables
        ],
    )


def new_file_sensor(
    name: str,
    source: FileSource,
    *,
    order: NewFileOrder = "modified",
    minimum_interval_seconds: int = 30,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """Sensor ``f"{name}_new_files"``: requests a ``catalog_snapshot`` run when new source files appear.

    The cursor remembers what was seen (see :func:`~.core.sources.find_new_files` for ``order`` and the
    cost of a tick); the run key is derived from the new cursor, so a repeated tick requests nothing new.
    An S3 source needs the resource ``f"{name}_s3"``.
    """
    s3_key = s3_resource_key(name)
    asset_key = catalog_snapshot_key(name)

    @dg.sensor(
        name=f"{name}_new_files",
        asset_selection=[asset_key],
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        required_resource_keys={s3_key} if source.needs_s3 else set(),
        description=f"Requests a {asset_key.to_user_string()} run when new files appear in {source.root}.",
    )
    def watch_source(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        s3: S3Resource | None = getattr(context.resources, s3_key) if source.needs_s3 else None
        found = find_new_files(source, ObjectStore(s3.settings() if s3 else None), context.cursor, order)
        if not found.uris:
            return dg.SkipReason(f"No new files in {source.root}")
        digest = hashlib.sha256(found.cursor.encode()).hexdigest()[:24]
        shown = ", ".join(found.uris[:3]) + (f" and {len(found.uris) - 3} more" if len(found.uris) > 3 else "")
        context.log.info(f"{len(found.uris)} new in {source.root}: {shown}")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"{name}-new-files-{digest}",
                    asset_selection=[asset_key],
                    tags={"ducklake_assets/new_files": str(len(found.uris))},
                )
            ],
            cursor=found.cursor,
        )

    return watch_source
