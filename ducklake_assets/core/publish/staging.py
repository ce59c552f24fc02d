"""Preparing a revision's private copy: fetching the source catalog, making every file reference readable from
anywhere (or copying the files beside it) and migrating an older DuckLake format."""

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from ..backup.layout import DATA_FOLDER, list_store_files, point_at_store_files
from ..backup.manifest import MANIFEST_TABLE, fetch_backup, resolve_backup_file
from ..catalog import DuckDBCatalog
from ..errors import BackupError, PublishError, StorageError
from ..files import catalog_files_sql
from ..lake import LakeSettings, format_mismatch, new_connection
from ..locations import absolute_local_path, is_remote, join_uri
from ..sql import quote_identifier, quote_literal
from ..storage import ObjectStore
from ..sync import Checkpoint, SyncReport, Transfer, sync_files
from .contents import STRANGER_ALIAS, LakeContents, lake_contents
from .revisions import files_folder

SourceSnapshot = tuple[int, str, str | None]
"""A source's latest snapshot id, its commit time (ISO, UTC) and the source's DuckLake format version."""


def iso_utc(value: datetime) -> str:
    return (value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def catalog_snapshot(connection: duckdb.DuckDBPyConnection, database: str) -> SourceSnapshot | None:
    """The latest snapshot of the DuckLake catalog tables in ``database`` (attached as a plain database);
    ``None`` when it holds no snapshot."""
    prefix = f"{quote_identifier(database)}.main"
    latest = connection.execute(
        f"SELECT snapshot_id, CAST(snapshot_time AS TIMESTAMPTZ) FROM {prefix}.ducklake_snapshot "
        "ORDER BY snapshot_id DESC LIMIT 1"
    ).fetchone()
    if latest is None:
        return None
    snapshot_id, snapshot_time = latest
    version = connection.execute(
        f"SELECT value FROM {prefix}.ducklake_metadata WHERE scope IS NULL AND key = 'version'"
    ).fetchone()
    return snapshot_id, iso_utc(snapshot_time), version[0] if version else None


def copy_files_beside(
    copy: Path,
    described: str,
    publish_uri: str,
    reader_url: str,
    data_path: str | None,
    data_store: ObjectStore,
    store: ObjectStore,
    checkpoint: Checkpoint | None,
) -> tuple[str, SyncReport]:
    """Copy every data file of the lake next to the published file and point the copy at those copies.

    Files under the data path go to ``<name>/data/`` (the copy's new data path, as readers reach it),
    the others to ``<name>/external/``. Files already there with the same size are not copied again.
    """
    target_root = files_folder(publish_uri)
    reader_root = files_folder(reader_url)
    if not data_path:
        raise PublishError(f"{described} records no data path, so its files cannot be copied; pass data_path")
    connection = new_connection(database=str(copy))
    try:
        [(database,)] = connection.execute("SELECT current_database()").fetchall()
        rows = list_store_files(connection, database, data_path)
        transfers = [Transfer(path, join_uri(target_root, key), size) for path, key, size in rows]
        externals = {t.source.rsplit("/", 1)[0] for t in transfers if not t.source.startswith(data_path)}
        try:
            report = sync_files(
                transfers,
                source=data_store,
                target=store,
                source_prefixes=[data_path, *externals],
                target_prefixes=[target_root],
                checkpoint=checkpoint,
            )
        except StorageError as error:
            raise PublishError(
                f"Could not copy the data files of {described} next to {publish_uri}: {error}. "
                f"{publish_uri} is left as it was."
            ) from None
        point_at_store_files(connection, database, reader_root)
        new_data_path = join_uri(reader_root, DATA_FOLDER) + "/"
        connection.execute(
            "UPDATE ducklake_metadata SET value = ? WHERE scope IS NULL AND key = 'data_path'", [new_data_path]
        )
        connection.execute("CHECKPOINT")
    finally:
        connection.close()
    return new_data_path, report


def refuse_unreachable_files(copy: Path, described: str, reader_url: str, reader_data_path: str | None) -> None:
    """A lake read from elsewhere (S3, HTTP) cannot reference files by a path on the writer's disk."""
    if not is_remote(reader_url):
        return
    connection = new_connection(database=str(copy))
    try:
        [(database,)] = connection.execute("SELECT current_database()").fetchall()
        rows = connection.execute(f"SELECT DISTINCT path FROM ({catalog_files_sql(database)}) ORDER BY 1").fetchall()
    finally:
        connection.close()
    local = [path for (path,) in rows if not is_remote(path)]
    if local:
        shown = ", ".join(local[:5]) + (f" and {len(local) - 5} more" if len(local) > 5 else "")
        raise PublishError(
            f"{described} would be published to {reader_url}, but {len(local)} of its data files are paths on this "
            f"machine that no reader there can open: {shown}. Publish with self_contained=True (the files are "
            "copied next to the frozen lake), or put the data files where readers reach them and pass "
            f"reader_data_path{'' if reader_data_path else ''}. {reader_url} is left as it was."
        )


def fetch_source(source: str | Path | LakeSettings, store: ObjectStore, copy: Path) -> tuple[str, str | None]:
    """Copy the source catalog (and its write-ahead log) to ``copy``; returns its name and data path.

    A folder (or an S3 prefix that is no object) is a backup folder: its latest static backup is fetched
    and checked against its manifest's checksum.
    """
    data_path = None
    if isinstance(source, LakeSettings):
        if not isinstance(source.catalog, DuckDBCatalog):
            raise PublishError(
                f"Catalog {source.describe()} is not a DuckDB file, so it cannot be published as is: publish "
                "its latest static backup instead (configure backup_uri)."
            )
        data_path = source.data_path
        source = source.catalog.metadata_path()
    source = str(source)
    try:
        is_backup_folder = Path(source).is_dir() if not is_remote(source) else not store.exists(source)
    except StorageError as error:
        raise PublishError(f"Cannot read the catalog to publish: {error}") from None
    if is_backup_folder:
        try:
            backup_file = resolve_backup_file(source, store)
            fetched, _ = fetch_backup(backup_file, store, copy.parent)
        except (BackupError, StorageError) as error:
            raise PublishError(f"Cannot read the latest static backup under {source}: {error}") from None
        fetched.rename(copy)
        return f"static backup {backup_file}", data_path
    if is_remote(source):
        try:
            store.get_file(source, copy)
        except StorageError as error:
            raise PublishError(f"Cannot read the catalog to publish: {error}") from None
        return source, data_path
    path = Path(source).expanduser().resolve()
    if not path.is_file():
        raise PublishError(f"Catalog file {path} does not exist: check the catalog path or the backup location.")
    guard = new_connection()
    try:
        try:
            guard.execute(f"ATTACH {quote_literal(str(path))} AS source (READ_ONLY)")
        except duckdb.Error as error:
            raise PublishError(
                f"Cannot open catalog file {path} to copy it: {error}. If another process has the lake open "
                "for writing, publish its static backup instead or stop that writer."
            ) from None
        shutil.copyfile(path, copy)
        wal = path.with_name(path.name + ".wal")
        if wal.is_file():
            shutil.copyfile(wal, copy.with_name(copy.name + ".wal"))
    finally:
        guard.close()
    return str(path), data_path


def _is_absolute(path: str) -> bool:
    return "://" in path or os.path.isabs(path)


def make_references_absolute(
    copy: Path, described: str, data_path: str | None, reader_data_path: str | None
) -> tuple[str | None, SourceSnapshot]:
    """Rewrite the copy so no reference depends on the writer's working folder; checkpoint it.

    A backup's manifest table is dropped: it names the internal catalog, which readers need not see.
    Returns the data path the published copy records and the snapshot the copy holds.
    """
    connection = new_connection(database=str(copy))
    not_ducklake = f"{described} is not a DuckLake catalog (it has no ducklake_metadata table)."
    try:
        try:
            rows = connection.execute(
                "SELECT key, value FROM ducklake_metadata WHERE scope IS NULL AND key IN ('data_path', 'version')"
            ).fetchall()
            [(database,)] = connection.execute("SELECT current_database()").fetchall()
            snapshot = catalog_snapshot(connection, database)
        except (duckdb.Error, TypeError):
            raise PublishError(not_ducklake) from None
        if snapshot is None:
            raise PublishError(not_ducklake)
        recorded = dict(rows).get("data_path")
        new_data_path: str | None
        if reader_data_path:
            new_data_path = reader_data_path
        elif data_path:
            new_data_path = absolute_local_path(data_path)
        elif recorded and not _is_absolute(recorded):
            new_data_path = absolute_local_path(recorded)
        else:
            new_data_path = recorded
        if new_data_path and not new_data_path.endswith("/"):
            new_data_path += "/"
        if new_data_path != recorded:
            connection.execute(
                "UPDATE ducklake_metadata SET value = ? WHERE scope IS NULL AND key = 'data_path'", [new_data_path]
            )
        for table, key in (("ducklake_data_file", "data_file_id"), ("ducklake_delete_file", "delete_file_id")):
            _absolutize_files(connection, described, table, key)
        connection.execute(f"DROP TABLE IF EXISTS {quote_identifier(MANIFEST_TABLE)}")
        connection.execute("CHECKPOINT")
    finally:
        connection.close()
    if copy.with_name(copy.name + ".wal").exists():
        raise PublishError(f"The private copy of {described} still has a write-ahead log after CHECKPOINT.")
    return new_data_path, snapshot


def _absolutize_files(connection: duckdb.DuckDBPyConnection, described: str, table: str, key: str) -> None:
    """Files registered by a path relative to the writer's working folder get their absolute path."""
    rows = connection.execute(
        f"SELECT {quote_identifier(key)}, path FROM {quote_identifier(table)} WHERE NOT path_is_relative"
    ).fetchall()
    missing = []
    for file_id, path in rows:
        if _is_absolute(path):
            continue
        absolute = Path(path).resolve()
        if not absolute.exists():
            missing.append(path)
            continue
        connection.execute(
            f"UPDATE {quote_identifier(table)} SET path = ? WHERE {quote_identifier(key)} = ?", [str(absolute), file_id]
        )
    if missing:
        raise PublishError(
            f"{described} references {len(missing)} file(s) by a path relative to the folder they were registered "
            f"from, and they are not under the current folder {Path.cwd()}: {', '.join(missing[:5])}. Register "
            "files by absolute path or URL, or publish from the folder they were registered in."
        )


def migrate_if_older(
    copy: Path, described: str, legacy_copy: Path | None, remote_data: bool
) -> tuple[str, LakeContents]:
    """Migrate the copy when its format is older than the running extension's; returns the old format.

    When ``legacy_copy`` is given and a migration is needed, the unmigrated copy is kept there.
    ``remote_data`` loads httpfs, which DuckLake wants when the data path is a URL.
    """
    connection = new_connection(extensions=["ducklake", "httpfs"] if remote_data else ["ducklake"])
    try:
        attach = f"ATTACH {quote_literal('ducklake:' + str(copy))} AS {quote_identifier(STRANGER_ALIAS)}"
        try:
            connection.execute(f"{attach} (READ_ONLY)")
        except duckdb.Error as error:
            mismatch = format_mismatch(str(error))
            if not mismatch:
                raise PublishError(f"Cannot open {described} as a DuckLake: {error}") from None
            source_version, wanted = mismatch
            if legacy_copy is not None:
                shutil.copyfile(copy, legacy_copy)
            try:
                connection.execute(f"{attach} (AUTOMATIC_MIGRATION true)")
            except duckdb.Error as migration_error:
                raise PublishError(
                    f"{described} is in DuckLake format {source_version}, which the ducklake extension of duckdb "
                    f"{duckdb.__version__} (format {wanted}) cannot migrate: {migration_error}. Publish with a "
                    "duckdb release that reads this format."
                ) from None
            connection.execute(f"DETACH {quote_identifier(STRANGER_ALIAS)}")
            connection.execute(f"{attach} (READ_ONLY)")
            return source_version, lake_contents(connection, STRANGER_ALIAS)
        contents = lake_contents(connection, STRANGER_ALIAS)
        return contents.format_version, contents
    finally:
        connection.close()
