"""Reading a frozen lake as a stranger would: attach it in a fresh DuckDB and probe its data files
(:func:`verify_as_stranger`), and the :class:`StrangerReport` it returns."""

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import duckdb

from ..errors import StorageError, redact
from ..lake import metadata_database
from ..locations import is_remote
from ..s3 import S3Settings
from ..sql import quote_identifier, quote_literal
from ..storage import ObjectStore
from ..sync import list_many
from .contents import STRANGER_ALIAS, attach_statement, lake_contents, local_or_url, stranger_connection, table_key
from .revisions import PUBLICATION_TABLE

CHANGED_WHILE_READ = (
    "the file was replaced by a newer revision while it was being read (DuckDB's ETag check refused to mix "
    "two revisions); attach it again, or attach a pinned revision for long sessions"
)


@dataclass(frozen=True)
class StrangerReport:
    """What a fresh DuckDB connection, sharing nothing with the writer, saw when it attached a frozen lake."""

    url: str
    error: str | None = None
    snapshot_id: int | None = None
    format_version: str | None = None
    revision: int | None = None
    tables: dict[str, int] = field(default_factory=dict)
    missing_tables: tuple[str, ...] = ()
    unreadable_files: tuple[str, ...] = ()

    @property
    def opened(self) -> bool:
        return self.error is None

    @property
    def ok(self) -> bool:
        """Attached, every expected table present and every probed data file readable."""
        return self.opened and not self.missing_tables and not self.unreadable_files

    def problems(self) -> list[str]:
        """Why the lake is not usable by a stranger, one sentence each (empty when ``ok``)."""
        found = []
        if self.error is not None:
            found.append(f"cannot attach {self.url}: {self.error}")
        if self.missing_tables:
            found.append(f"tables missing: {', '.join(self.missing_tables)}")
        if self.unreadable_files:
            found.append(f"data files a reader cannot open: {', '.join(self.unreadable_files)}")
        return found


def report_to_json(report: StrangerReport) -> dict[str, object]:
    """A stranger's report as plain JSON (kept in the asset's metadata so its checks can reuse it)."""
    return {
        "url": report.url,
        "error": report.error,
        "snapshot_id": report.snapshot_id,
        "format_version": report.format_version,
        "revision": report.revision,
        "tables": report.tables,
        "missing_tables": list(report.missing_tables),
        "unreadable_files": list(report.unreadable_files),
    }


def report_from_json(values: dict) -> StrangerReport:
    """The inverse of :func:`report_to_json`."""
    return StrangerReport(
        url=values["url"],
        error=values.get("error"),
        snapshot_id=values.get("snapshot_id"),
        format_version=values.get("format_version"),
        revision=values.get("revision"),
        tables=dict(values.get("tables") or {}),
        missing_tables=tuple(values.get("missing_tables") or ()),
        unreadable_files=tuple(values.get("unreadable_files") or ()),
    )


def verify_as_stranger(
    url: str,
    s3: S3Settings | None = None,
    expected_tables: Iterable[str] = (),
    *,
    probe_files: bool = True,
) -> StrangerReport:
    """Attach ``ducklake:<url>`` read-only in a fresh DuckDB that shares nothing with the writer.

    ``url`` is a local path, ``s3://`` URI (read through httpfs with ``s3``) or ``http(s)://`` URL.
    Reports the snapshot id, format version, revision and tables with row counts, which of
    ``expected_tables`` (``schema.table`` or ``table``) are missing and, with ``probe_files``, which
    data files of the current snapshot cannot be opened from here. Never raises for a broken lake:
    the report says what is wrong.
    """
    secrets = s3.secrets() if s3 else []
    connection = stranger_connection(s3, ["ducklake", "httpfs"])
    try:
        try:
            connection.execute(attach_statement(local_or_url(url), STRANGER_ALIAS))
        except duckdb.Error as error:
            return StrangerReport(url=url, error=redact(str(error), secrets))
        except UnicodeDecodeError:
            return StrangerReport(url=url, error=CHANGED_WHILE_READ)
        contents = lake_contents(connection, STRANGER_ALIAS)
        revision = _read_revision(connection)
        expected = sorted({table_key(name) for name in expected_tables})
        missing = tuple(name for name in expected if name not in contents.tables)
        unreadable = _unreadable_files(connection, contents.tables, ObjectStore(s3)) if probe_files else ()
        return StrangerReport(
            url=url,
            snapshot_id=contents.snapshot_id,
            format_version=contents.format_version,
            revision=revision,
            tables=contents.tables,
            missing_tables=missing,
            unreadable_files=tuple(redact(path, secrets) for path in unreadable),
        )
    except duckdb.Error as error:
        return StrangerReport(url=url, error=redact(str(error), secrets))
    except UnicodeDecodeError:
        return StrangerReport(url=url, error=CHANGED_WHILE_READ)
    finally:
        connection.close()


def _read_revision(connection: duckdb.DuckDBPyConnection) -> int | None:
    metadata = quote_identifier(metadata_database(STRANGER_ALIAS))
    try:
        [(revision,)] = connection.execute(
            f"SELECT max(revision) FROM {metadata}.main.{quote_identifier(PUBLICATION_TABLE)}"
        ).fetchall()
        return revision
    except duckdb.CatalogException:
        return None


def _unreadable_files(
    connection: duckdb.DuckDBPyConnection, tables: dict[str, int], store: ObjectStore | None = None
) -> list[str]:
    """Data and delete files of the current snapshot that cannot be opened from this connection.

    One pass opens every footer. Only when that fails are the culprits looked for: missing files with one
    listing per folder (``store``; not for web URLs), then the rest in halves, never one request per file.
    """
    files: list[str] = []
    for name in tables:
        schema, table = name.split(".", 1)
        rows = connection.execute(
            "SELECT data_file, delete_file FROM ducklake_list_files(?, ?, schema => ?)",
            [STRANGER_ALIAS, table, schema],
        ).fetchall()
        files.extend(path for row in rows for path in row if path)
    if not files:
        return []
    if _opens(connection, files):
        return []
    missing: list[str] = []
    listable = [path for path in files if not path.lower().startswith(("http://", "https://"))]
    if store is not None and listable:
        try:
            present = list_many(store, {path.rsplit("/", 1)[0] for path in listable})
        except StorageError:
            present = None
        if present is not None:  # a local listing resolves symbolic links; compare resolved paths
            missing = [
                path for path in listable if (path if is_remote(path) else os.path.realpath(path)) not in present
            ]
    gone = set(missing)
    return missing + _unopenable(connection, [path for path in files if path not in gone])


def _opens(connection: duckdb.DuckDBPyConnection, files: list[str]) -> bool:
    try:
        connection.execute(f"SELECT count(*) FROM parquet_file_metadata({_list_literal(files)})").fetchone()
        return True
    except duckdb.Error:
        return False


def _unopenable(connection: duckdb.DuckDBPyConnection, files: list[str]) -> list[str]:
    """The files among ``files`` whose footer cannot be read, found by halving (a few passes for a few bad files)."""
    if not files or _opens(connection, files):
        return []
    if len(files) == 1:
        return files
    middle = len(files) // 2
    return _unopenable(connection, files[:middle]) + _unopenable(connection, files[middle:])


def _list_literal(values: list[str]) -> str:
    """``['a', 'b']`` as one SQL list literal, each value quoted by the one quoting helper.

    A table function's list argument cannot be bound as one parameter without DuckDB converting every
    Python element on its own (and trying to import pandas for each); one literal is read in one pass.
    """
    return "[" + ", ".join(quote_literal(value) for value in values) + "]"
