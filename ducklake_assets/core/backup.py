"""Static backups of a DuckLake catalog: one DuckDB file that anyone can open read-only.

A backup copies every DuckLake table of the catalog database (DuckDB file, SQLite or PostgreSQL) into
schema ``main`` of a new DuckDB file, table by table inside one read transaction, so it holds exactly one
snapshot even while other writers commit. PostgreSQL catalogs are read the same way because DuckDB's
``COPY FROM DATABASE`` cannot copy their primary-key indexes and would put the tables in ``public``.
The data path inside the backup is absolute (or a URL), so

.. code-block:: sql

    ATTACH 'ducklake:backup-20261121T050000000000Z-snapshot-42.ducklake' (READ_ONLY);

works anywhere the data files are reachable. Each backup is written to a local temporary file,
checkpointed, opened read-only as a DuckLake and checked to hold the expected snapshot, and only then
exposed under ``backup_uri``: a versioned ``backup-<UTC time>-snapshot-<id>.ducklake`` with its JSON
manifest ``.json`` beside it, then ``latest.ducklake`` and ``latest.json``. Every upload is atomic, so a
failure at any step leaves the previous backups readable.
"""

import dataclasses
import hashlib
import json
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from .catalog import Catalog, DuckDBCatalog, PostgresCatalog, SQLiteCatalog
from .errors import BackupError, CatalogConnectionError, ConfigurationError, DuckLakeAssetsError, StorageError, redact
from .extensions import load_extensions
from .lake import (
    LakeSettings,
    absolute_local_path,
    attach_lake,
    connect_lake,
    is_remote,
    new_connection,
    prepare_connection,
)
from .retry import retry_on_conflict
from .s3 import S3Settings
from .sql import qualified_name, quote_identifier, quote_literal
from .storage import ObjectStore, StoredObject, join_uri

MANIFEST_TABLE = "ducklake_assets_backup_manifest"
"""Table inside every backup file holding its manifest as ``(key, value)`` rows."""

MANIFEST_FORMAT = "ducklake-assets-backup/1"
LATEST_STEM = "latest"
BACKUP_SUFFIX = ".ducklake"
MANIFEST_SUFFIX = ".json"

_BACKUP_NAME = re.compile(r"^backup-(\d{8}T\d{12})Z-snapshot-(\d+)\.ducklake$")
_NAME_TIME_FORMAT = "%Y%m%dT%H%M%S%f"
_SOURCE = "ducklake_assets_source"
_TARGET = "ducklake_assets_backup"


@dataclass(frozen=True)
class BackupManifest:
    """What a backup holds and where it came from; never contains a password.

    ``sha256`` and ``size_bytes`` describe the backup file, so they are only in the JSON sidecar (the copy
    inside the file cannot contain its own checksum).
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
        known = {key: value for key, value in values.items() if key in fields}
        for key in ("snapshot_time", "created_at"):
            known[key] = datetime.fromisoformat(str(known[key]))
        for key in ("snapshot_id", "size_bytes"):
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
    count in the backup when ``count_rows`` was asked for.
    """

    backup: BackupInfo
    manifest: BackupManifest
    latest_uri: str
    previous: BackupInfo | None
    snapshots_since_previous: int | None
    removed: list[BackupInfo]
    table_rows: dict[str, int] | None
    duration_seconds: float


def manifest_uri_for(backup_file_uri: str) -> str:
    """``.../backup-x.ducklake`` -> ``.../backup-x.json``."""
    return backup_file_uri.removesuffix(BACKUP_SUFFIX) + MANIFEST_SUFFIX


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
        if catalog.password is not None:
            secret = f"{name}_secret"
            connection.execute(
                f"CREATE OR REPLACE TEMPORARY SECRET {quote_identifier(secret)} "
                f"(TYPE postgres, PASSWORD {quote_literal(catalog.password)})"
            )
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


def normalize_data_path(path: str) -> str:
    """A data path as a reader elsewhere needs it: absolute (or a URL), ending in ``/``."""
    return absolute_local_path(path).rstrip("/") + "/"


def _effective_data_path(settings: LakeSettings, stored: str | None) -> str:
    """The configured data path, else the one the catalog records (relative ones resolve like DuckLake's)."""
    chosen = settings.data_path or stored
    if not chosen:
        raise BackupError(f"DuckLake catalog {settings.describe()} records no data_path; set data_path")
    return normalize_data_path(chosen)


def _backup_name(created_at: datetime, snapshot_id: int) -> str:
    return f"backup-{created_at.strftime(_NAME_TIME_FORMAT)}Z-snapshot-{snapshot_id}{BACKUP_SUFFIX}"


