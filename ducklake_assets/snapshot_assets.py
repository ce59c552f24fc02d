"""Registration in Dagster: the ``catalog_snapshot`` and table assets, and the new-file sensor.

One step lists the source (or takes the paths its producers reported), registers every file the
catalog does not know yet (see :func:`ducklake_assets.core.registration.register_files`) in one
snapshot, and reports the catalog and each table as its own asset. The sensor only
watches the source for new files and asks for a run; which files a run registers is decided by the
catalog, so a run requested twice, or a file seen by two ticks, never registers anything twice.
"""

import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import dagster as dg
import duckdb

from .core.errors import DuckLakeAssetsError, NotFoundError
from .core.lake import LakeSettings, connect_lake
from .core.locations import is_remote
from .core.progress import ProgressLog
from .core.registration import (
    BadFiles,
    RegistrationResult,
    SchemaDrift,
    SkippedFile,
    TableSummary,
    register_files,
    tables_with_source_files,
)
from .core.retry import RetryPolicy
from .core.sources import FileSource, NewFileOrder, SourceFile, find_new_files
from .core.storage import Listings, ObjectStore
from .metadata import Metadata, markdown_table
from .partitions import SourcePartitions
from .resources import DuckLakeResource, S3Resource
from .translator import DuckLakeTranslator, LakeTable, table_specs


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


PATHS_METADATA_KEY = "ducklake_assets/paths"
PRODUCER_MARKS_KEY = "ducklake_assets/producers_registered_up_to"
_SENSOR_TAG = "ducklake_assets/new_files"
_REPORTED_LIMIT = 1000
_logger = logging.getLogger("ducklake_assets")


def written_paths_metadata(paths: Sequence[str]) -> dict[str, dg.MetadataValue]:
    """Metadata a producer asset returns so the table assets register just the files it wrote (local
    paths are made absolute here; write each file under a new name, completely, before reporting it).

    .. code-block:: python

        @dg.asset
        def export_astronauts() -> dg.MaterializeResult:
            path = write_parquet(...)
            return dg.MaterializeResult(metadata=written_paths_metadata([path]))
    """
    return {PATHS_METADATA_KEY: dg.MetadataValue.json([_absolute(str(path)) for path in paths])}


def _absolute(path: str) -> str:
    """A local path made absolute where the producer runs (a registration elsewhere has another working folder)."""
    return path if is_remote(path) else os.path.abspath(os.path.expanduser(path))


def discover_tables(source: FileSource, lake: DuckLakeResource) -> list[str]:
    """The tables of a pipeline when its definitions load: those the source's files name today, and those
    of the pipeline's schema that hold registered source files. Neither failing stops the load (a warning
    says why; the tables appear at the next reload)."""
    settings = _with_env_values(lake.lake_settings())
    if settings is None:
        _logger.warning(
            f"The tables of {source.root} are not looked up when definitions load because an EnvVar secret of the "
            "lake is not set in this process (Dagster reads it when a run starts): pass tables=[...] to show them"
        )
        return []
    names: set[str] = set()
    try:
        names.update(source.table_names(ObjectStore(settings.s3)))
    except DuckLakeAssetsError as error:
        _logger.warning(f"Listing {source.root} for its tables failed, so only the catalog's are shown: {error}")
    if _catalog_exists(settings):
        read_only = dataclasses.replace(settings, read_only=True)
        try:
            with connect_lake(read_only, retry=RetryPolicy(max_attempts=1)) as connection:
                names.update(tables_with_source_files(connection, read_only, source.naming.schema))
        except (DuckLakeAssetsError, duckdb.Error) as error:
            _logger.warning(f"Reading the tables of {settings.describe()} failed; shown from the source only: {error}")
    return sorted(names, key=str.lower)


class _Unset(Exception):
    pass


