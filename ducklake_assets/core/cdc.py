"""Trigger-based change data capture from PostgreSQL into DuckLake, in mini-batches, exactly once.

In the source database, :func:`setup_capture` installs an ``audit`` schema (name configurable) holding an
UNLOGGED change table, one trigger function and row triggers on the chosen tables: every insert, update,
delete (and truncate) becomes a row with a UUID, a capture time, a capture sequence number, the operation,
the table and the row as JSONB. Nothing else runs in the source: no replication slot, no extra server.

:func:`transfer_batch` moves what was captured into the lake:

1. *swap*: in one PostgreSQL transaction a fresh change table is created like the old one and the two are
   renamed, so the triggers write on into the new table and the old one becomes ``audit.batch_<id>``;
2. *copy*: in one DuckLake transaction the batch is inserted into ``<lake>.cdc.changes`` and its id into
   ``<lake>.cdc.batches``;
3. *drop*: the batch table is dropped.

A crash between any two steps leaves a ``batch_<id>`` table behind. The next transfer resumes such
batches first, oldest first, and skips the copy of a batch the lake already lists, so no change is lost
or copied twice. The one loss a trigger-based capture cannot prevent is a *PostgreSQL* crash: UNLOGGED
tables are emptied by crash recovery (that is the price of not writing the changes to the WAL).

:func:`apply_to_mirrors` keeps, per captured table, a current-state copy in the lake (``<lake>.<source
schema>.<table>``), applying the transferred changes in capture order per primary key.
"""

import contextlib
import fnmatch
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import duckdb
import psycopg
from psycopg import sql

from .catalog import PostgresCatalog
from .errors import CDCError, ConfigurationError, redact
from .extensions import load_extensions
from .retry import RetryLogger, RetryPolicy, retry_on_conflict
from .sql import qualified_name, quote_identifier, quote_literal

CHANGE_TABLE = "changes"
"""The live change table in the audit schema; also the name of the change log in the lake."""
BATCHES_TABLE = "batches"
"""Lake table listing every batch copied into the lake (what makes a re-copy detectable)."""
MIRRORED_BATCHES_TABLE = "mirrored_batches"
"""Lake table listing the batches already applied to the mirrors."""

_NEXT_CHANGE_TABLE = "changes_next"
_SEQUENCE = "change_seq"
_FUNCTION = "record_change"
_BATCH_PREFIX = "batch_"
_TRIGGER_PREFIX = "ducklake_cdc_"
_SOURCE_ALIAS = "__ducklake_assets_cdc_source"
_SOURCE_SECRET = "__ducklake_assets_cdc_source_secret"
_STAGED_OPERATION = quote_identifier("__ducklake_cdc_operation")
_STAGED_BATCH = quote_identifier("__ducklake_cdc_batch")
_STAGED_SEQUENCE = quote_identifier("__ducklake_cdc_seq")
_STAGED_RANK = quote_identifier("__ducklake_cdc_rank")
_PENDING = qualified_name("temp", "main", "__ducklake_cdc_pending")
_STAGE = qualified_name("temp", "main", "__ducklake_cdc_stage")
_LAKE_TYPE = re.compile(r"[A-Z][A-Z0-9_ ]*(\(\d+(, ?\d+)?\))?(\[\])*")

TransferStep = Literal["swapped", "before_commit", "copied", "dropped"]
"""Points of a transfer at which ``checkpoint`` is called: after the swap committed, inside the DuckLake
transaction just before its commit, after the copy committed, after the batch table was dropped."""
Checkpoint = Callable[[TransferStep, str], None]


@dataclass(frozen=True)
class CaptureSettings:
    """What to capture and where the capture lives.

    ``source`` is the source database's connection (libpq keywords, password held apart so it never shows
    in a message). ``schema`` and ``tables`` (shell-style patterns such as ``"order*"``) choose the captured
    tables; ``audit_schema`` is the PostgreSQL schema holding the change table; ``lake_schema`` is the
    lake schema holding the change log. Run setup and transfers as the same role: it owns the change table.
    """

    source: PostgresCatalog
    schema: str = "public"
    tables: tuple[str, ...] = ("*",)
    audit_schema: str = "audit"
    lake_schema: str = "cdc"

    def __post_init__(self) -> None:
        if isinstance(self.tables, str) or not self.tables or not all(isinstance(p, str) and p for p in self.tables):
            raise ConfigurationError("CDC tables must be a non-empty list of table names or patterns like 'order*'")
        if self.schema == self.audit_schema:
            raise ConfigurationError(
                f"CDC schema {self.schema!r} is also the audit schema: the change table cannot capture itself; "
                "choose another audit_schema"
            )
        if not 0 < len(self.audit_schema.encode()) <= 40:
            raise ConfigurationError(f"audit_schema {self.audit_schema!r} must be 1 to 40 bytes long")

    def secrets(self) -> list[str]:
        """Values that must never appear in a message."""
        return [self.source.password] if self.source.password else []

    def describe(self) -> str:
        """The source database, safe to show."""
        return self.source.describe()


