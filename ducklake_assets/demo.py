"""The README's demo: the whole pipeline on the embedded default (a DuckDB catalog and local folders).

The asset ``space/sample_files`` writes sample Parquet files under ``$DUCKLAKE_DEMO_DIR`` (default
``demo_data`` in the working folder) when it first runs; importing this module writes nothing. Run it
with ``dagster dev -w workspace.yaml`` or ``dg launch -m ducklake_assets.demo --assets 'group:space'``.
"""

import os
from pathlib import Path

import dagster as dg
import duckdb

from .core.sql import quote_literal
from .pipeline import build_ducklake_pipeline
from .snapshot_assets import written_paths_metadata

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


def sample_paths(source: Path, files_per_table: int = 3) -> list[Path]:
    """Where the demo's Parquet files go: ``<table>/<table>.p<n>.parquet``."""
    return [source / table / f"{table}.p{part}.parquet" for table in SAMPLE_TABLES for part in range(files_per_table)]


def write_sample_files(source: Path, files_per_table: int = 3, rows_per_file: int = 500) -> list[Path]:
    """Write the demo's Parquet files unless they exist; returns the ones it wrote."""
    written = []
    with duckdb.connect() as connection:
        for path in sample_paths(source, files_per_table):
            if not path.exists():
                table, part = path.parent.name, int(path.name.split(".p")[1].split(".")[0])
                path.parent.mkdir(parents=True, exist_ok=True)
                start = part * rows_per_file
                select = SAMPLE_TABLES[table].format(start=start, stop=start + rows_per_file)
                hidden = path.with_name(f".{path.name}.{os.getpid()}")  # hidden names are never registered
                connection.execute(f"COPY ({select}) TO {quote_literal(str(hidden))} (FORMAT parquet)")
                os.replace(hidden, path)
                written.append(path)
    return written


def build_demo(demo_dir: Path) -> dg.Definitions:
    """The demo pipeline with its files under ``demo_dir``: a producer asset writes the sample files
    (nothing is written when the definitions load), the pipeline registers, backs up and publishes them."""
    source = demo_dir / "source"

    @dg.asset(
        key=["space", "sample_files"],
        group_name="space",
        kinds={"parquet"},
        description="Writes the demo's sample Parquet files (two tables, three files each) unless they exist.",
        automation_condition=(dg.AutomationCondition.missing() & ~dg.AutomationCondition.in_progress()).with_label(
            "until the sample files are written"
        ),
    )
    def sample_files(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        written = write_sample_files(source)
        context.log.info(f"Wrote {len(written)} sample file(s) under {source}")
        paths = [str(path) for path in sample_paths(source)]
        return dg.MaterializeResult(metadata={**written_paths_metadata(paths), "files_written": len(written)})

    pipeline = build_ducklake_pipeline(
        name="space",
        source=str(source),
        catalog=str(demo_dir / "lake" / "space.ducklake"),
        data_path=str(demo_dir / "lake" / "data"),
        backup=str(demo_dir / "backups"),
        publish=str(demo_dir / "public" / "space.ducklake"),
        tables=list(SAMPLE_TABLES),
        source_deps=[sample_files],
    )
    everything = dg.define_asset_job(
        "space_demo",
        selection=dg.AssetSelection.groups("space") - dg.AssetSelection.assets(["space", "source_files"]),
        description="The whole demo in one run: sample files, registration, backup, publication and their checks.",
    )
    samples_sensor = dg.AutomationConditionSensorDefinition(
        "space_sample_files_automation",
        target=[sample_files],
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Writes the sample files once, when they were never written; the pipeline follows by itself.",
    )
    demo = dg.Definitions(
        assets=[sample_files], jobs=[everything], sensors=[samples_sensor], executor=dg.in_process_executor
    )
    return dg.Definitions.merge(demo, pipeline)


defs = build_demo(DEMO_DIR)
