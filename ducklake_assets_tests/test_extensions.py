"""Extensions: loaded from their wheels, each binary's signature checked once per process (issue 12)."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from ducklake_assets.core.extensions import verify_once, wheel_extension_path
from ducklake_assets.core.lake import new_connection


def test_connections_load_the_wheels_and_leave_unsigned_extensions_refused() -> None:
    with new_connection(extensions=["ducklake", "httpfs"]) as first, new_connection(extensions=["ducklake"]) as second:
        for connection in (first, second):
            assert connection.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone() == (False,)
        loaded = first.execute(
            "SELECT extension_name FROM duckdb_extensions() WHERE loaded AND extension_name IN ('ducklake', 'httpfs')"
        ).fetchall()
    assert sorted(loaded) == [("ducklake",), ("httpfs",)]


def test_a_tampered_binary_is_refused_even_after_the_real_one_was_checked(tmp_path: Path) -> None:
    real = wheel_extension_path("ducklake")
    assert real is not None
    verify_once(real)
    tampered = tmp_path / "ducklake.duckdb_extension"
    shutil.copyfile(real, tampered)
    with open(tampered, "r+b") as handle:  # flip one byte in the middle of the code
        handle.seek(tampered.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(duckdb.Error, match="(?i)signature|invalid|not be loaded"):
        verify_once(tampered)
    with new_connection(extensions=["httpfs"]) as connection, pytest.raises(duckdb.Error):
        connection.execute(f"LOAD '{tampered}'")


def test_each_binary_is_checked_once_per_process_not_once_per_connection() -> None:
    """Counted in a fresh process: ten lakes attached, DuckDB's signature check ran once per extension."""
    script = textwrap.dedent(
        """
        import duckdb
        from ducklake_assets.core import extensions
        from ducklake_assets.core.lake import new_connection

        checks = []
        real_connect = duckdb.connect

        def counting_connect(database=":memory:", *args, **kwargs):
            config = kwargs.get("config") or {}
            if not config.get("allow_unsigned_extensions"):
                checks.append(database)
            return real_connect(database, *args, **kwargs)

        extensions.duckdb.connect = counting_connect
        for _ in range(10):
            with new_connection(extensions=["ducklake", "httpfs"]) as connection:
                connection.execute("SELECT 1").fetchall()
        print(len(checks))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "2"  # one check for ducklake, one for httpfs