@dataclass(frozen=True)
class CapturedTable:
    """A source table and the primary key its changes are applied by."""

    schema: str
    name: str
    key_columns: tuple[str, ...]


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


@dataclass(frozen=True)
class PendingChanges:
    """Changes still in PostgreSQL: in the live change table and in batches left by a crashed transfer."""

    changes: int
    leftover_batches: int
    oldest_captured_at: datetime | None
    lag_seconds: float | None


@dataclass(frozen=True)
class BatchReport:
    """One batch now in the lake.

    ``counts`` maps ``(schema, table, operation)`` to a number of changes. ``resumed`` marks a batch left
    behind by an earlier, interrupted transfer; ``copied_before`` one whose copy had already committed.
    """

    batch_id: str
    changes: int
    counts: dict[tuple[str, str, str], int]
    first_captured_at: datetime | None
    last_captured_at: datetime | None
    resumed: bool = False
    copied_before: bool = False


@dataclass(frozen=True)
class TransferResult:
    """What one transfer moved, and what is still waiting in PostgreSQL afterwards."""

    batches: tuple[BatchReport, ...]
    pending: PendingChanges

    @property
    def changes(self) -> int:
        return sum(batch.changes for batch in self.batches)

    def counts(self) -> dict[tuple[str, str, str], int]:
        """Changes per ``(schema, table, operation)`` over all batches."""
        total: dict[tuple[str, str, str], int] = {}
        for batch in self.batches:
            for key, count in batch.counts.items():
                total[key] = total.get(key, 0) + count
        return total

    @property
    def first_captured_at(self) -> datetime | None:
        return min((b.first_captured_at for b in self.batches if b.first_captured_at), default=None)

    @property
    def last_captured_at(self) -> datetime | None:
        return max((b.last_captured_at for b in self.batches if b.last_captured_at), default=None)


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


def setup_capture(settings: CaptureSettings, *, snapshot_existing_rows: bool = True) -> SetupResult:
    """Install the capture in the source database, idempotently, in one transaction.

    Creates what is missing (audit schema, change table, trigger function) and adds triggers to every
    table of ``settings.schema`` matching ``settings.tables`` that has none yet; tables already captured
    are left alone. With ``snapshot_existing_rows`` the rows a newly captured table already holds are
    recorded as inserts in the same transaction, so its mirror starts complete. Every captured table
    needs a primary key; if one lacks it nothing is installed.
    """
    with _source_connection(settings) as pg, _failing_as("Installing the capture", settings):
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
    with _source_connection(settings) as pg, _failing_as("Removing the capture", settings):
        with pg.transaction():
            if _function_oid(pg, settings) is None:
                return TeardownResult(released_tables=(), discarded_changes=0)
            batches = _batch_tables(pg, settings)
            waiting = _count_rows(pg, settings, CHANGE_TABLE) + sum(
                _count_rows(pg, settings, table) for table in batches
            )
            if waiting and not discard_pending:
                raise CDCError(
                    f"{waiting} captured changes in {settings.audit_schema!r} of {settings.describe()} have not "
                    "been transferred: run a transfer first, or pass discard_pending=True to drop them. "
                    "Nothing was removed."
                )
            released = []
            for schema, table, trigger in _capture_triggers(pg, settings):
                pg.execute(
                    sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(trigger), sql.Identifier(schema, table))
                )
                released.append(f"{schema}.{table}")
            audit = settings.audit_schema
            pg.execute(sql.SQL("DROP FUNCTION {}()").format(sql.Identifier(audit, _FUNCTION)))
            for table in [CHANGE_TABLE, *batches]:
                pg.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(audit, table)))
            pg.execute(sql.SQL("DROP SEQUENCE {}").format(sql.Identifier(audit, _SEQUENCE)))
            with contextlib.suppress(psycopg.errors.DependentObjectsStillExist), pg.transaction():
                pg.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(audit)))
    return TeardownResult(released_tables=tuple(sorted(set(released))), discarded_changes=waiting)


