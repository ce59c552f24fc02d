"""Restoring a static backup into a DuckLake catalog of any kind.

This is DuckLake's documented recovery (``COPY FROM DATABASE backup TO catalog``) made safe to run:

* a dry run reports the snapshots the restore would drop (those the catalog has and the backup lacks);
* a catalog holding such snapshots is only overwritten with ``force``;
* the current catalog is backed up first (the "safety backup"), so a restore can itself be undone;
* the catalog tables are replaced in one transaction of the catalog database, so a failure leaves the
  catalog as it was. An empty or missing catalog is first created by DuckLake itself, so a DuckDB, SQLite
  or PostgreSQL target gets exactly the tables, types and keys DuckLake gives that kind of database (the
  tables go into ``public`` or the configured metadata schema on PostgreSQL, not into ``main``).

A full backup's data files are copied from the backup store into the target's data path (the one
configured on ``target``, else the lake's original one) before the catalog is replaced, incrementally and
verified, so the restored lake is writable and no longer needs the backup store. Files already in the
data path are never overwritten or deleted: files written after the backup's snapshot stay in storage,
unreferenced. A backup in an older DuckLake format is migrated on a private copy when the target needs
the running format.
"""

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from .backup.catalog_database import (
    attach_catalog_database,
    catalog_extensions,
    catalog_file_exists,
    ducklake_tables,
    metadata_schema_of,
)
from .backup.create import BackupResult, create_backup
from .backup.layout import DATA_FOLDER, EXTERNAL_FOLDER
from .backup.manifest import BackupManifest, fetch_backup, resolve_backup_file
from .catalog import DuckDBCatalog, PostgresCatalog, SQLiteCatalog
from .errors import BackupError, DuckLakeAssetsError, RestoreError, StorageError, redact
from .files import EXTERNAL_RESTORE_FOLDER, catalog_files_sql, normalize_data_path
from .lake import LakeSettings, attach_lake, connect_lake, format_mismatch, new_connection, prepare_connection
from .locations import join_uri
from .scratch import scratch_folder
from .sql import qualified_name, quote_literal
from .storage import ObjectStore
from .sync import SyncReport, Transfer, list_many, sync_files

"""Folder of a restored lake's data path that receives the files a full backup kept from outside the data path."""

_BACKUP = "ducklake_assets_restore_source"
_TARGET = "ducklake_assets_restore_target"
_INIT = "ducklake_assets_restore_init"


@dataclass(frozen=True)
class SnapshotSummary:
    """One snapshot of the catalog, as a user would want to see it before losing it."""

    snapshot_id: int
    snapshot_time: datetime
    author: str | None
    commit_message: str | None
    changes: str | None


@dataclass(frozen=True)
class RestoreResult:
    """What a restore did, or would do for a dry run.

    ``dropped_snapshots`` are the catalog's snapshots the backup does not have (lost by restoring).
    ``safety_backup`` is the backup of the catalog taken just before it was overwritten. For a full
    backup, ``data_path`` is where the data files go, ``files_to_copy`` / ``bytes_to_copy`` what the data
    path still lacks (a dry run copies nothing) and ``files`` what was copied and reused.
    """

    backup_uri: str
    snapshot_id: int
    target: str
    dry_run: bool
    restored: bool
    catalog_existed: bool
    catalog_latest_snapshot: int | None
    dropped_snapshots: list[SnapshotSummary]
    safety_backup: BackupResult | None
    mode: str = "metadata"
    data_path: str | None = None
    files_to_copy: int = 0
    bytes_to_copy: int = 0
    files: SyncReport | None = None

    def summary(self) -> str:
        """One paragraph for logs and the UI."""
        verb = "Would restore" if self.dry_run else "Restored"
        text = f"{verb} snapshot {self.snapshot_id} from {self.backup_uri} into {self.target}"
        if self.mode == "full":
            copy = "would copy" if self.dry_run else "copied"
            text += f"; {copy} {self.files_to_copy} data file(s), {self.bytes_to_copy} bytes, into {self.data_path}"
        if self.dropped_snapshots:
            ids = ", ".join(str(s.snapshot_id) for s in self.dropped_snapshots[:10])
            more = "..." if len(self.dropped_snapshots) > 10 else ""
            text += f"; {len(self.dropped_snapshots)} newer catalog snapshot(s) dropped: {ids}{more}"
        if self.safety_backup is not None:
            text += f"; safety backup of the previous catalog: {self.safety_backup.backup.uri}"
        return text


