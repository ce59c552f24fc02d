"""Static backups of a DuckLake: the catalog as one DuckDB file that anyone can open read-only and, in
the default ``full`` mode, a copy of every data and delete file it references.

A backup copies every DuckLake table of the catalog database (DuckDB file, SQLite or PostgreSQL) into
schema ``main`` of a new DuckDB file, table by table inside one read transaction, so it holds exactly one
snapshot even while other writers commit. PostgreSQL catalogs are read the same way because DuckDB's
``COPY FROM DATABASE`` cannot copy their primary-key indexes and would put the tables in ``public``.

Two modes:

* ``full`` (default): every data and delete file any snapshot in the backup references, including
  source files registered by reference outside the data path, is copied into the backup store
  (``<backup_uri>/data/`` mirrors the data path, ``<backup_uri>/external/`` holds the rest), and the
  backup's catalog points at those copies. The backup survives the loss of the catalog database and
  of every data and source file. Files are shared by all backups in the store: a file an earlier backup
  copied is never copied again, and retention deletes a file only when no retained backup needs it.
* ``metadata``: the catalog only; the backup references the lake's own data files. For users who
  replicate the data bucket themselves.

Either way the backup opens with

.. code-block:: sql

    ATTACH 'ducklake:backup-20261121T050000000000Z-snapshot-42.ducklake' (READ_ONLY);

Each backup is staged in a private folder: its files are copied and verified (size and checksum), the
catalog file is checkpointed, opened read-only as a DuckLake and checked to hold the expected snapshot
and to reference nothing outside the backup store; only then is it exposed under ``backup_uri``: the
file index ``.files.json``, the manifest ``.json``, the versioned ``backup-<UTC time>-snapshot-<id>.ducklake``,
the stable copy ``latest.ducklake`` and last the pointer ``latest.json``. Every upload is atomic, so a
failure or a kill at any step leaves every earlier backup readable; the next run removes what a killed
run left behind. When the newest backup already holds the catalog's latest snapshot (same id, same commit
time, same data path) and its files are all in the store, nothing is written at all unless ``force`` asks
for a new backup.
"""

import dataclasses
import hashlib
import json
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import duckdb

from .catalog import Catalog, DuckDBCatalog, PostgresCatalog, SQLiteCatalog
from .errors import BackupError, CatalogConnectionError, ConfigurationError, DuckLakeAssetsError, StorageError, redact
from .files import catalog_files_sql, normalize_data_path
from .lake import LakeSettings, attach_lake, connect_lake, format_mismatch, new_connection, prepare_connection
from .locations import absolute_local_path, is_remote, join_uri
from .retry import retry_on_conflict
from .s3 import S3Settings
from .scratch import scratch_folder
from .sql import qualified_name, quote_identifier, quote_literal
from .storage import ObjectStore, StoredObject
from .sync import Checkpoint, SyncedFile, SyncReport, Transfer, list_many, sync_files

MANIFEST_TABLE = "ducklake_assets_backup_manifest"
"""Table inside every backup file holding its manifest as ``(key, value)`` rows."""

MANIFEST_FORMAT = "ducklake-assets-backup/1"
FILES_FORMAT = "ducklake-assets-backup-files/1"
LATEST_STEM = "latest"
BACKUP_SUFFIX = ".ducklake"
MANIFEST_SUFFIX = ".json"
FILES_SUFFIX = ".files.json"
DATA_FOLDER = "data"
"""Folder of a backup store mirroring the lake's data path (full backups)."""
EXTERNAL_FOLDER = "external"
"""Folder of a backup store holding files registered from outside the data path (full backups)."""
PINS_FOLDER = "pins"
"""Folder of a backup store holding one small file per pinned backup."""

BackupMode = Literal["full", "metadata"]
BACKUP_MODES: tuple[str, ...] = ("full", "metadata")
ORPHAN_GRACE = timedelta(hours=24)
"""Files in the store that no backup lists are removed by retention only once they are this old (an
unfinished backup that is still copying has not listed its files yet)."""
_PIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

_BACKUP_NAME = re.compile(r"^backup-(\d{8}T\d{12})Z-snapshot-(\d+)\.ducklake$")
_NAME_TIME_FORMAT = "%Y%m%dT%H%M%S%f"
_SOURCE = "ducklake_assets_source"
_TARGET = "ducklake_assets_backup"


