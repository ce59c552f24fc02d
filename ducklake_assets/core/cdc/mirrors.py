"""Current-state copies of the captured tables in the lake, brought up to date from the change log in capture
order per primary key."""

import re
from dataclasses import dataclass

import duckdb
import psycopg

from ..retry import RetryLogger, RetryPolicy, retry_on_conflict
from ..sql import qualified_name, quote_identifier
from .settings import BATCHES_TABLE, CHANGE_TABLE, MIRRORED_BATCHES_TABLE, CaptureSettings
from .source import attached_source, capture_triggers, failing_as, hold_lock, source_connection
from .transfer import commit_message, create_lake_tables, rollback

_STAGED_OPERATION = quote_identifier("__ducklake_cdc_operation")
_STAGED_BATCH = quote_identifier("__ducklake_cdc_batch")
_STAGED_SEQUENCE = quote_identifier("__ducklake_cdc_seq")
_STAGED_RANK = quote_identifier("__ducklake_cdc_rank")
_PENDING = qualified_name("temp", "main", "__ducklake_cdc_pending")
_STAGE = qualified_name("temp", "main", "__ducklake_cdc_stage")
_LAKE_TYPE = re.compile(r"[A-Z][A-Z0-9_ ]*(\(\d+(, ?\d+)?\))?(\[\])*")


@dataclass(frozen=True)
class MirrorReport:
    """One mirror after applying changes: changes applied, rows written and deleted, rows now."""

    schema: str
    table: str
    changes: int
    rows_written: int
    rows_deleted: int
    rows: int
    added_columns: tuple[str, ...] = ()
    truncated: bool = False


@dataclass(frozen=True)
class MirrorResult:
    """Batches applied and what happened to each mirror; ``skipped`` lists tables gone from the source."""

    batches: tuple[str, ...]
    mirrors: tuple[MirrorReport, ...] = ()
    skipped: tuple[str, ...] = ()


def apply_to_mirrors(
    settings: CaptureSettings,
    connection: duckdb.DuckDBPyConnection,
    *,
    lake_alias: str = "lake",
    policy: RetryPolicy | None = None,
    log: RetryLogger | None = None,
) -> MirrorResult:
    """Bring every mirror up to date with the batches in the lake's change log, in one DuckLake transaction.

    For each captured table the lake holds ``<lake_alias>.<source schema>.<table>`` with the source's
    columns, created by the first run after the table's capture began. Changes are applied in capture
    order per primary key (the last change of a key wins; a truncate empties the mirror). A column new in
    the source is added to the mirror; rows captured before it existed hold NULL there, as do rows
    captured after a column was dropped in the source. Only one mirror run per audit schema runs at a
    time; a commit that conflicts with another writer is tried again under ``policy``.
    """
    log_table = qualified_name(lake_alias, settings.lake_schema, CHANGE_TABLE)
    with source_connection(settings) as pg, failing_as("Applying changes to the mirrors", settings):
        hold_lock(pg, settings, "mirror")
        create_lake_tables(connection, lake_alias, settings.lake_schema, policy, log)
        pending = _unmirrored_batches(connection, lake_alias, settings.lake_schema)
        captured = {(schema, table) for schema, table, _ in capture_triggers(pg, settings)}
        unmirrored = {table for table in captured if not _columns(connection, lake_alias, *table)}
        if not pending and not unmirrored:
            return MirrorResult(batches=())
        connection.execute(f"CREATE OR REPLACE TEMPORARY TABLE {_PENDING} (batch_id VARCHAR)")
        connection.executemany(f"INSERT INTO {_PENDING} VALUES (?)", [[batch] for batch in pending])
        changed = connection.execute(
            f"SELECT DISTINCT table_schema, table_name FROM {log_table} "
            f"WHERE batch_id IN (SELECT batch_id FROM {_PENDING})"
        ).fetchall()
        tables = sorted(unmirrored | set(changed))
        shapes = {(schema, table): _source_shape(pg, schema, table) for schema, table in tables}
        skipped = tuple(f"{schema}.{table}" for (schema, table), shape in shapes.items() if shape is None)

        def apply_all(source_alias: str) -> list[MirrorReport]:
            connection.execute("BEGIN")
            try:
                reports = [
                    _apply_table(connection, lake_alias, source_alias, log_table, schema, table, shape)
                    for (schema, table), shape in shapes.items()
                    if shape is not None
                ]
                connection.execute(
                    f"INSERT INTO {qualified_name(lake_alias, settings.lake_schema, MIRRORED_BATCHES_TABLE)} "
                    f"SELECT batch_id, now() FROM {_PENDING}"
                )
                commit_message(connection, lake_alias, f"CDC mirrors: {len(pending)} batches applied")
                connection.execute("COMMIT")
            except BaseException:
                rollback(connection)
                raise
            return reports

        try:
            with attached_source(connection, settings) as source_alias:
                mirrors = retry_on_conflict(
                    lambda: apply_all(source_alias),
                    policy=policy,
                    log=log,
                    what="Applying CDC mirrors",
                    secrets=settings.secrets(),
                )
        finally:
            connection.execute(f"DROP TABLE IF EXISTS {_PENDING}")
    return MirrorResult(batches=tuple(pending), mirrors=tuple(mirrors), skipped=skipped)


