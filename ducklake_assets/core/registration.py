"""Registering source Parquet files into a DuckLake by reference, each file once, one snapshot per call.

:func:`register_files` does in one DuckLake transaction what the frozen-lake tooling does one file at a
time: it creates missing tables from their first file's schema, adds new columns when asked to, and
hands each table's new files to ``ducklake_add_data_files`` in a few calls. Files already in the
catalog (in any snapshot, or scheduled for deletion) are skipped by comparing normalised paths with
the catalog's ``ducklake_data_file`` rows, which reads no Parquet at all.

Two DuckLake behaviours shape the code:

* A list passed to ``ducklake_add_data_files`` costs one metadata query per entry, while a glob costs one
  parallel pass. Files that share a folder and a name prefix are therefore passed as one glob, after
  DuckDB's ``glob()`` confirmed that the glob names exactly those files.
* DuckLake answers ``count(col)`` and ``col IS NULL`` from table-level statistics. A file that lacks a
  column is read as NULLs there, but when the statistics already claim the column holds no NULLs (or the
  table gets its statistics in this very transaction) those answers come out wrong. Such files are
  refused; they are accepted where the statistics cannot lie (see :func:`_unsafe_missing_columns`).
"""

import contextlib
import json
import os
import posixpath
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import duckdb

from .catalog import DuckDBCatalog
from .claims import claimed
from .errors import BadSourceFileError, ConfigurationError, RegistrationError, SchemaDriftError, redact
from .extensions import load_extension
from .files import lake_files, restored_from, scheduled_files
from .lake import LakeSettings, metadata_database
from .locations import is_remote, normalize_uri
from .retry import RetryLogger, RetryPolicy, is_write_conflict, retry_on_conflict
from .sources import SourceFile
from .sql import STRING_LIST, qualified_name, quote_identifier, quote_literal, string_list

SchemaDrift = Literal["fail", "ignore_extra_columns", "evolve"]
BadFiles = Literal["fail", "skip"]
Progress = Callable[[int, int], None]

SCHEMA_DRIFT_POLICIES: tuple[str, ...] = ("fail", "ignore_extra_columns", "evolve")
BAD_FILE_POLICIES: tuple[str, ...] = ("fail", "skip")

_GLOB_CHARACTERS = ("*", "?", "[")
_GLOB_REASON = (
    "its path contains *, ? or [, which DuckDB expands as a glob (it could read other files); rename the file"
)
_FILES_PER_CALL = 500
_SHOWN_PROBLEMS = 5
_PLAIN_TYPE = re.compile(r"^[A-Za-z0-9_ ,()\[\]]+$")


@dataclass(frozen=True)
class SkippedFile:
    """A source file left out under ``bad_files='skip'``, with the reason."""

    uri: str
    reason: str


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


@dataclass(frozen=True)
class RegistrationResult:
    """What one :func:`register_files` call did, read back from the catalog after the commit.

    ``snapshot_id`` is the snapshot the call created, or the lake's current one when there was nothing
    to add (``created_snapshot`` tells which).
    """

    snapshot_id: int
    created_snapshot: bool
    files_added: tuple[str, ...]
    already_registered: tuple[str, ...]
    tables_created: tuple[str, ...]
    columns_added: tuple[str, ...]
    skipped: tuple[SkippedFile, ...]
    tables: tuple[TableSummary, ...]

    @property
    def row_count(self) -> int:
        return sum(table.row_count for table in self.tables)


@dataclass
class _TablePlan:
    schema: str
    name: str
    exists: bool
    files: list[str]
    entries: list[tuple[str, int]]
    columns: list[str]
    new_columns: list[tuple[str, str]] = field(default_factory=list)
    ignore_extra_columns: bool = False
    allow_missing: bool = False

    @property
    def display_name(self) -> str:
        return self.name if self.schema == "main" else f"{self.schema}.{self.name}"


