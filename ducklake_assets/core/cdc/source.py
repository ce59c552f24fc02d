"""The source PostgreSQL database as every CDC step reaches it: connections, the capture's objects there
(trigger function, change and batch tables), the lock that keeps one transfer or mirror run at a time, and
the read-only attach through DuckDB."""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import duckdb
import psycopg
from psycopg import sql

from ..errors import CDCError, redact
from ..extensions import load_extensions
from ..sql import quote_identifier, quote_literal
from .settings import CHANGE_TABLE, CaptureSettings

FUNCTION = "record_change"
BATCH_PREFIX = "batch_"
_SOURCE_ALIAS = "__ducklake_assets_cdc_source"
_SOURCE_SECRET = "__ducklake_assets_cdc_source_secret"


@dataclass(frozen=True)
class PendingChanges:
    """Changes still in PostgreSQL: in the live change table and in batches left by a crashed transfer."""

    changes: int
    leftover_batches: int
    oldest_captured_at: datetime | None
    lag_seconds: float | None


@contextlib.contextmanager
def source_connection(settings: CaptureSettings) -> Iterator[psycopg.Connection]:
    try:
        connection = psycopg.connect(settings.source.conninfo(), password=settings.source.password, autocommit=True)
    except psycopg.Error as error:
        raise CDCError(
            f"Could not connect to the CDC source {settings.describe()}: {redact(str(error), settings.secrets())}. "
            "Check host, port, database, user and password."
        ) from None
    with connection:
        yield connection


@contextlib.contextmanager
def failing_as(what: str, settings: CaptureSettings) -> Iterator[None]:
    try:
        yield
    except (psycopg.Error, duckdb.Error) as error:
        raise CDCError(
            f"{what} failed (source {settings.describe()}, audit schema {settings.audit_schema!r}): "
            f"{redact(str(error), settings.secrets())}"
        ) from None


def function_oid(pg: psycopg.Connection, settings: CaptureSettings) -> int | None:
    row = pg.execute(
        "SELECT p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s AND p.proname = %s",
        [settings.audit_schema, FUNCTION],
    ).fetchone()
    return row[0] if row else None


def capture_triggers(pg: psycopg.Connection, settings: CaptureSettings) -> list[tuple[str, str, str]]:
    """(schema, table, trigger) of every trigger running this capture's function."""
    return pg.execute(
        "SELECT n.nspname, c.relname, t.tgname FROM pg_trigger t "
        "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE t.tgfoid = %s ORDER BY 1, 2, 3",
        [function_oid(pg, settings)],
    ).fetchall()


def require_capture(pg: psycopg.Connection, settings: CaptureSettings) -> None:
    changes = sql.Identifier(settings.audit_schema, CHANGE_TABLE).as_string(pg)
    [(change_table,)] = pg.execute("SELECT to_regclass(%s)", [changes]).fetchall()
    if change_table is None:
        raise CDCError(
            f"No change table {settings.audit_schema}.{CHANGE_TABLE} in {settings.describe()}: "
            "install the capture first (setup_capture or the capture asset)."
        )


def batch_tables(pg: psycopg.Connection, settings: CaptureSettings) -> list[str]:
    """Batch tables swapped out but not yet dropped, oldest first (their names sort by swap time)."""
    rows = pg.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'r' AND starts_with(c.relname, %s) ORDER BY c.relname",
        [settings.audit_schema, BATCH_PREFIX],
    ).fetchall()
    return [name for (name,) in rows]


def batch_identifier(settings: CaptureSettings, batch_id: str) -> sql.Identifier:
    return sql.Identifier(settings.audit_schema, BATCH_PREFIX + batch_id)


def count_rows(pg: psycopg.Connection, settings: CaptureSettings, table: str) -> int:
    [(count,)] = pg.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(settings.audit_schema, table))
    ).fetchall()
    return count


def pending_in_source(pg: psycopg.Connection, settings: CaptureSettings) -> PendingChanges:
    batches = batch_tables(pg, settings)
    parts = [
        sql.SQL("SELECT count(*) AS n, min(captured_at) AS oldest FROM {}").format(
            sql.Identifier(settings.audit_schema, table)
        )
        for table in [CHANGE_TABLE, *batches]
    ]
    [(count, oldest, lag)] = pg.execute(
        sql.SQL(
            "SELECT sum(n)::bigint, min(oldest), extract(epoch FROM clock_timestamp() - min(oldest))::float8 "
            "FROM ({}) AS parts"
        ).format(sql.SQL(" UNION ALL ").join(parts))
    ).fetchall()
    return PendingChanges(changes=count, leftover_batches=len(batches), oldest_captured_at=oldest, lag_seconds=lag)


def hold_lock(pg: psycopg.Connection, settings: CaptureSettings, purpose: str) -> None:
    """Take a session lock (released when the connection closes, also by a crash) or refuse to run."""
    [(acquired,)] = pg.execute(
        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
        [f"ducklake_assets.cdc.{purpose}:{settings.audit_schema}"],
    ).fetchall()
    if not acquired:
        raise CDCError(
            f"Another CDC {purpose} for audit schema {settings.audit_schema!r} of {settings.describe()} is "
            "running: wait for it to finish (only one may run at a time)."
        )


@contextlib.contextmanager
def attached_source(connection: duckdb.DuckDBPyConnection, settings: CaptureSettings) -> Iterator[str]:
    """Attach the source read-only through DuckDB's postgres extension; the password travels as a secret."""
    load_extensions(connection, ["postgres_scanner"])
    options = "TYPE postgres, READ_ONLY"
    if settings.source.create_duckdb_secret(connection, _SOURCE_SECRET):
        options += f", SECRET {quote_identifier(_SOURCE_SECRET)}"
    connection.execute(
        f"ATTACH {quote_literal(settings.source.conninfo())} AS {quote_identifier(_SOURCE_ALIAS)} ({options})"
    )
    try:
        yield _SOURCE_ALIAS
    finally:
        connection.execute(f"DETACH {quote_identifier(_SOURCE_ALIAS)}")
        connection.execute(f"DROP SECRET IF EXISTS {quote_identifier(_SOURCE_SECRET)}")
