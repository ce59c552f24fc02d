"""Loading DuckDB extensions without the network.

PyPI ships DuckDB's extension binaries as wheels (``duckdb-extension-ducklake`` and friends), each holding
``extensions/v<duckdb version>/<name>.duckdb_extension``. When such a wheel is installed for the running
DuckDB version we ``LOAD`` the file directly; otherwise we fall back to DuckDB's normal
``INSTALL``/``LOAD``, which needs the network or a populated ``~/.duckdb``.

Checking an extension's signature means hashing its whole binary (36 MB for DuckLake, about 0.1 s and far
more on a busy machine), and DuckDB does it again in every new database. :func:`open_with_extensions`
checks each wheel's binary once per process, in a throwaway database with DuckDB's default policy, then
loads that same file (unchanged: same inode, size and modification time) into each new connection with
the check skipped, and switches ``allow_unsigned_extensions`` back off before handing the connection
over, so anything loaded afterwards is checked as usual.
"""

import functools
import importlib.util
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import duckdb

from .errors import ExtensionNotAvailableError
from .sql import quote_identifier, quote_literal

ConfigValue = str | bool | int | float | list[str]
"""A DuckDB setting's value, as ``duckdb.connect(config=...)`` takes it."""

OFFLINE_CONFIG: Mapping[str, ConfigValue] = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
"""DuckDB settings of every connection the library opens: no extension is ever downloaded or loaded implicitly."""

_verified: dict[str, tuple[int, int, int]] = {}
_verifying = threading.Lock()

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


def _fingerprint(path: Path) -> tuple[int, int, int]:
    stat = os.stat(path)
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def verify_once(path: Path) -> None:
    """Have DuckDB check the signature of the extension binary at ``path``, once per process (again only
    if the file changed)."""
    key = str(path)
    with _verifying:
        if _verified.get(key) == _fingerprint(path):
            return
        fingerprint = _fingerprint(path)
        with duckdb.connect(config=dict(OFFLINE_CONFIG)) as checker:
            checker.execute(f"LOAD {quote_literal(key)}")
        _verified[key] = fingerprint


def open_with_extensions(
    database: str, config: Mapping[str, ConfigValue], names: Sequence[str]
) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect(database, config=config)`` with the extensions ``names`` loaded, each binary's
    signature checked once per process rather than once per connection (see the module's docstring)."""
    paths = [wheel_extension_path(name) for name in names]
    # Every library connection gets the same setting, so two of them can open one database file at once.
    fast = "allow_unsigned_extensions" not in {key.lower() for key in config} and all(paths)
    connection = duckdb.connect(
        database, config={**config, "allow_unsigned_extensions": True} if fast else dict(config)
    )
    try:
        if fast:
            for path in paths:
                assert path is not None
                verify_once(path)
                connection.execute(f"LOAD {quote_literal(str(path))}")
            connection.execute("SET allow_unsigned_extensions = false")
        else:
            load_extensions(connection, list(names))
    except BaseException:
        connection.close()
        raise
    return connection
