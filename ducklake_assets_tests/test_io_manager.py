"""The lake IO manager, as a user meets it: DataFrames out of assets become lake tables, inputs read them back."""

import concurrent.futures
import datetime
import json
import subprocess
import sys
import threading

import dagster as dg
import pandas as pd
import polars as pl
import pydantic
import pytest

from ducklake_assets import DuckLakeIOManager, DuckLakeResource
from ducklake_assets_tests.dagster_results import materialization, step_failure

DAILY = dg.DailyPartitionsDefinition(start_date="2026-11-01")


def local_lake(tmp_path) -> DuckLakeResource:
    return DuckLakeResource(catalog=str(tmp_path / "catalog.ducklake"), data_path=str(tmp_path / "data"))


def snapshots(lake: DuckLakeResource) -> list[tuple]:
    """``(snapshot_id, author, commit_message, commit_extra_info)`` of every snapshot, read by a fresh connection."""
    with lake.get_connection() as connection:
        return connection.execute(
            "SELECT snapshot_id, author, commit_message, commit_extra_info FROM lake.snapshots() ORDER BY 1"
        ).fetchall()


def query(lake: DuckLakeResource, sql: str) -> list[tuple]:
    with lake.get_connection() as connection:
        return connection.execute(sql).fetchall()


def astronauts_frame() -> pd.DataFrame:
    return pd.DataFrame({"id": range(20), "name": [f"astronaut {i}" for i in range(20)]})


def write_and_read_astronauts(lake: DuckLakeResource) -> tuple[dg.ExecuteInProcessResult, dict]:
    """Materialize a pandas ``astronauts`` asset and a downstream asset reading it; check the lake after."""
    received: dict = {}

    @dg.asset
    def astronauts() -> pd.DataFrame:
        return astronauts_frame()

    @dg.asset(ins={"df": dg.AssetIn("astronauts")})
    def crew_report(df: pd.DataFrame) -> None:
        received["frame"] = df

    before = snapshots(lake)
    result = dg.materialize([astronauts, crew_report], resources={"io_manager": DuckLakeIOManager(lake=lake)})

    new = snapshots(lake)[len(before) :]
    assert len(new) == 1, f"one output, one snapshot: {new}"
    [(snapshot_id, author, message, extra_info)] = new
    assert result.run_id in author and result.run_id in message and "astronauts" in message
    assert json.loads(extra_info)["dagster_asset"] == "astronauts"
    assert query(lake, "SELECT count(*), sum(id), max(name) FROM lake.main.astronauts") == [
        (20, sum(range(20)), "astronaut 9")
    ]
    assert query(lake, "SELECT count(*) FROM ducklake_list_files('lake', 'astronauts')")[0][0] >= 1
    metadata = materialization(result, "astronauts")
    assert metadata["dagster/row_count"] == 20
    assert metadata["dagster/table_name"] == "lake.main.astronauts"
    assert metadata["snapshot_id"] == snapshot_id and metadata["new_snapshot"] is True
    assert [(c.name, c.type) for c in metadata["dagster/column_schema"].columns] == [
        ("id", "BIGINT"),
        ("name", "VARCHAR"),
    ]
    assert received["frame"].sort_values("id").reset_index(drop=True).equals(astronauts_frame())
    return result, metadata


def test_a_pandas_output_is_a_lake_table_made_in_one_snapshot_and_read_back(tmp_path):
    write_and_read_astronauts(local_lake(tmp_path))


def test_a_pandas_output_on_a_postgres_catalog_never_shows_the_password(pg_database, postgres_lake):
    result, metadata = write_and_read_astronauts(postgres_lake)

    shown = " ".join([str(metadata), *(event.message or "" for event in result.all_events)])
    assert pg_database.password not in shown


def test_a_polars_output_is_a_lake_table_and_reads_back_as_polars_or_pandas(tmp_path):
    lake = local_lake(tmp_path)
    received: dict = {}

    @dg.asset
    def astronauts() -> pl.DataFrame:
        return pl.from_pandas(astronauts_frame())

    @dg.asset(ins={"df": dg.AssetIn("astronauts")})
    def as_polars(df: pl.DataFrame) -> None:
        received["polars"] = df

    @dg.asset(ins={"df": dg.AssetIn("astronauts")})
    def as_pandas(df: pd.DataFrame) -> None:
        received["pandas"] = df

    before = snapshots(lake)
    result = dg.materialize([astronauts, as_polars, as_pandas], resources={"io_manager": DuckLakeIOManager(lake=lake)})

    [(snapshot_id, author, message, _)] = snapshots(lake)[len(before) :]
    assert result.run_id in author and result.run_id in message
    assert query(lake, "SELECT count(*), sum(id) FROM lake.main.astronauts") == [(20, sum(range(20)))]
    metadata = materialization(result, "astronauts")
    assert (metadata["dagster/row_count"], metadata["snapshot_id"]) == (20, snapshot_id)
    assert received["polars"].sort("id").equals(pl.from_pandas(astronauts_frame()))
    assert received["pandas"].sort_values("id").reset_index(drop=True).equals(astronauts_frame())


