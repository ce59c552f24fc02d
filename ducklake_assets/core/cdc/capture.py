"""Installing and removing the capture in the source database: the audit schema, the UNLOGGED change table,
the trigger function and one set of row triggers per captured table."""

import contextlib
import fnmatch
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..errors import CDCError
from .settings import CHANGE_TABLE, CapturedTable, CaptureSettings
from .source import (
    FUNCTION,
    PendingChanges,
    batch_tables,
    capture_triggers,
    count_rows,
    failing_as,
    function_oid,
    pending_in_source,
    require_capture,
    source_connection,
)

_SEQUENCE = "change_seq"
_TRIGGER_PREFIX = "ducklake_cdc_"


@dataclass(frozen=True)
class SetupResult:
    """Tables whose triggers this setup installed, tables that already had them, rows snapshotted."""

    added: tuple[CapturedTable, ...]
    already_captured: tuple[CapturedTable, ...]
    snapshot_rows: int


@dataclass(frozen=True)
class TeardownResult:
    """Tables no longer captured and how many untransferred changes were discarded."""

    released_tables: tuple[str, ...]
    discarded_changes: int


def setup_capture(settings: CaptureSettings, *, snapshot_existing_rows: bool = True) -> SetupResult:
    """Install the capture in the source database, idempotently, in one transaction.

    Creates what is missing (audit schema, change table, trigger function) and adds triggers to every
    table of ``settings.schema`` matching ``settings.tables`` that has none yet; tables already captured
    are left alone. With ``snapshot_existing_rows`` the rows a newly captured table already holds are
    recorded as inserts in the same transaction, so its mirror starts complete. Every captured table
    needs a primary key; if one lacks it nothing is installed.
    """
    with source_connection(settings) as pg, failing_as("Installing the capture", settings):
        with pg.transaction():
            _create_capture_objects(pg, settings)
            matching = [table for table in _tables_in_schema(pg, settings.schema) if _matches(table.name, settings)]
            captured = _captured_table_names(pg, settings)
            if not matching:
                raise CDCError(
                    f"No table in schema {settings.schema!r} of {settings.describe()} matches "
                    f"{list(settings.tables)}: check the schema and the table patterns."
                )
            new = [table for table in matching if table.name not in captured]
            without_key = [table.name for table in new if not table.key_columns]
            if without_key:
                raise CDCError(
                    f"Tables {without_key} in schema {settings.schema!r} have no primary key, which mirrors "
                    "need to apply updates and deletes: add a primary key or leave them out of the table "
                    "patterns. Nothing was installed."
                )
            snapshot_rows = 0
            for table in new:
                _create_triggers(pg, settings, table)
                if snapshot_existing_rows:
                    snapshot_rows += _snapshot_rows(pg, settings, table)
    return SetupResult(
        added=tuple(new),
        already_captured=tuple(table for table in matching if table.name in captured),
        snapshot_rows=snapshot_rows,
    )


def teardown_capture(settings: CaptureSettings, *, discard_pending: bool = False) -> TeardownResult:
    """Remove the triggers, the function, the change and batch tables and (if then empty) the audit schema.

    Refuses, changing nothing, while changes wait to be transferred unless ``discard_pending`` is set.
    """
    with source_connection(settings) as pg, failing_as("Removing the capture", settings):
        with pg.transaction():
            if function_oid(pg, settings) is None:
                return TeardownResult(released_tables=(), discarded_changes=0)
            batches = batch_tables(pg, settings)
            waiting = count_rows(pg, settings, CHANGE_TABLE) + sum(count_rows(pg, settings, table) for table in batches)
            if waiting and not discard_pending:
                raise CDCError(
                    f"{waiting} captured changes in {settings.audit_schema!r} of {settings.describe()} have not "
                    "been transferred: run a transfer first, or pass discard_pending=True to drop them. "
                    "Nothing was removed."
                )
            released = []
            for schema, table, trigger in capture_triggers(pg, settings):
                pg.execute(
                    sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(trigger), sql.Identifier(schema, table))
                )
                released.append(f"{schema}.{table}")
            audit = settings.audit_schema
            pg.execute(sql.SQL("DROP FUNCTION {}()").format(sql.Identifier(audit, FUNCTION)))
            for table in [CHANGE_TABLE, *batches]:
                pg.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(audit, table)))
            pg.execute(sql.SQL("DROP SEQUENCE {}").format(sql.Identifier(audit, _SEQUENCE)))
            with contextlib.suppress(psycopg.errors.DependentObjectsStillExist), pg.transaction():
                pg.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(audit)))
    return TeardownResult(released_tables=tuple(sorted(set(released))), discarded_changes=waiting)


def pending_changes(settings: CaptureSettings) -> PendingChanges:
    """How many changes wait in PostgreSQL, and how old the oldest is (by the server's clock)."""
    with source_connection(settings) as pg, failing_as("Reading the pending changes", settings):
        require_capture(pg, settings)
        return pending_in_source(pg, settings)


def _matches(name: str, settings: CaptureSettings) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in settings.tables)