@dataclass(frozen=True)
class BackupManifest:
    """What a backup holds and where it came from; never contains a password.

    ``data_path`` is the lake's own data path; ``mode`` says whether the data files were copied
    (``full``: under ``store_uri``, which the backup's catalog references) or not (``metadata``).
    ``ducklake_version`` is the DuckLake format of the catalog the backup holds. ``sha256`` and
    ``size_bytes`` describe the backup file, so they are only in the JSON sidecar (the copy inside the
    file cannot contain its own checksum).
    """

    snapshot_id: int
    snapshot_time: datetime
    catalog_kind: str
    catalog: str
    ducklake_version: str
    data_path: str
    storage_version: str | None
    duckdb_version: str
    created_at: datetime
    file_name: str
    sha256: str | None = None
    size_bytes: int | None = None
    format: str = MANIFEST_FORMAT
    mode: str = "metadata"
    store_uri: str | None = None
    files: int | None = None
    files_bytes: int | None = None

    @property
    def backup_data_path(self) -> str:
        """The data path recorded inside the backup: the store's data folder for a full backup."""
        if self.mode == "full" and self.store_uri:
            return store_data_path(self.store_uri)
        return self.data_path

    def to_dict(self) -> dict[str, object]:
        values = dataclasses.asdict(self)
        values["snapshot_time"] = self.snapshot_time.isoformat()
        values["created_at"] = self.created_at.isoformat()
        return values

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> "BackupManifest":
        fields = {field.name for field in dataclasses.fields(cls)}
        # Values as JSON or the manifest table holds them, converted below; the constructor takes the rest as is.
        known: dict[str, Any] = {key: value for key, value in values.items() if key in fields}
        for key in ("snapshot_time", "created_at"):
            known[key] = datetime.fromisoformat(str(known[key]))
        for key in ("snapshot_id", "size_bytes", "files", "files_bytes"):
            if known.get(key) is not None:
                known[key] = int(known[key])
        return cls(**known)


@dataclass(frozen=True)
class BackupInfo:
    """One versioned backup under a backup folder, as listed from its name and size."""

    uri: str
    snapshot_id: int
    created_at: datetime
    size_bytes: int

    @property
    def manifest_uri(self) -> str:
        """The JSON sidecar beside the backup file."""
        return manifest_uri_for(self.uri)


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


def manifest_uri_for(backup_file_uri: str) -> str:
    """``.../backup-x.ducklake`` -> ``.../backup-x.json``."""
    return backup_file_uri.removesuffix(BACKUP_SUFFIX) + MANIFEST_SUFFIX


def files_index_uri_for(backup_file_uri: str) -> str:
    """``.../backup-x.ducklake`` -> ``.../backup-x.files.json``: the data files a full backup references."""
    return backup_file_uri.removesuffix(BACKUP_SUFFIX) + FILES_SUFFIX


def store_data_path(backup_uri: str) -> str:
    """The folder of a backup store that mirrors the lake's data path, ending in ``/``."""
    return join_uri(backup_uri, DATA_FOLDER) + "/"


def check_mode(mode: str) -> None:
    """Refuse a backup mode other than ``full`` and ``metadata``."""
    if mode not in BACKUP_MODES:
        raise ConfigurationError(
            f"backup mode must be 'full' (catalog and data files) or 'metadata' (catalog only), got {mode!r}"
        )


def latest_uri(backup_uri: str) -> str:
    """The stable copy of the newest backup: ``<backup_uri>/latest.ducklake``."""
    return join_uri(backup_uri, LATEST_STEM + BACKUP_SUFFIX)


def metadata_schema_of(settings: LakeSettings) -> str:
    """Schema holding the DuckLake tables inside the catalog database."""
    if settings.metadata_schema:
        return settings.metadata_schema
    return "public" if isinstance(settings.catalog, PostgresCatalog) else "main"


def catalog_extensions(catalog: Catalog) -> list[str]:
    """Extensions needed to attach ``catalog``'s database directly (not as a DuckLake)."""
    if isinstance(catalog, PostgresCatalog):
        return ["postgres_scanner"]
    if isinstance(catalog, SQLiteCatalog):
        return ["sqlite_scanner"]
    return []


def catalog_file_exists(catalog: Catalog) -> bool:
    """Whether a DuckDB or SQLite catalog file exists (always true for PostgreSQL, which is no file)."""
    if isinstance(catalog, DuckDBCatalog | SQLiteCatalog):
        return Path(catalog.path).expanduser().is_file()
    return True


def attach_catalog_database(
    connection: duckdb.DuckDBPyConnection, catalog: Catalog, name: str, *, read_only: bool
) -> None:
    """Attach the database that stores a DuckLake catalog as a plain database called ``name``.

    Reading the catalog tables this way (rather than through DuckLake) lets one DuckDB transaction see
    all of them at one point in time: DuckDB's MVCC for a DuckDB file, one SQLite read transaction, one
    ``REPEATABLE READ`` PostgreSQL transaction for a read-only PostgreSQL attach. A DuckDB file that
    another process is writing is waited for (bounded, :class:`~.retry.RetryPolicy`).
    """
    options = ["READ_ONLY"] if read_only else []
    if isinstance(catalog, PostgresCatalog):
        options.insert(0, "TYPE postgres")
        secret = f"{name}_secret"
        if catalog.create_duckdb_secret(connection, secret):
            options.append(f"SECRET {quote_identifier(secret)}")
        path = catalog.conninfo()
    elif isinstance(catalog, SQLiteCatalog):
        options.insert(0, "TYPE sqlite")
        path = str(Path(catalog.path).expanduser().resolve())
    else:
        path = catalog.metadata_path()
    clause = f" ({', '.join(options)})" if options else ""
    retry_on_conflict(
        lambda: connection.execute(f"ATTACH {quote_literal(path)} AS {quote_identifier(name)}{clause}"),
        what=f"Opening DuckLake catalog {catalog.describe()}",
        secrets=[catalog.password] if isinstance(catalog, PostgresCatalog) and catalog.password else [],
    )


