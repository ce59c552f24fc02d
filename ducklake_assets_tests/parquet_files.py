"""Real Parquet source files for tests, written by DuckDB."""

from pathlib import Path

import duckdb

from ducklake_assets.core.sql import quote_literal


def parquet(path: Path, select: str) -> Path:
    """Write the rows of ``select`` to a Parquet file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect() as connection:
        connection.execute(f"COPY ({select}) TO {quote_literal(str(path))} (FORMAT parquet)")
    return path


def crew(path: Path, first: int = 0, count: int = 10) -> Path:
    """``count`` crew members (``id``, ``name``) with ids from ``first``: the astronauts of the space demo."""
    return parquet(path, f"SELECT range AS id, 'name ' || range AS name FROM range({first}, {first + count})")
