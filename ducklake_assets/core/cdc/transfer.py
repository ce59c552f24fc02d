"""Moving captured changes into the lake in mini-batches, exactly once: swap, copy, drop (see
:mod:`ducklake_assets.core.cdc`), resuming batches an interrupted transfer left behind."""

import contextlib
import functools
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import duckdb
import psycopg
from psycopg import sql

from ..errors import CDCError
from ..retry import RetryLogger, RetryPolicy, retry_on_conflict
from ..sql import qualified_name, quote_identifier
from .settings import BATCHES_TABLE, CHANGE_TABLE, MIRRORED_BATCHES_TABLE, CaptureSettings
from .source import (
    BATCH_PREFIX,
    PendingChanges,
    attached_source,
    batch_identifier,
    batch_tables,
    failing_as,
    hold_lock,
    pending_in_source,
    require_capture,
    source_connection,
)

_NEXT_CHANGE_TABLE = "changes_next"

TransferStep = Literal["swapped", "before_commit", "copied", "dropped"]
"""Points of a transfer at which ``checkpoint`` is called: after the swap committed, inside the DuckLake
transaction just before its commit, after the copy committed, after the batch table was dropped."""
Checkpoint = Callable[[TransferStep, str], None]


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
    with source_connection(settings) as pg, failing_as("Transferring captured changes", settings):
        require_capture(pg, settings)
        hold_lock(pg, settings, "transfer")
        batch_ids = [table.removeprefix(BATCH_PREFIX) for table in batch_tables(pg, settings)]
        resumed = set(batch_ids)
        if _has_changes(pg, settings):
            batch_id = _swap(pg, settings, lock_timeout)
            checkpoint("swapped", batch_id)
            batch_ids.append(batch_id)
        reports = []
        if batch_ids:
            create_lake_tables(connection, lake_alias, settings.lake_schema, policy, log)
            with attached_source(connection, settings) as source_alias:
                for batch_id in batch_ids:
                    copied_before = retry_on_conflict(
                        functools.partial(
                            _copy_batch, connection, lake_alias, source_alias, settings, batch_id, checkpoint
                        ),
                        policy=policy,
                        log=log,
                        what=f"Copying CDC batch {batch_id}",
                        secrets=settings.secrets(),
                    )
                    checkpoint("copied", batch_id)
                    pg.execute(sql.SQL("DROP TABLE {}").format(batch_identifier(settings, batch_id)))
                    checkpoint("dropped", batch_id)
                    reports.append(
                        _batch_report(connection, lake_alias, settings, batch_id, batch_id in resumed, copied_before)
                    )
        return TransferResult(batches=tuple(reports), pending=pending_in_source(pg, settings))


def _no_checkpoint(step: TransferStep, batch_id: str) -> None:
    """Transfers outside tests pass no checkpoint."""


def _has_changes(pg: psycopg.Connection, settings: CaptureSettings) -> bool:
    changes = sql.Identifier(settings.audit_schema, CHANGE_TABLE)
    [(exists,)] = pg.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(changes)).fetchall()
    return exists


def _swap(pg: psycopg.Connection, settings: CaptureSettings, lock_timeout: str) -> str:
    """Swap the change table for an empty one; the old one becomes ``batch_<id>``. One transaction."""
    audit = settings.audit_schema
    try:
        with pg.transaction():
            pg.execute("SELECT set_config('lock_timeout', %s, true)", [lock_timeout])
            [(stamp,)] = pg.execute(
                "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYYMMDD\"T\"HH24MISSUS')"
            ).fetchall()
            batch_id = f"{stamp}_{secrets.token_hex(4)}"
            pg.execute(
                sql.SQL("CREATE UNLOGGED TABLE {} (LIKE {} INCLUDING ALL)").format(
                    sql.Identifier(audit, _NEXT_CHANGE_TABLE), sql.Identifier(audit, CHANGE_TABLE)
                )
            )
            pg.execute(
                sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                    sql.Identifier(audit, CHANGE_TABLE), sql.Identifier(BATCH_PREFIX + batch_id)
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


def create_lake_tables(
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
    batch_table = qualified_name(source_alias, settings.audit_schema, BATCH_PREFIX + batch_id)
    connection.execute("BEGIN")
    try:
        [(known,)] = connection.execute(f"SELECT count(*) FROM {batches} WHERE batch_id = ?", [batch_id]).fetchall()
        if known:
            connection.execute("ROLLBACK")
            return True
        [(copied,)] = connection.execute(
            f"INSERT INTO {log} SELECT ?, now(), change_id, change_seq, captured_at, operation, table_schema, "
            f"table_name, row_data::JSON FROM {batch_table}",
            [batch_id],
        ).fetchall()
        connection.execute(
            f"INSERT INTO {batches} SELECT ?, now(), count(*), min(captured_at), max(captured_at) "
            f"FROM {log} WHERE batch_id = ?",
            [batch_id, batch_id],
        )
        commit_message(connection, lake, f"CDC batch {batch_id}: {copied} changes")
        checkpoint("before_commit", batch_id)
        connection.execute("COMMIT")
    except BaseException:
        rollback(connection)
        raise
    return False


def rollback(connection: duckdb.DuckDBPyConnection) -> None:
    """Roll back, if the failure left a transaction open (a failed COMMIT has already rolled back)."""
    with contextlib.suppress(duckdb.TransactionException):
        connection.execute("ROLLBACK")


def commit_message(connection: duckdb.DuckDBPyConnection, lake: str, message: str) -> None:
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
    batches = qualified_name(lake, settings.lake_schema, BATCHES_TABLE)
    recorded = connection.execute(
        f"SELECT changes, first_captured_at, last_captured_at FROM {batches} WHERE batch_id = ?", [batch_id]
    ).fetchone()
    if recorded is None:
        raise CDCError(
            f"CDC batch {batch_id} is not recorded in {batches} after its copy: check that nothing else "
            "writes to the CDC tables of the lake"
        )
    changes, first, last = recorded
    return BatchReport(
        batch_id=batch_id,
        changes=changes,
        counts={(schema, table, operation): count for schema, table, operation, count in rows},
        first_captured_at=first,
        last_captured_at=last,
        resumed=resumed,
        copied_before=copied_before,
    )
