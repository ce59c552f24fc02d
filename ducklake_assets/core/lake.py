"""Opening a DuckLake: one DuckDB connection with the extensions loaded, secrets made and the lake
attached and in use.
"""

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from .catalog import Catalog, DuckDBCatalog, PostgresCatalog, SQLiteCatalog, parse_catalog
from .errors import CatalogConnectionError, ConfigurationError, ReadOnlyLakeError, redact
from .extensions import OFFLINE_CONFIG, ConfigValue, load_extensions, open_with_extensions
from .locations import absolute_local_path, is_remote
from .retry import RetryLogger, RetryPolicy, retry_on_conflict
from .s3 import S3Settings
from .sql import OptionValue, options_clause, qualified_name, quote_identifier, quote_literal

_READ_ONLY_ERROR = re.compile(r"read-only mode|read only mode|attached in read-only", re.IGNORECASE)
_FORMAT_MISMATCH = re.compile(r"catalog version is (\S+), but the extension requires version (\S+?)\.?(\s|$)")


def format_mismatch(error: str) -> tuple[str, str] | None:
    """``(catalog format, extension format)`` when ``error`` says a DuckLake catalog is in an older (or newer)
    format than the running ``ducklake`` extension; ``None`` for any other error."""
    match = _FORMAT_MISMATCH.search(error)
    return (match[1], match[2]) if match else None


def metadata_database(alias: str) -> str:
    """Name under which DuckLake attaches a lake's catalog database."""
    return f"__ducklake_metadata_{alias}"


def metadata_prefix(alias: str, metadata_schema: str | None = None) -> str:
    """Quoted prefix of the catalog tables of the lake attached as ``alias``: ``<prefix>.ducklake_snapshot``.

    ``metadata_schema`` is their schema, :attr:`LakeSettings.catalog_schema` where the settings are known;
    without one the prefix has two parts, which DuckDB resolves through the lake in use first."""
    database = metadata_database(alias)
    return qualified_name(database, metadata_schema) if metadata_schema else quote_identifier(database)


@dataclass(frozen=True)
class LakeSettings:
    """Everything needed to attach one DuckLake.

    ``data_path`` may be omitted for an existing lake (DuckLake reads it from the catalog). Local data
    paths are made absolute, so files are never recorded relative to a working folder readers lack.
    """

    catalog: Catalog
    data_path: str | None = None
    alias: str = "lake"
    read_only: bool = False
    metadata_schema: str | None = None
    attach_options: Mapping[str, OptionValue] = field(default_factory=dict)
    memory_limit: str | None = None
    threads: int | None = None
    s3: S3Settings | None = None

    @classmethod
    def from_strings(cls, catalog: str, data_path: str | None = None, **kwargs: Any) -> "LakeSettings":
        """Build from a DuckLake catalog string such as ``lake.ducklake`` or ``postgres:dbname=x``."""
        return cls(catalog=parse_catalog(catalog), data_path=data_path, **kwargs)

    @property
    def catalog_schema(self) -> str:
        """The schema of the catalog database that holds DuckLake's tables: ``metadata_schema``, else the
        catalog's default (``public`` in PostgreSQL, ``main`` in DuckDB and SQLite).

        Catalog tables are named in three parts through it: DuckDB reads a two-part ``catalog.table`` as
        ``schema.table`` in the default database first, and with the lake in use that has DuckLake load
        its catalog, about 15 ms after a commit that changed it.
        """
        if self.metadata_schema:
            return self.metadata_schema
        return "public" if isinstance(self.catalog, PostgresCatalog) else "main"

    def secrets(self) -> list[str]:
        """Values that must never appear in a message, log line or metadata."""
        found = list(self.s3.secrets()) if self.s3 else []
        if isinstance(self.catalog, PostgresCatalog) and self.catalog.password:
            found.append(self.catalog.password)
        return found

    def describe(self) -> str:
        """The catalog, safe to show (password redacted)."""
        return self.catalog.describe()

    def needs_httpfs(self) -> bool:
        """Whether attaching needs httpfs: S3 settings, a remote data path, or a data path the catalog
        records (it may be remote, and DuckLake refuses to attach such a lake without httpfs)."""
        return self.s3 is not None or not self.data_path or is_remote(self.data_path)

    def extensions(self) -> list[str]:
        names = ["ducklake"]
        if self.needs_httpfs():
            names.append("httpfs")
        if isinstance(self.catalog, PostgresCatalog):
            names.append("postgres_scanner")
        elif isinstance(self.catalog, SQLiteCatalog):
            names.append("sqlite_scanner")
        return names


