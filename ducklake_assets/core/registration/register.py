"""The registration itself (:func:`register_files`): one attempt per DuckLake transaction, footer-free first,
retried on a write conflict, and the result read back from the catalog."""

import contextlib
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import duckdb

from ..catalog import DuckDBCatalog
from ..claims import claimed
from ..errors import BadSourceFileError, RegistrationError, SchemaDriftError, redact
from ..extensions import load_extension
from ..lake import LakeSettings
from ..locations import is_remote, normalize_uri
from ..retry import RetryLogger, RetryPolicy, is_write_conflict, retry_on_conflict
from ..sources import SourceFile
from ..sql import STRING_LIST, qualified_name, quote_identifier, quote_literal, string_list
from ..storage import Listings
from .drift import (
    BadFiles,
    SchemaDrift,
    TablePlan,
    bad_files_message,
    check_policies,
    error_text,
    plan_tables,
    read_columns,
    trusting_plans,
)
from .globs import GLOB_REASON, Entries, Groups, globs_or_paths, group_by_table, has_glob_characters
from .inventory import (
    TableColumns,
    TableSummary,
    catalog_paths,
    current_snapshot,
    file_counts,
    lake_table_names,
    lake_tables,
    paths_added,
    registered_paths,
    row_counts,
    snapshot_with_info,
    snapshots_between,
    summarize,
    table_summaries,
)

Progress = Callable[[int, int], None]
_FILES_PER_CALL = 500