def ducklake_tables(connection: duckdb.DuckDBPyConnection, database: str, schema: str) -> list[str]:
    """Names of the DuckLake catalog tables (``ducklake_*``) in ``database.schema``, without our manifest."""
    rows = connection.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = ? "
        "AND starts_with(table_name, 'ducklake_') AND table_name <> ? ORDER BY table_name",
        [database, schema, MANIFEST_TABLE],
    ).fetchall()
    return [row[0] for row in rows]


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _effective_data_path(settings: LakeSettings, stored: str | None) -> str:
    """The configured data path, else the one the catalog records (relative ones resolve like DuckLake's)."""
    chosen = settings.data_path or stored
    if not chosen:
        raise BackupError(f"DuckLake catalog {settings.describe()} records no data_path; set data_path")
    return normalize_data_path(chosen)


def _backup_name(created_at: datetime, snapshot_id: int) -> str:
    return f"backup-{created_at.strftime(_NAME_TIME_FORMAT)}Z-snapshot-{snapshot_id}{BACKUP_SUFFIX}"


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
        attach_catalog_database(connection, settings.catalog, _SOURCE, read_only=True)
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


def latest_catalog_snapshot(settings: LakeSettings) -> tuple[int, datetime] | None:
    """The id and commit time of the catalog's latest snapshot, read from its catalog tables (read-only).

    ``None`` when the catalog database holds no DuckLake catalog yet. This is the small read that tells
    whether the newest backup is still current; a snapshot id alone is not enough, since a restore that
    dropped snapshots lets the catalog reuse their ids.
    """
    state = _catalog_state(settings)
    return None if state is None else state[:2]


def _catalog_state(settings: LakeSettings) -> tuple[int, datetime, str | None] | None:
    """The catalog's latest snapshot (id, commit time) and the data path it records, in one read-only query."""
    if not catalog_file_exists(settings.catalog):
        raise BackupError(f"Catalog file of {settings.describe()} does not exist: nothing to back up")
    schema = metadata_schema_of(settings)
    connection = new_connection(
        memory_limit=settings.memory_limit, threads=settings.threads, extensions=catalog_extensions(settings.catalog)
    )
    try:
        attach_catalog_database(connection, settings.catalog, _SOURCE, read_only=True)
        tables = ducklake_tables(connection, _SOURCE, schema)
        if "ducklake_snapshot" not in tables or "ducklake_metadata" not in tables:
            return None
        row = connection.execute(
            f"SELECT snapshot_id, CAST(snapshot_time AS TIMESTAMPTZ), (SELECT value FROM "
            f"{qualified_name(_SOURCE, schema, 'ducklake_metadata')} WHERE scope IS NULL AND key = 'data_path') "
            f"FROM {qualified_name(_SOURCE, schema, 'ducklake_snapshot')} ORDER BY snapshot_id DESC LIMIT 1"
        ).fetchone()
    except (duckdb.Error, CatalogConnectionError) as error:
        raise BackupError(
            f"Could not read the latest snapshot of DuckLake catalog {settings.describe()}; nothing was written: "
            f"{redact(str(error), settings.secrets())}"
        ) from None
    finally:
        connection.close()
    return None if row is None else (row[0], _utc(row[1]), row[2])


def store_key_sql(path: str, data_path: str) -> str:
    """SQL for where file ``path`` (an SQL expression) lives in a backup store, relative to its root.

    Files under the lake's data path keep their place below ``data/``; any other file goes to
    ``external/<16 hex digits of its path's MD5>/<its name>``, so two sources with one name never meet.
    ``data_path`` is an SQL expression too.
    """
    return (
        f"CASE WHEN starts_with({path}, {data_path}) "
        f"THEN '{DATA_FOLDER}/' || substr({path}, length({data_path}) + 1) "
        f"ELSE '{EXTERNAL_FOLDER}/' || substr(md5({path}), 1, 16) || '/' || regexp_extract({path}, '[^/]*$') END"
    )


_STORE_FILES = "ducklake_assets_store_files"


def list_store_files(
    connection: duckdb.DuckDBPyConnection, database: str, data_path: str
) -> list[tuple[str, str, int | None]]:
    """Every file the catalog copy in ``database`` references, as ``(path, key in a copy store, size)``
    sorted by key (see :func:`store_key_sql`); kept for :func:`point_at_store_files`."""
    connection.execute(
        f"CREATE OR REPLACE TEMPORARY TABLE {_STORE_FILES} AS SELECT *, {store_key_sql('path', '$data_path')} AS key "
        f"FROM ({catalog_files_sql(database)})",
        {"data_path": data_path},
    )
    return connection.execute(f"SELECT DISTINCT path, key, size FROM {_STORE_FILES} ORDER BY key").fetchall()