def _with_env_values(settings: LakeSettings) -> LakeSettings | None:
    """``settings`` with every ``dg.EnvVar`` replaced by its value, or ``None`` when one is not set."""

    def resolved(value: object) -> object:
        if isinstance(value, dg.EnvVar):
            text = value.get_value()
            if text is None:
                raise _Unset
            return text
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = {
                item.name: resolved(getattr(value, item.name)) for item in dataclasses.fields(value) if item.init
            }
            return dataclasses.replace(value, **changes)
        return value

    try:
        return resolved(settings)  # type: ignore[return-value]
    except _Unset:
        return None


def _catalog_exists(settings: LakeSettings) -> bool:
    path = getattr(settings.catalog, "path", None)
    return path is None or Path(path).expanduser().exists()


def registration_assets(
    name: str,
    source: FileSource,
    tables: Sequence[str],
    *,
    translator: DuckLakeTranslator | None = None,
    source_deps: Sequence[dg.AssetKey] = (),
    schema_drift: SchemaDrift = "fail",
    bad_files: BadFiles = "fail",
    automation_condition: dg.AutomationCondition | None = None,
    io_manager_key: str | None = None,
    partitions: SourcePartitions | None = None,
) -> dg.AssetsDefinition:
    """One step that registers new source files and materializes ``[name, "catalog_snapshot"]`` and one
    asset per table in ``tables`` (keys and attributes from ``translator``), in exactly one snapshot.

    It needs the resource ``f"{name}_ducklake"`` (a :class:`DuckLakeResource`, whose ``s3`` settings are
    also used to list an S3 source). Each materialization registers the files not registered yet, in
    one snapshot whose author and message name the Dagster run. With ``source_deps`` (the assets that
    write the source files) the tables depend on them, and when every new materialization of them
    reports the paths it wrote (:func:`written_paths_metadata`) only those paths are registered;
    otherwise the whole source is listed. ``io_manager_key`` names the IO manager (a
    :class:`~ducklake_assets.io_manager.DuckLakeIOManager`) through which downstream assets load a table
    as a DataFrame. With ``partitions`` every asset of the step is partitioned, and a run registers the
    files of its partitions' folders only, claiming them so that no two runs register one file twice.
    """
    translator = translator or DuckLakeTranslator()
    lake_key = ducklake_resource_key(name)
    snapshot_key = catalog_snapshot_key(name)
    upstream = (dg.AssetKey([name, "source_files"]), *source_deps)
    specs_by_table = table_specs(
        [
            LakeTable(
                pipeline=name,
                schema=source.naming.schema,
                name=table,
                source=source.root,
                deps=upstream,
                automation_condition=automation_condition,
            )
            for table in tables
        ],
        translator,
    )
    snapshot_spec = dg.AssetSpec(
        key=snapshot_key,
        deps=upstream,
        group_name=name,
        kinds={"ducklake"},
        description=(
            f"The DuckLake catalog after registering the new files of {source.root} by reference "
            f"(schema drift: {schema_drift}, bad files: {bad_files})."
        ),
        automation_condition=automation_condition,
    )
    table_keys = {key: spec.key for key, spec in specs_by_table.items()}

    @dg.multi_asset(
        name=f"{name}__catalog_snapshot",
        specs=[
            snapshot_spec,
            *(
                spec.replace_attributes(skippable=True).with_io_manager_key(io_manager_key)
                if io_manager_key
                else spec.replace_attributes(skippable=True)
                for spec in specs_by_table.values()
            ),
        ],
        required_resource_keys={lake_key},
        can_subset=True,
        partitions_def=partitions.partitions_def(name) if partitions else None,
    )
    def register(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
        lake: DuckLakeResource = getattr(context.resources, lake_key)
        settings = lake.lake_settings()
        store = ObjectStore(settings.s3)
        selected = context.selected_asset_keys
        claims: list[str] = []
        listings = Listings()
        if partitions is not None:
            marks: dict[str, int] = {}
            claims = [partitions.folders.folder(key) for key in context.partition_keys]
            files, unnamed = _list_partitions(context, source, partitions, store, bad_files, listings)
        else:
            marks = _producer_marks(context, source_deps)
            reported = _reported_files(context, source, snapshot_key, source_deps, marks)
            if reported is not None:
                files, unnamed = reported, {}
            else:
                files, unnamed = (
                    source.list_named_files(store, listings)
                    if bad_files == "skip"
                    else (source.list_files(store, listings), {})
                )
                context.log.info(f"Listed {len(files) + len(unnamed)} source files in {source.root}")
        if snapshot_key not in selected:
            chosen = {table for table, key in table_keys.items() if key in selected}
            files = [file for file in files if (file.schema.lower(), file.table.lower()) in chosen]
            context.log.info(
                f"Registering only the files of the selected tables ({', '.join(sorted(n for _, n in chosen))}); "
                f"select {snapshot_key.to_user_string()} to register every table"
            )
        with ProgressLog(context.log.info, "Registered", "new files") as progress, lake.get_connection() as connection:
            result = register_files(
                connection,
                settings,
                files,
                schema_drift=schema_drift,
                bad_files=bad_files,
                author=f"dagster run {context.run_id}",
                message=f"{snapshot_key.to_user_string()}: register new source files (run {context.run_id})",
                extra_info={"dagster_run_id": context.run_id, "dagster_asset": snapshot_key.to_user_string()},
                progress=progress,
                log=context.log,
                claims=claims,
                listings=listings,
            )
        if unnamed:
            named_skips = tuple(SkippedFile(uri, reason) for uri, reason in sorted(unnamed.items()))
            result = dataclasses.replace(result, skipped=named_skips + result.skipped)
        for skipped in result.skipped:
            context.log.warning(f"Skipped {skipped.uri}: {skipped.reason}")
        context.log.info(
            f"Snapshot {result.snapshot_id}: {len(result.files_added)} files added, "
            f"{len(result.already_registered)} already registered, {len(result.skipped)} skipped"
        )
        if snapshot_key in selected:
            metadata = snapshot_metadata(result)
            if source_deps and not result.skipped:
                metadata[PRODUCER_MARKS_KEY] = dg.MetadataValue.json(marks)
            yield dg.MaterializeResult(asset_key=snapshot_key, metadata=metadata)
        # Every selected table reports, changed or not: Dagster skips the rest of the run (the backup, the
        # publication) after an asset that is not materialized.
        for table in result.tables:
            if table.schema.lower() != source.naming.schema.lower():
                continue
            key = table_keys.get((table.schema.lower(), table.name.lower()))
            if key is None and not _changed(table, result):
                continue
            if key is None:
                context.log.warning(
                    f"Table {table.display_name} is new since the definitions loaded: reload the code location "
                    "to see its asset"
                )
            elif key in selected:
                yield dg.MaterializeResult(asset_key=key, metadata=table_metadata(table, result.snapshot_id))

    return register


def catalog_snapshot_asset(
    name: str,
    source: FileSource,
    *,
    schema_drift: SchemaDrift = "fail",
    bad_files: BadFiles = "fail",
) -> dg.AssetsDefinition:
    """The asset ``[name, "catalog_snapshot"]`` alone, without table assets: :func:`registration_assets`
    with no tables, for layouts that show the lake as one asset."""
    return registration_assets(name, source, (), schema_drift=schema_drift, bad_files=bad_files)


def _list_partitions(
    context: dg.AssetExecutionContext,
    source: FileSource,
    partitions: SourcePartitions,
    store: ObjectStore,
    bad_files: BadFiles,
    listings: Listings,
) -> tuple[list[SourceFile], dict[str, str]]:
    """The files in the folders of the run's partitions (a missing folder holds none); ``listings``
    receives what S3 listings found."""
    files: list[SourceFile] = []
    unnamed: dict[str, str] = {}
    for key in context.partition_keys:
        part = partitions.folders.source(source, key)
        try:
            found, skipped = (
                part.list_named_files(store, listings)
                if bad_files == "skip"
                else (part.list_files(store, listings), {})
            )
        except NotFoundError:
            context.log.info(f"Partition {key}: {part.root} does not exist, so it holds no files yet")
            continue
        files.extend(found)
        unnamed.update(skipped)
        context.log.info(f"Partition {key}: listed {len(found) + len(skipped)} source files in {part.root}")
    return files, unnamed


def _producer_marks(context: dg.AssetExecutionContext, source_deps: Sequence[dg.AssetKey]) -> dict[str, int]:
    """The newest materialization of each producer, read before anything is listed or registered."""
    marks = {}
    for key in source_deps:
        records = context.instance.fetch_materializations(key, limit=1).records
        if records:
            marks[key.to_user_string()] = records[0].storage_id
    return marks


def _reported_files(
    context: dg.AssetExecutionContext,
    source: FileSource,
    snapshot_key: dg.AssetKey,
    source_deps: Sequence[dg.AssetKey],
    marks: dict[str, int],
) -> list[SourceFile] | None:
    """The files the producers reported writing since the marks the last registration recorded (up to
    ``marks``, read before this run listed anything), or ``None`` to list the source.

    ``None`` when there are no producers, when no registration recorded marks yet, when the new-file sensor
    asked for the run (it saw files written outside Dagster), when no producer materialized since, or when
    one of their materializations did not report its paths.
    """
    if not source_deps or _SENSOR_TAG in context.run.tags:
        return None
    last = context.instance.get_latest_materialization_event(snapshot_key)
    recorded = (
        last.asset_materialization.metadata.get(PRODUCER_MARKS_KEY) if last and last.asset_materialization else None
    )
    if recorded is None or not isinstance(recorded.value, dict):
        return None
    reported: list[str] = []
    for key in source_deps:
        name = key.to_user_string()
        if name not in marks or marks[name] <= recorded.value.get(name, -1):
            continue
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=key, after_storage_id=recorded.value.get(name), before_storage_id=marks[name] + 1
            ),
            limit=_REPORTED_LIMIT,
        ).records
        if len(records) == _REPORTED_LIMIT:
            return None
        for record in records:
            materialization = record.asset_materialization
            value = materialization.metadata.get(PATHS_METADATA_KEY) if materialization else None
            if value is None or not isinstance(value.value, list):
                context.log.info(f"{name} did not report the paths it wrote: listing {source.root}")
                return None
            reported.extend(str(path) for path in value.value)
    if not reported:
        return None
    files, others = source.files_at(reported)
    for location in others:
        context.log.warning(f"A producer reported {location}, which is not a file of {source.root}: not registered")
    context.log.info(f"Registering the {len(files)} file(s) the producers reported, without listing {source.root}")
    return files


