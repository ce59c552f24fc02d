"""What the catalog already holds, read back from its metadata tables: the registered paths, the tables with
their files, row counts and columns, and the snapshot a registration made."""

import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import duckdb

from ..errors import RegistrationError
from ..files import data_files_added, lake_files, restored_from, scheduled_files
from ..lake import LakeSettings, metadata_database
from ..locations import normalize_uri
from ..sql import qualified_name


@dataclass(frozen=True)
class TableSummary:
    """One table of the lake after registration."""

    schema: str
    name: str
    row_count: int
    file_count: int
    files_added: int
    columns: tuple[tuple[str, str], ...]

    @property
    def display_name(self) -> str:
        return self.name if self.schema == "main" else f"{self.schema}.{self.name}"


def metadata_table(settings: LakeSettings, name: str) -> str:
    """The catalog table ``name`` (e.g. ``ducklake_data_file``) of the lake, in three quoted parts."""
    return qualified_name(metadata_database(settings.alias), settings.catalog_schema, name)


def registered_paths(
    connection: duckdb.DuckDBPyConnection, settings: LakeSettings, among: Iterable[str] | None = None
) -> set[str]:
    """Normalised paths of every data file the catalog has ever held (any snapshot, or scheduled for
    deletion), so that a file registered once is never added again. With ``among`` (locations), only
    catalog files with the same file name as one of them are read and compared: a partition run over a
    lake of 100,000 files then normalises a few paths, not all of them; and those of them whose copies a
    restore moved into the data path count as registered too."""
    if among is None:
        return set(catalog_paths(connection, settings))
    among = list(among)
    names = None
    [(held, scheduled)] = connection.execute(
        f"SELECT (SELECT count(*) FROM {metadata_table(settings, 'ducklake_data_file')}), "
        f"(SELECT count(*) FROM {metadata_table(settings, 'ducklake_files_scheduled_for_deletion')})"
    ).fetchall()
    if not held and not scheduled:
        return set()
    if held > 4 * len(among):  # else reading them all is cheaper than filtering
        names = sorted({posixpath.basename(uri) for uri in among})
    paths = set(catalog_paths(connection, settings, names=names))
    return paths | restored_from(sorted(paths), [uri for uri in among if uri not in paths])


def tables_with_source_files(connection: duckdb.DuckDBPyConnection, settings: LakeSettings, schema: str) -> list[str]:
    """Tables of ``schema`` holding files registered by reference (outside the data path): the tables a
    registration made, as opposed to tables written through DuckDB into the data path."""
    table = metadata_table(settings, "ducklake_table")
    schemas = metadata_table(settings, "ducklake_schema")
    data_file = metadata_table(settings, "ducklake_data_file")
    rows = connection.execute(
        f"""
        SELECT DISTINCT t.table_name
        FROM {table} t JOIN {schemas} s ON s.schema_id = t.schema_id AND s.end_snapshot IS NULL
        JOIN {data_file} f ON f.table_id = t.table_id AND f.end_snapshot IS NULL
        WHERE t.end_snapshot IS NULL AND NOT f.path_is_relative AND lower(s.schema_name) = lower(?)
        ORDER BY 1
        """,
        [schema],
    ).fetchall()
    return [name for (name,) in rows]


def catalog_paths(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    *,
    names: Sequence[str] | None = None,
    path_globs: Sequence[str] | None = None,
) -> list[str]:
    """Normalised paths of every data file the catalog ever held, scheduled for deletion included; of the
    file ``names`` or at least those ``path_globs`` match (see :func:`~.files.lake_files`) only when given."""
    files = lake_files(connection, settings, kind="data", file_names=names, path_globs=path_globs)
    paths = [file.path for file in files]
    paths += [file.path for file in scheduled_files(connection, settings, file_names=names, path_globs=path_globs)]
    return [normalize_uri(path) for path in paths]


def paths_added(connection: duckdb.DuckDBPyConnection, settings: LakeSettings, snapshot_id: int) -> list[str]:
    """Normalised paths of the data files ``snapshot_id`` added."""
    return [normalize_uri(path) for path in data_files_added(connection, settings, snapshot_id)]


def current_snapshot(connection: duckdb.DuckDBPyConnection, settings: LakeSettings) -> int:
    [(snapshot_id,)] = connection.execute(
        "SELECT max(snapshot_id) FROM ducklake_snapshots(?)", [settings.alias]
    ).fetchall()
    return snapshot_id


def snapshot_with_info(connection: duckdb.DuckDBPyConnection, settings: LakeSettings, info: str) -> int:
    # The metadata table, not ducklake_snapshots(), which works out every snapshot's changes first.
    changes = metadata_table(settings, "ducklake_snapshot_changes")
    row = connection.execute(f"SELECT max(snapshot_id) FROM {changes} WHERE commit_extra_info = ?", [info]).fetchone()
    if not row or row[0] is None:
        raise RegistrationError("The registration committed but its snapshot is not in the catalog; run it again")
    return row[0]


TableColumns = dict[tuple[str, str], tuple[str, str, list[tuple[str, str]]]]
"""Per table (lower-cased schema and name): its schema, name, and columns with their types."""


