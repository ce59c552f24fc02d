"""What a reader of a lake sees: the one-line attach statement, a fresh connection that shares nothing with the
writer, and the tables with row counts at one snapshot (:func:`lake_contents`, :func:`catalog_contents`)."""

from dataclasses import dataclass, replace

import duckdb

from ..errors import PublishError
from ..lake import LakeSettings, connect_lake, metadata_prefix, new_connection
from ..locations import absolute_local_path, is_remote
from ..s3 import S3Settings
from ..sql import qualified_name, quote_identifier, quote_literal

STRANGER_ALIAS = "frozen"


@dataclass(frozen=True)
class LakeContents:
    """What a reader of a lake sees at one snapshot: its id, format version and tables with row counts.

    Tables are keyed ``schema.table``.
    """

    snapshot_id: int
    format_version: str
    tables: dict[str, int]


def attach_statement(url: str, alias: str = STRANGER_ALIAS) -> str:
    """``ATTACH 'ducklake:<url>' AS <alias> (READ_ONLY)``, quoted."""
    return f"ATTACH {quote_literal('ducklake:' + url)} AS {quote_identifier(alias)} (READ_ONLY)"


def table_key(name: str) -> str:
    """``t`` -> ``main.t``; ``s.t`` unchanged: how tables are named in reports."""
    return name if "." in name else f"main.{name}"


def lake_contents(
    connection: duckdb.DuckDBPyConnection,
    alias: str,
    snapshot_id: int | None = None,
    *,
    metadata_schema: str | None = None,
) -> LakeContents:
    """Tables and row counts of the lake attached as ``alias`` at ``snapshot_id`` (default: its latest).

    ``metadata_schema`` is the schema of the catalog tables when the lake was attached with one.
    """
    if snapshot_id is None:
        [(snapshot_id,)] = connection.execute(f"SELECT id FROM {quote_identifier(alias)}.current_snapshot()").fetchall()
    version_row = connection.execute(
        f"SELECT value FROM {quote_identifier(alias)}.options() WHERE option_name = 'version'"
    ).fetchone()
    if version_row is None:
        raise PublishError(f"DuckLake {alias!r} reports no format version: it is not a complete DuckLake catalog")
    (version,) = version_row
    metadata = metadata_prefix(alias, metadata_schema)
    names = connection.execute(
        f"""
        SELECT s.schema_name, t.table_name
        FROM {metadata}.ducklake_table AS t JOIN {metadata}.ducklake_schema AS s USING (schema_id)
        WHERE t.begin_snapshot <= $1 AND (t.end_snapshot IS NULL OR t.end_snapshot > $1)
          AND s.begin_snapshot <= $1 AND (s.end_snapshot IS NULL OR s.end_snapshot > $1)
        ORDER BY 1, 2
        """,
        [snapshot_id],
    ).fetchall()
    tables = {}
    for schema, table in names:
        [(rows,)] = connection.execute(
            f"SELECT count(*) FROM {qualified_name(alias, schema, table)} AT (VERSION => ?)", [snapshot_id]
        ).fetchall()
        tables[f"{schema}.{table}"] = rows
    return LakeContents(snapshot_id=snapshot_id, format_version=version, tables=tables)


def catalog_contents(settings: LakeSettings, snapshot_id: int | None = None) -> tuple[LakeContents, int]:
    """The live catalog's contents at ``snapshot_id`` (default: its latest) and its latest snapshot id.

    Opens the lake read-only; raises ``PublishError`` when that snapshot is not in the catalog.
    """
    with connect_lake(replace(settings, read_only=True)) as connection:
        alias = settings.alias
        [(latest,)] = connection.execute(f"SELECT id FROM {quote_identifier(alias)}.current_snapshot()").fetchall()
        if snapshot_id is not None:
            [(known,)] = connection.execute(
                f"SELECT count(*) FROM {quote_identifier(alias)}.snapshots() WHERE snapshot_id = ?", [snapshot_id]
            ).fetchall()
            if not known:
                raise PublishError(
                    f"Snapshot {snapshot_id} is not in catalog {settings.describe()} (latest is {latest}): the "
                    "frozen lake was not published from this catalog, or was changed after publication."
                )
        return lake_contents(connection, alias, snapshot_id, metadata_schema=settings.catalog_schema), latest


def local_or_url(uri: str) -> str:
    return uri if is_remote(uri) else absolute_local_path(uri)


def stranger_connection(s3: S3Settings | None, extensions: list[str]) -> duckdb.DuckDBPyConnection:
    """A new DuckDB with no persistent secrets, ``extensions`` loaded and ``s3``'s secret."""
    connection = new_connection(config={"allow_persistent_secrets": False}, extensions=extensions)
    if s3 is not None and "httpfs" in extensions:
        s3.create_duckdb_secret(connection, "__ducklake_assets_stranger_s3")
    return connection