def point_at_store_files(connection: duckdb.DuckDBPyConnection, database: str, root: str) -> None:
    """Make every file of the copy listed by :func:`list_store_files` that does not move with its data
    path reference its place under the store ``root`` by absolute path."""
    for table, key, kind in (
        ("ducklake_data_file", "data_file_id", "data"),
        ("ducklake_delete_file", "delete_file_id", "delete"),
    ):
        connection.execute(
            f"UPDATE {qualified_name(database, 'main', table)} AS f SET path = $root || m.key, "
            f"path_is_relative = false FROM {_STORE_FILES} AS m "
            f"WHERE m.kind = $kind AND m.file_id = f.{quote_identifier(key)} AND NOT m.relative",
            {"root": root.rstrip("/") + "/", "kind": kind},
        )


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
    tables = ducklake_tables(connection, _SOURCE, schema)
    if "ducklake_snapshot" not in tables or "ducklake_metadata" not in tables:
        raise BackupError(
            f"{settings.describe()} holds no DuckLake catalog in schema {schema!r}: nothing to back up "
            "(check the catalog and metadata_schema settings)"
        )
    snapshots = qualified_name(_SOURCE, schema, "ducklake_snapshot")
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
            f"SELECT key, value FROM {qualified_name(_SOURCE, schema, 'ducklake_metadata')} "
            "WHERE scope IS NULL AND key IN ('version', 'data_path')"
        ).fetchall()
    )
    for table in tables:
        connection.execute(
            f"CREATE TABLE {qualified_name(_TARGET, 'main', table)} "
            f"AS SELECT * FROM {qualified_name(_SOURCE, schema, table)}"
        )
    connection.execute("COMMIT")
    created_at = datetime.now(UTC)
    manifest = BackupManifest(
        snapshot_id=snapshot_id,
        snapshot_time=_utc(snapshot_time),
        catalog_kind=settings.catalog.kind,
        catalog=settings.describe(),
        ducklake_version=stored.get("version", "unknown"),
        data_path=_effective_data_path(settings, stored.get("data_path")),
        storage_version=storage_version,
        duckdb_version=duckdb.__version__,
        created_at=created_at,
        file_name=_backup_name(created_at, snapshot_id),
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


def backup_table_row_counts(connection: duckdb.DuckDBPyConnection, alias: str) -> dict[str, int]:
    """Row count of every table of the lake attached as ``alias``, keyed ``schema.table``."""
    tables = connection.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ? ORDER BY ALL", [alias]
    ).fetchall()
    counts: dict[str, int] = {}
    for schema, table in tables:
        [(counts[f"{schema}.{table}"],)] = connection.execute(
            f"SELECT count(*) FROM {qualified_name(alias, schema, table)}"
        ).fetchall()
    return counts


def open_backup_settings(path: str | Path, s3: S3Settings | None = None, alias: str = "backup") -> LakeSettings:
    """Settings that open a local backup file read-only as a DuckLake, exactly as a plain reader would."""
    return LakeSettings(catalog=DuckDBCatalog(str(path)), alias=alias, read_only=True, s3=s3)


def backup_folder(backup_uri: str) -> str:
    """``backup_uri`` checked to name a folder or prefix, a local one made absolute."""
    if not isinstance(backup_uri, str) or not backup_uri.strip():
        raise ConfigurationError("backup_uri must be a folder or s3://bucket/prefix where backups are kept")
    if backup_uri.endswith((BACKUP_SUFFIX, MANIFEST_SUFFIX)):
        raise ConfigurationError(
            f"backup_uri {backup_uri!r} names a file; give the folder (or s3:// prefix) that holds the backups"
        )
    return absolute_local_path(backup_uri).rstrip("/")


def check_retention(keep_last: int | None, keep_within: timedelta | None) -> None:
    """Refuse retention settings that would make no sense, before anything is written."""
    if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 1):
        raise ConfigurationError(f"keep_last must be at least 1 (got {keep_last!r}); leave it unset to keep all")
    if keep_within is not None and keep_within <= timedelta(0):
        raise ConfigurationError(f"keep_within must be a positive duration (got {keep_within})")


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


def _files_index(manifest: BackupManifest, files: list[SyncedFile]) -> bytes:
    root = (manifest.store_uri or "").rstrip("/") + "/"
    entries = [[item.uri.removeprefix(root), item.size, item.etag] for item in files]
    return json.dumps({"format": FILES_FORMAT, "snapshot_id": manifest.snapshot_id, "files": entries}).encode()


def read_files_index(backup_file_uri: str, store: ObjectStore) -> dict[str, tuple[int, str | None]] | None:
    """The data files a full backup references, as ``{URI: (size, ETag)}``; ``None`` for a metadata backup."""
    uri = files_index_uri_for(backup_file_uri)
    if not store.exists(uri):
        return None
    try:
        index = json.loads(store.get_bytes(uri))
        root = backup_file_uri.rsplit("/", 1)[0]
        return {join_uri(root, key): (int(size), etag) for key, size, etag in index["files"]}
    except (ValueError, KeyError, TypeError) as error:
        raise BackupError(f"Backup file index {uri} is not valid ({error}); the backup is damaged") from None


