"""Reading the source files' footers and applying the schema-drift and bad-file policies to them: the per-table
plans (files, columns to add, DuckLake's flags) and the missing columns DuckLake would answer wrong."""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import duckdb

from ..errors import ConfigurationError, SchemaDriftError, redact
from ..lake import LakeSettings
from ..locations import normalize_uri
from ..sources import SourceFile
from ..sql import STRING_LIST, quote_identifier, string_list
from .globs import Entries, Groups
from .inventory import lake_table_names, lake_tables, metadata_table

SchemaDrift = Literal["fail", "ignore_extra_columns", "evolve"]
BadFiles = Literal["fail", "skip"]
SCHEMA_DRIFT_POLICIES: tuple[str, ...] = ("fail", "ignore_extra_columns", "evolve")
BAD_FILE_POLICIES: tuple[str, ...] = ("fail", "skip")
_SHOWN_PROBLEMS = 5
_PLAIN_TYPE = re.compile(r"^[A-Za-z0-9_ ,()\[\]]+$")


@dataclass
class TablePlan:
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


def check_policies(schema_drift: str, bad_files: str) -> None:
    """Refuse an unknown schema drift or bad-file policy, naming the choices."""
    if schema_drift not in SCHEMA_DRIFT_POLICIES:
        raise ConfigurationError(
            f"schema_drift must be one of {', '.join(SCHEMA_DRIFT_POLICIES)}, got {schema_drift!r}"
        )
    if bad_files not in BAD_FILE_POLICIES:
        raise ConfigurationError(f"bad_files must be one of {', '.join(BAD_FILE_POLICIES)}, got {bad_files!r}")


def read_columns(
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
            return {}, {uris[0]: error_text(error)}
        middle = len(uris) // 2
        first_columns, first_bad = read_columns(connection, uris[:middle])
        second_columns, second_bad = read_columns(connection, uris[middle:])
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


def error_text(error: duckdb.Error) -> str:
    """DuckDB's message without the SQL excerpt it appends (``LINE 1: ...``)."""
    text = str(error).split("\nLINE ", 1)[0].strip()
    return text or type(error).__name__


def bad_files_message(problems: dict[str, str], settings: LakeSettings) -> str:
    listed = "; ".join(f"{uri}: {reason}" for uri, reason in sorted(problems.items())[:_SHOWN_PROBLEMS])
    more = f" (and {len(problems) - _SHOWN_PROBLEMS} more)" if len(problems) > _SHOWN_PROBLEMS else ""
    return redact(
        f"{len(problems)} source file(s) cannot be registered, so nothing was registered: {listed}{more}. "
        "Fix or remove them, or set bad_files='skip' to register the others and list these as skipped.",
        settings.secrets(),
    )


def plan_tables(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    files: dict[str, SourceFile],
    groups: Groups,
    entries: Entries,
    file_columns: dict[str, list[str]],
    schema_drift: SchemaDrift,
) -> list[TablePlan]:
    existing = lake_tables(connection, settings)
    plans: dict[tuple[str, str], TablePlan] = {}
    for key, uris in groups.items():
        found = existing.get(key)
        if found:
            plans[key] = TablePlan(found[0], found[1], True, uris, entries[key], [name for name, _ in found[2]])
        else:
            first = files[uris[0]]
            plans[key] = TablePlan(first.schema, first.table, False, uris, entries[key], list(file_columns[uris[0]]))

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


def trusting_plans(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    files: dict[str, SourceFile],
    groups: Groups,
    entries: Entries,
    schema_drift: SchemaDrift,
) -> list[TablePlan]:
    """Plans for files assumed to fit their tables (DuckLake checks each one as it adds it)."""
    existing = lake_table_names(connection, settings)
    plans = []
    for key, uris in groups.items():
        found = existing.get(key)
        first = files[uris[0]]
        schema, name = (found[0], found[1]) if found else (first.schema, first.table)
        plan = TablePlan(schema, name, found is not None, uris, entries[key], [])
        plan.ignore_extra_columns = schema_drift == "ignore_extra_columns"
        plans.append(plan)
    return plans


def _apply_drift_policy(plan: TablePlan, file_columns: dict[str, list[str]], policy: SchemaDrift) -> list[str]:
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
    plans: list[TablePlan],
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
    table = metadata_table(settings, "ducklake_table")
    schema = metadata_table(settings, "ducklake_schema")
    column = metadata_table(settings, "ducklake_column")
    table_stats = metadata_table(settings, "ducklake_table_stats")
    column_stats = metadata_table(settings, "ducklake_table_column_stats")
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
    plan: TablePlan,
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


def _missing_problem(uri: str, plan: TablePlan, unsafe: list[str]) -> str:
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
    connection: duckdb.DuckDBPyConnection, plan: TablePlan, file_columns: dict[str, list[str]]
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
