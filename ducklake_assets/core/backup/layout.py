"""Where things live in a backup store: the names of backup files, manifests and file indexes, and the
store keys of the data files a full backup copies (``data/`` mirrors the data path, ``external/`` the rest)."""

import re
from collections.abc import Iterable
from datetime import datetime

import duckdb

from ..errors import ConfigurationError
from ..files import catalog_files_sql
from ..locations import absolute_local_path, join_uri
from ..sql import qualified_name, quote_identifier

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
BACKUP_NAME = re.compile(r"^backup-(\d{8}T\d{12})Z-snapshot-(\d+)\.ducklake$")
NAME_TIME_FORMAT = "%Y%m%dT%H%M%S%f"


def manifest_uri_for(backup_file_uri: str) -> str:
    """``.../backup-x.ducklake`` -> ``.../backup-x.json``."""
    return backup_file_uri.removesuffix(BACKUP_SUFFIX) + MANIFEST_SUFFIX


def files_index_uri_for(backup_file_uri: str) -> str:
    """``.../backup-x.ducklake`` -> ``.../backup-x.files.json``: the data files a full backup references."""
    return backup_file_uri.removesuffix(BACKUP_SUFFIX) + FILES_SUFFIX


def store_data_path(backup_uri: str) -> str:
    """The folder of a backup store that mirrors the lake's data path, ending in ``/``."""
    return join_uri(backup_uri, DATA_FOLDER) + "/"


def latest_uri(backup_uri: str) -> str:
    """The stable copy of the newest backup: ``<backup_uri>/latest.ducklake``."""
    return join_uri(backup_uri, LATEST_STEM + BACKUP_SUFFIX)


def backup_file_name(created_at: datetime, snapshot_id: int) -> str:
    return f"backup-{created_at.strftime(NAME_TIME_FORMAT)}Z-snapshot-{snapshot_id}{BACKUP_SUFFIX}"


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


def backup_folder(backup_uri: str) -> str:
    """``backup_uri`` checked to name a folder or prefix, a local one made absolute."""
    if not isinstance(backup_uri, str) or not backup_uri.strip():
        raise ConfigurationError("backup_uri must be a folder or s3://bucket/prefix where backups are kept")
    if backup_uri.endswith((BACKUP_SUFFIX, MANIFEST_SUFFIX)):
        raise ConfigurationError(
            f"backup_uri {backup_uri!r} names a file; give the folder (or s3:// prefix) that holds the backups"
        )
    return absolute_local_path(backup_uri).rstrip("/")


def relocate(paths: Iterable[str], recorded_root: str, actual_root: str) -> list[str]:
    """Paths under a store's recorded root moved under where the store is now (a copied or replicated store)."""
    recorded = recorded_root.rstrip("/") + "/"
    actual = actual_root.rstrip("/") + "/"
    return [actual + path.removeprefix(recorded) if path.startswith(recorded) else path for path in paths]