def register_files(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    files: Iterable[SourceFile],
    *,
    schema_drift: SchemaDrift = "fail",
    bad_files: BadFiles = "fail",
    author: str | None = None,
    message: str | None = None,
    extra_info: dict[str, str] | None = None,
    progress: Progress | None = None,
    retry: RetryPolicy | None = None,
    log: RetryLogger | None = None,
    claims: Sequence[str] = (),
) -> RegistrationResult:
    """Register every file of ``files`` that the catalog does not know yet, in one snapshot.

    ``connection`` has the lake of ``settings`` attached (see :func:`~.lake.connect_lake`). ``author`` and
    ``message`` become the snapshot's commit author and message, ``extra_info`` its extra info (JSON).
    ``schema_drift`` decides what a file whose columns differ from its table does: ``fail`` (nothing is
    registered), ``ignore_extra_columns``, or ``evolve`` (new columns are added to the table; files
    lacking a column are accepted where DuckLake still answers correctly). ``bad_files`` decides whether
    an unreadable file fails the call or is skipped and listed in the result. ``progress(done, total)``
    is called as files are registered. On any error nothing is registered.

    With a catalog several processes write (PostgreSQL, SQLite), two registrations racing for the same
    table conflict and the loser starts over (``retry``, warnings to ``log``), so it skips what the
    winner registered instead of adding it twice. ``claims`` (e.g. the partition folders the files come
    from) narrows that on a PostgreSQL catalog: only registrations sharing a claim wait for each other
    (:mod:`.claims`), so partition runs add to one table side by side.
    """
    check_policies(schema_drift, bad_files)
    unique: dict[str, SourceFile] = {}
    for source_file in files:
        unique.setdefault(normalize_uri(source_file.uri), source_file)

    def attempt() -> RegistrationResult:
        with claimed(settings, claims) as held:
            commit = (author, message, extra_info, progress, not held)
            return _register_new(connection, settings, unique, schema_drift, bad_files, commit)

    return retry_on_conflict(
        attempt,
        policy=retry,
        log=log,
        what=f"Registering source files into {settings.describe()}",
        secrets=settings.secrets(),
    )


def _register_new(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    unique: dict[str, SourceFile],
    schema_drift: SchemaDrift,
    bad_files: BadFiles,
    commit: "_Commit",
) -> RegistrationResult:
    """One attempt: hand the new files to DuckLake, reading their footers only when it refuses them.

    DuckLake itself checks every file against its table (columns, types, readability) while adding it,
    so the common case, files that fit, reads each footer once, as the raw ``CALL`` would. When DuckLake
    refuses a file, the transaction is rolled back and the footers are read apart (outside any
    transaction, since a failing read would abort it) to name every bad file, apply the schema drift
    policy and add new columns. Inside the transaction, the registered paths are read again after its
    snapshot is fixed, so a file another writer registered meanwhile is skipped, and a writer committing
    later makes this commit conflict.
    """
    registered = registered_paths(connection, settings, unique)
    problems = {uri: _GLOB_REASON for uri in unique if uri not in registered and _has_glob_characters(uri)}
    candidates = sorted(uri for uri in unique if uri not in registered and uri not in problems)
    if any(is_remote(uri) for uri in candidates):
        load_extension(connection, "httpfs")
    groups = _group_by_table(unique, candidates)
    entries = _globs_or_paths(connection, groups)
    if not candidates:
        if problems and bad_files == "fail":
            raise BadSourceFileError(_bad_files_message(problems, settings))
        skipped = tuple(SkippedFile(uri, reason) for uri, reason in sorted(problems.items()))
        return _nothing_added(connection, settings, unique, registered, skipped)
    if not problems or bad_files == "skip":
        skipped = tuple(SkippedFile(uri, reason) for uri, reason in sorted(problems.items()))
        with contextlib.suppress(_Refused):
            return _transaction(
                connection,
                settings,
                unique,
                candidates,
                groups,
                entries,
                None,
                schema_drift,
                skipped,
                commit,
            )
    file_columns, unreadable = _read_columns(connection, candidates, [entry for e in entries.values() for entry in e])
    problems.update(unreadable)
    if problems and bad_files == "fail":
        raise BadSourceFileError(_bad_files_message(problems, settings))
    skipped = tuple(SkippedFile(uri, reason) for uri, reason in sorted(problems.items()))
    readable = [uri for uri in candidates if uri not in unreadable]
    if not readable:
        return _nothing_added(connection, settings, unique, registered, skipped)
    if readable != candidates:
        groups = _group_by_table(unique, readable)
        entries = _globs_or_paths(connection, groups)
    return _transaction(
        connection,
        settings,
        unique,
        readable,
        groups,
        entries,
        file_columns,
        schema_drift,
        skipped,
        commit,
    )


_Commit = tuple[str | None, str | None, "dict[str, str] | None", "Progress | None", bool]
"""Author, message, extra info, progress callback, and whether to claim the tables (no claims held)."""


class _Refused(Exception):
    """DuckLake refused a file on the first, footer-free attempt; the careful path names why."""


