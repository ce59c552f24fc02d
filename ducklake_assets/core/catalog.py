"""The catalog databases a DuckLake can live in, and DuckLake's own catalog strings.

A catalog is described by a small frozen dataclass per backend. The password of a PostgreSQL catalog is
kept out of every string that could reach an error message: it travels to DuckDB only inside a
``CREATE SECRET`` statement, never in the ``ATTACH`` text.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import duckdb

from .errors import ConfigurationError
from .optional import require
from .sql import quote_identifier, quote_literal

CatalogKind = Literal["duckdb", "sqlite", "postgres"]


@dataclass(frozen=True)
class DuckDBCatalog:
    """A DuckLake catalog stored in a DuckDB database file (the embedded default, one writer)."""

    path: str
    kind: CatalogKind = field(default="duckdb", init=False)

    def metadata_path(self) -> str:
        """What follows ``ducklake:`` in ``ATTACH``."""
        return str(Path(self.path).expanduser().resolve())

    def describe(self) -> str:
        """A display name that is safe to log."""
        return f"duckdb:{self.metadata_path()}"


@dataclass(frozen=True)
class SQLiteCatalog:
    """A DuckLake catalog stored in a SQLite database file."""

    path: str
    kind: CatalogKind = field(default="sqlite", init=False)

    def metadata_path(self) -> str:
        return "sqlite:" + str(Path(self.path).expanduser().resolve())

    def describe(self) -> str:
        return self.metadata_path()


@dataclass(frozen=True)
class PostgresCatalog:
    """A DuckLake catalog in a PostgreSQL database: many concurrent writers.

    ``params`` are libpq connection keywords (``host``, ``port``, ``dbname``, ``user``, ``sslmode``...)
    without the password, which is held apart so it can be handed to DuckDB as a secret.
    """

    params: tuple[tuple[str, str], ...]
    password: str | None = field(default=None, repr=False)
    kind: CatalogKind = field(default="postgres", init=False)

    @staticmethod
    def quote_value(value: str) -> str:
        """Quote a libpq keyword value: single quotes, with ``\\`` and ``'`` backslash-escaped."""
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    @classmethod
    def from_dsn(cls, dsn: str, password: str | None = None) -> "PostgresCatalog":
        """Build from a libpq keyword DSN or a ``postgresql://`` URL; ``password`` overrides the DSN's."""
        conninfo = require("psycopg.conninfo", "A PostgreSQL catalog")
        psycopg = require("psycopg", "A PostgreSQL catalog")
        try:
            parsed = conninfo.conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as error:
            raise ConfigurationError(
                "PostgreSQL catalog DSN is not a valid libpq connection string or postgresql:// URL"
            ) from error
        dsn_password = parsed.pop("password", None)
        params = tuple(sorted((key, str(value)) for key, value in parsed.items() if value is not None))
        return cls(params=params, password=password if password is not None else dsn_password)

    def conninfo(self, *, with_password: bool = False) -> str:
        """The libpq keyword string, by default without the password."""
        pairs = list(self.params)
        if with_password and self.password is not None:
            pairs.append(("password", self.password))
        return " ".join(f"{key}={self.quote_value(value)}" for key, value in pairs)

    def metadata_path(self) -> str:
        return "postgres:" + self.conninfo()

    def create_duckdb_secret(self, connection: duckdb.DuckDBPyConnection, name: str) -> bool:
        """Hand the password to DuckDB as a temporary ``postgres`` secret called ``name``, so that no
        ``ATTACH`` text (which can reach an error message) carries it. Without a password nothing is made
        and ``False`` is returned."""
        if self.password is None:
            return False
        connection.execute(
            f"CREATE OR REPLACE TEMPORARY SECRET {quote_identifier(name)} "
            f"(TYPE postgres, PASSWORD {quote_literal(self.password)})"
        )
        return True

    def describe(self) -> str:
        shown = " ".join(f"{key}={value}" for key, value in self.params)
        return f"postgres:{shown}" + (" password=***" if self.password else "")

    @property
    def dbname(self) -> str | None:
        return dict(self.params).get("dbname")


Catalog = DuckDBCatalog | SQLiteCatalog | PostgresCatalog


def parse_catalog(text: str, *, password: str | None = None) -> Catalog:
    """Parse DuckLake's own catalog string.

    Accepted forms: ``path.ducklake`` or ``duckdb:path`` (DuckDB file), ``sqlite:path``,
    ``postgres:dbname=... host=...``, ``postgres:postgresql://...`` or a bare ``postgresql://`` URL.
    A leading ``ducklake:`` is ignored.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigurationError("catalog must be a non-empty DuckLake catalog string, e.g. 'lake.ducklake'")
    text = text.strip().removeprefix("ducklake:")
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresCatalog.from_dsn(text, password)
    if text.startswith("postgres:"):
        return PostgresCatalog.from_dsn(text.removeprefix("postgres:"), password)
    if text.startswith("sqlite:"):
        return SQLiteCatalog(text.removeprefix("sqlite:"))
    if text.startswith(("mysql:", "md:")):
        raise ConfigurationError(
            f"catalog {text.split(':', 1)[0]}: is not supported by ducklake-assets; "
            "use a DuckDB file, sqlite:<path> or postgres:<dsn>"
        )
    return DuckDBCatalog(text.removeprefix("duckdb:"))