def _changed(table: TableSummary, result: RegistrationResult) -> bool:
    """Whether the registration added files to ``table``, created it or gave it columns."""
    return (
        table.files_added > 0
        or table.display_name in result.tables_created
        or any(column.startswith(table.display_name + ".") for column in result.columns_added)
    )


def table_metadata(table: TableSummary, snapshot_id: int) -> Metadata:
    """What a person wants to see about one table after a registration."""
    return {
        "dagster/row_count": table.row_count,
        "dagster/table_name": f"{table.schema}.{table.name}",
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name=column, type=column_type) for column, column_type in table.columns]
        ),
        "files_added": table.files_added,
        "data_files": table.file_count,
        "snapshot_id": snapshot_id,
    }


def snapshot_metadata(result: RegistrationResult) -> Metadata:
    """What a person wants to see about a registration in the Dagster UI."""
    metadata: Metadata = {
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
    asset_keys: Sequence[dg.AssetKey] | None = None,
    partitions: SourcePartitions | None = None,
) -> dg.SensorDefinition:
    """Sensor ``f"{name}_new_files"``: requests a run of ``asset_keys`` (default: the ``catalog_snapshot``;
    the pipeline passes it and every table asset) when new source files appear.

    The cursor remembers what was seen (see :func:`~.core.sources.find_new_files` for ``order`` and the
    cost of a tick); the run key is derived from the new cursor, so a repeated tick requests nothing new.
    A source folder that does not exist yet makes the tick skip with that reason. An S3 source needs
    the resource ``f"{name}_s3"``. With ``partitions`` it requests one run per partition that has new
    files, adding the keys of new folders to a dynamic partitions definition first.
    """
    s3_key = s3_resource_key(name)
    asset_key = catalog_snapshot_key(name)
    selection = list(asset_keys or [asset_key])

    @dg.sensor(
        name=f"{name}_new_files",
        asset_selection=selection,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        required_resource_keys={s3_key} if source.needs_s3 else set(),
        description=f"Requests a {asset_key.to_user_string()} run when new files appear in {source.root}.",
    )
    def watch_source(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        s3: S3Resource | None = getattr(context.resources, s3_key) if source.needs_s3 else None
        try:
            found = find_new_files(source, ObjectStore(s3.settings() if s3 else None), context.cursor, order)
        except NotFoundError:
            return dg.SkipReason(
                f"The source folder {source.root} does not exist yet: create it (or fix `source`); "
                "the sensor keeps looking"
            )
        if not found.uris:
            return dg.SkipReason(f"No new files in {source.root}")
        digest = hashlib.sha256(found.cursor.encode()).hexdigest()[:24]
        shown = ", ".join(found.uris[:3]) + (f" and {len(found.uris) - 3} more" if len(found.uris) > 3 else "")
        context.log.info(f"{len(found.uris)} new in {source.root}: {shown}")
        if partitions is not None:
            return _partition_requests(context, name, source, partitions, found.uris, found.cursor, digest, selection)
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"{name}-new-files-{digest}",
                    asset_selection=selection,
                    tags={_SENSOR_TAG: str(len(found.uris))},
                )
            ],
            cursor=found.cursor,
        )

    return watch_source


