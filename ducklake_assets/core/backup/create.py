"""Making a backup: copy the catalog in one read transaction, copy its files into the store (full mode),
verify the staged backup, then expose it and prune older ones (:func:`create_backup`)."""

import dataclasses
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import duckdb

from ..catalog import DuckDBCatalog
from ..errors import BackupError, CatalogConnectionError, ConfigurationError, StorageError, redact
from ..files import normalize_data_path
from ..lake import LakeSettings, attach_lake, format_mismatch, new_connection, prepare_connection
from ..locations import join_uri
from ..s3 import S3Settings
from ..scratch import scratch_folder
from ..sql import qualified_name, quote_identifier, quote_literal
from ..storage import ObjectStore, StoredObject
from ..sync import Checkpoint, SyncReport, Transfer, list_many, sync_files
from .catalog_database import (
    SOURCE_ALIAS,
    as_utc,
    attach_catalog_database,
    catalog_extensions,
    catalog_file_exists,
    catalog_state,
    ducklake_tables,
    metadata_schema_of,
)
from .checks import backup_table_row_counts, catalog_file_references, open_backup_settings
from .layout import (
    BACKUP_SUFFIX,
    DATA_FOLDER,
    EXTERNAL_FOLDER,
    backup_file_name,
    backup_folder,
    files_index_uri_for,
    latest_uri,
    list_store_files,
    manifest_uri_for,
    point_at_store_files,
)
from .manifest import (
    MANIFEST_TABLE,
    BackupInfo,
    BackupManifest,
    file_sha256,
    files_index_json,
    info_from_manifest,
    latest_manifest,
    read_files_index,
)
from .retention import PruneResult, check_retention, prune_backups

BackupMode = Literal["full", "metadata"]
BACKUP_MODES: tuple[str, ...] = ("full", "metadata")
_TARGET = "ducklake_assets_backup"


@dataclass(frozen=True)
class BackupResult:
    """What :func:`create_backup` wrote.

    ``snapshots_since_previous`` is how many snapshots the catalog was ahead of the previous backup when
    this one was taken (``None`` for the first backup). ``table_rows`` maps ``schema.table`` to its row
    count in the backup when ``count_rows`` was asked for. ``files`` says which data files a full backup
    copied and which the store already held (``None`` for a metadata backup); ``store_bytes`` is the
    size of everything under ``backup_uri`` afterwards; ``removed_files`` counts the data files retention
    deleted because no retained backup needs them any more. ``up_to_date`` is true when nothing was
    written because the newest backup already held the catalog's latest snapshot: ``backup`` and
    ``manifest`` then describe that backup.
    """

    backup: BackupInfo
    manifest: BackupManifest
    latest_uri: str
    previous: BackupInfo | None
    snapshots_since_previous: int | None
    removed: list[BackupInfo]
    table_rows: dict[str, int] | None
    duration_seconds: float
    files: SyncReport | None = None
    store_bytes: int | None = None
    removed_files: int = 0
    up_to_date: bool = False


def check_mode(mode: str) -> None:
    """Refuse a backup mode other than ``full`` and ``metadata``."""
    if mode not in BACKUP_MODES:
        raise ConfigurationError(
            f"backup mode must be 'full' (catalog and data files) or 'metadata' (catalog only), got {mode!r}"
        )


def _effective_data_path(settings: LakeSettings, stored: str | None) -> str:
    """The configured data path, else the one the catalog records (relative ones resolve like DuckLake's)."""
    chosen = settings.data_path or stored
    if not chosen:
        raise BackupError(f"DuckLake catalog {settings.describe()} records no data_path; set data_path")
    return normalize_data_path(chosen)


