"""Running DuckLake writes again when they lose a race with another writer.

A PostgreSQL catalog lets many processes write one lake. When two commit at the same moment DuckLake
retries its catalog write by itself (setting ``ducklake_max_retry_count``, 10 by default); what it cannot
settle surfaces as an error. Measured with DuckLake 1.5 and several processes writing one lake:

* ``Transaction conflict - attempting to create table "t" ... has been created by another transaction``,
  ``... attempting to alter table ... but another transaction has altered it`` and
  ``... attempting to insert into table ... but another transaction has deleted from it`` (an UPDATE racing
  another UPDATE or DELETE): logical conflicts, which DuckLake never retries;
* ``Exceeded the maximum retry count of 10 set by the ducklake_max_retry_count setting`` over
  ``duplicate key value violates unique constraint "ducklake_snapshot_pkey"``: DuckLake's own retries ran out;
* ``Failed to initialize DuckLake ... duplicate key value violates unique constraint`` when several
  processes attach a new, empty PostgreSQL catalog at once and each tries to create its tables;
* ``Could not set lock on file ... Conflicting lock is held``: a DuckDB-file catalog admits one process,
  so a second one fails when it attaches.

A failed commit leaves nothing behind (the catalog write is one PostgreSQL transaction), so the whole
transaction can run again. :func:`retry_on_conflict` does that after an exponential backoff with jitter, a
bounded number of times, and logs each retry; any other error is raised at once.
"""

import contextlib
import logging
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import duckdb

from .errors import ConfigurationError, WriteConflictError, redact

T = TypeVar("T")

_CONFLICT = re.compile(
    r"Transaction conflict"
    r"|Exceeded the maximum retry count"
    r"|Failed to initialize DuckLake.*(duplicate key value|already exists)"
    r"|Conflicting lock is held"
    r"|could not serialize access"
    r"|deadlock detected",
    re.IGNORECASE | re.DOTALL,
)

logger = logging.getLogger(__name__)


class RetryLogger(Protocol):
    """Anything with a ``warning`` method: a ``logging.Logger``, Dagster's ``context.log``."""

    def warning(self, msg: str, /) -> Any: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a conflicting write is tried again.

    Attempt ``n`` (from 1) that conflicts waits a random time between half and all of
    ``min(max_delay_seconds, base_delay_seconds * 2 ** (n - 1))`` before attempt ``n + 1``; after
    ``max_attempts`` attempts the conflict is raised as :class:`WriteConflictError`.
    ``max_attempts=1`` turns retrying off.
    """

    max_attempts: int = 10
    base_delay_seconds: float = 0.05
    max_delay_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(f"retry max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay_seconds < 0 or self.max_delay_seconds < 0:
            raise ConfigurationError("retry delays must not be negative")

    def backoff_seconds(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based), jittered."""
        ceiling = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


def is_write_conflict(error: BaseException) -> bool:
    """Whether ``error`` is a lost race with another writer that is worth trying again.

    A :class:`WriteConflictError` is not: its retries are already spent.
    """
    return not isinstance(error, WriteConflictError) and bool(_CONFLICT.search(str(error)))


def retry_on_conflict(
    action: Callable[[], T],
    *,
    policy: RetryPolicy | None = None,
    log: RetryLogger | None = None,
    what: str = "DuckLake write",
    secrets: Sequence[str] = (),
) -> T:
    """Call ``action`` until it does not conflict with another writer, at most ``policy.max_attempts`` times.

    ``action`` must be safe to repeat after a conflict, which a DuckLake transaction is (a conflicting
    commit is rolled back whole). ``what`` names the write in log lines and errors; ``secrets`` are
    scrubbed from both.
    """
    policy = policy or RetryPolicy()
    log = log or logger
    started = time.monotonic()
    attempt = 1
    while True:
        try:
            return action()
        except Exception as error:
            if not is_write_conflict(error):
                raise
            reason = _conflict_reason(redact(str(error), list(secrets)))
            if attempt >= policy.max_attempts:
                raise WriteConflictError(
                    f"{what} still conflicted with other writers after {attempt} attempts "
                    f"({time.monotonic() - started:.1f} s): {reason}. Raise the retry attempts or delays, "
                    "or cap concurrent writers with a Dagster concurrency pool."
                ) from None
        delay = policy.backoff_seconds(attempt)
        log.warning(
            f"{what} conflicted with another writer (attempt {attempt} of {policy.max_attempts}); "
            f"retrying in {delay:.2f} s: {reason}"
        )
        time.sleep(delay)
        attempt += 1


def run_in_transaction(
    connection: duckdb.DuckDBPyConnection,
    work: Callable[[duckdb.DuckDBPyConnection], T],
    *,
    policy: RetryPolicy | None = None,
    log: RetryLogger | None = None,
    what: str = "DuckLake transaction",
    secrets: Sequence[str] = (),
) -> T:
    """Run ``work(connection)`` between ``BEGIN`` and ``COMMIT``, all again when the commit conflicts.

    ``work`` is called once per attempt, so it must do its reads inside the transaction (they then see the
    snapshot the retry starts from) and keep side effects outside the lake to a minimum.
    """

    def attempt() -> T:
        connection.execute("BEGIN TRANSACTION")
        try:
            result = work(connection)
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return result

    return retry_on_conflict(attempt, policy=policy, log=log, what=what, secrets=secrets)


def execute_with_retry(
    connection: duckdb.DuckDBPyConnection,
    sql: str | duckdb.Statement,
    parameters: Sequence[Any] | Mapping[str, Any] | None = None,
    *,
    policy: RetryPolicy | None = None,
    log: RetryLogger | None = None,
    what: str = "SQL statement",
    secrets: Sequence[str] = (),
) -> duckdb.DuckDBPyConnection:
    """Execute one statement in its own (auto-committed) transaction, again on a conflict.

    Returns the connection with the statement's result pending, as ``connection.execute`` does.
    """
    return retry_on_conflict(
        lambda: connection.execute(sql, parameters), policy=policy, log=log, what=what, secrets=secrets
    )


def _conflict_reason(message: str) -> str:
    """The part of a long DuckDB error that names the conflict (the rest repeats DuckLake's catalog SQL)."""
    match = _CONFLICT.search(message)
    start = match.start() if match else 0
    excerpt = " ".join(message[max(0, start - 200) : start + 250].split())
    return ("..." if start > 200 else "") + excerpt + ("..." if start + 250 < len(message) else "")