def test_an_asset_reads_a_table_already_in_the_lake_by_its_key_and_schema(tmp_path):
    lake = local_lake(tmp_path)
    with lake.get_connection() as connection:
        connection.execute("CREATE SCHEMA raw")
        connection.execute("CREATE TABLE raw.crew AS SELECT range AS id, range * 1.5 AS hours FROM range(30)")
    crew_key = dg.AssetKey(["space", "raw", "crew"])
    received: dict = {}

    @dg.asset(ins={"crew": dg.AssetIn(key=crew_key, metadata={"schema": "raw"})})
    def crew_hours(crew: pd.DataFrame) -> None:
        received["hours"] = crew["hours"].sum()
        received["rows"] = len(crew)

    @dg.asset(ins={"crew": dg.AssetIn(key=crew_key, metadata={"schema": "raw", "columns": ["id"]})})
    def crew_ids(crew: pl.DataFrame) -> None:
        received["columns"] = crew.columns

    before = snapshots(lake)
    dg.materialize(
        [dg.AssetSpec(crew_key), crew_hours, crew_ids], resources={"io_manager": DuckLakeIOManager(lake=lake)}
    )

    assert received == {"rows": 30, "hours": sum(range(30)) * 1.5, "columns": ["id"]}
    assert snapshots(lake) == before, "reading makes no snapshot"


def test_an_input_whose_table_is_not_in_the_lake_names_the_table_and_the_fix(tmp_path):
    lake = local_lake(tmp_path)

    @dg.asset(ins={"crew": dg.AssetIn(key=dg.AssetKey(["space", "crew"]))})
    def crew_hours(crew: pd.DataFrame) -> None: ...

    result = dg.materialize(
        [dg.AssetSpec(["space", "crew"]), crew_hours],
        resources={"io_manager": DuckLakeIOManager(lake=lake)},
        raise_on_error=False,
    )

    message = step_failure(result)
    assert "Loading input 'crew' from lake table lake.main.crew failed" in message
    assert "materialize the upstream asset first, or give the input 'schema' metadata" in message


def test_a_daily_partition_replaces_only_its_own_rows_and_loads_only_its_own_rows(tmp_path):
    lake = local_lake(tmp_path)
    io_manager = DuckLakeIOManager(lake=lake)
    fare_factor = {"value": 1}
    received: dict = {}

    @dg.asset(partitions_def=DAILY, metadata={"partition_expr": "day"})
    def trips(context: dg.AssetExecutionContext) -> pd.DataFrame:
        day = datetime.date.fromisoformat(context.partition_key)
        return pd.DataFrame({"day": [day] * 5, "fare": [fare_factor["value"] * i for i in range(1, 6)]})

    @dg.asset(partitions_def=DAILY)
    def daily_revenue(trips: pd.DataFrame) -> None:
        received["days"] = sorted({pd.Timestamp(day).date().isoformat() for day in trips["day"]})
        received["revenue"] = trips["fare"].sum()

    def revenue_by_day() -> list[tuple]:
        return query(lake, "SELECT day::VARCHAR, count(*), sum(fare) FROM lake.main.trips GROUP BY 1 ORDER BY 1")

    dg.materialize([trips], partition_key="2026-11-01", resources={"io_manager": io_manager})
    dg.materialize([trips], partition_key="2026-11-02", resources={"io_manager": io_manager})
    assert revenue_by_day() == [("2026-11-01", 5, 15), ("2026-11-02", 5, 15)]
    before = snapshots(lake)

    fare_factor["value"] = 10
    result = dg.materialize([trips], partition_key="2026-11-01", resources={"io_manager": io_manager})

    assert revenue_by_day() == [("2026-11-01", 5, 150), ("2026-11-02", 5, 15)]
    [(snapshot_id, author, message, extra_info)] = snapshots(lake)[len(before) :]
    assert result.run_id in author and "partition 2026-11-01" in message
    assert json.loads(extra_info)["dagster_partitions"] == ["2026-11-01"]
    metadata = materialization(result, "trips")
    assert metadata["snapshot_id"] == snapshot_id
    assert (metadata["rows_deleted"], metadata["dagster/partition_row_count"], metadata["dagster/row_count"]) == (
        5,
        5,
        10,
    )

    dg.materialize(
        [trips.to_source_asset(), daily_revenue], partition_key="2026-11-02", resources={"io_manager": io_manager}
    )
    assert received == {"days": ["2026-11-02"], "revenue": 15}