def _holds_catalog_state(
    manifest: BackupManifest, settings: LakeSettings, mode: str, storage_version: str | None
) -> bool:
    """Whether the backup of ``manifest`` was made in ``mode`` and ``storage_version`` from the catalog as it is
    now: the same catalog, its latest snapshot (id and commit time) and the same data path (a restore into
    another data path keeps the snapshots but moves the data)."""
    if (manifest.mode, manifest.storage_version, manifest.catalog) != (mode, storage_version, settings.describe()):
        return False
    state = _catalog_state(settings)
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
    keep_last: int | None = None,
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
        keep_last: prune older backups afterwards, keeping this many (see :func:`apply_retention`).
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
    check_retention(keep_last, keep_within)
    store = store or ObjectStore(settings.s3)
    data_store = data_store or ObjectStore(settings.s3)
    secrets = settings.secrets() + (store.s3.secrets() if store.s3 else [])
    started = time.monotonic()
    step = checkpoint or (lambda step, detail: None)
    try:
        newest = latest_manifest(backup_uri, store)
        previous = _info_from_manifest(backup_uri, newest) if newest else None
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
        manifest = dataclasses.replace(manifest, sha256=_sha256(path), size_bytes=path.stat().st_size)
        versioned = join_uri(backup_uri, manifest.file_name)
        manifest_json = manifest.to_json().encode()
        exposed: list[StoredObject] = []
        try:
            if files is not None:
                exposed.append(store.put_bytes(_files_index(manifest, files.files()), files_index_uri_for(versioned)))
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
        pruned = prune_backups(backup_uri, store, keep_last=keep_last, keep_within=keep_within)
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
    pruned: "PruneResult",
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


def _info_from_object(item: StoredObject) -> BackupInfo | None:
    match = _BACKUP_NAME.match(item.uri.rsplit("/", 1)[-1])
    if match is None:
        return None
    created = datetime.strptime(match.group(1), _NAME_TIME_FORMAT).replace(tzinfo=UTC)
    return BackupInfo(item.uri, int(match.group(2)), created, item.size)


def list_backups(backup_uri: str, store: ObjectStore) -> list[BackupInfo]:
    """The versioned backups directly under ``backup_uri``, newest first (an empty list if there are none).

    ``latest.ducklake`` is a copy, not listed; sub-folders (such as restore safety backups) are skipped.
    """
    backup_uri = backup_folder(backup_uri)
    if not is_remote(backup_uri) and not Path(backup_uri).is_dir():
        return []
    base = backup_uri.rstrip("/") + "/"
    found = []
    for item in store.list_prefix(backup_uri, pattern="backup-*" + BACKUP_SUFFIX):
        if "/" in item.uri.removeprefix(base):
            continue
        info = _info_from_object(item)
        if info is not None:
            found.append(info)
    return sorted(found, key=lambda info: (info.created_at, info.snapshot_id), reverse=True)


def read_manifest(backup_file_uri: str, store: ObjectStore) -> BackupManifest:
    """The JSON manifest beside a backup file (``latest.ducklake`` or a versioned one)."""
    uri = manifest_uri_for(backup_file_uri)
    try:
        return BackupManifest.from_dict(json.loads(store.get_bytes(uri)))
    except (ValueError, KeyError, TypeError) as error:
        raise BackupError(f"Backup manifest {uri} is not a valid manifest ({error}); the backup is unusable") from None


def read_manifest_from_file(path: str | Path, described: str | None = None) -> BackupManifest:
    """The manifest stored inside a local backup file (table ``ducklake_assets_backup_manifest``).

    ``described`` names the backup in errors when ``path`` is a private copy of it.
    """
    connection = new_connection()
    try:
        connection.execute(f"ATTACH {quote_literal(str(path))} AS backup_file (READ_ONLY)")
        rows = connection.execute(f"SELECT key, value FROM backup_file.main.{quote_identifier(MANIFEST_TABLE)}")
        return BackupManifest.from_dict(dict(rows.fetchall()))
    except (duckdb.Error, ValueError, KeyError, TypeError) as error:
        cause = str(error).replace(str(path), described) if described else str(error)
        raise BackupError(
            f"{described or path} is not a ducklake-assets backup with a manifest (damaged or truncated?): {cause}"
        ) from None
    finally:
        connection.close()


def latest_manifest(backup_uri: str, store: ObjectStore) -> BackupManifest | None:
    """The manifest of the backup ``latest.json`` points to under ``backup_uri`` (``None`` when there is none
    yet): one small read that says which snapshot the newest backup holds."""
    backup_uri = backup_folder(backup_uri)
    pointer = manifest_uri_for(latest_uri(backup_uri))
    if not store.exists(pointer):
        return None
    return read_manifest(latest_uri(backup_uri), store)


def _info_from_manifest(backup_uri: str, manifest: BackupManifest) -> BackupInfo:
    return BackupInfo(
        join_uri(backup_uri, manifest.file_name), manifest.snapshot_id, manifest.created_at, manifest.size_bytes or 0
    )


def latest_backup(backup_uri: str, store: ObjectStore) -> BackupInfo | None:
    """The backup ``latest.json`` points to under ``backup_uri``, or ``None`` when there is none yet."""
    backup_uri = backup_folder(backup_uri)
    manifest = latest_manifest(backup_uri, store)
    return _info_from_manifest(backup_uri, manifest) if manifest else None


@dataclass(frozen=True)
class PruneResult:
    """What :func:`prune_backups` deleted: backups, and data files no retained backup references."""

    backups: list[BackupInfo]
    files: list[str]