def pending_changes(settings: CaptureSettings) -> PendingChanges:
    """How many changes wait in PostgreSQL, and how old the oldest is (by the server's clock)."""
    with _source_connection(settings) as pg, _failing_as("Reading the pending changes", settings):
        _require_capture(pg, settings)
        return _pending(pg, settings)


def transfer_batch(
    settings: CaptureSettings,
    connection: duckdb.DuckDBPyConnection,
    *,
    lake_alias: str = "lake",
    lock_timeout: str = "5s",
    policy: RetryPolicy | None = None,
    log: RetryLogger | None = None,
    checkpoint: Checkpoint | None = None,
) -> TransferResult:
    """Move the captured changes into the lake: leftover batches first, then one fresh mini-batch.

    ``connection`` has the lake attached as ``lake_alias`` (``connect_lake`` or
    ``DuckLakeResource.get_connection()``). ``lock_timeout`` bounds how long the swap waits for writers of
    the change table; a swap that cannot get its lock in time fails without changing anything, since
    waiting longer would stall every write to the captured tables. A DuckLake commit that conflicts with
    another writer is tried again under ``policy`` (the copy is safe to repeat), retries logged to ``log``.
    ``checkpoint(step, batch_id)`` is called at each :data:`TransferStep`; an exception it raises stops
    the transfer there, as a crash would. Only one transfer per audit schema runs at a time; a second one
    is refused.
    """
    checkpoint = checkpoint or _no_checkpoint
    with _source_connection(settings) as pg, _failing_as("Transferring captured changes", settings):
        _require_capture(pg, settings)
        _hold_lock(pg, settings, "transfer")
        batch_ids = [table.removeprefix(_BATCH_PREFIX) for table in _batch_tables(pg, settings)]
        resumed = set(batch_ids)
        if _has_changes(pg, settings):
            batch_id = _swap(pg, settings, lock_timeout)
            checkpoint("swapped", batch_id)
            batch_ids.append(batch_id)
        reports = []
        if batch_ids:
            _create_lake_tables(connection, lake_alias, settings.lake_schema, policy, log)
            with _attached_source(connection, settings) as source_alias:
                for batch_id in batch_ids:
                    copied_before = retry_on_conflict(
                        lambda batch_id=batch_id: _copy_batch(
                            connection, lake_alias, source_alias, settings, batch_id, checkpoint
                        ),
                        policy=policy,
                        log=log,
                        what=f"Copying CDC batch {batch_id}",
                        secrets=settings.secrets(),
                    )
                    checkpoint("copied", batch_id)
                    pg.execute(sql.SQL("DROP TABLE {}").format(_batch_identifier(settings, batch_id)))
                    checkpoint("dropped", batch_id)
                    reports.append(
                        _batch_report(connection, lake_alias, settings, batch_id, batch_id in resumed, copied_before)
                    )
        return TransferResult(batches=tuple(reports), pending=_pending(pg, settings))


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
    with _source_connection(settings) as pg, _failing_as("Applying changes to the mirrors", settings):
        _hold_lock(pg, settings, "mirror")
        _create_lake_tables(connection, lake_alias, settings.lake_schema, policy, log)
        pending = _unmirrored_batches(connection, lake_alias, settings.lake_schema)
        captured = {(schema, table) for schema, table, _ in _capture_triggers(pg, settings)}
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
                _commit_message(connection, lake_alias, f"CDC mirrors: {len(pending)} batches applied")
                connection.execute("COMMIT")
            except BaseException:
                _rollback(connection)
                raise
            return reports

        try:
            with _attached_source(connection, settings) as source_alias:
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


@contextlib.contextmanager
def _source_connection(settings: CaptureSettings) -> Iterator[psycopg.Connection]:
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
def _failing_as(what: str, settings: CaptureSettings) -> Iterator[None]:
    try:
        yield
    except (psycopg.Error, duckdb.Error) as error:
        raise CDCError(
            f"{what} failed (source {settings.describe()}, audit schema {settings.audit_schema!r}): "
            f"{redact(str(error), settings.secrets())}"
        ) from None