def _stage_catalog(
    settings: LakeSettings,
    target: Path,
    storage_version: str | None,
    previous_snapshot: int | None,
    mode: str,
    backup_uri: str,
) -> tuple[BackupManifest, int | None, list[Transfer]]:
    """Copy the catalog into ``target`` in one read transaction and checkpoint it.

    For a full backup the copy is pointed at the backup store and the files to copy there are returned.
    Returns the manifest (no checksum yet), the number of snapshots since ``previous_snapshot`` and the
    transfers.
    """
    if not catalog_file_exists(settings.catalog):
        raise BackupError(f"Catalog file of {settings.describe()} does not exist: nothing to back up")
    connection = new_connection(
        memory_limit=settings.memory_limit, threads=settings.threads, extensions=catalog_extensions(settings.catalog)
    )
    try:
        attach_catalog_database(connection, settings.catalog, SOURCE_ALIAS, read_only=True)
        storage = f" (STORAGE_VERSION {quote_literal(storage_version)})" if storage_version else ""
        connection.execute(f"ATTACH {quote_literal(str(target))} AS {quote_identifier(_TARGET)}{storage}")
        manifest, since_previous = _copy_catalog(connection, settings, storage_version, previous_snapshot)
        transfers: list[Transfer] = []
        if mode == "full":
            transfers = _point_at_store(connection, manifest.data_path, backup_uri)
            manifest = dataclasses.replace(
                manifest,
                mode="full",
                store_uri=backup_uri,
                files=len(transfers),
                files_bytes=sum(t.size or 0 for t in transfers),
            )
        _finish_backup_file(connection, manifest)
    except (duckdb.Error, CatalogConnectionError) as error:
        raise BackupError(
            f"Could not back up DuckLake catalog {settings.describe()}; nothing was exposed: "
            f"{redact(str(error), settings.secrets())}"
        ) from None
    finally:
        connection.close()
    if target.with_name(target.name + ".wal").exists():
        raise BackupError(f"Backup file {target} still has a write-ahead log after CHECKPOINT; not exposing it")
    return manifest, since_previous, transfers


def _point_at_store(connection: duckdb.DuckDBPyConnection, data_path: str, backup_uri: str) -> list[Transfer]:
    """Make the catalog copy reference the backup store; return the files to copy there.

    Files that resolve through the data path keep their relative paths (the copy's data path becomes
    the store's ``data/`` folder); every other file is pointed at its absolute place in the store. The
    copy's data path is first made the lake's absolute one, so every file resolves to where it is now.
    """
    connection.execute(
        f"UPDATE {qualified_name(_TARGET, 'main', 'ducklake_metadata')} SET value = ? "
        "WHERE key = 'data_path' AND scope IS NULL",
        [data_path],
    )
    rows = list_store_files(connection, _TARGET, data_path)
    point_at_store_files(connection, _TARGET, backup_uri)
    return [Transfer(source, join_uri(backup_uri, key), size) for source, key, size in rows]


def _copy_catalog(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    storage_version: str | None,
    previous_snapshot: int | None,
) -> tuple[BackupManifest, int | None]:
    """Copy every DuckLake table into the backup's ``main`` schema, in one transaction."""
    schema = metadata_schema_of(settings)
    connection.execute("BEGIN TRANSACTION")
    tables = ducklake_tables(connection, SOURCE_ALIAS, schema)
    if "ducklake_snapshot" not in tables or "ducklake_metadata" not in tables:
        raise BackupError(
            f"{settings.describe()} holds no DuckLake catalog in schema {schema!r}: nothing to back up "
            "(check the catalog and metadata_schema settings)"
        )
    snapshots = qualified_name(SOURCE_ALIAS, schema, "ducklake_snapshot")
    last_snapshot = connection.execute(
        f"SELECT snapshot_id, CAST(snapshot_time AS TIMESTAMPTZ) FROM {snapshots} ORDER BY snapshot_id DESC LIMIT 1"
    ).fetchone()
    if last_snapshot is None:
        raise BackupError(
            f"{settings.describe()} holds a DuckLake catalog without any snapshot in schema {schema!r}: it is "
            "damaged, nothing was backed up"
        )
    snapshot_id, snapshot_time = last_snapshot
    since_previous = None
    if previous_snapshot is not None:
        [(since_previous,)] = connection.execute(
            f"SELECT count(*) FROM {snapshots} WHERE snapshot_id > ?", [previous_snapshot]
        ).fetchall()
    stored = dict(
        connection.execute(
            f"SELECT key, value FROM {qualified_name(SOURCE_ALIAS, schema, 'ducklake_metadata')} "
            "WHERE scope IS NULL AND key IN ('version', 'data_path')"
        ).fetchall()
    )
    for table in tables:
        connection.execute(
            f"CREATE TABLE {qualified_name(_TARGET, 'main', table)} "
            f"AS SELECT * FROM {qualified_name(SOURCE_ALIAS, schema, table)}"
        )
    connection.execute("COMMIT")
    created_at = datetime.now(UTC)
    manifest = BackupManifest(
        snapshot_id=snapshot_id,
        snapshot_time=as_utc(snapshot_time),
        catalog_kind=settings.catalog.kind,
        catalog=settings.describe(),
        ducklake_version=stored.get("version", "unknown"),
        data_path=_effective_data_path(settings, stored.get("data_path")),
        storage_version=storage_version,
        duckdb_version=duckdb.__version__,
        created_at=created_at,
        file_name=backup_file_name(created_at, snapshot_id),
    )
    return manifest, since_previous