def _transaction(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    unique: dict[str, SourceFile],
    readable: list[str],
    groups: dict[tuple[str, str], list[str]],
    entries: dict[tuple[str, str], list[tuple[str, int]]],
    file_columns: dict[str, list[str]] | None,
    schema_drift: SchemaDrift,
    skipped: tuple[SkippedFile, ...],
    commit: "_Commit",
) -> RegistrationResult:
    """Add ``readable`` in one transaction. Without ``file_columns`` (footers not read) nothing is checked
    beforehand, and a file DuckLake refuses raises :class:`_Refused` after the rollback."""
    author, message, extra_info, progress, claim_tables = commit
    connection.execute("BEGIN TRANSACTION")
    try:
        connection.execute(f"FROM {quote_identifier(settings.alias)}.current_snapshot()").fetchall()
        registered = registered_paths(connection, settings, unique)
        to_add = [uri for uri in readable if uri not in registered]
        if to_add != readable:
            groups = _group_by_table(unique, to_add)
            entries = _globs_or_paths(connection, groups)
        if not groups:
            connection.execute("ROLLBACK")
            return _nothing_added(connection, settings, unique, registered, skipped)
        if file_columns is None:
            plans = _trusting_plans(connection, settings, unique, groups, entries, schema_drift)
        else:
            plans = _plan_tables(connection, settings, unique, groups, entries, file_columns, schema_drift)
        info = json.dumps({**(extra_info or {}), "registration": uuid.uuid4().hex}, sort_keys=True)
        _write_and_commit(
            connection, settings, plans, author, message, info, progress, file_columns is None, claim_tables
        )
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            connection.execute("ROLLBACK")
        raise

    snapshot_id = _snapshot_with_info(connection, settings, info)
    added_by_table = {(plan.schema.lower(), plan.name.lower()): len(plan.files) for plan in plans}
    return RegistrationResult(
        snapshot_id=snapshot_id,
        created_snapshot=True,
        files_added=tuple(sorted(_catalog_paths(connection, settings, begin_snapshot=snapshot_id))),
        already_registered=tuple(sorted(uri for uri in unique if uri in registered)),
        tables_created=tuple(plan.display_name for plan in plans if not plan.exists),
        columns_added=tuple(f"{plan.display_name}.{name}" for plan in plans for name, _ in plan.new_columns),
        skipped=skipped,
        tables=table_summaries(connection, settings, added_by_table),
    )


def _nothing_added(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    unique: dict[str, SourceFile],
    registered: set[str],
    skipped: tuple[SkippedFile, ...],
) -> RegistrationResult:
    return RegistrationResult(
        snapshot_id=_current_snapshot(connection, settings),
        created_snapshot=False,
        files_added=(),
        already_registered=tuple(sorted(uri for uri in unique if uri in registered)),
        tables_created=(),
        columns_added=(),
        skipped=skipped,
        tables=table_summaries(connection, settings),
    )


def _has_glob_characters(uri: str) -> bool:
    return any(character in uri for character in _GLOB_CHARACTERS)


def check_policies(schema_drift: str, bad_files: str) -> None:
    """Refuse an unknown schema drift or bad-file policy, naming the choices."""
    if schema_drift not in SCHEMA_DRIFT_POLICIES:
        raise ConfigurationError(
            f"schema_drift must be one of {', '.join(SCHEMA_DRIFT_POLICIES)}, got {schema_drift!r}"
        )
    if bad_files not in BAD_FILE_POLICIES:
        raise ConfigurationError(f"bad_files must be one of {', '.join(BAD_FILE_POLICIES)}, got {bad_files!r}")


def _metadata_table(settings: LakeSettings, name: str) -> str:
    parts = [metadata_database(settings.alias)]
    if settings.metadata_schema:
        parts.append(settings.metadata_schema)
    return qualified_name(*parts, name)


def registered_paths(
    connection: duckdb.DuckDBPyConnection, settings: LakeSettings, among: Iterable[str] | None = None
) -> set[str]:
    """Normalised paths of every data file the catalog has ever held (any snapshot, or scheduled for
    deletion), so that a file registered once is never added again. With ``among`` (locations), only
    catalog files with the same file name as one of them are read and compared: a partition run over a
    lake of 100,000 files then normalises a few paths, not all of them; and those of them whose copies a
    restore moved into the data path count as registered too."""
    if among is None:
        return set(_catalog_paths(connection, settings))
    among = list(among)
    names = None
    [(held,)] = connection.execute(f"SELECT count(*) FROM {_metadata_table(settings, 'ducklake_data_file')}").fetchall()
    if held > 4 * len(among):  # else reading them all is cheaper than filtering
        names = sorted({posixpath.basename(uri) for uri in among})
    paths = set(_catalog_paths(connection, settings, names=names))
    return paths | restored_from(sorted(paths), [uri for uri in among if uri not in paths])


def tables_with_source_files(connection: duckdb.DuckDBPyConnection, settings: LakeSettings, schema: str) -> list[str]:
    """Tables of ``schema`` holding files registered by reference (outside the data path): the tables a
    registration made, as opposed to tables written through DuckDB into the data path."""
    table = _metadata_table(settings, "ducklake_table")
    schemas = _metadata_table(settings, "ducklake_schema")
    data_file = _metadata_table(settings, "ducklake_data_file")
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


def _catalog_paths(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    *,
    begin_snapshot: int | None = None,
    names: Sequence[str] | None = None,
) -> list[str]:
    """Normalised paths of the catalog's data files (those ``begin_snapshot`` added, else every one ever
    held, scheduled for deletion included), of the file ``names`` only when given."""
    files = lake_files(connection, settings, kind="data", begin_snapshot=begin_snapshot, file_names=names)
    paths = [file.path for file in files]
    if begin_snapshot is None:
        paths += [file.path for file in scheduled_files(connection, settings, file_names=names)]
    return [normalize_uri(path) for path in paths]