def apply_retention(
    backup_uri: str,
    store: ObjectStore,
    *,
    keep_last: int | None = None,
    keep_within: timedelta | None = None,
    now: datetime | None = None,
) -> list[BackupInfo]:
    """Delete versioned backups that no rule keeps; return what was deleted (see :func:`prune_backups`)."""
    return prune_backups(backup_uri, store, keep_last=keep_last, keep_within=keep_within, now=now).backups


def prune_backups(
    backup_uri: str,
    store: ObjectStore,
    *,
    keep_last: int | None = None,
    keep_within: timedelta | None = None,
    now: datetime | None = None,
) -> PruneResult:
    """Delete the backups no rule keeps, and the data files only they referenced.

    A backup is kept when it is among the newest ``keep_last``, younger than ``keep_within`` (when both
    are given either rule keeps it; with neither, everything is kept) or pinned (:func:`pin_backup`). The
    newest backup and the one ``latest`` points to are never deleted. A data file in the store is deleted
    only when no kept backup's file index lists it; a file no backup lists (left by a failed run) goes
    once it is older than :data:`ORPHAN_GRACE`.
    """
    check_retention(keep_last, keep_within)
    if keep_last is None and keep_within is None:
        return PruneResult([], [])
    backup_uri = backup_folder(backup_uri)
    backups = list_backups(backup_uri, store)
    latest = latest_backup(backup_uri, store)
    pinned = {pin.backup_uri for pin in list_pins(backup_uri, store)}
    now = now or datetime.now(UTC)
    removed: list[BackupInfo] = []
    kept: list[BackupInfo] = []
    for position, info in enumerate(backups):
        protected = position == 0 or (latest is not None and info.uri == latest.uri) or info.uri in pinned
        kept_by_count = keep_last is not None and position < keep_last
        kept_by_age = keep_within is not None and now - info.created_at <= keep_within
        (kept if protected or kept_by_count or kept_by_age else removed).append(info)
    if not removed:
        return PruneResult([], [])
    needed: set[str] = set()
    for info in kept:
        needed |= set(read_files_index(info.uri, store) or {})
    released: set[str] = set()
    for info in removed:
        released |= set(read_files_index(info.uri, store) or {})
    for info in removed:
        store.delete_many([info.uri, info.manifest_uri, files_index_uri_for(info.uri)])
    held = list_many(store, [join_uri(backup_uri, DATA_FOLDER), join_uri(backup_uri, EXTERNAL_FOLDER)])
    inside = backup_uri.rstrip("/") + "/"
    unneeded = sorted(
        item.uri
        for item in held.values()
        if item.uri.startswith(inside)
        and item.uri not in needed
        and (item.uri in released or now - item.modified >= ORPHAN_GRACE)
    )
    store.delete_many(unneeded)
    return PruneResult(removed, unneeded)


@dataclass(frozen=True)
class BackupPin:
    """A backup kept forever under a name, like a tag: retention never deletes it or its files."""

    name: str
    backup_uri: str
    snapshot_id: int
    pinned_at: datetime


def _pin_uri(backup_uri: str, name: str) -> str:
    if not isinstance(name, str) or not _PIN_NAME.match(name):
        raise ConfigurationError(
            f"pin name {name!r} must start with a letter or digit and hold only letters, digits, '.', '_' and '-'"
        )
    return join_uri(backup_uri, PINS_FOLDER, name + MANIFEST_SUFFIX)


def pin_backup(backup_uri: str, name: str, store: ObjectStore, backup: str = "latest") -> BackupPin:
    """Keep ``backup`` (``"latest"``, or a versioned backup's file name or URI) forever as ``name``.

    Pinning a name again moves it to the given backup.
    """
    backup_uri = backup_folder(backup_uri)
    uri = _pin_uri(backup_uri, name)
    if backup == "latest":
        info = latest_backup(backup_uri, store)
        if info is None:
            raise BackupError(f"No backup under {backup_uri} to pin yet")
        file_uri = info.uri
    else:
        file_uri = absolute_local_path(backup if "/" in backup else join_uri(backup_uri, backup))
    if not _BACKUP_NAME.match(file_uri.rsplit("/", 1)[-1]) or not store.exists(file_uri):
        raise BackupError(f"Cannot pin {file_uri}: there is no such versioned backup under {backup_uri}")
    manifest = read_manifest(file_uri, store)
    pin = BackupPin(name, file_uri, manifest.snapshot_id, datetime.now(UTC))
    record = {
        "name": name,
        "file_name": file_uri.rsplit("/", 1)[-1],
        "snapshot_id": pin.snapshot_id,
        "pinned_at": pin.pinned_at.isoformat(),
    }
    store.put_bytes(json.dumps(record, indent=2).encode(), uri)
    return pin


def unpin_backup(backup_uri: str, name: str, store: ObjectStore) -> None:
    """Remove pin ``name``; its backup is then pruned like any other."""
    uri = _pin_uri(backup_folder(backup_uri), name)
    if not store.exists(uri):
        raise BackupError(f"There is no pin {name!r} under {backup_uri}")
    store.delete(uri)