def new_connection(
    *,
    memory_limit: str | None = None,
    threads: int | None = None,
    database: str = ":memory:",
    config: Mapping[str, ConfigValue] | None = None,
    extensions: Sequence[str] = (),
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the resource limits applied and ``extensions`` loaded.

    DuckDB's automatic extension download is off (:data:`OFFLINE_CONFIG`): every extension the library
    needs is loaded from its wheel, so nothing works on a networked laptop that fails offline. Each
    wheel's signature is checked once per process, not once per connection (:mod:`.extensions`).
    """
    config = {**OFFLINE_CONFIG, **(config or {})}
    if memory_limit:
        config["memory_limit"] = memory_limit
    if threads:
        config["threads"] = threads
    return open_with_extensions(database, config, extensions)


def prepare_connection(connection: duckdb.DuckDBPyConnection, settings: LakeSettings) -> None:
    """Load extensions and create the secrets ``settings`` needs, without attaching anything."""
    load_extensions(connection, settings.extensions())
    if settings.s3 is not None:
        settings.s3.create_duckdb_secret(connection, f"__ducklake_assets_s3_{settings.alias}")


def attach_lake(connection: duckdb.DuckDBPyConnection, settings: LakeSettings, *, use: bool = True) -> None:
    """Attach the lake described by ``settings`` to ``connection`` (and ``USE`` it)."""
    options: dict[str, OptionValue | dict[str, str]] = {}
    data_path = absolute_local_path(settings.data_path) if settings.data_path else None
    if data_path:
        if not is_remote(data_path) and not data_path.endswith("/"):
            data_path += "/"
        options["DATA_PATH"] = data_path
    if settings.read_only:
        options["READ_ONLY"] = True
    if settings.metadata_schema:
        options["METADATA_SCHEMA"] = settings.metadata_schema
    catalog = settings.catalog
    secret = f"__ducklake_assets_pg_{settings.alias}"
    if isinstance(catalog, PostgresCatalog) and catalog.create_duckdb_secret(connection, secret):
        options["METADATA_PARAMETERS"] = {"SECRET": secret}
    clause = options_clause({**options, **settings.attach_options}, what="attach option")
    if isinstance(catalog, DuckDBCatalog | SQLiteCatalog) and not settings.read_only:
        folder = Path(catalog.path).expanduser().resolve().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CatalogConnectionError(
                f"Cannot create the folder {folder} for DuckLake catalog {settings.describe()}: {error.strerror}"
            ) from None
    if data_path and not is_remote(data_path) and not settings.read_only:
        _check_creatable(data_path, settings)
    sql = f"ATTACH {quote_literal('ducklake:' + catalog.metadata_path())} AS {quote_identifier(settings.alias)}{clause}"
    try:
        connection.execute(sql)
    except duckdb.Error as error:
        raise CatalogConnectionError(_attach_advice(settings, redact(str(error), settings.secrets()))) from None
    if data_path and not is_remote(data_path) and not settings.read_only:
        _ensure_local_data_path(connection, settings)
    if use:
        connection.execute(f"USE {quote_identifier(settings.alias)}")


def _check_creatable(data_path: str, settings: LakeSettings) -> None:
    """Refuse, before anything is attached (a new catalog would record the path), a local data folder
    that neither exists nor can be created."""
    folder = Path(data_path)
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor == folder and folder.is_dir():
        return
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigurationError(
            f"data_path {data_path} of {settings.describe()} cannot be created: {ancestor} is "
            + ("not a folder" if not ancestor.is_dir() else "not writable")
            + "; choose another data_path (nothing was created)"
        )


def _attach_advice(settings: LakeSettings, reason: str) -> str:
    lowered = reason.lower()
    where = f"Could not attach DuckLake catalog {settings.describe()} as {settings.alias!r}"
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        hint = "check the catalog user and password (pass the password as an environment variable)"
    elif "could not connect" in lowered or "unable to connect" in lowered or "connection refused" in lowered:
        hint = "check that the PostgreSQL server is running and reachable at that host and port"
    elif "does not exist" in lowered or "no such file" in lowered:
        hint = "check the path; a read-only lake must already exist"
    elif "nosuchbucket" in lowered or "bucket" in lowered:
        hint = "check the bucket name and that it exists"
    else:
        hint = "check the catalog settings"
    return f"{where}: {hint}. Cause: {reason}"


def _ensure_local_data_path(connection: duckdb.DuckDBPyConnection, settings: LakeSettings) -> None:
    """Create a missing local data folder for a lake that keeps nothing there yet; refuse otherwise.

    A catalog that references files under a data folder that is gone points at the wrong place (or
    lost its data): writing on would split the lake, so we stop and say so.
    """
    row = connection.execute("SELECT data_path FROM ducklake_settings(?)", [settings.alias]).fetchone()
    effective = row[0] if row else None
    if not effective or is_remote(effective) or Path(effective).exists():
        return
    metadata = metadata_prefix(settings.alias, settings.catalog_schema)
    [(relative_files,)] = connection.execute(
        f"SELECT count(*) FROM {metadata}.ducklake_data_file WHERE path_is_relative AND end_snapshot IS NULL"
    ).fetchall()
    if relative_files:
        connection.execute(f"DETACH {quote_identifier(settings.alias)}")
        raise CatalogConnectionError(
            f"Data path {effective} of DuckLake catalog {settings.describe()} does not exist, but the "
            f"catalog references {relative_files} data files under it: mount or restore that folder, or "
            "set data_path to where the files are."
        )
    Path(effective).mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def connect_lake(
    settings: LakeSettings,
    *,
    database: str = ":memory:",
    config: Mapping[str, ConfigValue] | None = None,
    retry: RetryPolicy | None = None,
    log: RetryLogger | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection with the lake attached and in use; writes through a read-only lake are explained.

    ``database`` and ``config`` are DuckDB's own (the connection's main database and settings). The
    ``ATTACH`` is tried again under ``retry`` (default :class:`RetryPolicy`) while another process holds a
    DuckDB-file catalog or creates a new PostgreSQL catalog at the same moment; each wait is logged on
    ``log``. Only the attach repeats: the extensions stay loaded, so waiting is cheap.
    """
    connection = new_connection(
        memory_limit=settings.memory_limit,
        threads=settings.threads,
        database=database,
        config=config,
        extensions=settings.extensions(),
    )
    try:
        try:
            prepare_connection(connection, settings)
        except duckdb.Error as error:
            raise CatalogConnectionError(
                f"Could not prepare a connection for {settings.describe()}: {redact(str(error), settings.secrets())}"
            ) from None
        retry_on_conflict(
            lambda: attach_lake(connection, settings),
            policy=retry,
            log=log,
            what=f"Attaching DuckLake {settings.describe()}",
            secrets=settings.secrets(),
        )
        try:
            yield connection
        except duckdb.Error as error:
            if settings.read_only and _READ_ONLY_ERROR.search(str(error)):
                raise ReadOnlyLakeError(
                    f"DuckLake {settings.alias!r} ({settings.describe()}) is attached read-only: "
                    "writes are refused. Use a resource with read_only=False to write."
                ) from error
            raise
    finally:
        connection.close()
