"""Where a DuckLake catalog's data and delete files are: the one resolver of their full paths.

DuckLake records a file's path relative to its table's path, the table's relative to its schema's and
the schema's relative to the catalog's ``data_path``, unless a link is marked absolute. Registration,
backups, restores, publications and maintenance all need the full path DuckDB reads, and maintenance's
promise never to delete a file a backup still needs holds only if they all compute it alike, so it is
computed here, by one rule, which is how DuckLake itself reads a catalog:

* the data path ends in ``/`` (one is added when it lacks it);
* the links from the data path to a file (schema, table, file) are applied in turn: a relative path is
  appended to the folder reached so far, as written (no separator is added), an absolute one replaces it;
* a missing (NULL) schema or table path adds no folder of its own, whatever its flag says: the level's
  files sit in the folder reached so far; a missing schema or table row counts the same;
* a missing ``path_is_relative`` flag counts as relative.

:func:`resolve_path` applies the rule to one file in Python, :func:`catalog_files_sql` to every file of
a catalog in SQL (for the copies of a catalog that backups and publications rewrite in place), and
:func:`lake_files` and :func:`scheduled_files` read an attached lake's files through them.
"""

import fnmatch
import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import duckdb

from .lake import LakeSettings, metadata_database
from .locations import absolute_local_path, normalize_uri
from .sql import qualified_name, string_list

Link = tuple[str | None, bool | None]
"""One ``(path, path_is_relative)`` pair from a schema, table or file row of the catalog."""


EXTERNAL_RESTORE_FOLDER = "ducklake-assets-external"
"""Below a restored lake's data path, the folder of the files the lake referenced outside its data path."""


def external_key(path: str) -> str:
    """Where a file outside the data path is kept, below a backup store's ``external/`` and a restored data
    path's ``ducklake-assets-external/``: ``<16 hex digits of its path's MD5>/<its name>``, so two files of
    one name never meet. (The backup computes the same in SQL, see ``backup.store_key_sql``.)"""
    return hashlib.md5(path.encode()).hexdigest()[:16] + "/" + path.rsplit("/", 1)[-1]


def restored_from(paths: Sequence[str], sources: Sequence[str]) -> set[str]:
    """The ``sources`` (files once registered by reference) whose restored copies are among ``paths``.

    A restore copies such files into the data path under :func:`external_key`, so the path the catalog
    knows is no longer the source's; without this a source folder that survived the disaster would be
    registered a second time."""
    marker = f"/{EXTERNAL_RESTORE_FOLDER}/"
    restored = {path.rsplit(marker, 1)[1] for path in paths if marker in path}
    return {source for source in sources if external_key(source) in restored} if restored else set()


def normalize_data_path(path: str) -> str:
    """A data path as a reader elsewhere needs it: absolute (or a URL), ending in ``/``."""
    return absolute_local_path(path).rstrip("/") + "/"


def resolve_path(data_path: str, *links: Link) -> str:
    """The full path of a file from the data path and its links, outermost first, by the module's rule.

    ``resolve_path('/lake/', ('main/', True), ('t/', True), ('f.parquet', True))`` is
    ``'/lake/main/t/f.parquet'``; a file registered by absolute path is its own path whatever its table's.
    """
    folder = data_path if data_path.endswith("/") else data_path + "/"
    for path, relative in links:
        if path is None:
            continue
        folder = path if relative is False else folder + path
    return folder