def list_pins(backup_uri: str, store: ObjectStore) -> list[BackupPin]:
    """The pinned backups of a store, by name."""
    backup_uri = backup_folder(backup_uri)
    pins = []
    for item in list_many(store, [join_uri(backup_uri, PINS_FOLDER)]).values():
        if not item.uri.endswith(MANIFEST_SUFFIX):
            continue
        try:
            record = json.loads(store.get_bytes(item.uri))
            pins.append(
                BackupPin(
                    record["name"],
                    join_uri(backup_uri, record["file_name"]),
                    int(record["snapshot_id"]),
                    datetime.fromisoformat(record["pinned_at"]),
                )
            )
        except (ValueError, KeyError, TypeError) as error:
            raise BackupError(f"Pin {item.uri} is not valid ({error}); fix or delete it") from None
    return sorted(pins, key=lambda pin: pin.name)


def resolve_backup_file(backup: str, store: ObjectStore) -> str:
    """A backup file URI from either a backup file or a backup folder (whose latest backup is used)."""
    if backup.endswith(BACKUP_SUFFIX):
        return absolute_local_path(backup)
    latest = latest_backup(backup, store)
    if latest is None:
        raise BackupError(f"No backup found under {backup} (no {LATEST_STEM}{MANIFEST_SUFFIX} there)")
    return latest.uri


def fetch_backup(backup_file_uri: str, store: ObjectStore, folder: str | Path) -> tuple[Path, BackupManifest]:
    """Download a backup file into ``folder`` and check it against its manifest's checksum.

    ``latest.ducklake`` is checked against the manifest of the versioned backup it is a copy of (named
    inside it), so it is never judged by a ``latest.json`` that a killed run left one backup behind. A
    backup without a sidecar (copied around by hand) is accepted with the manifest stored inside it.
    """
    local = Path(folder) / ("fetched" + BACKUP_SUFFIX)
    try:
        store.get_file(backup_file_uri, local)
    except StorageError as error:
        raise BackupError(f"Cannot read backup {backup_file_uri}: {error}") from None
    checked_against = backup_file_uri
    if backup_file_uri.rsplit("/", 1)[-1] == LATEST_STEM + BACKUP_SUFFIX:
        inside = read_manifest_from_file(local, backup_file_uri)
        checked_against = join_uri(backup_file_uri.rsplit("/", 1)[0], inside.file_name)
    if not store.exists(manifest_uri_for(checked_against)):
        return local, read_manifest_from_file(local, backup_file_uri)
    manifest = read_manifest(checked_against, store)
    if manifest.sha256 and manifest.sha256 != _sha256(local):
        which = "its manifest" if checked_against == backup_file_uri else f"the manifest of {checked_against}"
        raise BackupError(
            f"Backup {backup_file_uri} does not match the checksum in {which}: it is damaged or was replaced; "
            "pick another backup"
        )
    return local, manifest


def catalog_file_references(catalog_file: Path, *, include_history: bool = True) -> list[str]:
    """Every data and delete file a local DuckLake catalog file (a backup or a published revision) references.

    Paths come back absolute, as DuckDB reads them, sorted. ``include_history`` as in
    :func:`backup_referenced_files`.
    """
    connection = new_connection()
    try:
        connection.execute(f"ATTACH {quote_literal(str(catalog_file))} AS backup_file (READ_ONLY)")
        listing = catalog_files_sql("backup_file", include_history=include_history)
        rows = connection.execute(f"SELECT DISTINCT path FROM ({listing}) ORDER BY 1").fetchall()
    except duckdb.Error as error:
        raise BackupError(f"Cannot read the file list of backup {catalog_file}: {error}") from None
    finally:
        connection.close()
    return [row[0] for row in rows]


def backup_referenced_files(backup: str, store: ObjectStore, *, include_history: bool = True) -> list[str]:
    """Every data and delete file a backup references, as absolute paths or URLs, sorted.

    ``backup`` is a backup file or a backup folder (its latest backup). With ``include_history`` (the
    default) files of older snapshots kept in the backup count too, since time travel inside the backup
    needs them; without it only the files live at the backup's snapshot. Maintenance must not delete
    any of these while the backup is retained.
    """
    file_uri = resolve_backup_file(backup, store)
    with scratch_folder("read") as scratch:
        local, _ = fetch_backup(file_uri, store, scratch)
        return catalog_file_references(local, include_history=include_history)


@dataclass(frozen=True)
class BackupLag:
    """How far the catalog has moved past a backup.

    ``oldest_missing_time`` is when the first snapshot the backup lacks was committed (``None`` when the
    backup holds the catalog's latest snapshot): changes have waited that long for a backup.
    """

    backup_snapshot_id: int
    catalog_snapshot_id: int
    snapshots_behind: int
    oldest_missing_time: datetime | None