@dataclass(frozen=True)
class SkippedFile:
    """A source file left out, with the reason: under ``bad_files='skip'``, or deleted after the listing."""

    uri: str
    reason: str


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
    listings: Listings | None = None,
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

    ``listings``, filled by the S3 listing that found ``files`` (:meth:`.FileSource.list_files`), spares
    the first attempt listing the prefix again to check the globs that name the new files; an object
    stored after that listing may then be registered with the batch (it is in ``files_added``), and a
    file deleted since is listed in ``skipped``. A retry, and the careful pass after DuckLake refused a
    file, list afresh.
    """
    check_policies(schema_drift, bad_files)
    unique: dict[str, SourceFile] = {}
    for source_file in files:
        unique.setdefault(normalize_uri(source_file.uri), source_file)

    attempts = 0

    def entries_for(groups: Groups, trusting: bool) -> Entries:
        fresh = not trusting or attempts > 1  # the listing was made before the first trusting attempt only
        return globs_or_paths(
            connection,
            groups,
            None if fresh else listings,
            lambda globs: set(catalog_paths(connection, settings, path_globs=globs)),
        )

    def attempt() -> RegistrationResult:
        nonlocal attempts
        attempts += 1
        with claimed(settings, claims) as held:
            commit = (author, message, extra_info, progress, not held)
            return _register_new(connection, settings, unique, schema_drift, bad_files, commit, entries_for)

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
    entries_for: "Callable[[Groups, bool], Entries]",
) -> RegistrationResult:
    """One attempt: hand the new files to DuckLake, reading their footers only when it refuses them.

    DuckLake itself checks every file against its table (columns, types, readability) while adding it,
    so the common case, files that fit, reads each footer once, as the raw ``CALL`` would, and everything
    else (which files are new, their globs, the tables) is worked out inside that one transaction. When
    DuckLake refuses a file, or a path cannot be registered and ``bad_files`` is ``fail``, the
    transaction is rolled back and the footers are read apart (outside any transaction, since a failing
    read would abort it) to name every bad file, apply the schema drift policy and add new columns. Inside
    the transaction the registered paths are read after its snapshot is fixed, so a file another writer
    registered meanwhile is skipped, and a writer committing later makes this commit conflict.
    """
    with contextlib.suppress(_Refused):
        return _transaction(connection, settings, unique, None, None, schema_drift, bad_files, commit, entries_for)
    registered = registered_paths(connection, settings, unique)
    problems = _unregistrable(unique, registered)
    candidates = sorted(uri for uri in unique if uri not in registered and uri not in problems)
    if any(is_remote(uri) for uri in candidates):
        load_extension(connection, "httpfs")
    entries = entries_for(group_by_table(unique, candidates), False)
    file_columns, unreadable = read_columns(connection, candidates, [entry for e in entries.values() for entry in e])
    problems.update(unreadable)
    if problems and bad_files == "fail":
        raise BadSourceFileError(bad_files_message(problems, settings))
    readable = [uri for uri in candidates if uri not in unreadable]
    skipped = _skipped(problems)
    if not readable:
        return _nothing_added(connection, settings, unique, registered, skipped)
    return _transaction(
        connection, settings, unique, readable, file_columns, schema_drift, skipped, commit, entries_for
    )


_Commit = tuple[str | None, str | None, "dict[str, str] | None", "Progress | None", bool]
"""Author, message, extra info, progress callback, and whether to claim the tables (no claims held)."""


class _Refused(Exception):
    """The footer-free attempt cannot go on: DuckLake refused a file, or a path cannot be registered and
    ``bad_files`` is ``fail``. The careful path names why."""


def _unregistrable(unique: dict[str, SourceFile], registered: set[str]) -> dict[str, str]:
    """New paths DuckLake would read as a pattern, with the reason (they are never registered)."""
    return {uri: GLOB_REASON for uri in unique if uri not in registered and has_glob_characters(uri)}


def _skipped(problems: dict[str, str]) -> tuple[SkippedFile, ...]:
    return tuple(SkippedFile(uri, reason) for uri, reason in sorted(problems.items()))


def _transaction(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    unique: dict[str, SourceFile],
    readable: list[str] | None,
    file_columns: dict[str, list[str]] | None,
    schema_drift: SchemaDrift,
    skipping: "BadFiles | tuple[SkippedFile, ...]",
    commit: "_Commit",
    entries_for: "Callable[[Groups, bool], Entries]",
) -> RegistrationResult:
    """Add the new files in one transaction.

    Trusting (``readable`` and ``file_columns`` are None): the new files are every file of ``unique`` the
    catalog does not hold, nothing is checked beforehand, and :class:`_Refused` is raised after the
    rollback when DuckLake refuses one, or when a path cannot be registered and ``skipping`` (the
    ``bad_files`` policy) is ``fail``. Careful: ``readable`` were read and found fit, ``skipping`` lists
    the files left out.
    """
    author, message, extra_info, progress, claim_tables = commit
    connection.execute("BEGIN TRANSACTION")
    try:
        start = _transaction_snapshot(connection, settings)
        registered = registered_paths(connection, settings, unique)
        if readable is None:
            problems = _unregistrable(unique, registered)
            if problems and skipping == "fail":
                raise _Refused()
            skipped = _skipped(problems)
            to_add = sorted(uri for uri in unique if uri not in registered and uri not in problems)
        else:
            assert isinstance(skipping, tuple)
            skipped = skipping
            to_add = [uri for uri in readable if uri not in registered]
        groups = group_by_table(unique, to_add)
        if not groups:
            connection.execute("ROLLBACK")
            return _nothing_added(connection, settings, unique, registered, skipped)
        if any(is_remote(uri) for uri in to_add):
            load_extension(connection, "httpfs")
        entries = entries_for(groups, file_columns is None)
        if file_columns is None:
            plans = trusting_plans(connection, settings, unique, groups, entries, schema_drift)
        else:
            plans = plan_tables(connection, settings, unique, groups, entries, file_columns, schema_drift)
        rows_before = row_counts(connection, settings, lake_table_names(connection, settings))
        info = json.dumps({**(extra_info or {}), "registration": uuid.uuid4().hex}, sort_keys=True)
        columns = _write_and_commit(
            connection, settings, plans, author, message, info, progress, file_columns is None, claim_tables
        )
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            connection.execute("ROLLBACK")
        raise

    added_by_table = {(plan.schema.lower(), plan.name.lower()): len(plan.files) for plan in plans}
    read_back = _read_back(connection, settings, info, start, columns, rows_before, added_by_table)
    snapshot_id, files_added, tables = read_back
    added = set(files_added)
    gone = {uri: _GONE for plan in plans for uri in plan.files if uri not in added}  # deleted after listing
    return RegistrationResult(
        snapshot_id=snapshot_id,
        created_snapshot=True,
        files_added=files_added,
        already_registered=tuple(sorted(uri for uri in unique if uri in registered)),
        tables_created=tuple(plan.display_name for plan in plans if not plan.exists),
        columns_added=tuple(f"{plan.display_name}.{name}" for plan in plans for name, _ in plan.new_columns),
        skipped=tuple(sorted(skipped + _skipped(gone), key=lambda file: file.uri)),
        tables=tables,
    )


def _read_back(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    info: str,
    start: int,
    columns: TableColumns,
    rows_before: dict[tuple[str, str], int],
    files_added: dict[tuple[str, str], int],
) -> tuple[int, tuple[str, ...], tuple[TableSummary, ...]]:
    """The snapshot a registration committed (found by its ``info``), the files it added and the lake's tables.

    When nobody committed between the transaction's snapshot ``start`` and its own, the tables are as the
    transaction saw them before its commit (``columns``, ``rows_before``) with the rows of the files it
    added, all read from the catalog tables; else the lake is read afresh.
    """
    with _reading(connection) as reader:
        snapshot_id = snapshot_with_info(reader, settings, info)
        paths = tuple(sorted(paths_added(reader, settings, snapshot_id)))
        if not snapshots_between(reader, settings, start, snapshot_id):
            files = file_counts(reader, settings, snapshot_id)
            rows = {key: rows_before.get(key, 0) + files.get(key, (0, 0))[1] for key in columns}
            counts = {key: count for key, (count, _) in files.items()}
            return snapshot_id, paths, summarize(columns, rows, counts, files_added)
    with _reading(connection, lake=True) as reader:
        return snapshot_id, paths, table_summaries(reader, settings, files_added)


def _transaction_snapshot(connection: duckdb.DuckDBPyConnection, settings: LakeSettings) -> int:
    """The snapshot the open transaction reads (asking for it also fixes it)."""
    query = f"SELECT id FROM {quote_identifier(settings.alias)}.current_snapshot()"
    [(snapshot_id,)] = connection.execute(query).fetchall()
    return snapshot_id


_GONE = "no longer stored when its glob was registered (deleted after the listing)"


@contextlib.contextmanager
def _reading(connection: duckdb.DuckDBPyConnection, lake: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """The result is read back in one transaction that writes nothing and is rolled back: one view of the
    catalog, and DuckLake loads its snapshot once instead of once per query.

    Unless the lake's own tables are read (``lake``), on a cursor of the connection, whose default database
    is not the lake: there, resolving a function name, even ``count``, looks in the lake first, which has
    DuckLake load the catalog the commit just changed (about 15 ms), and the catalog tables need none of it.
    """
    reader = connection if lake else connection.cursor()
    reader.execute("BEGIN TRANSACTION")
    try:
        yield reader
    finally:
        with contextlib.suppress(duckdb.Error):
            reader.execute("ROLLBACK")
        if not lake:
            reader.close()


def _nothing_added(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    unique: dict[str, SourceFile],
    registered: set[str],
    skipped: tuple[SkippedFile, ...],
) -> RegistrationResult:
    return RegistrationResult(
        snapshot_id=current_snapshot(connection, settings),
        created_snapshot=False,
        files_added=(),
        already_registered=tuple(sorted(uri for uri in unique if uri in registered)),
        tables_created=(),
        columns_added=(),
        skipped=skipped,
        tables=table_summaries(connection, settings),
    )


def _write_and_commit(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    plans: list[TablePlan],
    author: str | None,
    message: str | None,
    info: str,
    progress: Progress | None,
    trusting: bool = False,
    claim_tables: bool = True,
) -> TableColumns:
    """Create, alter and fill the planned tables, then commit; return the lake's tables with their columns
    as the transaction saw them just before its commit. ``trusting``: a refused file raises
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
        columns = lake_tables(connection, settings)
        connection.execute(
            f"CALL {quote_identifier(alias)}.set_commit_message(?, ?, extra_info => ?)",
            [author or "ducklake-assets", message or f"Registered {total} source files", info],
        )
        connection.execute("COMMIT")
        return columns
    except duckdb.Error as error:
        if trusting and current is not None and not isinstance(error, duckdb.InterruptException):
            if not is_write_conflict(error):
                raise _Refused() from None
        reason = redact(error_text(error), settings.secrets())
        if current is None:
            raise RegistrationError(f"Registering {total} files failed, nothing was registered: {reason}") from None
        error_class = SchemaDriftError if "map column" in reason else RegistrationError
        raise error_class(
            f"Registering {len(current.files)} files into table {current.display_name} failed, so nothing was "
            f"registered: {reason}"
        ) from None


def _claim_table(connection: duckdb.DuckDBPyConnection, settings: LakeSettings, plan: TablePlan, table: str) -> None:
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


def _call_batches(plan: TablePlan) -> list[tuple[list[str], int]]:
    """Globs and paths for ``ducklake_add_data_files``, in batches of about ``_FILES_PER_CALL`` files."""
    batches: list[tuple[list[str], int]] = []
    for entry, count in plan.entries:
        if not batches or batches[-1][1] + count > _FILES_PER_CALL:
            batches.append(([], 0))
        batch, total = batches[-1]
        batch.append(entry)
        batches[-1] = (batch, total + count)
    return batches