def catalog_files_sql(
    database: str, schema: str | None = None, *, include_history: bool = True, data_path_sql: str | None = None
) -> str:
    """A query over the catalog tables in ``database`` (``schema``, else its default schema) listing every
    data and delete file with its full path.

    Columns: ``kind`` (``'data'`` or ``'delete'``), ``file_id``, ``table_id``, ``path`` (full path or URL,
    as DuckDB reads it), ``relative`` (every link from ``data_path`` to the file is relative, so the file
    moves with the data path), ``size`` (bytes, as recorded), ``begin_snapshot``, ``end_snapshot`` and
    ``ended`` (no longer part of the latest snapshot). ``include_history`` keeps the files only older
    snapshots still reference (time travel needs them); without it only the latest snapshot's files are
    listed. ``data_path_sql`` is an SQL expression, such as a bound ``$data_path``, for the data path to
    resolve against instead of the one the catalog records (a lake attached with another ``DATA_PATH``).
    """
    latest_only = "WHERE f.end_snapshot IS NULL" if not include_history else ""

    def table(name: str) -> str:
        return qualified_name(database, schema, name) if schema else qualified_name(database, name)

    recorded = f"(SELECT value FROM {table('ducklake_metadata')} WHERE key = 'data_path' AND scope IS NULL)"
    return f"""
        WITH root AS (
            SELECT CASE WHEN suffix(dp, '/') THEN dp ELSE dp || '/' END AS data_path
            FROM (SELECT {data_path_sql or recorded} AS dp)
        ), schemas AS (
            SELECT DISTINCT ON (schema_id) schema_id,
                path IS NULL OR coalesce(path_is_relative, true) AS relative,
                CASE WHEN path IS NULL THEN root.data_path
                     WHEN coalesce(path_is_relative, true) THEN root.data_path || path ELSE path END AS prefix
            FROM {table("ducklake_schema")}, root ORDER BY schema_id, begin_snapshot DESC
        ), tables AS (
            SELECT DISTINCT ON (t.table_id) t.table_id,
                coalesce(s.relative, true) AND (t.path IS NULL OR coalesce(t.path_is_relative, true)) AS relative,
                CASE WHEN t.path IS NULL THEN coalesce(s.prefix, root.data_path)
                     WHEN coalesce(t.path_is_relative, true) THEN coalesce(s.prefix, root.data_path) || t.path
                     ELSE t.path END AS prefix
            FROM {table("ducklake_table")} t CROSS JOIN root LEFT JOIN schemas s USING (schema_id)
            ORDER BY t.table_id, t.begin_snapshot DESC
        ), files AS (
            SELECT 'data' AS kind, data_file_id AS file_id, table_id, path, path_is_relative, file_size_bytes,
                begin_snapshot, end_snapshot
            FROM {table("ducklake_data_file")}
            UNION ALL
            SELECT 'delete', delete_file_id, table_id, path, path_is_relative, file_size_bytes, begin_snapshot,
                end_snapshot
            FROM {table("ducklake_delete_file")}
        )
        SELECT f.kind, f.file_id, f.table_id,
            CASE WHEN coalesce(f.path_is_relative, true) THEN coalesce(t.prefix, root.data_path) || f.path
                 ELSE f.path END AS path,
            coalesce(f.path_is_relative, true) AND coalesce(t.relative, true) AS relative,
            f.file_size_bytes AS size,
            f.begin_snapshot, f.end_snapshot,
            f.end_snapshot IS NOT NULL AS ended
        FROM files f CROSS JOIN root LEFT JOIN tables t USING (table_id)
        {latest_only}
        ORDER BY path, kind, file_id
    """


class CatalogFile(NamedTuple):
    """One data or delete file of a lake, as :func:`lake_files` reads it."""

    kind: str
    file_id: int
    table_id: int
    path: str
    relative: bool
    size: int | None
    begin_snapshot: int
    end_snapshot: int | None


class ScheduledFile(NamedTuple):
    """One file DuckLake has scheduled for deletion (no snapshot references it any more)."""

    file_id: int
    path: str
    schedule_start: datetime


def lake_data_path(connection: duckdb.DuckDBPyConnection, settings: LakeSettings) -> str:
    """The data path the lake attached as ``settings.alias`` resolves its files against, ending in ``/``:
    DuckLake's own, so a lake attached with another ``DATA_PATH`` resolves where DuckDB reads."""
    row = connection.execute("SELECT data_path FROM ducklake_settings(?)", [settings.alias]).fetchone()
    return resolve_path(row[0] if row and row[0] else "")