def _unmirrored_batches(connection: duckdb.DuckDBPyConnection, lake: str, schema: str) -> list[str]:
    rows = connection.execute(
        f"SELECT batch_id FROM {qualified_name(lake, schema, BATCHES_TABLE)} "
        f"WHERE batch_id NOT IN (SELECT batch_id FROM {qualified_name(lake, schema, MIRRORED_BATCHES_TABLE)}) "
        "ORDER BY batch_id"
    ).fetchall()
    return [batch for (batch,) in rows]


@dataclass(frozen=True)
class _SourceShape:
    columns: tuple[str, ...]
    json_columns: frozenset[str]
    key_columns: tuple[str, ...]


def _source_shape(pg: psycopg.Connection, schema: str, table: str) -> _SourceShape | None:
    """The source table's columns (in order), which hold JSON, and its primary key; None if it is gone."""
    rows = pg.execute(
        """
        SELECT a.attname, t.typname IN ('json', 'jsonb'),
               coalesce(a.attnum = ANY(i.indkey), false)
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
        WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        [schema, table],
    ).fetchall()
    if not rows:
        return None
    return _SourceShape(
        columns=tuple(name for name, _, _ in rows),
        json_columns=frozenset(name for name, is_json, _ in rows if is_json),
        key_columns=tuple(name for name, _, is_key in rows if is_key),
    )


def _lake_type(duckdb_type: str, is_json: bool) -> str:
    """The mirror column type: DuckDB's reading of the source type where DuckLake can store it, else text."""
    if is_json:
        return "JSON"
    if _LAKE_TYPE.fullmatch(duckdb_type):
        return duckdb_type
    return "VARCHAR"


def _columns(connection: duckdb.DuckDBPyConnection, database: str, schema: str, table: str) -> list[tuple[str, str]]:
    return connection.execute(
        "SELECT column_name, data_type FROM duckdb_columns() "
        "WHERE database_name = ? AND schema_name = ? AND table_name = ? ORDER BY column_index",
        [database, schema, table],
    ).fetchall()


def _ensure_mirror(
    connection: duckdb.DuckDBPyConnection, lake: str, source_alias: str, schema: str, table: str, shape: _SourceShape
) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """Create the mirror or add the source's new columns; return its columns and the names added."""
    source_types = dict(_columns(connection, source_alias, schema, table))
    mirror = qualified_name(lake, schema, table)
    existing = _columns(connection, lake, schema, table)
    known = {name for name, _ in existing}
    new = [name for name in shape.columns if name not in known]
    definitions = [
        f"{quote_identifier(name)} {_lake_type(source_types.get(name, 'VARCHAR'), name in shape.json_columns)}"
        for name in new
    ]
    if not existing:
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {qualified_name(lake, schema)}")
        connection.execute(f"CREATE TABLE {mirror} ({', '.join(definitions)})")
        return _columns(connection, lake, schema, table), ()
    for definition in definitions:
        connection.execute(f"ALTER TABLE {mirror} ADD COLUMN {definition}")
    return _columns(connection, lake, schema, table), tuple(new)


def _apply_table(
    connection: duckdb.DuckDBPyConnection,
    lake: str,
    source_alias: str,
    log: str,
    schema: str,
    table: str,
    shape: _SourceShape,
) -> MirrorReport:
    """Apply the pending changes of one table: stage them typed, delete their keys, insert the survivors."""
    columns, added = _ensure_mirror(connection, lake, source_alias, schema, table, shape)
    mirror = qualified_name(lake, schema, table)
    where = f"batch_id IN (SELECT batch_id FROM {_PENDING}) AND table_schema = ? AND table_name = ?"
    last_truncate = connection.execute(
        f"SELECT batch_id, change_seq FROM {log} WHERE {where} AND operation = 'T' "
        "ORDER BY batch_id DESC, change_seq DESC LIMIT 1",
        [schema, table],
    ).fetchone()
    after_truncate, after_parameters = "", []
    if last_truncate:
        connection.execute(f"DELETE FROM {mirror}")
        after_truncate = " AND (batch_id > ? OR (batch_id = ? AND change_seq > ?))"
        after_parameters = [last_truncate[0], last_truncate[0], last_truncate[1]]

    paths = ["/" + name.replace("~", "~0").replace("/", "~1") for name, _ in columns]
    values = []
    for position, (_, data_type) in enumerate(columns, start=1):
        if data_type == "JSON":
            values.append(f"CASE WHEN json_type(j[{position}]) = 'NULL' THEN NULL ELSE j[{position}] END")
        elif data_type == "BLOB":
            values.append(f"from_hex(substr(v[{position}], 3))")
        else:
            values.append(f"v[{position}]")
    connection.execute(
        f"CREATE OR REPLACE TEMPORARY TABLE {_STAGE} AS SELECT NULL::VARCHAR AS {_STAGED_OPERATION}, "
        f"NULL::VARCHAR AS {_STAGED_BATCH}, NULL::BIGINT AS {_STAGED_SEQUENCE}, * FROM {mirror} LIMIT 0"
    )
    try:
        [(changes,)] = connection.execute(
            f"INSERT INTO {_STAGE} SELECT operation, batch_id, change_seq, {', '.join(values)} FROM ("
            "SELECT operation, batch_id, change_seq, json_extract_string(row_data, ?::VARCHAR[]) AS v, "
            f"json_extract(row_data, ?::VARCHAR[]) AS j FROM {log} "
            f"WHERE {where} AND operation <> 'T'{after_truncate})",
            [paths, paths, schema, table, *after_parameters],
        ).fetchall()
        keys = [quote_identifier(name) for name in shape.key_columns]
        matches = " AND ".join(f"{mirror}.{key} = changed.{key}" for key in keys)
        [(rows_deleted,)] = connection.execute(
            f"DELETE FROM {mirror} USING (SELECT DISTINCT {', '.join(keys)} FROM {_STAGE}) AS changed WHERE {matches}"
        ).fetchall()
        [(rows_written,)] = connection.execute(
            f"INSERT INTO {mirror} SELECT * EXCLUDE ({_STAGED_OPERATION}, {_STAGED_BATCH}, {_STAGED_SEQUENCE}, "
            f"{_STAGED_RANK}) FROM (SELECT *, row_number() OVER (PARTITION BY {', '.join(keys)} "
            f"ORDER BY {_STAGED_BATCH} DESC, {_STAGED_SEQUENCE} DESC) AS {_STAGED_RANK} FROM {_STAGE}) "
            f"WHERE {_STAGED_RANK} = 1 AND {_STAGED_OPERATION} <> 'D'"
        ).fetchall()
    finally:
        connection.execute(f"DROP TABLE IF EXISTS {_STAGE}")
    [(rows,)] = connection.execute(f"SELECT count(*) FROM {mirror}").fetchall()
    return MirrorReport(
        schema=schema,
        table=table,
        changes=changes + (1 if last_truncate else 0),
        rows_written=rows_written,
        rows_deleted=rows_deleted,
        rows=rows,
        added_columns=added,
        truncated=bool(last_truncate),
    )