def _create_capture_objects(pg: psycopg.Connection, settings: CaptureSettings) -> None:
    audit = settings.audit_schema
    changes = sql.Identifier(audit, CHANGE_TABLE)
    pg.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(audit)))
    pg.execute(sql.SQL("CREATE SEQUENCE IF NOT EXISTS {}").format(sql.Identifier(audit, _SEQUENCE)))
    pg.execute(
        sql.SQL(
            "CREATE UNLOGGED TABLE IF NOT EXISTS {changes} ("
            " change_id uuid NOT NULL DEFAULT gen_random_uuid(),"
            " change_seq bigint NOT NULL DEFAULT nextval({sequence}),"
            " captured_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
            " operation char(1) NOT NULL,"
            " table_schema text NOT NULL,"
            " table_name text NOT NULL,"
            " row_data jsonb NOT NULL)"
        ).format(changes=changes, sequence=sql.Literal(sql.Identifier(audit, _SEQUENCE).as_string(pg)))
    )
    body = sql.SQL(
        """
BEGIN
    IF TG_OP = 'INSERT' THEN
        {insert}
    ELSIF TG_OP = 'DELETE' THEN
        {delete}
    ELSIF TG_OP = 'TRUNCATE' THEN
        {truncate}
    ELSIF TG_NARGS > 0 THEN  -- the trigger of updates that change the primary key
        {delete}
        {insert}
    ELSE
        {update}
    END IF;
    RETURN NULL;
END
"""
    ).format(
        insert=_record(changes, "I", "to_jsonb(NEW)"),
        delete=_record(changes, "D", "to_jsonb(OLD)"),
        truncate=_record(changes, "T", "'{}'::jsonb"),
        update=_record(changes, "U", "to_jsonb(NEW)"),
    )
    pg.execute(
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql "
            "SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS {body}"
        ).format(function=sql.Identifier(audit, FUNCTION), body=sql.Literal(body.as_string(pg)))
    )


def _record(changes: sql.Identifier, operation: str, row: str) -> sql.Composed:
    """The trigger function's statement recording one change; ``row`` is a PL/pgSQL expression."""
    return sql.SQL(
        "INSERT INTO {} (operation, table_schema, table_name, row_data) "
        "VALUES ({}, TG_TABLE_SCHEMA, TG_TABLE_NAME, {});"
    ).format(changes, sql.Literal(operation), sql.SQL(row))


def _tables_in_schema(pg: psycopg.Connection, schema: str) -> list[CapturedTable]:
    rows = pg.execute(
        """
        SELECT c.relname,
               ARRAY(SELECT a.attname
                     FROM pg_index i
                     CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
                     JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                     WHERE i.indrelid = c.oid AND i.indisprimary
                     ORDER BY k.position)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relkind = 'r'
        ORDER BY c.relname
        """,
        [schema],
    ).fetchall()
    return [CapturedTable(schema, name, tuple(keys)) for name, keys in rows]


def _captured_table_names(pg: psycopg.Connection, settings: CaptureSettings) -> set[str]:
    return {table for schema, table, _ in capture_triggers(pg, settings) if schema == settings.schema}


def _create_triggers(pg: psycopg.Connection, settings: CaptureSettings, table: CapturedTable) -> None:
    """Row triggers for inserts and deletes, for updates keeping the primary key and for updates changing
    it (recorded as a delete and an insert, told apart in C by a WHEN clause); a statement trigger for
    truncates."""
    old_key, new_key = (
        sql.SQL("ROW({})").format(
            sql.SQL(", ").join(sql.SQL(row + ".{}").format(sql.Identifier(c)) for c in table.key_columns)
        )
        for row in ("OLD", "NEW")
    )
    definitions = {
        "": "AFTER INSERT OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION {function}()",
        "_update": "AFTER UPDATE ON {table} FOR EACH ROW WHEN ({old} IS NOT DISTINCT FROM {new}) "
        "EXECUTE FUNCTION {function}()",
        "_rekey": "AFTER UPDATE ON {table} FOR EACH ROW WHEN ({old} IS DISTINCT FROM {new}) "
        "EXECUTE FUNCTION {function}('key changed')",
        "_truncate": "AFTER TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
    }
    for suffix, definition in definitions.items():
        pg.execute(
            sql.SQL("CREATE TRIGGER {name} " + definition).format(
                name=sql.Identifier(_TRIGGER_PREFIX + settings.audit_schema + suffix),
                table=sql.Identifier(table.schema, table.name),
                function=sql.Identifier(settings.audit_schema, FUNCTION),
                old=old_key,
                new=new_key,
            )
        )


def _snapshot_rows(pg: psycopg.Connection, settings: CaptureSettings, table: CapturedTable) -> int:
    cursor = pg.execute(
        sql.SQL(
            "INSERT INTO {changes} (operation, table_schema, table_name, row_data) "
            "SELECT 'I', %s, %s, to_jsonb(t) FROM {table} AS t"
        ).format(
            changes=sql.Identifier(settings.audit_schema, CHANGE_TABLE),
            table=sql.Identifier(table.schema, table.name),
        ),
        [table.schema, table.name],
    )
    return cursor.rowcount