def _read_columns(
    connection: duckdb.DuckDBPyConnection, uris: Sequence[str], entries: Sequence[tuple[str, int]] | None = None
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Top-level column names of each file from its footer, in one pass when all files are readable.

    ``entries`` (globs and paths naming exactly ``uris``) make the first pass cheaper. A failing pass is
    split in halves until the unreadable files are found, so one bad file among thousands costs a few
    extra passes, not one pass per file.
    """
    if not uris:
        return {}, {}
    try:
        rows = connection.execute(
            f"SELECT file_name, name, num_children FROM parquet_schema({STRING_LIST}) ORDER BY file_name, column_id",
            [string_list([entry for entry, _ in entries] if entries else uris)],
        ).fetchall()
    except duckdb.Error as error:
        if len(uris) == 1:
            return {}, {uris[0]: _error_text(error)}
        middle = len(uris) // 2
        first_columns, first_bad = _read_columns(connection, uris[:middle])
        second_columns, second_bad = _read_columns(connection, uris[middle:])
        return first_columns | second_columns, first_bad | second_bad
    by_file: dict[str, list[tuple[str, int | None]]] = {}
    for file_name, name, children in rows:
        by_file.setdefault(file_name, []).append((name, children))
    by_file = {normalize_uri(file_name): schema for file_name, schema in by_file.items()}
    columns = {uri: _top_level_names(by_file[uri]) for uri in uris if uri in by_file}
    missing = {uri: "DuckDB found no Parquet schema in it" for uri in uris if uri not in by_file}
    return columns, missing


def _top_level_names(schema_rows: list[tuple[str, int | None]]) -> list[str]:
    """The root's direct children in a depth-first Parquet schema listing (root first)."""
    names: list[str] = []
    remaining = [schema_rows[0][1] or 0]
    for name, children in schema_rows[1:]:
        if len(remaining) == 1:
            names.append(name)
        remaining[-1] -= 1
        if children:
            remaining.append(children)
        while len(remaining) > 1 and remaining[-1] == 0:
            remaining.pop()
    return names


def _error_text(error: duckdb.Error) -> str:
    """DuckDB's message without the SQL excerpt it appends (``LINE 1: ...``)."""
    text = str(error).split("\nLINE ", 1)[0].strip()
    return text or type(error).__name__


def _bad_files_message(problems: dict[str, str], settings: LakeSettings) -> str:
    listed = "; ".join(f"{uri}: {reason}" for uri, reason in sorted(problems.items())[:_SHOWN_PROBLEMS])
    more = f" (and {len(problems) - _SHOWN_PROBLEMS} more)" if len(problems) > _SHOWN_PROBLEMS else ""
    return redact(
        f"{len(problems)} source file(s) cannot be registered, so nothing was registered: {listed}{more}. "
        "Fix or remove them, or set bad_files='skip' to register the others and list these as skipped.",
        settings.secrets(),
    )


def _group_by_table(files: dict[str, SourceFile], uris: list[str]) -> dict[tuple[str, str], list[str]]:
    """Sorted locations per table, keyed case-insensitively as DuckDB compares names."""
    groups: dict[tuple[str, str], list[str]] = {}
    for uri in sorted(uris):
        groups.setdefault((files[uri].schema.lower(), files[uri].table.lower()), []).append(uri)
    return dict(sorted(groups.items()))


def _plan_tables(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    files: dict[str, SourceFile],
    groups: dict[tuple[str, str], list[str]],
    entries: dict[tuple[str, str], list[tuple[str, int]]],
    file_columns: dict[str, list[str]],
    schema_drift: SchemaDrift,
) -> list[_TablePlan]:
    existing = _lake_tables(connection, settings)
    plans: dict[tuple[str, str], _TablePlan] = {}
    for key, uris in groups.items():
        found = existing.get(key)
        if found:
            plans[key] = _TablePlan(found[0], found[1], True, uris, entries[key], [name for name, _ in found[2]])
        else:
            first = files[uris[0]]
            plans[key] = _TablePlan(first.schema, first.table, False, uris, entries[key], list(file_columns[uris[0]]))

    drift: list[str] = []
    for plan in plans.values():
        drift.extend(_apply_drift_policy(plan, file_columns, schema_drift))
    if not drift and schema_drift == "evolve":
        drift.extend(_check_missing_columns(connection, settings, list(plans.values()), file_columns))
    if drift:
        listed = "; ".join(drift[:_SHOWN_PROBLEMS])
        more = f" (and {len(drift) - _SHOWN_PROBLEMS} more)" if len(drift) > _SHOWN_PROBLEMS else ""
        raise SchemaDriftError(
            redact(
                f"Source files do not match their tables (schema_drift={schema_drift!r}), so nothing was "
                f"registered: {listed}{more}.",
                settings.secrets(),
            )
        )
    for plan in plans.values():
        _type_new_columns(connection, plan, file_columns)
    return list(plans.values())


def _trusting_plans(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    files: dict[str, SourceFile],
    groups: dict[tuple[str, str], list[str]],
    entries: dict[tuple[str, str], list[tuple[str, int]]],
    schema_drift: SchemaDrift,
) -> list[_TablePlan]:
    """Plans for files assumed to fit their tables (DuckLake checks each one as it adds it)."""
    existing = _lake_tables(connection, settings)
    plans = []
    for key, uris in groups.items():
        found = existing.get(key)
        first = files[uris[0]]
        schema, name = (found[0], found[1]) if found else (first.schema, first.table)
        plan = _TablePlan(schema, name, found is not None, uris, entries[key], [])
        plan.ignore_extra_columns = schema_drift == "ignore_extra_columns"
        plans.append(plan)
    return plans


def _apply_drift_policy(plan: _TablePlan, file_columns: dict[str, list[str]], policy: SchemaDrift) -> list[str]:
    """Compare each file's columns with its table; return the problems the policy does not accept."""
    problems = []
    known = {column.lower() for column in plan.columns}
    for uri in plan.files:
        present = {column.lower() for column in file_columns[uri]}
        extra = [column for column in file_columns[uri] if column.lower() not in known]
        missing = [column for column in plan.columns if column.lower() not in present]
        if extra and policy == "fail":
            problems.append(
                f"{uri} has columns {_names(extra)} that table {plan.display_name} lacks "
                "(choose schema_drift='ignore_extra_columns' or 'evolve' to accept them)"
            )
        elif extra and policy == "ignore_extra_columns":
            plan.ignore_extra_columns = True
        elif extra:
            for column in extra:
                if column.lower() not in known:
                    known.add(column.lower())
                    plan.new_columns.append((column, ""))
        if missing and policy != "evolve":
            problems.append(
                f"{uri} lacks columns {_names(missing)} of table {plan.display_name} "
                "(schema_drift='evolve' accepts a missing column where DuckLake still answers correctly)"
            )
    return problems


def _check_missing_columns(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    plans: list[_TablePlan],
    file_columns: dict[str, list[str]],
) -> list[str]:
    """Under ``evolve``: accept files lacking columns only where DuckLake's statistics cannot lie."""
    problems = []
    statistics = None
    for plan in plans:
        all_columns = plan.columns + [name for name, _ in plan.new_columns]
        new_names = {name.lower() for name, _ in plan.new_columns}
        for uri in plan.files:
            present = {column.lower() for column in file_columns[uri]}
            missing = [column for column in all_columns if column.lower() not in present]
            if not missing:
                continue
            plan.allow_missing = True
            if statistics is None:
                statistics = _column_statistics(connection, settings)
            unsafe = _unsafe_missing_columns(plan, missing, new_names, statistics)
            if unsafe:
                problems.append(_missing_problem(uri, plan, unsafe))
    return problems


def _column_statistics(
    connection: duckdb.DuckDBPyConnection, settings: LakeSettings
) -> dict[tuple[str, str], tuple[bool, dict[str, bool | None]]]:
    """Per table: whether DuckLake keeps table statistics for it, and each column's ``contains_null``
    (absent when the column has no statistics row)."""
    table = _metadata_table(settings, "ducklake_table")
    schema = _metadata_table(settings, "ducklake_schema")
    column = _metadata_table(settings, "ducklake_column")
    table_stats = _metadata_table(settings, "ducklake_table_stats")
    column_stats = _metadata_table(settings, "ducklake_table_column_stats")
    rows = connection.execute(
        f"""
        SELECT s.schema_name, t.table_name, c.column_name, cs.column_id IS NOT NULL, cs.contains_null,
               EXISTS (SELECT 1 FROM {table_stats} ts WHERE ts.table_id = t.table_id)
        FROM {table} t
        JOIN {schema} s ON s.schema_id = t.schema_id AND s.end_snapshot IS NULL
        JOIN {column} c ON c.table_id = t.table_id AND c.end_snapshot IS NULL AND c.parent_column IS NULL
        LEFT JOIN {column_stats} cs ON cs.table_id = t.table_id AND cs.column_id = c.column_id
        WHERE t.end_snapshot IS NULL
        """
    ).fetchall()
    statistics: dict[tuple[str, str], tuple[bool, dict[str, bool | None]]] = {}
    for schema_name, table_name, column_name, has_row, contains_null, has_table_stats in rows:
        key = (schema_name.lower(), table_name.lower())
        entry = statistics.setdefault(key, (bool(has_table_stats), {}))
        if has_row:
            entry[1][column_name.lower()] = contains_null
    return statistics


def _unsafe_missing_columns(
    plan: _TablePlan,
    missing: list[str],
    new_names: set[str],
    statistics: dict[tuple[str, str], tuple[bool, dict[str, bool | None]]],
) -> list[str]:
    """The missing columns for which DuckLake would answer ``count(col)`` and ``col IS NULL`` wrong.

    DuckLake reads a missing column as NULL but answers those queries from table statistics. They stay
    right when the table already has statistics and the column either has none (it was added after
    them, as ``evolve`` does) or is already known to contain NULLs. A table created in this transaction
    gets its statistics from the files alone, which would claim "no NULLs".
    """
    has_table_stats, columns = statistics.get((plan.schema.lower(), plan.name.lower()), (False, {}))
    if not plan.exists or not has_table_stats:
        return missing
    unsafe = []
    for column in missing:
        lowered = column.lower()
        if lowered in new_names or lowered not in columns or columns[lowered] is True:
            continue
        unsafe.append(column)
    return unsafe


def _missing_problem(uri: str, plan: _TablePlan, unsafe: list[str]) -> str:
    if not plan.exists:
        return (
            f"{uri} lacks columns {_names(unsafe)} of table {plan.display_name}, which this registration would "
            "create: its statistics would claim they hold no NULLs, so DuckLake would answer count(column) and "
            "'column IS NULL' wrong. Register the files with the fewest columns first (narrow the pattern for "
            "one run), then the others"
        )
    return (
        f"{uri} lacks columns {_names(unsafe)} of table {plan.display_name}, whose statistics claim (or would "
        "claim) they hold no NULLs, so DuckLake would answer count(column) and 'column IS NULL' wrong. Rewrite "
        "the file with those columns (NULL is fine) or send it to another table"
    )


def _names(columns: list[str]) -> str:
    return ", ".join(quote_identifier(column) for column in columns)


def _type_new_columns(
    connection: duckdb.DuckDBPyConnection, plan: _TablePlan, file_columns: dict[str, list[str]]
) -> None:
    """Give each column ``evolve`` adds the type DuckDB reads from the first file that has it."""
    typed = []
    described: dict[str, dict[str, str]] = {}
    for name, _ in plan.new_columns:
        uri = next(uri for uri in plan.files if name.lower() in {c.lower() for c in file_columns[uri]})
        if uri not in described:
            rows = connection.execute(
                "DESCRIBE SELECT * FROM read_parquet(?, hive_partitioning => false)", [uri]
            ).fetchall()
            described[uri] = {row[0].lower(): row[1] for row in rows}
        column_type = described[uri][name.lower()]
        if not _PLAIN_TYPE.match(column_type):
            raise SchemaDriftError(
                f"Column {quote_identifier(name)} of {uri} has type {column_type!r}, whose nested field names "
                f"need quoting; add it to table {plan.display_name} by hand (ALTER TABLE ... ADD COLUMN) and "
                "register again"
            )
        typed.append((name, column_type))
    plan.new_columns = typed


def _write_and_commit(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    plans: list[_TablePlan],
    author: str | None,
    message: str | None,
    info: str,
    progress: Progress | None,
    trusting: bool = False,
    claim_tables: bool = True,
) -> None:
    """Create, alter and fill the planned tables, then commit. ``trusting``: a refused file raises
    :class:`_Refused` (the caller reads the footers and tries again) instead of failing the call."""
    alias = settings.alias
    total = sum(len(plan.files) for plan in plans)
    done = 0
    shared_catalog = claim_tables and not isinstance(settings.catalog, DuckDBCatalog)
    current = None
    if progress:
        progress(0, total)
    try:
        for schema in sorted({plan.schema for plan in plans if not plan.exists}):
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {qualified_name(alias, schema)}")
        for plan in plans:
            current = plan
            table = qualified_name(alias, plan.schema, plan.name)
            if not plan.exists:
                connection.execute(
                    f"CREATE TABLE {table} AS SELECT * FROM read_parquet(?, hive_partitioning => false) WITH NO DATA",
                    [plan.files[0]],
                )
            elif shared_catalog:
                _claim_table(connection, settings, plan, table)
            for name, column_type in plan.new_columns:
                connection.execute(f"ALTER TABLE {table} ADD COLUMN {quote_identifier(name)} {column_type}")
            for entries, count in _call_batches(plan):
                # Several entries go as one JSON string: a list parameter costs pandas import attempts.
                connection.execute(
                    "CALL ducklake_add_data_files(?, ?, "
                    + ("?" if len(entries) == 1 else STRING_LIST)
                    + ", schema => ?, ignore_extra_columns => ?, allow_missing => ?)",
                    [
                        alias,
                        plan.name,
                        entries[0] if len(entries) == 1 else string_list(entries),
                        plan.schema,
                        plan.ignore_extra_columns,
                        plan.allow_missing,
                    ],
                )
                done += count
                if progress:
                    progress(done, total)
        current = None
        connection.execute(
            f"CALL {quote_identifier(alias)}.set_commit_message(?, ?, extra_info => ?)",
            [author or "ducklake-assets", message or f"Registered {total} source files", info],
        )
        connection.execute("COMMIT")
    except duckdb.Error as error:
        if trusting and current is not None and not isinstance(error, duckdb.InterruptException):
            if not is_write_conflict(error):
                raise _Refused() from None
        reason = redact(_error_text(error), settings.secrets())
        if current is None:
            raise RegistrationError(f"Registering {total} files failed, nothing was registered: {reason}") from None
        error_class = SchemaDriftError if "map column" in reason else RegistrationError
        raise error_class(
            f"Registering {len(current.files)} files into table {current.display_name} failed, so nothing was "
            f"registered: {reason}"
        ) from None


def _claim_table(connection: duckdb.DuckDBPyConnection, settings: LakeSettings, plan: _TablePlan, table: str) -> None:
    """Set the table's comment to what it is, so a concurrent registration into it conflicts.

    DuckLake lets two transactions insert into one table side by side; both would register the same
    new file. An alteration (even to the same comment) makes the later commit fail as a conflict.
    """
    row = connection.execute(
        "SELECT comment FROM duckdb_tables() WHERE database_name = ? AND schema_name = ? AND table_name = ?",
        [settings.alias, plan.schema, plan.name],
    ).fetchone()
    if row is None:
        raise RegistrationError(
            f"Table {plan.display_name} was dropped while files were being registered into it, so nothing was "
            "registered; run the registration again"
        )
    (comment,) = row
    connection.execute(f"COMMENT ON TABLE {table} IS {'NULL' if comment is None else quote_literal(comment)}")


def _call_batches(plan: _TablePlan) -> list[tuple[list[str], int]]:
    """Globs and paths for ``ducklake_add_data_files``, in batches of about ``_FILES_PER_CALL`` files."""
    batches: list[tuple[list[str], int]] = []
    for entry, count in plan.entries:
        if not batches or batches[-1][1] + count > _FILES_PER_CALL:
            batches.append(([], 0))
        batch, total = batches[-1]
        batch.append(entry)
        batches[-1] = (batch, total + count)
    return batches


def _globs_or_paths(
    connection: duckdb.DuckDBPyConnection, groups: dict[tuple[str, str], list[str]]
) -> dict[tuple[str, str], list[tuple[str, int]]]:
    """Per table, the fewest globs that name exactly its new files (paths where no glob does).

    A table's files get one glob across the folders of a partitioned layout, else one per folder:
    ``<folder>/<common name prefix>*<common suffix>`` (with a dot in the prefix, so under file-name table
    naming any file it matches belongs to this table), or ``<common folder>/*/.../<prefix>*<suffix>``. A
    glob is used only if it matches exactly those files: every folder level is listed once by DuckDB's
    ``glob()`` for all tables together, and each table's glob compared with that listing here. A file
    created in those folders between this check and the call that also matches is registered with the
    batch (the result, read back from the catalog, lists it).
    """
    listings: dict[tuple[str, int], set[str]] = {}

    def fits(glob: _Glob | None, uris: list[str]) -> bool:
        if glob is None:
            return False
        scope = (glob.folder, glob.depth)
        if scope not in listings:
            pattern = glob.folder + "/*" * glob.depth + "/*"
            rows = connection.execute("SELECT file FROM glob(?)", [pattern]).fetchall()
            listings[scope] = {normalize_uri(row[0]) for row in rows}
        match = glob.matcher()
        return {path for path in listings[scope] if match(path)} == set(uris)

    entries: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for key, uris in groups.items():
        across = _table_glob(uris)
        if fits(across, uris):
            assert across is not None
            entries[key] = [(across.text, len(uris))]
            continue
        folders: dict[str, list[str]] = {}
        for uri in uris:
            folders.setdefault(posixpath.dirname(uri), []).append(uri)
        found: list[tuple[str, int]] = []
        for folder, in_folder in folders.items():
            glob = _folder_glob(folder, in_folder)
            if glob is not None and fits(glob, in_folder):
                found.append((glob.text, len(in_folder)))
            else:
                found.extend((uri, 1) for uri in in_folder)
        entries[key] = found
    return entries


@dataclass(frozen=True)
class _Glob:
    """``<folder>/`` + ``*/`` x ``depth`` + ``<prefix>*<suffix>``."""

    folder: str
    depth: int
    prefix: str
    suffix: str

    @property
    def text(self) -> str:
        return f"{self.folder}/{'*/' * self.depth}{self.prefix}*{self.suffix}"

    def matcher(self) -> Callable[[str], bool]:
        """DuckDB's reading of :attr:`text` (``*`` stays within one path segment), as a regex."""
        pattern = re.compile(
            re.escape(self.folder + "/")
            + "[^/]*/" * self.depth
            + re.escape(self.prefix)
            + "[^/]*"
            + re.escape(self.suffix)
        )
        return lambda path: pattern.fullmatch(path) is not None


def _table_glob(uris: list[str]) -> "_Glob | None":
    """One glob for files spread over folders at one depth below a common folder (a partitioned layout such
    as ``src/day=N/astronauts.K.parquet``): ``<common folder>/*/.../<common name prefix>*<common suffix>``."""
    if len(uris) < 2 or uris[0].startswith(("http://", "https://")):
        return None
    folders = {posixpath.dirname(uri) for uri in uris}
    if len(folders) < 2:
        return None
    parts = [folder.split("/") for folder in folders]
    common: list[str] = []
    for pieces in zip(*parts, strict=False):
        if len(set(pieces)) != 1:
            break
        common.append(pieces[0])
    root = "/".join(common)
    depths = {len(folder) - len(common) for folder in parts}
    if len(depths) != 1 or root in folders or len(common) < 2 or not common[-1]:
        return None
    names = [posixpath.basename(uri) for uri in uris]
    prefix = os.path.commonprefix(names)
    suffix = os.path.commonprefix([name[len(prefix) :][::-1] for name in names])[::-1]
    if "." not in prefix or not suffix:
        return None
    return _Glob(root, depths.pop(), prefix, suffix)


def _folder_glob(folder: str, uris: list[str]) -> "_Glob | None":
    if len(uris) < 2 or uris[0].startswith(("http://", "https://")):
        return None
    names = [uri[len(folder) + 1 :] for uri in uris]
    prefix = os.path.commonprefix(names)
    rests = [name[len(prefix) :] for name in names]
    suffix = os.path.commonprefix([rest[::-1] for rest in rests])[::-1]
    if "." not in prefix or not suffix:
        return None
    return _Glob(folder, 0, prefix, suffix)


def _current_snapshot(connection: duckdb.DuckDBPyConnection, settings: LakeSettings) -> int:
    [(snapshot_id,)] = connection.execute(
        "SELECT max(snapshot_id) FROM ducklake_snapshots(?)", [settings.alias]
    ).fetchall()
    return snapshot_id


def _snapshot_with_info(connection: duckdb.DuckDBPyConnection, settings: LakeSettings, info: str) -> int:
    # The metadata table, not ducklake_snapshots(), which works out every snapshot's changes first.
    changes = _metadata_table(settings, "ducklake_snapshot_changes")
    row = connection.execute(f"SELECT max(snapshot_id) FROM {changes} WHERE commit_extra_info = ?", [info]).fetchone()
    if not row or row[0] is None:
        raise RegistrationError("The registration committed but its snapshot is not in the catalog; run it again")
    return row[0]


def table_summaries(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    files_added: dict[tuple[str, str], int] | None = None,
) -> tuple[TableSummary, ...]:
    """Every table of the lake with its row count, data file count and columns."""
    columns = _lake_tables(connection, settings)
    if not columns:
        return ()
    table = _metadata_table(settings, "ducklake_table")
    schema = _metadata_table(settings, "ducklake_schema")
    data_file = _metadata_table(settings, "ducklake_data_file")
    file_counts = {
        (schema_name.lower(), table_name.lower()): count
        for schema_name, table_name, count in connection.execute(
            f"""
            SELECT s.schema_name, t.table_name, count(f.data_file_id)
            FROM {table} t JOIN {schema} s ON s.schema_id = t.schema_id AND s.end_snapshot IS NULL
            LEFT JOIN {data_file} f ON f.table_id = t.table_id AND f.end_snapshot IS NULL
            WHERE t.end_snapshot IS NULL GROUP BY ALL
            """
        ).fetchall()
    }
    keys = sorted(columns)
    union = " UNION ALL ".join(
        f"SELECT ? AS position, count(*) FROM {qualified_name(settings.alias, *columns[key][:2])}" for key in keys
    )
    counts = dict(connection.execute(union, list(range(len(keys)))).fetchall())
    return tuple(
        TableSummary(
            schema=columns[key][0],
            name=columns[key][1],
            row_count=counts[position],
            file_count=file_counts.get(key, 0),
            files_added=(files_added or {}).get(key, 0),
            columns=tuple(columns[key][2]),
        )
        for position, key in enumerate(keys)
    )


def _lake_tables(
    connection: duckdb.DuckDBPyConnection, settings: LakeSettings
) -> dict[tuple[str, str], tuple[str, str, list[tuple[str, str]]]]:
    rows = connection.execute(
        """
        SELECT c.schema_name, c.table_name, c.column_name, c.data_type
        FROM duckdb_columns() c JOIN duckdb_tables() t
          ON t.database_name = c.database_name AND t.schema_name = c.schema_name AND t.table_name = c.table_name
        WHERE c.database_name = ?
        ORDER BY c.schema_name, c.table_name, c.column_index
        """,
        [settings.alias],
    ).fetchall()
    tables: dict[tuple[str, str], tuple[str, str, list[tuple[str, str]]]] = {}
    for schema, table, column, column_type in rows:
        tables.setdefault((schema.lower(), table.lower()), (schema, table, []))[2].append((column, column_type))
    return tables