def _partition_requests(
    context: dg.SensorEvaluationContext,
    name: str,
    source: FileSource,
    partitions: SourcePartitions,
    uris: Sequence[str],
    cursor: str,
    digest: str,
    selection: Sequence[dg.AssetKey],
) -> dg.SensorResult:
    """One run request per partition holding new files; new keys of a dynamic definition are added first."""
    by_key: dict[str, list[str]] = {}
    outside: list[str] = []
    for uri in uris:
        key = partitions.folders.key_of(source.relative_path(uri))
        (outside if key is None else by_key.setdefault(key, [])).append(uri)
    definition = partitions.partitions_def(name)
    additions: list[dg.AddDynamicPartitionsRequest] = []
    waiting: list[str] = []
    if isinstance(definition, dg.DynamicPartitionsDefinition):
        known = set(context.instance.get_dynamic_partitions(definition.name or ""))
        new_keys = sorted(set(by_key) - known)
        if new_keys:
            additions.append(definition.build_add_request(new_keys))
    else:
        known = set(definition.get_partition_keys(dynamic_partitions_store=context.instance))
        for key in sorted(set(by_key) - known):
            waiting.extend(by_key.pop(key))
    if outside:
        context.log.warning(
            f"{len(outside)} new files lie in no partition folder ({partitions.folder}) and are not registered, "
            f"e.g. {outside[0]}"
        )
    if waiting:
        # A folder whose partition does not exist yet (today's, with a daily definition): the cursor stays,
        # so those files are asked for again once the partition exists; the other runs repeat their run keys.
        context.log.warning(
            f"{len(waiting)} new files are in folders that name no partition of the definition yet, e.g. "
            f"{waiting[0]}: they are requested once the partition exists"
        )
        cursor = context.cursor or ""  # run keys still follow what was found, so new files make new runs
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"{name}-new-files-{digest}-{key}",
                asset_selection=list(selection),
                partition_key=key,
                tags={_SENSOR_TAG: str(len(found))},
            )
            for key, found in sorted(by_key.items())
        ],
        cursor=cursor,
        dynamic_partitions_requests=additions,
    )