@dataclass(frozen=True)
class _CatalogState:
    exists: bool
    version: str | None
    snapshots: list[SnapshotSummary]


def _read_state(connection: duckdb.DuckDBPyConnection, database: str, schema: str, describe: str) -> _CatalogState:
    tables = ducklake_tables(connection, database, schema)
    if not tables:
        return _CatalogState(False, None, [])
    if "ducklake_snapshot" not in tables or "ducklake_metadata" not in tables:
        raise RestoreError(
            f"{describe} has some DuckLake tables but no ducklake_snapshot or ducklake_metadata: it is damaged. "
            "Move it away (rename the file, or use another database or metadata_schema) and restore into an "
            "empty catalog."
        )

    def table(name: str) -> str:
        return qualified_name(database, schema, name)

    rows = connection.execute(
        f"SELECT s.snapshot_id, CAST(s.snapshot_time AS TIMESTAMPTZ), c.author, c.commit_message, c.changes_made "
        f"FROM {table('ducklake_snapshot')} s LEFT JOIN {table('ducklake_snapshot_changes')} c USING (snapshot_id) "
        "ORDER BY s.snapshot_id"
    ).fetchall()
    version = connection.execute(
        f"SELECT value FROM {table('ducklake_metadata')} WHERE key = 'version' AND scope IS NULL"
    ).fetchone()
    snapshots = [SnapshotSummary(row[0], row[1].astimezone(UTC), *row[2:]) for row in rows]
    return _CatalogState(True, version[0] if version else None, snapshots)


def _inspect_target(target: LakeSettings) -> _CatalogState:
    if not catalog_file_exists(target.catalog):
        return _CatalogState(False, None, [])
    connection = new_connection(extensions=catalog_extensions(target.catalog))
    try:
        attach_catalog_database(connection, target.catalog, _TARGET, read_only=True)
        connection.execute("BEGIN TRANSACTION")
        return _read_state(connection, _TARGET, metadata_schema_of(target), target.describe())
    except duckdb.Error as error:
        raise RestoreError(
            f"Cannot read catalog {target.describe()} before restoring: {redact(str(error), target.secrets())}"
        ) from None
    finally:
        connection.close()


def _inspect_backup(path: Path, backup_uri: str) -> tuple[_CatalogState, str, list[str]]:
    connection = new_connection()
    try:
        connection.execute(f"ATTACH {quote_literal(str(path))} AS {_BACKUP} (READ_ONLY)")
        state = _read_state(connection, _BACKUP, "main", f"backup {backup_uri}")
        row = connection.execute(
            f"SELECT value FROM {qualified_name(_BACKUP, 'main', 'ducklake_metadata')} "
            "WHERE key = 'data_path' AND scope IS NULL"
        ).fetchone()
        if row is None:
            raise RestoreError(f"Backup {backup_uri} is not a readable DuckLake catalog: it records no data path")
        (data_path,) = row
        return state, data_path, ducklake_tables(connection, _BACKUP, "main")
    except duckdb.Error as error:
        raise RestoreError(f"Backup {backup_uri} is not a readable DuckLake catalog: {error}") from None
    finally:
        connection.close()


def _default_safety_uri(backup_file: str) -> str:
    """``safety/`` beside the backup being restored (or that folder itself when restoring a safety backup)."""
    folder = backup_file.rsplit("/", 1)[0]
    return folder if folder.endswith("/safety") else join_uri(folder, "safety")