def _finish_backup_file(connection: duckdb.DuckDBPyConnection, manifest: BackupManifest) -> None:
    """Point the copy at its absolute data path, store the manifest inside it, checkpoint and close it."""
    connection.execute(
        f"UPDATE {qualified_name(_TARGET, 'main', 'ducklake_metadata')} SET value = ? "
        "WHERE key = 'data_path' AND scope IS NULL",
        [manifest.backup_data_path],
    )
    fields = {key: None if value is None else str(value) for key, value in manifest.to_dict().items()}
    connection.execute(
        f"CREATE TABLE {qualified_name(_TARGET, 'main', MANIFEST_TABLE)} AS "
        "SELECT unnest(?::VARCHAR[]) AS key, unnest(?::VARCHAR[]) AS value",
        [list(fields), list(fields.values())],
    )
    connection.execute(f"CHECKPOINT {quote_identifier(_TARGET)}")
    connection.execute(f"DETACH {quote_identifier(_TARGET)}")


def _verify_staged(
    staged: Path,
    manifest: BackupManifest,
    s3: S3Settings | None,
    count_rows: bool,
    secrets: list[str],
    held: Iterable[str] = (),
) -> dict[str, int] | None:
    """Open the staged backup read-only as a DuckLake, as a reader would, and check it before exposing it.

    It must hold the manifest's snapshot and data path and (``full``) reference only files of the backup
    store that are there (``held``). An older DuckLake format is checked on a migrated private copy, so
    the backup keeps the catalog's own format. Returns every table's row count with ``count_rows``.
    """
    reader = open_backup_settings(staged, s3)
    checked = staged
    connection = new_connection()
    try:
        prepare_connection(connection, reader)
        try:
            attach_lake(connection, reader, use=False)
        except CatalogConnectionError as error:
            if format_mismatch(str(error)) is None:
                raise
            checked = staged.with_name("migrated" + BACKUP_SUFFIX)
            shutil.copyfile(staged, checked)
            migrate = dataclasses.replace(
                reader,
                catalog=DuckDBCatalog(str(checked)),
                read_only=False,
                attach_options={"AUTOMATIC_MIGRATION": True},
            )
            attach_lake(connection, migrate, use=False)
        [(snapshot_id,)] = connection.execute(
            "SELECT max(snapshot_id) FROM ducklake_snapshots(?)", [reader.alias]
        ).fetchall()
        [(data_path,)] = connection.execute("SELECT data_path FROM ducklake_settings(?)", [reader.alias]).fetchall()
        table_rows = backup_table_row_counts(connection, reader.alias) if count_rows else None
    except (duckdb.Error, CatalogConnectionError) as error:
        raise BackupError(
            f"The new backup of {manifest.catalog} does not open as a read-only DuckLake; nothing was exposed: "
            f"{redact(str(error), secrets)}"
        ) from None
    finally:
        connection.close()
    expected_path = manifest.backup_data_path
    if snapshot_id != manifest.snapshot_id or data_path.rstrip("/") != expected_path.rstrip("/"):
        raise BackupError(
            f"The new backup of {manifest.catalog} reads back snapshot {snapshot_id} with data path "
            f"{data_path}, expected snapshot {manifest.snapshot_id} and {expected_path}; not exposed"
        )
    if manifest.mode == "full" and manifest.store_uri:
        root = manifest.store_uri.rstrip("/") + "/"
        held = set(held)
        outside = [path for path in catalog_file_references(staged) if not path.startswith(root) or path not in held]
        if outside:
            raise BackupError(
                f"The new backup of {manifest.catalog} references {len(outside)} file(s) that are not in the backup "
                f"store {manifest.store_uri}, e.g. {outside[0]}; not exposed"
            )
    return table_rows


def _holds_catalog_state(
    manifest: BackupManifest, settings: LakeSettings, mode: str, storage_version: str | None
) -> bool:
    """Whether the backup of ``manifest`` was made in ``mode`` and ``storage_version`` from the catalog as it is
    now: the same catalog, its latest snapshot (id and commit time) and the same data path (a restore into
    another data path keeps the snapshots but moves the data)."""
    if (manifest.mode, manifest.storage_version, manifest.catalog) != (mode, storage_version, settings.describe()):
        return False
    state = catalog_state(settings)
    if state is None or state[:2] != (manifest.snapshot_id, manifest.snapshot_time):
        return False
    chosen = settings.data_path or state[2]
    return chosen is not None and normalize_data_path(chosen) == manifest.data_path


