"""The README's demo: the whole pipeline on the embedded default (a DuckDB catalog and local folders).

Sample Parquet files are generated on first run under ``$DUCKLAKE_DEMO_DIR`` (default ``demo_data``
in the working folder). Run it with ``dagster dev -w workspace.yaml`` or
``dagster asset materialize -m ducklake_assets.demo --select '*'``.
"""

import os
from pathlib import Path

import duckdb

from .core.sql import quote_literal
from .pipeline import build_ducklake_pipeline

DEMO_DIR = Path(os.environ.get("DUCKLAKE_DEMO_DIR", "demo_data")).resolve()

SAMPLE_TABLES = {
    "astronauts": (
        "SELECT range AS astronaut_id, 'astronaut ' || range AS name, "
        "['USA', 'Russia', 'China', 'ESA', 'Japan'][1 + range % 5] AS nationality, "
        "1950 + range % 40 AS year_of_birth FROM range({start}, {stop})"
    ),
    "missions": (
        "SELECT range AS mission_id, 'mission ' || range AS name, "
        "DATE '1961-04-12' + to_days(CAST(range * 97 AS INTEGER)) AS launched_on, "
        "range % 7 = 0 AS crewed FROM range({start}, {stop})"
    ),
}


def write_sample_files(source: Path, files_per_table: int = 3, rows_per_file: int = 500) -> list[Path]:
    """Write the demo's Parquet files (``<table>/<table>.p<n>.parquet``) unless they exist."""
    written = []
    with duckdb.connect() as connection:
        for table, query in SAMPLE_TABLES.items():
            folder = source / table
            folder.mkdir(parents=True, exist_ok=True)
            for part in range(files_per_table):
                path = folder / f"{table}.p{part}.parquet"
                if not path.exists():
                    start = part * rows_per_file
                    select = query.format(start=start, stop=start + rows_per_file)
                    connection.execute(f"COPY ({select}) TO {quote_literal(str(path))} (FORMAT parquet)")
                    written.append(path)
    return written


write_sample_files(DEMO_DIR / "source")

defs = build_ducklake_pipeline(
    name="space",
    source=str(DEMO_DIR / "source"),
    catalog=str(DEMO_DIR / "lake" / "space.ducklake"),
    data_path=str(DEMO_DIR / "lake" / "data"),
    backup_uri=str(DEMO_DIR / "backups"),
    publish_uri=str(DEMO_DIR / "public" / "space.ducklake"),
)