def backup_lag(settings: LakeSettings, backup_snapshot_id: int) -> BackupLag:
    """Compare a backup's snapshot with the live catalog's snapshots (read-only)."""
    reader = dataclasses.replace(settings, read_only=True)
    with connect_lake(reader) as connection:
        newer = connection.execute(
            "SELECT snapshot_id, snapshot_time FROM ducklake_snapshots(?) WHERE snapshot_id > ? ORDER BY snapshot_id",
            [reader.alias, backup_snapshot_id],
        ).fetchall()
        [(latest,)] = connection.execute(
            "SELECT max(snapshot_id) FROM ducklake_snapshots(?)", [reader.alias]
        ).fetchall()
    return BackupLag(backup_snapshot_id, latest, len(newer), _utc(newer[0][1]) if newer else None)


@dataclass(frozen=True)
class TableRowCheck:
    """One table's row count in the backup and in the live catalog at the backup's snapshot."""

    table: str
    backup_rows: int | None
    catalog_rows: int | None
    error: str | None = None

    @property
    def matches(self) -> bool:
        return self.error is None and self.backup_rows == self.catalog_rows


@dataclass(frozen=True)
class RestorabilityReport:
    backup_uri: str
    snapshot_id: int
    tables: list[TableRowCheck]

    @property
    def passed(self) -> bool:
        return all(table.matches for table in self.tables)


def check_backup_restorable(backup: str, settings: LakeSettings, store: ObjectStore) -> RestorabilityReport:
    """Open the backup as a fresh read-only client and compare every table's row count with the live
    catalog time-travelled to the backup's snapshot (``AT (VERSION => n)``).

    Raises :class:`BackupError` when the backup itself cannot be fetched or opened.
    """
    file_uri = resolve_backup_file(backup, store)
    with scratch_folder("check") as scratch:
        local, manifest = fetch_backup(file_uri, store, scratch)
        reader = open_backup_settings(local, store.s3 or settings.s3)
        try:
            with connect_lake(reader) as connection:
                backup_counts = backup_table_row_counts(connection, reader.alias)
        except (duckdb.Error, DuckLakeAssetsError) as error:
            raise BackupError(
                f"Backup {file_uri} does not open as a read-only DuckLake: {redact(str(error), settings.secrets())}"
            ) from None
    live = dataclasses.replace(settings, read_only=True)
    checks = []
    with connect_lake(live) as connection:
        for name, backup_rows in backup_counts.items():
            schema, table = name.split(".", 1)
            try:
                [(catalog_rows,)] = connection.execute(
                    f"SELECT count(*) FROM {qualified_name(live.alias, schema, table)} AT (VERSION => ?)",
                    [manifest.snapshot_id],
                ).fetchall()
            except duckdb.Error as error:
                checks.append(TableRowCheck(name, backup_rows, None, redact(str(error), settings.secrets())))
                continue
            checks.append(TableRowCheck(name, backup_rows, catalog_rows))
    return RestorabilityReport(file_uri, manifest.snapshot_id, checks)


@dataclass(frozen=True)
class BackupFilesReport:
    """Which files a backup references are gone (``missing``) or differ from what was copied (``damaged``).

    ``location`` says where they were looked for: ``"backup store"`` for a full backup, ``"data path"``
    for a metadata backup (which references the lake's own files).
    """

    backup_uri: str
    snapshot_id: int
    referenced: int
    missing: list[str]
    damaged: list[str] = dataclasses.field(default_factory=list)
    location: str = "data path"
    mode: str = "metadata"

    @property
    def ok(self) -> bool:
        return not self.missing and not self.damaged


def check_backup_files(backup: str, store: ObjectStore, data_store: ObjectStore) -> BackupFilesReport:
    """Which data and delete files a backup references are gone from storage.

    A full backup's copies are checked in the backup store against the sizes it recorded, with one
    listing of the store. A metadata backup's files are checked where the lake keeps them (``data_store``
    reaches them): one listing of the data path, and one per folder for files registered from elsewhere.
    """
    file_uri = resolve_backup_file(backup, store)
    with scratch_folder("files") as scratch:
        local, manifest = fetch_backup(file_uri, store, scratch)
        files = catalog_file_references(local)
    if manifest.mode == "full" and manifest.store_uri:
        root = file_uri.rsplit("/", 1)[0]
        files = relocate(files, manifest.store_uri, root)
        index = read_files_index(file_uri, store) or {}
        present = list_many(store, [join_uri(root, DATA_FOLDER), join_uri(root, EXTERNAL_FOLDER)])
        missing = [path for path in files if path not in present]
        damaged = [path for path in files if path in present and path in index and present[path].size != index[path][0]]
        return BackupFilesReport(
            file_uri, manifest.snapshot_id, len(files), sorted(missing), sorted(damaged), "backup store", "full"
        )
    folders = {path.rsplit("/", 1)[0] for path in files if not path.startswith(manifest.data_path)}
    present = list_many(data_store, [manifest.data_path, *folders])
    missing = [path for path in files if path not in present]
    return BackupFilesReport(file_uri, manifest.snapshot_id, len(files), sorted(missing))


def relocate(paths: Iterable[str], recorded_root: str, actual_root: str) -> list[str]:
    """Paths under a store's recorded root moved under where the store is now (a copied or replicated store)."""
    recorded = recorded_root.rstrip("/") + "/"
    actual = actual_root.rstrip("/") + "/"
    return [actual + path.removeprefix(recorded) if path.startswith(recorded) else path for path in paths]