def restore_backup(
    backup: str,
    target: LakeSettings,
    *,
    dry_run: bool = False,
    force: bool = False,
    store: ObjectStore | None = None,
    data_store: ObjectStore | None = None,
    safety_backup_uri: str | None = None,
) -> RestoreResult:
    """Restore ``backup`` (a backup file, or a backup folder for its latest backup) into ``target``.

    Args:
        backup: a versioned backup file, ``latest.ducklake``, or a backup folder (its latest backup).
        target: the lake to restore into, of any catalog kind, existing or not. ``target.data_path``,
            when set, replaces the data path recorded in the backup (another folder or bucket); a full
            backup's data files are copied there.
        dry_run: only report what would happen: the snapshots that would be dropped and, for a full
            backup, how many files and bytes would be copied.
        force: overwrite a catalog that has snapshots the backup lacks.
        store: reaches the backups (default: an ``ObjectStore`` with the target's S3 settings).
        data_store: reaches the target's data path (default: the target's S3 settings).
        safety_backup_uri: where the current catalog is backed up (metadata only: a restore never
            deletes or overwrites data files) before it is overwritten; default ``safety/`` beside the backups.
    """
    store = store or ObjectStore(target.s3)
    data_store = data_store or ObjectStore(target.s3)
    try:
        backup_file = resolve_backup_file(backup, store)
    except BackupError as error:
        raise RestoreError(str(error)) from None
    with scratch_folder("restore") as folder:
        try:
            local, manifest = fetch_backup(backup_file, store, folder)
        except BackupError as error:
            raise RestoreError(str(error)) from None
        backup_state, backup_data_path, backup_tables = _inspect_backup(local, backup_file)
        current = _inspect_target(target)
        known = {(s.snapshot_id, s.snapshot_time) for s in backup_state.snapshots}
        dropped = [s for s in current.snapshots if (s.snapshot_id, s.snapshot_time) not in known]
        full = manifest.mode == "full" and manifest.store_uri is not None
        if target.data_path:
            data_path = normalize_data_path(target.data_path)
        else:
            data_path = manifest.data_path if full else backup_data_path
        transfers = _restore_transfers(local, manifest, backup_file, data_path) if full else []
        try:
            present = list_many(data_store, [data_path]) if transfers else {}
        except StorageError as error:
            raise RestoreError(f"Cannot read the data path {data_path} to restore into: {error}") from None
        missing = [t for t in transfers if t.target not in present]
        result = RestoreResult(
            backup_uri=backup_file,
            snapshot_id=manifest.snapshot_id,
            target=target.describe(),
            dry_run=dry_run,
            restored=False,
            catalog_existed=current.exists,
            catalog_latest_snapshot=current.snapshots[-1].snapshot_id if current.snapshots else None,
            dropped_snapshots=dropped,
            safety_backup=None,
            mode=manifest.mode,
            data_path=data_path if full else None,
            files_to_copy=len(missing),
            bytes_to_copy=sum(t.size or 0 for t in missing),
        )
        if dry_run:
            return result
        if dropped and not force:
            raise RestoreError(
                f"Refusing to restore snapshot {manifest.snapshot_id} into {target.describe()}: the catalog has "
                f"{len(dropped)} snapshot(s) the backup lacks (latest {dropped[-1].snapshot_id}), which the "
                "restore would drop. Run a dry run to see them, and set force=True to restore anyway "
                "(a safety backup is taken first)."
            )
        if (not current.exists or current.version != backup_state.version) and _migrate_if_older(local, backup_file):
            backup_state, backup_data_path, backup_tables = _inspect_backup(local, backup_file)
        files = None
        if full:
            try:
                files = sync_files(
                    transfers,
                    source=store,
                    target=data_store,
                    source_prefixes=[
                        join_uri(backup_file.rsplit("/", 1)[0], DATA_FOLDER),
                        join_uri(backup_file.rsplit("/", 1)[0], EXTERNAL_FOLDER),
                    ],
                    existing=present,
                    target_prefixes=[data_path],
                )
            except StorageError as error:
                raise RestoreError(
                    f"Could not copy the data files of backup {backup_file} into {data_path}; the catalog "
                    f"{target.describe()} was not changed: {redact(str(error), target.secrets())}"
                ) from None
            try:
                _point_at_data_path(local, manifest, data_path)
            except duckdb.Error as error:
                raise RestoreError(
                    f"Could not point the private copy of backup {backup_file} at {data_path}; the catalog "
                    f"{target.describe()} was not changed: {error}"
                ) from None
        safety = None
        if current.exists:
            try:
                safety = create_backup(
                    target, safety_backup_uri or _default_safety_uri(backup_file), mode="metadata", store=store
                )
            except DuckLakeAssetsError as error:
                raise RestoreError(
                    f"Could not take the safety backup of {target.describe()}, so nothing was restored: {error}"
                ) from None
        _replace_catalog(local, backup_tables, target, current, data_path)
    _check_restored(target, manifest.snapshot_id)
    return dataclasses.replace(result, restored=True, safety_backup=safety, files=files)