def lake_files(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    *,
    kind: str | None = None,
    begin_snapshot: int | None = None,
    file_names: Sequence[str] | None = None,
    path_globs: Sequence[str] | None = None,
) -> list[CatalogFile]:
    """Every data and delete file the attached lake's catalog holds, history included, with its full path.

    ``kind`` (``'data'`` or ``'delete'``), ``begin_snapshot`` (files that snapshot added), ``file_names``
    (files with one of these names, e.g. ``part-0.parquet``) and ``path_globs`` (at least the files whose
    path, with ``s3a://``/``s3n://`` read as ``s3://``, one of these globs matches, ``*`` crossing ``/``)
    narrow the list.
    """
    listing = catalog_files_sql(metadata_database(settings.alias), settings.catalog_schema, data_path_sql="$data_path")
    conditions = ["true"]
    parameters: dict[str, object] = {"data_path": lake_data_path(connection, settings)}
    if kind is not None:
        conditions.append("kind = $kind")
        parameters["kind"] = kind
    if begin_snapshot is not None:
        conditions.append("begin_snapshot = $begin_snapshot")
        parameters["begin_snapshot"] = begin_snapshot
    if file_names is not None:
        conditions.append(_NAME_FILTER)
        parameters["file_names"] = string_list(file_names)
    if path_globs is not None:
        conditions.append(_GLOB_FILTER)
        parameters["path_globs"] = string_list(path_globs)
    query = (
        "SELECT kind, file_id, table_id, path, relative, size, begin_snapshot, end_snapshot "
        f"FROM ({listing}) WHERE {' AND '.join(conditions)}"
    )
    return [CatalogFile._make(row) for row in connection.execute(query, parameters).fetchall()]


def data_files_added(connection: duckdb.DuckDBPyConnection, settings: LakeSettings, snapshot_id: int) -> list[str]:
    """Full paths of the data files ``snapshot_id`` added.

    A file linked by absolute path, as registered source files are, is its own full path by the rule above,
    so such files are read straight from the catalog table; any other has the whole rule applied
    (:func:`lake_files`, whose query costs a few milliseconds more).
    """
    table = qualified_name(metadata_database(settings.alias), settings.catalog_schema, "ducklake_data_file")
    rows = connection.execute(
        f"SELECT path, path_is_relative FROM {table} WHERE begin_snapshot = ?", [snapshot_id]
    ).fetchall()
    if all(relative is not None and not relative for _, relative in rows):
        return [path for path, _ in rows]
    return [file.path for file in lake_files(connection, settings, kind="data", begin_snapshot=snapshot_id)]


def scheduled_files(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    *,
    file_names: Sequence[str] | None = None,
    path_globs: Sequence[str] | None = None,
) -> list[ScheduledFile]:
    """The files DuckLake has scheduled for deletion, by id, with their full path (DuckLake records them
    relative to the data path); ``file_names`` and ``path_globs`` narrow the list as in :func:`lake_files`."""
    table = qualified_name(metadata_database(settings.alias), settings.catalog_schema, _SCHEDULED)
    # A SQLite catalog returns the time as text.
    query = f"SELECT data_file_id, path, path_is_relative, CAST(schedule_start AS TIMESTAMPTZ) FROM {table}"
    parameters = {}
    if file_names is not None:
        query += f" WHERE {_NAME_FILTER}"
        parameters["file_names"] = string_list(file_names)
    rows = connection.execute(query + " ORDER BY data_file_id", parameters).fetchall()
    data_path = lake_data_path(connection, settings) if rows else ""
    files = [
        ScheduledFile(file_id, resolve_path(data_path, (path, relative)), start)
        for file_id, path, relative, start in rows
    ]
    if path_globs is not None:
        files = [
            file for file in files if any(fnmatch.fnmatchcase(normalize_uri(file.path), glob) for glob in path_globs)
        ]
    return files


_SCHEDULED = "ducklake_files_scheduled_for_deletion"
# A semi-join on the file name (hashed), not list_contains, which would compare every row with every name;
# the names are one JSON text, as sql.STRING_LIST binds them.
_NAME_FILTER = "parse_filename(path, false, '/') IN (SELECT unnest(from_json($file_names, '[\"VARCHAR\"]')))"
# locations.S3_SCHEMES read as s3://, as normalize_uri reads them.
_GLOB_FILTER = (
    "EXISTS (SELECT 1 FROM unnest(from_json($path_globs, '[\"VARCHAR\"]')) AS g(pattern) "
    "WHERE regexp_replace(path, '^[sS]3[aAnN]?://', 's3://') GLOB g.pattern)"
)