def _no_checkpoint(step: TransferStep, batch_id: str) -> None:
    """Transfers outside tests pass no checkpoint."""


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
        ).format(function=sql.Identifier(audit, _FUNCTION), body=sql.Literal(body.as_string(pg)))
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


def _function_oid(pg: psycopg.Connection, settings: CaptureSettings) -> int | None:
    row = pg.execute(
        "SELECT p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s AND p.proname = %s",
        [settings.audit_schema, _FUNCTION],
    ).fetchone()
    return row[0] if row else None


def _capture_triggers(pg: psycopg.Connection, settings: CaptureSettings) -> list[tuple[str, str, str]]:
    """(schema, table, trigger) of every trigger running this capture's function."""
    return pg.execute(
        "SELECT n.nspname, c.relname, t.tgname FROM pg_trigger t "
        "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE t.tgfoid = %s ORDER BY 1, 2, 3",
        [_function_oid(pg, settings)],
    ).fetchall()


def _captured_table_names(pg: psycopg.Connection, settings: CaptureSettings) -> set[str]:
    return {table for schema, table, _ in _capture_triggers(pg, settings) if schema == settings.schema}


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
                function=sql.Identifier(settings.audit_schema, _FUNCTION),
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


def _require_capture(pg: psycopg.Connection, settings: CaptureSettings) -> None:
    changes = sql.Identifier(settings.audit_schema, CHANGE_TABLE).as_string(pg)
    row = pg.execute("SELECT to_regclass(%s)", [changes]).fetchone()
    if row[0] is None:
        raise CDCError(
            f"No change table {settings.audit_schema}.{CHANGE_TABLE} in {settings.describe()}: "
            "install the capture first (setup_capture or the capture asset)."
        )


def _batch_tables(pg: psycopg.Connection, settings: CaptureSettings) -> list[str]:
    """Batch tables swapped out but not yet dropped, oldest first (their names sort by swap time)."""
    rows = pg.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'r' AND starts_with(c.relname, %s) ORDER BY c.relname",
        [settings.audit_schema, _BATCH_PREFIX],
    ).fetchall()
    return [name for (name,) in rows]


def _batch_identifier(settings: CaptureSettings, batch_id: str) -> sql.Identifier:
    return sql.Identifier(settings.audit_schema, _BATCH_PREFIX + batch_id)


def _count_rows(pg: psycopg.Connection, settings: CaptureSettings, table: str) -> int:
    return pg.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(settings.audit_schema, table))
    ).fetchone()[0]


def _has_changes(pg: psycopg.Connection, settings: CaptureSettings) -> bool:
    changes = sql.Identifier(settings.audit_schema, CHANGE_TABLE)
    return pg.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(changes)).fetchone()[0]


def _pending(pg: psycopg.Connection, settings: CaptureSettings) -> PendingChanges:
    batches = _batch_tables(pg, settings)
    parts = [
        sql.SQL("SELECT count(*) AS n, min(captured_at) AS oldest FROM {}").format(
            sql.Identifier(settings.audit_schema, table)
        )
        for table in [CHANGE_TABLE, *batches]
    ]
    count, oldest, lag = pg.execute(
        sql.SQL(
            "SELECT sum(n)::bigint, min(oldest), extract(epoch FROM clock_timestamp() - min(oldest))::float8 "
            "FROM ({}) AS parts"
        ).format(sql.SQL(" UNION ALL ").join(parts))
    ).fetchone()
    return PendingChanges(changes=count, leftover_batches=len(batches), oldest_captured_at=oldest, lag_seconds=lag)


def _hold_lock(pg: psycopg.Connection, settings: CaptureSettings, purpose: str) -> None:
    """Take a session lock (released when the connection closes, also by a crash) or refuse to run."""
    (acquired,) = pg.execute(
        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
        [f"ducklake_assets.cdc.{purpose}:{settings.audit_schema}"],
    ).fetchone()
    if not acquired:
        raise CDCError(
            f"Another CDC {purpose} for audit schema {settings.audit_schema!r} of {settings.describe()} is "
            "running: wait for it to finish (only one may run at a time)."
        )