def _restore_transfers(local: Path, manifest: BackupManifest, backup_file: str, data_path: str) -> list[Transfer]:
    """Where each data file of a full backup comes from (the store, wherever it is now) and goes to."""
    recorded = (manifest.store_uri or "").rstrip("/") + "/"
    actual = backup_file.rsplit("/", 1)[0] + "/"
    connection = new_connection()
    try:
        connection.execute(f"ATTACH {quote_literal(str(local))} AS backup_file (READ_ONLY)")
        rows = connection.execute(
            f"SELECT DISTINCT path, size FROM ({catalog_files_sql('backup_file')}) ORDER BY path"
        ).fetchall()
    except duckdb.Error as error:
        raise RestoreError(f"Backup {backup_file} does not list its data files: {error}") from None
    finally:
        connection.close()
    transfers = []
    outside = []
    for path, size in rows:
        key = path.removeprefix(recorded)
        if key == path:
            outside.append(path)
            continue
        transfers.append(Transfer(actual + key, _restored_location(key, data_path), size))
    if outside:
        raise RestoreError(
            f"Backup {backup_file} is a full backup but references {len(outside)} file(s) outside its store "
            f"{manifest.store_uri}, e.g. {outside[0]}: it is damaged; pick another backup"
        )
    return transfers


def _restored_location(key: str, data_path: str) -> str:
    data, external = DATA_FOLDER + "/", EXTERNAL_FOLDER + "/"
    if key.startswith(data):
        return data_path + key.removeprefix(data)
    return join_uri(data_path, EXTERNAL_RESTORE_FOLDER, key.removeprefix(external))


def _point_at_data_path(local: Path, manifest: BackupManifest, data_path: str) -> None:
    """Rewrite the private copy of a full backup so its absolute file paths name the restored data path."""
    recorded = (manifest.store_uri or "").rstrip("/") + "/"
    data = recorded + DATA_FOLDER + "/"
    external = recorded + EXTERNAL_FOLDER + "/"
    moved_external = join_uri(data_path, EXTERNAL_RESTORE_FOLDER) + "/"
    connection = new_connection(database=str(local))
    try:
        for table in ("ducklake_data_file", "ducklake_delete_file"):
            connection.execute(
                f"UPDATE {qualified_name('main', table)} SET path = CASE "
                "WHEN starts_with(path, $data) THEN $data_path || substr(path, length($data) + 1) "
                "ELSE $moved || substr(path, length($external) + 1) END "
                "WHERE NOT path_is_relative AND (starts_with(path, $data) OR starts_with(path, $external))",
                {"data": data, "external": external, "data_path": data_path, "moved": moved_external},
            )
        connection.execute("CHECKPOINT")
    finally:
        connection.close()


def _migrate_if_older(local: Path, backup_file: str) -> bool:
    """Migrate the private copy of a backup to the running DuckLake format when it is older; say whether it was."""
    connection = new_connection(extensions=["ducklake", "httpfs"])
    try:
        attach = f"ATTACH {quote_literal('ducklake:' + str(local))} AS migrated"
        try:
            connection.execute(f"{attach} (READ_ONLY)")
            return False
        except duckdb.Error as error:
            if format_mismatch(str(error)) is None:
                raise RestoreError(f"Backup {backup_file} does not open as a DuckLake: {error}") from None
        try:
            connection.execute(f"{attach} (AUTOMATIC_MIGRATION true)")
        except duckdb.Error as error:
            raise RestoreError(
                f"Backup {backup_file} is in an older DuckLake format that duckdb {duckdb.__version__} cannot "
                f"migrate: {error}"
            ) from None
        connection.execute("DETACH migrated")
        return True
    finally:
        connection.close()


def _replace_catalog(
    backup_path: Path, backup_tables: list[str], target: LakeSettings, current: _CatalogState, data_path: str
) -> None:
    """Make the target's catalog tables equal to the backup's, in one transaction.

    A catalog that did not exist is created by DuckLake first, and removed again if the restore fails.
    """
    connection = new_connection(
        memory_limit=target.memory_limit, threads=target.threads, extensions=catalog_extensions(target.catalog)
    )
    failure: Exception | None = None
    try:
        connection.execute(f"ATTACH {quote_literal(str(backup_path))} AS {_BACKUP} (READ_ONLY)")
        if not current.exists:
            init = dataclasses.replace(target, alias=_INIT, read_only=False, data_path=data_path, attach_options={})
            prepare_connection(connection, init)
            attach_lake(connection, init, use=False)
            connection.execute(f"DETACH {_INIT}")
        attach_catalog_database(connection, target.catalog, _TARGET, read_only=False)
        _copy_tables(connection, backup_tables, target, current, data_path)
    except (duckdb.Error, DuckLakeAssetsError) as error:
        failure = error
    finally:
        connection.close()
    if failure is None:
        return
    if not current.exists:
        _remove_created_catalog(target)
    if isinstance(failure, RestoreError):
        raise failure
    raise RestoreError(
        f"Restore into {target.describe()} failed and was rolled back: {redact(str(failure), target.secrets())}"
    ) from None