def test_a_column_the_lake_cannot_store_fails_naming_the_table_and_creates_nothing(tmp_path):
    lake = local_lake(tmp_path)

    @dg.asset(metadata={"schema": "staging"})
    def moods() -> pd.DataFrame:
        return pd.DataFrame({"id": range(20), "mood": pd.Categorical(["calm", "tense"] * 10)})

    before = snapshots(lake)
    result = dg.materialize([moods], resources={"io_manager": DuckLakeIOManager(lake=lake)}, raise_on_error=False)

    message = step_failure(result)
    assert "Writing moods to lake table lake.staging.moods failed, so the lake is unchanged" in message
    assert "unsupported type ENUM" in message and ".astype(str)" in message
    assert snapshots(lake) == before
    assert query(lake, "SELECT schema_name FROM duckdb_schemas() WHERE database_name = 'lake' ORDER BY 1") == [
        ("main",)
    ]


def test_a_failing_rewrite_keeps_the_rows_it_would_have_replaced(tmp_path):
    lake = local_lake(tmp_path)
    io_manager = DuckLakeIOManager(lake=lake)

    def scores_asset(frame: pd.DataFrame) -> dg.AssetsDefinition:
        @dg.asset(name="scores")
        def scores() -> pd.DataFrame:
            return frame

        return scores

    dg.materialize([scores_asset(pd.DataFrame({"score": range(20)}))], resources={"io_manager": io_manager})
    before = snapshots(lake)

    bad = scores_asset(pd.DataFrame({"score": ["high", "low"]}))
    result = dg.materialize([bad], resources={"io_manager": io_manager}, raise_on_error=False)

    message = step_failure(result)
    assert "Writing scores to lake table lake.main.scores failed, so the lake is unchanged" in message
    assert "high" in message
    assert snapshots(lake) == before
    assert query(lake, "SELECT count(*), sum(score) FROM lake.main.scores") == [(20, sum(range(20)))]


def test_settings_for_a_plain_duckdb_file_are_refused_with_where_to_put_them(tmp_path):
    with pytest.raises(pydantic.ValidationError, match=r"set database on lake=DuckLakeResource"):
        DuckLakeIOManager(lake=local_lake(tmp_path), database=str(tmp_path / "other.duckdb"))
    with pytest.raises(pydantic.ValidationError, match=r"set connection_config on lake=DuckLakeResource"):
        DuckLakeIOManager(lake=local_lake(tmp_path), connection_config={"threads": 1})


def test_without_pandas_and_polars_support_the_error_names_the_extra_to_install(tmp_path):
    script = (
        "import sys\n"
        "sys.modules['dagster_duckdb_pandas'] = sys.modules['dagster_duckdb_polars'] = None\n"
        "import dagster as dg, pandas as pd\n"
        "from ducklake_assets import DuckLakeIOManager, DuckLakeResource\n"
        "@dg.asset\n"
        "def crew() -> pd.DataFrame:\n"
        "    return pd.DataFrame({'id': [1]})\n"
        "lake = DuckLakeResource(catalog=sys.argv[1] + '/c.ducklake', data_path=sys.argv[1] + '/data')\n"
        "dg.materialize([crew], resources={'io_manager': DuckLakeIOManager(lake=lake)})\n"
    )
    ran = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert ran.returncode != 0
    assert 'neither is installed: pip install "ducklake-assets[pandas]"' in ran.stderr


def test_partitions_written_at_once_on_postgres_all_land_each_in_its_own_snapshot(postgres_lake):
    """Three runs write three partitions of a new table at the same moment. A run that loses the race to
    create the table (most runs do) has its whole write run again, logged as a conflict, not half of it."""
    days = ["2026-11-01", "2026-11-02", "2026-11-03"]
    io_manager = DuckLakeIOManager(lake=postgres_lake)
    all_computed = threading.Barrier(len(days), timeout=60)

    @dg.asset(partitions_def=DAILY, metadata={"partition_expr": "day"})
    def trips(context: dg.AssetExecutionContext) -> pd.DataFrame:
        all_computed.wait()
        day = datetime.date.fromisoformat(context.partition_key)
        return pd.DataFrame({"day": [day] * 20, "fare": range(20)})

    def run(day: str) -> str:
        with dg.DagsterInstance.ephemeral() as instance:
            result = dg.materialize([trips], partition_key=day, resources={"io_manager": io_manager}, instance=instance)
            return result.run_id

    query(postgres_lake, "SELECT 1")  # the catalog exists before the race, so the writes are what collide
    with concurrent.futures.ThreadPoolExecutor(len(days)) as pool:
        run_ids = list(pool.map(run, days))

    assert query(postgres_lake, "SELECT day::VARCHAR, count(*), sum(fare) FROM lake.trips GROUP BY 1 ORDER BY 1") == [
        (day, 20, 190) for day in days
    ]
    authors = [author for _, author, _, _ in snapshots(postgres_lake) if author]
    assert sorted(authors) == sorted(f"dagster run {run_id}" for run_id in run_ids)