def _swap(pg: psycopg.Connection, settings: CaptureSettings, lock_timeout: str) -> str:
    """Swap the change table for an empty one; the old one becomes ``batch_<id>``. One transaction."""
    audit = settings.audit_schema
    try:
        with pg.transaction():
            pg.execute("SELECT set_config('lock_timeout', %s, true)", [lock_timeout])
            (stamp,) = pg.execute(
                "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYYMMDD\"T\"HH24MISSUS')"
            ).fetchone()
            batch_id = f"{stamp}_{secrets.token_hex(4)}"
            pg.execute(
                sql.SQL("CREATE UNLOGGED TABLE {} (LIKE {} INCLUDING ALL)").format(
                    sql.Identifier(audit, _NEXT_CHANGE_TABLE), sql.Identifier(audit, CHANGE_TABLE)
                )
            )
            pg.execute(
                sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                    sql.Identifier(audit, CHANGE_TABLE), sql.Identifier(_BATCH_PREFIX + batch_id)
                )
            )
            pg.execute(
                sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                    sql.Identifier(audit, _NEXT_CHANGE_TABLE), sql.Identifier(CHANGE_TABLE)
                )
            )
    except psycopg.errors.LockNotAvailable:
        raise CDCError(
            f"Could not swap {audit}.{CHANGE_TABLE} in {settings.describe()} within lock_timeout {lock_timeout}: "
            "a long transaction is writing to a captured table. Nothing was changed; the next transfer retries."
        ) from None
    return batch_id


@contextlib.contextmanager
def _attached_source(connection: duckdb.DuckDBPyConnection, settings: CaptureSettings) -> Iterator[str]:
    """Attach the source read-only through DuckDB's postgres extension; the password travels as a secret."""
    load_extensions(connection, ["postgres_scanner"])
    options = "TYPE postgres, READ_ONLY"
    if settings.source.password is not None:
        connection.execute(
            f"CREATE OR REPLACE TEMPORARY SECRET {quote_identifier(_SOURCE_SECRET)} "
            f"(TYPE postgres, PASSWORD {quote_literal(settings.source.password)})"
        )
        options += f", SECRET {quote_identifier(_SOURCE_SECRET)}"
    connection.execute(
        f"ATTACH {quote_literal(settings.source.conninfo())} AS {quote_identifier(_SOURCE_ALIAS)} ({options})"
    )
    try:
        yield _SOURCE_ALIAS
    finally:
        connection.execute(f"DETACH {quote_identifier(_SOURCE_ALIAS)}")
        connection.execute(f"DROP SECRET IF EXISTS {quote_identifier(_SOURCE_SECRET)}")


def _create_lake_tables(
    connection: duckdb.DuckDBPyConnection, lake: str, schema: str, policy: RetryPolicy | None, log: RetryLogger | None
) -> None:
    retry_on_conflict(
        lambda: _create_lake_tables_once(connection, lake, schema), policy=policy, log=log, what="Creating CDC tables"
    )


def _create_lake_tables_once(connection: duckdb.DuckDBPyConnection, lake: str, schema: str) -> None:
    connection.execute(f"CREATE SCHEMA IF NOT EXISTS {qualified_name(lake, schema)}")
    connection.execute(
        f"CREATE TABLE IF NOT EXISTS {qualified_name(lake, schema, CHANGE_TABLE)} ("
        "batch_id VARCHAR, ingested_at TIMESTAMPTZ, change_id UUID, change_seq BIGINT, captured_at TIMESTAMPTZ, "
        "operation VARCHAR, table_schema VARCHAR, table_name VARCHAR, row_data JSON)"
    )
    connection.execute(
        f"CREATE TABLE IF NOT EXISTS {qualified_name(lake, schema, BATCHES_TABLE)} ("
        "batch_id VARCHAR, ingested_at TIMESTAMPTZ, changes BIGINT, "
        "first_captured_at TIMESTAMPTZ, last_captured_at TIMESTAMPTZ)"
    )
    connection.execute(
        f"CREATE TABLE IF NOT EXISTS {qualified_name(lake, schema, MIRRORED_BATCHES_TABLE)} ("
        "batch_id VARCHAR, mirrored_at TIMESTAMPTZ)"
    )