def _copy_tables(
    connection: duckdb.DuckDBPyConnection,
    backup_tables: list[str],
    target: LakeSettings,
    current: _CatalogState,
    data_path: str,
) -> None:
    schema = metadata_schema_of(target)
    connection.execute("BEGIN TRANSACTION")
    now = _read_state(connection, _TARGET, schema, target.describe())
    if current.exists and [s.snapshot_id for s in now.snapshots] != [s.snapshot_id for s in current.snapshots]:
        raise RestoreError(
            f"{target.describe()} changed while the restore was being prepared (another writer committed); "
            "nothing was restored. Stop the writers and run the restore again."
        )
    row = connection.execute(
        f"SELECT value FROM {qualified_name(_BACKUP, 'main', 'ducklake_metadata')} "
        "WHERE key = 'version' AND scope IS NULL"
    ).fetchone()
    if row is None:
        raise RestoreError("The backup records no DuckLake format version: it is not a complete DuckLake catalog")
    (backup_version,) = row
    if now.version != backup_version:
        raise RestoreError(
            f"Backup is DuckLake format {backup_version} but {target.describe()} is format {now.version}; "
            "restore into an empty catalog with the DuckLake version that made the backup"
        )
    target_tables = ducklake_tables(connection, _TARGET, schema)
    for table in target_tables:
        if table not in backup_tables:
            connection.execute(f"DROP TABLE {qualified_name(_TARGET, schema, table)}")
    for table in backup_tables:
        source = qualified_name(_BACKUP, "main", table)
        destination = qualified_name(_TARGET, schema, table)
        if table in target_tables:
            connection.execute(f"DELETE FROM {destination}")
            connection.execute(f"INSERT INTO {destination} BY NAME SELECT * FROM {source}")
        else:
            connection.execute(f"CREATE TABLE {destination} AS SELECT * FROM {source}")
    connection.execute(
        f"UPDATE {qualified_name(_TARGET, schema, 'ducklake_metadata')} SET value = ? "
        "WHERE key = 'data_path' AND scope IS NULL",
        [data_path],
    )
    connection.execute("COMMIT")


def _remove_created_catalog(target: LakeSettings) -> None:
    """Undo the empty catalog a failed restore created, so the target is as it was before."""
    catalog = target.catalog
    if isinstance(catalog, DuckDBCatalog | SQLiteCatalog):
        path = Path(catalog.path).expanduser().resolve()
        for leftover in (path, path.with_name(path.name + ".wal"), path.with_name(path.name + "-journal")):
            if leftover.is_file():
                leftover.unlink()
        return
    if isinstance(catalog, PostgresCatalog):
        schema = metadata_schema_of(target)
        connection = new_connection(extensions=catalog_extensions(catalog))
        try:
            attach_catalog_database(connection, catalog, _TARGET, read_only=False)
            connection.execute("BEGIN TRANSACTION")
            for table in ducklake_tables(connection, _TARGET, schema):
                connection.execute(f"DROP TABLE {qualified_name(_TARGET, schema, table)}")
            connection.execute("COMMIT")
        finally:
            connection.close()


def _check_restored(target: LakeSettings, snapshot_id: int) -> None:
    """Attach the restored catalog as DuckLake and check it is at the backup's snapshot."""
    reader = dataclasses.replace(target, read_only=True)
    try:
        with connect_lake(reader) as connection:
            [(latest,)] = connection.execute(
                "SELECT max(snapshot_id) FROM ducklake_snapshots(?)", [reader.alias]
            ).fetchall()
    except (duckdb.Error, DuckLakeAssetsError) as error:
        raise RestoreError(
            f"The restored catalog {target.describe()} does not attach as a DuckLake: "
            f"{redact(str(error), target.secrets())}. The safety backup holds the previous catalog."
        ) from None
    if latest != snapshot_id:
        raise RestoreError(
            f"The restored catalog {target.describe()} is at snapshot {latest}, expected {snapshot_id}; "
            "the safety backup holds the previous catalog"
        )
