"""Reading a backup back as a plain reader would: the files it references, how far the catalog has moved
past it, whether its files are all there and whether it restores the catalog's row counts."""

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from ..catalog import DuckDBCatalog
from ..errors import BackupError, DuckLakeAssetsError, redact
from ..files import catalog_files_sql
from ..lake import LakeSettings, connect_lake, new_connection
from ..locations import join_uri
from ..s3 import S3Settings
from ..scratch import scratch_folder
from ..sql import qualified_name, quote_literal
from ..storage import ObjectStore
from ..sync import list_many
from .catalog_database import as_utc
from .layout import DATA_FOLDER, EXTERNAL_FOLDER, relocate
from .manifest import fetch_backup, read_files_index, resolve_backup_file


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
    return BackupLag(backup_snapshot_id, latest, len(newer), as_utc(newer[0][1]) if newer else None)


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