def _copy_batch(
    connection: duckdb.DuckDBPyConnection,
    lake: str,
    source_alias: str,
    settings: CaptureSettings,
    batch_id: str,
    checkpoint: Checkpoint,
) -> bool:
    """Copy one batch in one DuckLake transaction; return True when the lake already had it."""
    batches = qualified_name(lake, settings.lake_schema, BATCHES_TABLE)
    log = qualified_name(lake, settings.lake_schema, CHANGE_TABLE)
    batch_table = qualified_name(source_alias, settings.audit_schema, _BATCH_PREFIX + batch_id)
    connection.execute("BEGIN")
    try:
        (known,) = connection.execute(f"SELECT count(*) FROM {batches} WHERE batch_id = ?", [batch_id]).fetchone()
        if known:
            connection.execute("ROLLBACK")
            return True
        (copied,) = connection.execute(
            f"INSERT INTO {log} SELECT ?, now(), change_id, change_seq, captured_at, operation, table_schema, "
            f"table_name, row_data::JSON FROM {batch_table}",
            [batch_id],
        ).fetchone()
        connection.execute(
            f"INSERT INTO {batches} SELECT ?, now(), count(*), min(captured_at), max(captured_at) "
            f"FROM {log} WHERE batch_id = ?",
            [batch_id, batch_id],
        )
        _commit_message(connection, lake, f"CDC batch {batch_id}: {copied} changes")
        checkpoint("before_commit", batch_id)
        connection.execute("COMMIT")
    except BaseException:
        _rollback(connection)
        raise
    return False


def _rollback(connection: duckdb.DuckDBPyConnection) -> None:
    """Roll back, if the failure left a transaction open (a failed COMMIT has already rolled back)."""
    with contextlib.suppress(duckdb.TransactionException):
        connection.execute("ROLLBACK")


def _commit_message(connection: duckdb.DuckDBPyConnection, lake: str, message: str) -> None:
    connection.execute(f"CALL {quote_identifier(lake)}.set_commit_message(?, ?)", ["ducklake-assets cdc", message])


def _batch_report(
    connection: duckdb.DuckDBPyConnection,
    lake: str,
    settings: CaptureSettings,
    batch_id: str,
    resumed: bool,
    copied_before: bool,
) -> BatchReport:
    rows = connection.execute(
        f"SELECT table_schema, table_name, operation, count(*) FROM "
        f"{qualified_name(lake, settings.lake_schema, CHANGE_TABLE)} WHERE batch_id = ? GROUP BY ALL ORDER BY ALL",
        [batch_id],
    ).fetchall()
    changes, first, last = connection.execute(
        f"SELECT changes, first_captured_at, last_captured_at FROM "
        f"{qualified_name(lake, settings.lake_schema, BATCHES_TABLE)} WHERE batch_id = ?",
        [batch_id],
    ).fetchone()
    return BatchReport(
        batch_id=batch_id,
        changes=changes,
        counts={(schema, table, operation): count for schema, table, operation, count in rows},
        first_captured_at=first,
        last_captured_at=last,
        resumed=resumed,
        copied_before=copied_before,
    )


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
        (changes,) = connection.execute(
            f"INSERT INTO {_STAGE} SELECT operation, batch_id, change_seq, {', '.join(values)} FROM ("
            "SELECT operation, batch_id, change_seq, json_extract_string(row_data, ?::VARCHAR[]) AS v, "
            f"json_extract(row_data, ?::VARCHAR[]) AS j FROM {log} "
            f"WHERE {where} AND operation <> 'T'{after_truncate})",
            [paths, paths, schema, table, *after_parameters],
        ).fetchone()
        keys = [quote_identifier(name) for name in shape.key_columns]
        matches = " AND ".join(f"{mirror}.{key} = changed.{key}" for key in keys)
        (rows_deleted,) = connection.execute(
            f"DELETE FROM {mirror} USING (SELECT DISTINCT {', '.join(keys)} FROM {_STAGE}) AS changed WHERE {matches}"
        ).fetchone()
        (rows_written,) = connection.execute(
            f"INSERT INTO {mirror} SELECT * EXCLUDE ({_STAGED_OPERATION}, {_STAGED_BATCH}, {_STAGED_SEQUENCE}, "
            f"{_STAGED_RANK}) FROM (SELECT *, row_number() OVER (PARTITION BY {', '.join(keys)} "
            f"ORDER BY {_STAGED_BATCH} DESC, {_STAGED_SEQUENCE} DESC) AS {_STAGED_RANK} FROM {_STAGE}) "
            f"WHERE {_STAGED_RANK} = 1 AND {_STAGED_OPERATION} <> 'D'"
        ).fetchone()
    finally:
        connection.execute(f"DROP TABLE IF EXISTS {_STAGE}")
    (rows,) = connection.execute(f"SELECT count(*) FROM {mirror}").fetchone()
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
