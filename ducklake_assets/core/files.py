"""Where a DuckLake catalog's data and delete files are: the one resolver of their full paths.

DuckLake records a file's path relative to its table's path, the table's relative to its schema's and
the schema's relative to the catalog's ``data_path``, unless a link is marked absolute. Backups,
restores, publications and maintenance all need the full path DuckDB reads, so it is computed here,
in SQL, once.
"""

from .sql import qualified_name


def catalog_files_sql(database: str, schema: str = "main", *, include_history: bool = True) -> str:
    """A query over the catalog tables in ``database.schema`` listing every data and delete file.

    Columns: ``kind`` (``'data'`` or ``'delete'``), ``file_id``, ``path`` (full path or URL, as DuckDB
    reads it), ``relative`` (every link from ``data_path`` to the file is relative, so the file moves
    with the data path), ``size`` (bytes, as recorded) and ``ended`` (no longer part of the latest
    snapshot). ``include_history`` keeps the files only older snapshots still reference (time travel
    needs them); without it only the latest snapshot's files are listed.
    """
    latest_only = "" if include_history else "WHERE f.end_snapshot IS NULL"

    def table(name: str) -> str:
        return qualified_name(database, schema, name)

    return f"""
        WITH root AS (
            SELECT value AS data_path FROM {table("ducklake_metadata")} WHERE key = 'data_path' AND scope IS NULL
        ), schemas AS (
            SELECT DISTINCT ON (schema_id) schema_id, coalesce(path_is_relative, true) AS relative,
                CASE WHEN coalesce(path_is_relative, true)
                     THEN root.data_path || coalesce(path, '') ELSE path END AS prefix
            FROM {table("ducklake_schema")}, root ORDER BY schema_id, begin_snapshot DESC
        ), tables AS (
            SELECT DISTINCT ON (t.table_id) t.table_id,
                coalesce(t.path_is_relative, true) AND coalesce(s.relative, true) AS relative,
                CASE WHEN coalesce(t.path_is_relative, true)
                     THEN coalesce(s.prefix, root.data_path) || coalesce(t.path, '') ELSE t.path END AS prefix
            FROM {table("ducklake_table")} t CROSS JOIN root LEFT JOIN schemas s USING (schema_id)
            ORDER BY t.table_id, t.begin_snapshot DESC
        ), files AS (
            SELECT 'data' AS kind, data_file_id AS file_id, table_id, path, path_is_relative, file_size_bytes,
                end_snapshot
            FROM {table("ducklake_data_file")}
            UNION ALL
            SELECT 'delete', delete_file_id, table_id, path, path_is_relative, file_size_bytes, end_snapshot
            FROM {table("ducklake_delete_file")}
        )
        SELECT f.kind, f.file_id,
            CASE WHEN f.path_is_relative THEN t.prefix || f.path ELSE f.path END AS path,
            f.path_is_relative AND t.relative AS relative,
            f.file_size_bytes AS size,
            f.end_snapshot IS NOT NULL AS ended
        FROM files f JOIN tables t USING (table_id)
        {latest_only}
        ORDER BY path, kind, file_id
    """