def _write_backup_file(
    settings: LakeSettings,
    target: Path,
    storage_version: str | None,
    previous_snapshot: int | None,
    count_rows: bool,
) -> tuple[BackupManifest, int | None, dict[str, int] | None]:
    """Copy the catalog into ``target`` in one read transaction, then open it read-only as a DuckLake and
    check it holds that snapshot. Returns the manifest (no checksum yet), the number of snapshots since
    ``previous_snapshot`` and, with ``count_rows``, every table's row count.
    """
    if not catalog_file_exists(settings.catalog):
        raise BackupError(f"Catalog file of {settings.describe()} does not exist: nothing to back up")
    reader = open_backup_settings(target, settings.s3 if count_rows else None)
    connection = new_connection(memory_limit=settings.memory_limit, threads=settings.threads)
    try:
        load_extensions(connection, catalog_extensions(settings.catalog))
        attach_catalog_database(connection, settings.catalog, _SOURCE, read_only=True)
        storage = f" (STORAGE_VERSION {quote_literal(storage_version)})" if storage_version else ""
        connection.execute(f"ATTACH {quote_literal(str(target))} AS {quote_identifier(_TARGET)}{storage}")
        manifest, since_previous = _copy_catalog(connection, settings, storage_version, previous_snapshot)
        _finish_backup_file(connection, manifest)
        if target.with_name(target.name + ".wal").exists():
            raise BackupError(f"Backup file {target} still has a write-ahead log after CHECKPOINT; not exposing it")
        prepare_connection(connection, reader)
        attach_lake(connection, reader, use=False)
        (snapshot_id,) = connection.execute(
            "SELECT max(snapshot_id) FROM ducklake_snapshots(?)", [reader.alias]
        ).fetchone()
        (data_path,) = connection.execute("SELECT data_path FROM ducklake_settings(?)", [reader.alias]).fetchone()
        table_rows = backup_table_row_counts(connection, reader.alias) if count_rows else None
    except (duckdb.Error, CatalogConnectionError) as error:
        raise BackupError(
            f"Could not back up DuckLake catalog {settings.describe()}; nothing was exposed: "
            f"{redact(str(error), settings.secrets())}"
        ) from None
    finally:
        connection.close()
    if snapshot_id != manifest.snapshot_id or data_path.rstrip("/") != manifest.data_path.rstrip("/"):
        raise BackupError(
            f"The new backup of {settings.describe()} reads back snapshot {snapshot_id} with data path "
            f"{data_path}, expected snapshot {manifest.snapshot_id} and {manifest.data_path}; not exposed"
        )
    return manifest, since_previous, table_rows


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
    snapshot_id, snapshot_time = connection.execute(
        f"SELECT snapshot_id, CAST(snapshot_time AS TIMESTAMPTZ) FROM {snapshots} ORDER BY snapshot_id DESC LIMIT 1"
    ).fetchone()
    since_previous = None
    if previous_snapshot is not None:
        (since_previous,) = connection.execute(
            f"SELECT count(*) FROM {snapshots} WHERE snapshot_id > ?", [previous_snapshot]
        ).fetchone()
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
    """Point the copy at the absolute data path, store the manifest inside it, checkpoint and close it."""
    connection.execute(
        f"UPDATE {qualified_name(_TARGET, 'main', 'ducklake_metadata')} SET value = ? "
        "WHERE key = 'data_path' AND scope IS NULL",
        [manifest.data_path],
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
    counts = {}
    for schema, table in tables:
        (counts[f"{schema}.{table}"],) = connection.execute(
            f"SELECT count(*) FROM {qualified_name(alias, schema, table)}"
        ).fetchone()
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


def create_backup(
    settings: LakeSettings,
    backup_uri: str,
    *,
    store: ObjectStore | None = None,
    keep_last: int | None = None,
    keep_within: timedelta | None = None,
    storage_version: str | None = None,
    count_rows: bool = False,
) -> BackupResult:
    """Back up the catalog of ``settings`` under ``backup_uri`` (a folder or ``s3://bucket/prefix``).

    ``store`` reaches ``backup_uri`` (default: an ``ObjectStore`` with the lake's S3 settings).
    ``keep_last`` / ``keep_within`` prune older backups afterwards (see :func:`apply_retention`).
    ``storage_version`` writes an older or newer DuckDB storage format, e.g. ``'v1.0.0'``; by default
    DuckDB's default for new files is used (``v0.10.2`` compatible in DuckDB 1.5, so any DuckDB that can
    run DuckLake opens it). ``count_rows`` also counts the rows of every table in the backup.
    """
    backup_uri = backup_folder(backup_uri)
    check_retention(keep_last, keep_within)
    store = store or ObjectStore(settings.s3)
    started = time.monotonic()
    try:
        previous = latest_backup(backup_uri, store)
    except StorageError as error:
        raise BackupError(f"Cannot reach backup location {backup_uri}: {error}") from None
    with tempfile.TemporaryDirectory(prefix="ducklake-backup-") as folder:
        path = Path(folder) / ("backup" + BACKUP_SUFFIX)
        manifest, since_previous, table_rows = _write_backup_file(
            settings, path, storage_version, previous.snapshot_id if previous else None, count_rows
        )
        manifest = dataclasses.replace(manifest, sha256=_sha256(path), size_bytes=path.stat().st_size)
        versioned = join_uri(backup_uri, manifest.file_name)
        manifest_json = manifest.to_json().encode()
        try:
            store.put_bytes(manifest_json, manifest_uri_for(versioned))
            written = store.put_file(path, versioned)
            store.put_file(path, latest_uri(backup_uri))
            store.put_bytes(manifest_json, manifest_uri_for(latest_uri(backup_uri)))
        except StorageError as error:
            raise BackupError(
                f"Backup of {settings.describe()} at snapshot {manifest.snapshot_id} was written and verified "
                f"but could not be stored under {backup_uri}; the previous backup is unchanged. Cause: "
                f"{redact(str(error), settings.secrets())}"
            ) from None
    info = BackupInfo(versioned, manifest.snapshot_id, manifest.created_at, written.size)
    try:
        removed = apply_retention(backup_uri, store, keep_last=keep_last, keep_within=keep_within)
    except StorageError as error:
        raise BackupError(f"Backup {versioned} was stored, but pruning older backups failed: {error}") from None
    return BackupResult(
        backup=info,
        manifest=manifest,
        latest_uri=latest_uri(backup_uri),
        previous=previous,
        snapshots_since_previous=since_previous,
        removed=removed,
        table_rows=table_rows,
        duration_seconds=time.monotonic() - started,
    )


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


def read_manifest_from_file(path: str | Path) -> BackupManifest:
    """The manifest stored inside a local backup file (table ``ducklake_assets_backup_manifest``)."""
    connection = duckdb.connect()
    try:
        connection.execute(f"ATTACH {quote_literal(str(path))} AS backup_file (READ_ONLY)")
        rows = connection.execute(f"SELECT key, value FROM backup_file.main.{quote_identifier(MANIFEST_TABLE)}")
        return BackupManifest.from_dict(dict(rows.fetchall()))
    except (duckdb.Error, ValueError, KeyError, TypeError) as error:
        raise BackupError(f"{path} is not a ducklake-assets backup with a manifest: {error}") from None
    finally:
        connection.close()


def latest_backup(backup_uri: str, store: ObjectStore) -> BackupInfo | None:
    """The backup ``latest.json`` points to under ``backup_uri``, or ``None`` when there is none yet."""
    backup_uri = backup_folder(backup_uri)
    pointer = manifest_uri_for(latest_uri(backup_uri))
    if not store.exists(pointer):
        return None
    manifest = read_manifest(latest_uri(backup_uri), store)
    return BackupInfo(
        join_uri(backup_uri, manifest.file_name), manifest.snapshot_id, manifest.created_at, manifest.size_bytes or 0
    )


def apply_retention(
    backup_uri: str,
    store: ObjectStore,
    *,
    keep_last: int | None = None,
    keep_within: timedelta | None = None,
    now: datetime | None = None,
) -> list[BackupInfo]:
    """Delete versioned backups that no rule keeps; return what was deleted.

    A backup is kept when it is among the newest ``keep_last`` or younger than ``keep_within`` (when both
    are given either rule keeps it; with neither, everything is kept). The newest backup and the one
    ``latest`` points to are never deleted.
    """
    check_retention(keep_last, keep_within)
    if keep_last is None and keep_within is None:
        return []
    backups = list_backups(backup_uri, store)
    latest = latest_backup(backup_uri, store)
    now = now or datetime.now(UTC)
    removed = []
    for position, info in enumerate(backups):
        protected = position == 0 or (latest is not None and info.uri == latest.uri)
        kept_by_count = keep_last is not None and position < keep_last
        kept_by_age = keep_within is not None and now - info.created_at <= keep_within
        if protected or kept_by_count or kept_by_age:
            continue
        store.delete(info.uri)
        store.delete(info.manifest_uri)
        removed.append(info)
    return removed


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

    A backup without a sidecar (copied around by hand) is accepted with the manifest stored inside it.
    """
    local = Path(folder) / ("fetched" + BACKUP_SUFFIX)
    try:
        store.get_file(backup_file_uri, local)
    except StorageError as error:
        raise BackupError(f"Cannot read backup {backup_file_uri}: {error}") from None
    if store.exists(manifest_uri_for(backup_file_uri)):
        manifest = read_manifest(backup_file_uri, store)
        if manifest.sha256 and manifest.sha256 != _sha256(local):
            raise BackupError(
                f"Backup {backup_file_uri} does not match the checksum in its manifest: it is damaged or was "
                "replaced; pick another backup"
            )
        return local, manifest
    return local, read_manifest_from_file(local)


def _resolve_file_paths_sql(database: str) -> str:
    """SQL listing every data and delete file of a catalog copy in ``database.main``, as absolute paths."""

    def table(name: str) -> str:
        return qualified_name(database, "main", name)

    return f"""
        WITH root AS (
            SELECT value AS data_path FROM {table("ducklake_metadata")} WHERE key = 'data_path' AND scope IS NULL
        ), schemas AS (
            SELECT DISTINCT ON (schema_id) schema_id,
                CASE WHEN coalesce(path_is_relative, true)
                     THEN root.data_path || coalesce(path, '') ELSE path END AS prefix
            FROM {table("ducklake_schema")}, root ORDER BY schema_id, begin_snapshot DESC
        ), tables AS (
            SELECT DISTINCT ON (t.table_id) t.table_id,
                CASE WHEN coalesce(t.path_is_relative, true)
                     THEN coalesce(s.prefix, root.data_path) || coalesce(t.path, '') ELSE t.path END AS prefix
            FROM {table("ducklake_table")} t CROSS JOIN root LEFT JOIN schemas s USING (schema_id)
            ORDER BY t.table_id, t.begin_snapshot DESC
        ), files AS (
            SELECT table_id, path, path_is_relative, end_snapshot FROM {table("ducklake_data_file")}
            UNION ALL
            SELECT table_id, path, path_is_relative, end_snapshot FROM {table("ducklake_delete_file")}
        )
        SELECT DISTINCT CASE WHEN f.path_is_relative THEN t.prefix || f.path ELSE f.path END
        FROM files f JOIN tables t USING (table_id)
        WHERE ? OR f.end_snapshot IS NULL
        ORDER BY 1
    """


def catalog_file_references(catalog_file: Path, *, include_history: bool = True) -> list[str]:
    """Every data and delete file a local DuckLake catalog file (a backup or a published revision) references.

    Paths come back absolute, as DuckDB reads them, sorted. ``include_history`` as in
    :func:`backup_referenced_files`.
    """
    connection = duckdb.connect()
    try:
        connection.execute(f"ATTACH {quote_literal(str(catalog_file))} AS backup_file (READ_ONLY)")
        rows = connection.execute(_resolve_file_paths_sql("backup_file"), [include_history]).fetchall()
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
    with tempfile.TemporaryDirectory(prefix="ducklake-backup-read-") as scratch:
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
        (latest,) = connection.execute("SELECT max(snapshot_id) FROM ducklake_snapshots(?)", [reader.alias]).fetchone()
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
    with tempfile.TemporaryDirectory(prefix="ducklake-backup-check-") as scratch:
        local, manifest = fetch_backup(file_uri, store, scratch)
        reader = open_backup_settings(local, settings.s3)
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
                (catalog_rows,) = connection.execute(
                    f"SELECT count(*) FROM {qualified_name(live.alias, schema, table)} AT (VERSION => ?)",
                    [manifest.snapshot_id],
                ).fetchone()
            except duckdb.Error as error:
                checks.append(TableRowCheck(name, backup_rows, None, redact(str(error), settings.secrets())))
                continue
            checks.append(TableRowCheck(name, backup_rows, catalog_rows))
    return RestorabilityReport(file_uri, manifest.snapshot_id, checks)


@dataclass(frozen=True)
class BackupFilesReport:
    backup_uri: str
    snapshot_id: int
    referenced: int
    missing: list[str]


def check_backup_files(backup: str, store: ObjectStore, data_store: ObjectStore) -> BackupFilesReport:
    """Which data and delete files a backup references are gone from storage.

    Files under the backup's data path are checked with one listing; files registered from elsewhere
    one by one. ``data_store`` reaches the data files (the lake's S3 settings).
    """
    file_uri = resolve_backup_file(backup, store)
    with tempfile.TemporaryDirectory(prefix="ducklake-backup-files-") as scratch:
        local, manifest = fetch_backup(file_uri, store, scratch)
        files = catalog_file_references(local)
    under_data_path = [path for path in files if path.startswith(manifest.data_path)]
    elsewhere = [path for path in files if not path.startswith(manifest.data_path)]
    present: set[str] = set()
    if under_data_path and (is_remote(manifest.data_path) or Path(manifest.data_path).is_dir()):
        present = {item.uri for item in data_store.list_prefix(manifest.data_path)}
    missing = [path for path in under_data_path if path not in present]
    missing += [path for path in elsewhere if not data_store.exists(path)]
    return BackupFilesReport(file_uri, manifest.snapshot_id, len(files), sorted(missing))
