"""Loading DuckDB extensions without the network.

PyPI ships DuckDB's extension binaries as wheels (``duckdb-extension-ducklake`` and friends), each holding
``extensions/v<duckdb version>/<name>.duckdb_extension``. When such a wheel is installed for the running
DuckDB version we ``LOAD`` the file directly; otherwise we fall back to DuckDB's normal
``INSTALL``/``LOAD``, which needs the network or a populated ``~/.duckdb``.
"""

import functools
import importlib.util
from pathlib import Path

import duckdb

from .errors import ExtensionNotAvailableError
from .sql import quote_identifier, quote_literal

#: extension name -> (import name of its wheel, PyPI distribution name)
EXTENSION_WHEELS: dict[str, tuple[str, str]] = {
    "ducklake": ("duckdb_extension_ducklake", "duckdb-extension-ducklake"),
    "httpfs": ("duckdb_extension_httpfs", "duckdb-extension-httpfs"),
    "postgres_scanner": ("duckdb_extension_postgres_scanner", "duckdb-extension-postgres-scanner"),
    "sqlite_scanner": ("duckdb_extension_sqlite_scanner", "duckdb-extension-sqlite-scanner"),
}


@functools.cache
def wheel_extension_path(name: str) -> Path | None:
    """Path of ``name``'s binary inside its installed wheel, if one matches this DuckDB version."""
    import_name, _ = EXTENSION_WHEELS[name]
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
        if candidate.is_file():
            return candidate
    return None


def load_extension(connection: duckdb.DuckDBPyConnection, name: str) -> None:
    """Load one extension, from its wheel when possible, else through ``INSTALL``/``LOAD``."""
    path = wheel_extension_path(name)
    if path is not None:
        connection.execute(f"LOAD {quote_literal(str(path))}")
        return
    try:
        connection.execute(f"INSTALL {quote_identifier(name)}")
        connection.execute(f"LOAD {quote_identifier(name)}")
    except duckdb.Error as error:
        _, distribution = EXTENSION_WHEELS[name]
        raise ExtensionNotAvailableError(
            f"DuckDB extension {name!r} is not available for duckdb {duckdb.__version__}: no matching "
            f"wheel is installed and INSTALL failed ({error}). Install it with "
            f"`pip install {distribution}=={duckdb.__version__}`."
        ) from error


def load_extensions(connection: duckdb.DuckDBPyConnection, names: list[str]) -> None:
    """Load every extension in ``names`` into ``connection``."""
    for name in names:
        load_extension(connection, name)