def _backup_intact(
    manifest: BackupManifest, backup_file_uri: str, listing: Mapping[str, StoredObject], store: ObjectStore
) -> bool:
    """Whether a full backup's file and every data file its index lists are in the store with their sizes,
    judged from one listing of the store (``listing``) and the backup's small file index."""
    held = listing.get(backup_file_uri)
    if held is None or manifest.size_bytes not in (None, held.size):
        return False
    if files_index_uri_for(backup_file_uri) not in listing:
        return False
    index = read_files_index(backup_file_uri, store) or {}
    return all(uri in listing and listing[uri].size == size for uri, (size, _) in index.items())


def create_backup(
    settings: LakeSettings,
    backup_uri: str,
    *,
    mode: BackupMode = "full",
    store: ObjectStore | None = None,
    data_store: ObjectStore | None = None,
    keep: int | None = None,
    keep_within: timedelta | None = None,
    storage_version: str | None = None,
    count_rows: bool = False,
    checkpoint: Checkpoint | None = None,
    force: bool = False,
) -> BackupResult:
    """Back up the lake of ``settings`` under ``backup_uri`` (a folder or ``s3://bucket/prefix``).

    When the newest backup (the one ``latest.json`` names) already holds the catalog's latest snapshot,
    the same id committed at the same time, of the same catalog with the same data path, in the same
    ``mode`` and ``storage_version``, and is intact, nothing is written: no backup, no ``latest`` change,
    no pruning. The result then has ``up_to_date=True`` and describes that backup. Intact means the
    backup file is there with its size and, for a full backup, every data file its ``.files.json`` index
    lists is in the store with its size (one listing of the store, which a backup would make anyway);
    otherwise a normal, incremental backup runs and copies again only what is missing.

    Args:
        settings: the lake to back up; it is only read.
        backup_uri: the backup store. Keep one store per lake.
        mode: ``"full"`` (default) copies every data and delete file the catalog references into the
            store, incrementally, so the backup is restorable after the catalog and every data and source
            file are lost; ``"metadata"`` copies the catalog only.
        store: reaches ``backup_uri`` (default: an ``ObjectStore`` with the lake's S3 settings).
        data_store: reaches the lake's data files (default: the lake's S3 settings).
        keep: prune older backups afterwards, keeping this many (see :func:`apply_retention`).
        keep_within: also keep backups younger than this.
        storage_version: DuckDB storage format of the backup file, e.g. ``'v1.0.0'``; by default DuckDB's
            default for new files (``v0.10.2`` compatible in DuckDB 1.5, so any DuckDB that runs DuckLake
            opens it).
        count_rows: also count the rows of every table in the backup.
        checkpoint: called as ``checkpoint(step, detail)`` after each step (tests kill the process there).
        force: make a new backup even when the newest one is up to date.

    Raises :class:`BackupError` naming the file or location when anything cannot be read, copied,
    verified or written; then every earlier backup is left as it was.

    Examples:
        >>> from ducklake_assets.core.backup import create_backup
        >>> result = create_backup(settings, "backups/space")  # doctest: +SKIP
    """
    backup_uri = backup_folder(backup_uri)
    check_mode(mode)
    check_retention(keep, keep_within)
    store = store or ObjectStore(settings.s3)
    data_store = data_store or ObjectStore(settings.s3)
    secrets = settings.secrets() + (store.s3.secrets() if store.s3 else [])
    started = time.monotonic()
    step = checkpoint or (lambda step, detail: None)
    try:
        newest = latest_manifest(backup_uri, store)
        previous = info_from_manifest(backup_uri, newest) if newest else None
        listing: dict[str, StoredObject] | None = None
        if (
            not force
            and newest is not None
            and previous is not None
            and _holds_catalog_state(newest, settings, mode, storage_version)
        ):
            if mode == "full":
                listing = list_many(store, [backup_uri])
                intact = _backup_intact(newest, previous.uri, listing, store)
            else:
                held = store.stat_if_exists(previous.uri)
                intact = held is not None and newest.size_bytes in (None, held.size)
            if intact:
                return BackupResult(
                    backup=previous,
                    manifest=newest,
                    latest_uri=latest_uri(backup_uri),
                    previous=previous,
                    snapshots_since_previous=0,
                    removed=[],
                    table_rows=None,
                    duration_seconds=time.monotonic() - started,
                    up_to_date=True,
                )
        if listing is None:
            listing = list_many(store, [backup_uri])
        for uri in store.remove_abandoned(listing.values()):
            listing.pop(uri, None)
    except StorageError as error:
        raise BackupError(f"Cannot reach backup location {backup_uri}: {error}") from None
    with scratch_folder("backup") as folder:
        path = folder / ("backup" + BACKUP_SUFFIX)
        manifest, since_previous, transfers = _stage_catalog(
            settings, path, storage_version, previous.snapshot_id if previous else None, mode, backup_uri
        )
        files = None
        if mode == "full":
            externals = {t.source.rsplit("/", 1)[0] for t in transfers if not t.source.startswith(manifest.data_path)}
            try:
                files = sync_files(
                    transfers,
                    source=data_store,
                    target=store,
                    source_prefixes=[manifest.data_path, *externals],
                    existing=listing,
                    target_prefixes=[join_uri(backup_uri, DATA_FOLDER), join_uri(backup_uri, EXTERNAL_FOLDER)],
                    checkpoint=checkpoint,
                )
                known = (read_files_index(previous.uri, store) or {}) if previous else {}
                reused = [dataclasses.replace(f, etag=f.etag or known.get(f.uri, (0, None))[1]) for f in files.reused]
                files = dataclasses.replace(files, reused=reused)
            except StorageError as error:
                raise BackupError(
                    f"Backup of {settings.describe()} at snapshot {manifest.snapshot_id} could not copy its data "
                    f"files into {backup_uri}; nothing was exposed and earlier backups are unchanged. "
                    f"{redact(str(error), secrets)}"
                ) from None
        step("staged", str(path))
        table_rows = _verify_staged(
            path,
            manifest,
            store.s3 or settings.s3,
            count_rows,
            secrets,
            [f.uri for f in files.files()] if files else (),
        )
        manifest = dataclasses.replace(manifest, sha256=file_sha256(path), size_bytes=path.stat().st_size)
        versioned = join_uri(backup_uri, manifest.file_name)
        manifest_json = manifest.to_json().encode()
        exposed: list[StoredObject] = []
        try:
            if files is not None:
                exposed.append(
                    store.put_bytes(files_index_json(manifest, files.files()), files_index_uri_for(versioned))
                )
                step("exposed-index", versioned)
            exposed.append(store.put_bytes(manifest_json, manifest_uri_for(versioned)))
            step("exposed-manifest", versioned)
            written = store.put_file(path, versioned)
            step("exposed-backup", versioned)
            exposed.append(store.copy_within(versioned, latest_uri(backup_uri)))
            step("exposed-latest-file", versioned)
            exposed.append(store.put_bytes(manifest_json, manifest_uri_for(latest_uri(backup_uri))))
            step("exposed-latest-pointer", versioned)
        except StorageError as error:
            raise BackupError(
                f"Backup of {settings.describe()} at snapshot {manifest.snapshot_id} was written and verified "
                f"but could not be stored under {backup_uri}; the previous backup is unchanged. Cause: "
                f"{redact(str(error), secrets)}"
            ) from None
    info = BackupInfo(versioned, manifest.snapshot_id, manifest.created_at, written.size)
    try:
        pruned = prune_backups(backup_uri, store, keep=keep, keep_within=keep_within)
    except StorageError as error:
        raise BackupError(f"Backup {versioned} was stored, but pruning older backups failed: {error}") from None
    return BackupResult(
        backup=info,
        manifest=manifest,
        latest_uri=latest_uri(backup_uri),
        previous=previous,
        snapshots_since_previous=since_previous,
        removed=pruned.backups,
        table_rows=table_rows,
        duration_seconds=time.monotonic() - started,
        files=files,
        store_bytes=_store_bytes_after(listing, files, [written, *exposed], pruned, store, backup_uri),
        removed_files=len(pruned.files),
    )


def _store_bytes_after(
    listing: dict[str, StoredObject],
    files: SyncReport | None,
    exposed: list[StoredObject],
    pruned: PruneResult,
    store: ObjectStore,
    backup_uri: str,
) -> int:
    """Bytes under the backup store after this run, from the listing made at its start (no second listing)."""
    sizes = {uri: item.size for uri, item in listing.items()}
    for copied in files.copied if files else []:
        sizes[copied.uri] = copied.size
    for item in exposed:
        sizes[item.uri] = item.size
    gone = set(pruned.files)
    for info in pruned.backups:
        gone |= {info.uri, info.manifest_uri, files_index_uri_for(info.uri)}
    return sum(size for uri, size in sizes.items() if uri not in gone)