def table_summaries(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    files_added: dict[tuple[str, str], int] | None = None,
) -> tuple[TableSummary, ...]:
    """Every table of the lake with its row count, data file count and columns."""
    columns = lake_tables(connection, settings)
    if not columns:
        return ()
    rows = row_counts(connection, settings, {key: (schema, name) for key, (schema, name, _) in columns.items()})
    files = {key: count for key, (count, _) in file_counts(connection, settings).items()}
    return summarize(columns, rows, files, files_added or {})


def summarize(
    columns: TableColumns,
    rows: dict[tuple[str, str], int],
    files: dict[tuple[str, str], int],
    files_added: dict[tuple[str, str], int],
) -> tuple[TableSummary, ...]:
    """Table summaries from each table's columns, row count, data file count and files added."""
    return tuple(
        TableSummary(
            schema=schema,
            name=name,
            row_count=rows.get(key, 0),
            file_count=files.get(key, 0),
            files_added=files_added.get(key, 0),
            columns=tuple(table_columns),
        )
        for key, (schema, name, table_columns) in sorted(columns.items())
    )


def row_counts(
    connection: duckdb.DuckDBPyConnection, settings: LakeSettings, tables: dict[tuple[str, str], tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """The row count of each of ``tables`` (``(schema, name)`` by key), in one query DuckLake answers from
    its metadata."""
    if not tables:
        return {}
    keys = sorted(tables)
    union = " UNION ALL ".join(
        f"SELECT ? AS position, count(*) FROM {qualified_name(settings.alias, *tables[key])}" for key in keys
    )
    counts = dict(connection.execute(union, list(range(len(keys)))).fetchall())
    return {key: counts[position] for position, key in enumerate(keys)}


def file_counts(
    connection: duckdb.DuckDBPyConnection, settings: LakeSettings, snapshot_id: int | None = None
) -> dict[tuple[str, str], tuple[int, int]]:
    """Per table of the latest snapshot (lower-cased schema and name): its data file count, and the rows of
    the files ``snapshot_id`` added (0 without one), read from the catalog tables alone."""
    table = metadata_table(settings, "ducklake_table")
    schema = metadata_table(settings, "ducklake_schema")
    data_file = metadata_table(settings, "ducklake_data_file")
    rows = connection.execute(
        f"""
        SELECT s.schema_name, t.table_name, count(f.data_file_id),
            coalesce(sum(f.record_count) FILTER (WHERE f.begin_snapshot = ?), 0)
        FROM {table} t JOIN {schema} s ON s.schema_id = t.schema_id AND s.end_snapshot IS NULL
        LEFT JOIN {data_file} f ON f.table_id = t.table_id AND f.end_snapshot IS NULL
        WHERE t.end_snapshot IS NULL GROUP BY ALL
        """,
        [snapshot_id],
    ).fetchall()
    return {(schema.lower(), name.lower()): (files, int(added)) for schema, name, files, added in rows}


def snapshots_between(connection: duckdb.DuckDBPyConnection, settings: LakeSettings, first: int, last: int) -> int:
    """How many snapshots were committed after ``first`` and before ``last``."""
    snapshot = metadata_table(settings, "ducklake_snapshot")
    [(count,)] = connection.execute(
        f"SELECT count(*) FROM {snapshot} WHERE snapshot_id > ? AND snapshot_id < ?", [first, last]
    ).fetchall()
    return count


def lake_tables(connection: duckdb.DuckDBPyConnection, settings: LakeSettings) -> TableColumns:
    """The lake's tables with their columns and types, by lower-cased schema and name."""
    names = lake_table_names(connection, settings)
    tables: TableColumns = {key: (schema, name, []) for key, (schema, name) in names.items()}
    if any('"' in part for pair in names.values() for part in pair):
        # pragma_table_info cannot parse a quote inside a name; duckdb_columns() can, but the first call in
        # a connection builds the columns of DuckDB's own catalog views first (about 8 ms).
        rows = connection.execute(
            "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = ? AND table_oid IN (SELECT table_oid FROM duckdb_tables() WHERE database_name = ?) "
            "ORDER BY schema_name, table_name, column_index",
            [settings.alias, settings.alias],
        ).fetchall()
        for schema, table, column, column_type in rows:
            tables[(schema.lower(), table.lower())][2].append((column, column_type))
        return tables
    keys = sorted(names)
    if keys:
        union = " UNION ALL ".join("SELECT ? AS position, cid, name, type FROM pragma_table_info(?)" for _ in keys)
        parameters: list[object] = []
        for position, key in enumerate(keys):
            parameters += [position, qualified_name(settings.alias, *names[key])]
        for position, _, column, column_type in connection.execute(union + " ORDER BY 1, 2", parameters).fetchall():
            tables[keys[position]][2].append((column, column_type))
    return tables


def lake_table_names(
    connection: duckdb.DuckDBPyConnection, settings: LakeSettings
) -> dict[tuple[str, str], tuple[str, str]]:
    """The lake's tables as ``(schema, name)`` by their lower-cased key, without their columns (cheaper than
    :func:`lake_tables` when only existence matters)."""
    rows = connection.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ?", [settings.alias]
    ).fetchall()
    return {(schema.lower(), table.lower()): (schema, table) for schema, table in rows}
