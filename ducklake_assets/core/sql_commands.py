"""Running a list of SQL commands against a lake and describing what each one did.

Each command is SQL text (one or more statements) with values bound to its ``?`` or ``$name``
placeholders, never pasted into the text. Commands run in order; by default each statement commits on
its own and is retried when it conflicts with another writer, or, with ``in_transaction=True``, all
commands commit together and the whole list is retried. The first command that fails stops the list with
:class:`SQLCommandError` naming its index and (redacted) text. After the commands, :func:`catalog_info`
reports the lake's snapshots and tables.
"""

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from .errors import SQLCommandError, redact
from .lake import metadata_prefix
from .retry import RetryLogger, RetryPolicy, execute_with_retry, is_write_conflict, run_in_transaction
from .sql import qualified_name

Parameters = Sequence[Any] | Mapping[str, Any]

_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")
_SENSITIVE_STATEMENT = re.compile(r"\b(SECRET|PASSWORD|KEY_ID|TOKEN)\b", re.IGNORECASE)
_FETCH_CHUNK = 10_000


@dataclass(frozen=True)
class SQLCommand:
    """One command: SQL text and the values for its ``?`` (a list) or ``$name`` (a mapping) placeholders."""

    sql: str
    parameters: Parameters | None = None


@dataclass(frozen=True)
class CommandResult:
    """What one command did.

    ``row_count`` counts the rows a query returned; ``changed_rows`` is set for statements that report
    changed rows (INSERT, UPDATE, DELETE, CREATE TABLE AS, COPY). ``rows`` holds the first rows of a query.
    ``sql`` is the command's text with secrets and sensitive literals masked, safe to show.
    """

    index: int
    sql: str
    statement_type: str
    row_count: int
    changed_rows: int | None
    columns: tuple[str, ...]
    column_types: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    duration_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "sql": self.sql,
            "statement_type": self.statement_type,
            "row_count": self.row_count,
            "changed_rows": self.changed_rows,
            "columns": list(self.columns),
            "column_types": list(self.column_types),
            "rows": [dict(zip(self.columns, row, strict=True)) for row in self.rows],
            "duration_seconds": self.duration_seconds,
        }


@dataclass(frozen=True)
class SnapshotInfo:
    """One DuckLake snapshot as ``<lake>.snapshots()`` lists it."""

    snapshot_id: int
    snapshot_time: datetime
    schema_version: int
    changes: Mapping[str, list[str]]
    author: str | None
    commit_message: str | None


@dataclass(frozen=True)
class TableInfo:
    """A table of the lake with its current data files."""

    schema: str
    name: str
    file_count: int
    file_size_bytes: int


@dataclass(frozen=True)
class CatalogInfo:
    """The state of a lake after some work: how many snapshots, the latest one, and its tables."""

    catalog: str
    alias: str
    snapshot_count: int
    latest_snapshot: SnapshotInfo | None
    tables: tuple[TableInfo, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        latest = self.latest_snapshot
        return {
            "catalog": self.catalog,
            "alias": self.alias,
            "snapshot_count": self.snapshot_count,
            "latest_snapshot": None
            if latest is None
            else {
                "snapshot_id": latest.snapshot_id,
                "snapshot_time": latest.snapshot_time.isoformat(),
                "schema_version": latest.schema_version,
                "changes": dict(latest.changes),
                "author": latest.author,
                "commit_message": latest.commit_message,
            },
            "table_count": len(self.tables),
            "tables": [vars(table) for table in self.tables],
        }


def as_commands(commands: Sequence[str | SQLCommand]) -> list[SQLCommand]:
    """Accept plain strings and :class:`SQLCommand`; refuse an empty list or an empty command."""
    if isinstance(commands, str) or not commands:
        raise SQLCommandError("commands must be a non-empty list of SQL strings or SQLCommand objects")
    normalized = []
    for index, command in enumerate(commands):
        if isinstance(command, str):
            command = SQLCommand(command)
        if not isinstance(command, SQLCommand) or not isinstance(command.sql, str) or not command.sql.strip():
            raise SQLCommandError(f"SQL command {index} is empty or not SQL text: {command!r}")
        normalized.append(command)
    return normalized


def display_sql(sql: str, secrets: Sequence[str] = (), limit: int = 200) -> str:
    """``sql`` on one line, shortened, secrets scrubbed; string literals of secret-bearing statements masked."""
    text = redact(sql, list(secrets))
    if _SENSITIVE_STATEMENT.search(text):
        text = _STRING_LITERAL.sub("'***'", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_sql_commands(
    connection: duckdb.DuckDBPyConnection,
    commands: Sequence[str | SQLCommand],
    *,
    parameters: Mapping[str, Any] | None = None,
    max_rows: int = 10,
    in_transaction: bool = False,
    policy: RetryPolicy | None = None,
    log: RetryLogger | None = None,
    secrets: Sequence[str] = (),
) -> list[CommandResult]:
    """Run ``commands`` in order on ``connection`` and return one :class:`CommandResult` per command.

    ``parameters`` are named values shared by all commands: each statement gets the ``$name`` values it
    uses (a command's own mapping wins). ``max_rows`` caps the rows kept per query. A failing command
    raises :class:`SQLCommandError` naming it; commands before it stay committed unless
    ``in_transaction`` is set, in which case nothing is committed.
    """
    planned = as_commands(commands)
    shared = dict(parameters or {})
    if not in_transaction:
        results = []
        for index, command in enumerate(planned):
            results.append(
                _run_command(connection, index, command, shared, max_rows, policy, log, secrets, committed=index)
            )
        return results

    def run_all(transaction: duckdb.DuckDBPyConnection) -> list[CommandResult]:
        return [
            _run_command(transaction, index, command, shared, max_rows, None, log, secrets, committed=None)
            for index, command in enumerate(planned)
        ]

    try:
        return run_in_transaction(
            connection,
            run_all,
            policy=policy,
            log=log,
            what=f"Transaction of {len(planned)} SQL commands",
            secrets=secrets,
        )
    except duckdb.Error as error:
        raise SQLCommandError(
            f"Committing the {len(planned)} SQL commands failed: {_reason(error, secrets)}. Nothing was committed."
        ) from None


def _run_command(
    connection: duckdb.DuckDBPyConnection,
    index: int,
    command: SQLCommand,
    shared: Mapping[str, Any],
    max_rows: int,
    policy: RetryPolicy | None,
    log: RetryLogger | None,
    secrets: Sequence[str],
    *,
    committed: int | None,
) -> CommandResult:
    """Run one command; ``committed`` is how many earlier commands are already committed (None: none are)."""
    shown = display_sql(command.sql, secrets)

    def fail(reason: str) -> SQLCommandError:
        if not committed:
            outcome = "Nothing was committed."
        elif committed == 1:
            outcome = "Command 0 was committed before it."
        else:
            outcome = f"Commands 0 to {committed - 1} were committed before it."
        return SQLCommandError(f"SQL command {index} failed: {reason}. Command {index}: {shown}. {outcome}")

    try:
        statements = duckdb.extract_statements(command.sql)
    except duckdb.Error as error:
        raise fail(_reason(error, secrets)) from None
    if not statements:
        raise fail("it holds no SQL statement")
    if command.parameters is not None and len(statements) > 1 and not isinstance(command.parameters, Mapping):
        raise fail("a command with ? parameters must hold exactly one statement")
    started = time.monotonic()
    for statement in statements:
        values, missing = _bind_values(statement, command.parameters, shared)
        if missing:
            raise fail(f"no value given for parameter(s) {', '.join('$' + name for name in missing)}")
        try:
            if committed is None:
                cursor = connection.execute(statement, values)
            else:
                cursor = execute_with_retry(
                    connection,
                    statement,
                    values,
                    policy=policy,
                    log=log,
                    what=f"SQL command {index} ({shown})",
                    secrets=secrets,
                )
            described = _describe_result(cursor, statement, max_rows)
        except duckdb.Error as error:
            if committed is None and is_write_conflict(error):
                raise
            raise fail(_reason(error, secrets)) from None
    statement_type, row_count, changed_rows, columns, column_types, rows = described
    return CommandResult(
        index=index,
        sql=shown,
        statement_type=statement_type,
        row_count=row_count,
        changed_rows=changed_rows,
        columns=columns,
        column_types=column_types,
        rows=rows,
        duration_seconds=time.monotonic() - started,
    )


def _bind_values(
    statement: duckdb.Statement, own: Parameters | None, shared: Mapping[str, Any]
) -> tuple[Parameters | None, list[str]]:
    """The values for one statement, and the names of ``$name`` placeholders nobody gave a value for."""
    if own is not None and not isinstance(own, Mapping):
        return list(own), []
    names = {name for name in statement.named_parameters if not name.isdigit()}
    if not names:
        return None, []
    available = {**shared, **(own or {})}
    missing = sorted(names - available.keys())
    return {name: available[name] for name in names if name in available}, missing


def _describe_result(
    cursor: duckdb.DuckDBPyConnection, statement: duckdb.Statement, max_rows: int
) -> tuple[str, int, int | None, tuple[str, ...], tuple[str, ...], tuple[tuple[Any, ...], ...]]:
    description = cursor.description or []
    columns = tuple(column[0] for column in description)
    column_types = tuple(str(column[1]) for column in description)
    statement_type = statement.type.name
    if columns == ("Count",) and duckdb.ExpectedResultType.CHANGED_ROWS in statement.expected_result_type:
        row = cursor.fetchone()
        return statement_type, 0, int(row[0]) if row else 0, (), (), ()
    first = tuple(cursor.fetchmany(max(max_rows, 1)))
    if columns == ("Success",) and not first:
        return statement_type, 0, None, (), (), ()
    first = first[:max_rows]
    row_count = len(first)
    while chunk := cursor.fetchmany(_FETCH_CHUNK):
        row_count += len(chunk)
    return statement_type, row_count, None, columns, column_types, first


def _reason(error: BaseException, secrets: Sequence[str]) -> str:
    lines = [line.strip() for line in redact(str(error), list(secrets)).splitlines() if line.strip()]
    return " ".join(lines[:3]).rstrip(".")


def catalog_info(
    connection: duckdb.DuckDBPyConnection, alias: str, catalog: str, metadata_schema: str | None = None
) -> CatalogInfo:
    """Snapshot count, latest snapshot and tables of the lake attached as ``alias``.

    ``catalog`` is the catalog's display name (already redacted, e.g. ``LakeSettings.describe()``);
    ``metadata_schema`` the schema of the catalog tables when the lake was attached with one.
    """
    [(count,)] = connection.execute("SELECT count(*) FROM ducklake_snapshots(?)", [alias]).fetchall()
    latest_row = connection.execute(
        "SELECT snapshot_id, snapshot_time, schema_version, changes, author, commit_message "
        "FROM ducklake_snapshots(?) ORDER BY snapshot_id DESC LIMIT 1",
        [alias],
    ).fetchone()
    latest = None
    if latest_row is not None:
        snapshot_id, snapshot_time, schema_version, changes, author, commit_message = latest_row
        latest = SnapshotInfo(snapshot_id, snapshot_time, schema_version, dict(changes or {}), author, commit_message)
    metadata = metadata_prefix(alias, metadata_schema)
    tables = connection.execute(
        "SELECT s.schema_name, i.table_name, i.file_count, i.file_size_bytes "
        f"FROM ducklake_table_info(?) AS i JOIN {metadata}.ducklake_schema AS s "
        "ON s.schema_id = i.schema_id AND s.end_snapshot IS NULL ORDER BY 1, 2",
        [alias],
    ).fetchall()
    return CatalogInfo(
        catalog=catalog,
        alias=alias,
        snapshot_count=count,
        latest_snapshot=latest,
        tables=tuple(TableInfo(*row) for row in tables),
    )


def table_summary(
    connection: duckdb.DuckDBPyConnection, alias: str, schema: str, table: str
) -> tuple[int, list[tuple[str, str]]]:
    """Row count and ``(column, type)`` pairs of one lake table."""
    columns = connection.execute(
        "SELECT column_name, data_type FROM duckdb_columns() "
        "WHERE database_name = ? AND schema_name = ? AND table_name = ? ORDER BY column_index",
        [alias, schema, table],
    ).fetchall()
    if not columns:
        raise SQLCommandError(
            f"Table {alias}.{schema}.{table} does not exist after the SQL commands: create it in one of the "
            "commands or fix the table name given to the asset"
        )
    [(row_count,)] = connection.execute(f"SELECT count(*) FROM {qualified_name(alias, schema, table)}").fetchall()
    return row_count, columns
