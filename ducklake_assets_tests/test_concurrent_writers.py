"""Many writers, one lake: parallel Dagster steps and plain processes write one PostgreSQL-catalog lake.

Every writer starts on an empty catalog at the same moment, so the runs also race to create the catalog
and the tables; what DuckLake reports as a conflict is retried and every row arrives.
"""

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from ducklake_assets.core.errors import WriteConflictError
from ducklake_assets.core.lake import LakeSettings, connect_lake
from ducklake_assets.core.sql_commands import SQLCommand
from ducklake_assets.resources import DuckLakeResource, PostgresCatalogConfig
from ducklake_assets.sql_assets import ducklake_sql_asset

CATALOG_DSN_ENV = "DUCKLAKE_WRITERS_TEST_DSN"
DATA_PATH_ENV = "DUCKLAKE_WRITERS_TEST_DATA_PATH"
WRITERS = ("writer_a", "writer_b", "writer_c")
INSERTS_PER_WRITER = 100
COUNTER_INCREMENTS = 100


def writer_asset(writer: str) -> dg.AssetsDefinition:
    """A step that inserts 100 times into two shared tables, one commit per statement."""
    return ducklake_sql_asset(
        writer,
        [
            "CREATE TABLE IF NOT EXISTS events (writer VARCHAR, seq INTEGER)",
            "CREATE TABLE IF NOT EXISTS audit (writer VARCHAR, seq INTEGER, written_at TIMESTAMPTZ)",
            *(
                SQLCommand(
                    "INSERT INTO events VALUES ($writer, $seq); INSERT INTO audit VALUES ($writer, $seq, now())",
                    {"seq": seq},
                )
                for seq in range(INSERTS_PER_WRITER)
            ),
        ],
        parameters={"writer": writer},
        pool="ducklake_writers",
    )


def concurrent_writers_job() -> dg.JobDefinition:
    """The job each step process rebuilds; the catalog comes from the environment the test sets."""
    defs = dg.Definitions(
        assets=[writer_asset(writer) for writer in WRITERS],
        resources={
            "ducklake": DuckLakeResource(
                catalog=PostgresCatalogConfig(dsn=os.environ[CATALOG_DSN_ENV]),
                data_path=os.environ[DATA_PATH_ENV],
                attach_options={"DATA_INLINING_ROW_LIMIT": 0},
            )
        },
        jobs=[dg.define_asset_job("concurrent_writers", selection=list(WRITERS))],
    )
    return defs.resolve_job_def("concurrent_writers")


def test_three_parallel_dagster_steps_insert_every_row(pg_database, tmp_path, monkeypatch):
    monkeypatch.setenv(CATALOG_DSN_ENV, pg_database.dsn())
    monkeypatch.setenv(DATA_PATH_ENV, str(tmp_path / "data"))

    with dg.instance_for_test() as instance:
        result = dg.execute_job(
            dg.reconstructable(concurrent_writers_job),
            instance=instance,
            run_config={"execution": {"config": {"multiprocess": {"max_concurrent": 3}}}},
        )
        assert result.success
        step_pids = {event.pid for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_START}
        materialized = {event.asset_key.path[-1] for event in result.all_events if event.is_step_materialization}
    assert len(step_pids) == 3, "each writer ran in its own process"
    assert materialized == set(WRITERS)

    settings = LakeSettings.from_strings(f"postgres:{pg_database.dsn()}")
    with connect_lake(settings) as connection:
        for table in ("events", "audit"):
            rows = connection.execute(
                f"SELECT writer, count(*), count(DISTINCT seq) FROM {table} GROUP BY writer ORDER BY writer"
            ).fetchall()
            assert rows == [(writer, INSERTS_PER_WRITER, INSERTS_PER_WRITER) for writer in WRITERS], table
        data_files = connection.execute("SELECT count(*) FROM ducklake_list_files('lake', 'events')").fetchone()[0]
    assert data_files == len(WRITERS) * INSERTS_PER_WRITER, "one Parquet file per committed insert"


def test_a_pool_limit_of_one_runs_the_writers_one_after_another(pg_database, tmp_path, monkeypatch):
    monkeypatch.setenv(CATALOG_DSN_ENV, pg_database.dsn())
    monkeypatch.setenv(DATA_PATH_ENV, str(tmp_path / "data"))

    with dg.instance_for_test() as instance:
        instance.event_log_storage.set_concurrency_slots("ducklake_writers", 1)
        result = dg.execute_job(
            dg.reconstructable(concurrent_writers_job),
            instance=instance,
            run_config={"execution": {"config": {"multiprocess": {"max_concurrent": 3}}}},
        )
        assert result.success
        records = instance.get_records_for_run(result.run_id).records
    spans = {}
    for record in records:
        event = record.event_log_entry.dagster_event
        if event and event.event_type in (dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS):
            spans.setdefault(event.step_key, {})[event.event_type] = record.event_log_entry.timestamp
    ordered = sorted(
        (span[dg.DagsterEventType.STEP_START], span[dg.DagsterEventType.STEP_SUCCESS]) for span in spans.values()
    )
    assert len(ordered) == 3
    for (_, previous_end), (next_start, _) in zip(ordered, ordered[1:], strict=False):
        assert next_start >= previous_end, "with one slot in the pool no two writers overlap"


def increment_counter_many_times(catalog_dsn: str, data_path: str) -> None:
    """One worker process: read-modify-write the shared counter, one transaction per increment."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    ducklake = DuckLakeResource(catalog=PostgresCatalogConfig(dsn=catalog_dsn), data_path=data_path)
    log = logging.getLogger("worker")
    with ducklake.get_connection(log) as connection:
        ducklake.execute_with_retry(
            "CREATE TABLE IF NOT EXISTS counters (name VARCHAR, n INTEGER)", connection=connection, log=log
        )
        ducklake.run_in_transaction(
            lambda c: c.execute(
                "INSERT INTO counters SELECT 'runs', 0 WHERE NOT EXISTS (SELECT 1 FROM counters WHERE name = 'runs')"
            ),
            connection=connection,
            log=log,
        )
        print("ready", flush=True)
        sys.stdin.readline()  # every worker starts incrementing at once
        for _ in range(COUNTER_INCREMENTS):
            ducklake.run_in_transaction(
                lambda c: c.execute("UPDATE counters SET n = n + 1 WHERE name = 'runs'"), connection=connection, log=log
            )


def test_three_processes_updating_one_row_lose_no_increment(pg_database, tmp_path):
    data_path = str(tmp_path / "data")
    settings = LakeSettings.from_strings(f"postgres:{pg_database.dsn()}", data_path)
    with connect_lake(settings) as connection:
        connection.execute("CREATE TABLE counters (name VARCHAR, n INTEGER)")
        connection.execute("INSERT INTO counters VALUES ('runs', 0)")

    workers = [run_worker("increment", pg_database.dsn(), data_path) for _ in range(3)]
    before = [wait_until_ready(worker) for worker in workers]
    start_all(workers)
    outputs = [said + worker.communicate(timeout=300)[0] for said, worker in zip(before, workers, strict=True)]
    assert [worker.returncode for worker in workers] == [0, 0, 0], outputs

    with connect_lake(settings) as connection:
        assert connection.execute("SELECT name, n FROM counters").fetchall() == [("runs", 3 * COUNTER_INCREMENTS)]
    retries = sum(output.count("conflicted with another writer") for output in outputs)
    assert retries > 0, "concurrent UPDATEs of one row conflict, and the conflicts were retried"
    assert "Transaction conflict" in "".join(outputs)
    assert pg_database.password not in "".join(outputs)


def test_a_held_duckdb_catalog_is_waited_for_then_written(tmp_path):
    catalog = tmp_path / "catalog.ducklake"
    data_path = tmp_path / "data"
    settings = LakeSettings.from_strings(str(catalog), str(data_path))
    with connect_lake(settings) as connection:
        connection.execute("CREATE TABLE visits (n INTEGER)")
    holder = hold_catalog(catalog, seconds=1.5)
    ducklake = DuckLakeResource(catalog=str(catalog), data_path=str(data_path), retry_max_delay_seconds=0.5)

    started = time.monotonic()
    ducklake.execute_with_retry("INSERT INTO visits VALUES (?)", [1])

    assert time.monotonic() - started >= 1.0, "the write waited for the other process to let go"
    holder.wait(timeout=30)
    with connect_lake(settings) as connection:
        assert connection.execute("SELECT n FROM visits").fetchall() == [(1,)]


def test_a_writer_gives_up_after_the_configured_attempts_and_changes_nothing(tmp_path):
    catalog = tmp_path / "catalog.ducklake"
    data_path = tmp_path / "data"
    settings = LakeSettings.from_strings(str(catalog), str(data_path))
    with connect_lake(settings) as connection:
        connection.execute("CREATE TABLE visits (n INTEGER)")
        snapshot_before = connection.execute("SELECT max(snapshot_id) FROM lake.snapshots()").fetchone()
    holder = hold_catalog(catalog, seconds=20)
    ducklake = DuckLakeResource(
        catalog=str(catalog), data_path=str(data_path), retry_max_attempts=3, retry_base_delay_seconds=0.01
    )

    with pytest.raises(WriteConflictError) as raised:
        ducklake.execute_with_retry("INSERT INTO visits VALUES (?)", [1])

    holder.kill()
    holder.wait(timeout=30)
    message = str(raised.value)
    assert "after 3 attempts" in message
    assert "Conflicting lock" in message
    assert str(catalog) in message
    assert "Dagster concurrency pool" in message
    with connect_lake(settings) as connection:
        assert connection.execute("SELECT count(*) FROM visits").fetchone() == (0,)
        assert connection.execute("SELECT max(snapshot_id) FROM lake.snapshots()").fetchone() == snapshot_before


def hold_catalog(catalog: Path, seconds: float) -> subprocess.Popen:
    """Another process that keeps a DuckDB-file catalog attached (and locked) for ``seconds``."""
    code = (
        "import sys, time\n"
        "from ducklake_assets.core.lake import LakeSettings, connect_lake\n"
        "with connect_lake(LakeSettings.from_strings(sys.argv[1])):\n"
        "    print('attached', flush=True)\n"
        "    time.sleep(float(sys.argv[2]))\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(catalog), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "attached"
    return holder


def create_catalog_and_table_when_told(catalog_dsn: str, data_path: str) -> None:
    """One worker process: once told (a line on stdin, after every worker said it is ready), attach a lake
    that may not exist yet and create a table in it."""
    ducklake = DuckLakeResource(catalog=PostgresCatalogConfig(dsn=catalog_dsn), data_path=data_path)
    print("ready", flush=True)
    sys.stdin.readline()
    ducklake.execute_with_retry("CREATE TABLE IF NOT EXISTS visits (n INTEGER)")
    ducklake.execute_with_retry("INSERT INTO visits VALUES (?)", [os.getpid()])


def test_processes_creating_a_new_lake_and_table_at_once_all_succeed(pg_database, tmp_path):
    data_path = str(tmp_path / "data")
    workers = [run_worker("create", pg_database.dsn(), data_path) for _ in range(4)]
    for worker in workers:  # a barrier: every worker has imported everything and built its resource
        wait_until_ready(worker)
    start_all(workers)
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]

    assert [worker.returncode for worker in workers] == [0, 0, 0, 0], outputs
    settings = LakeSettings.from_strings(f"postgres:{pg_database.dsn()}", data_path)
    with connect_lake(settings) as connection:
        assert connection.execute("SELECT count(DISTINCT n) FROM visits").fetchone() == (4,)
        changes = connection.execute("SELECT changes FROM lake.snapshots() ORDER BY snapshot_id").fetchall()
    assert [change for (change,) in changes[:2]] == [{"schemas_created": ["main"]}, {"tables_created": ["main.visits"]}]
    assert len(changes) == 2 + 4, "one catalog, one table, four inserts"


def wait_until_ready(worker: subprocess.Popen) -> str:
    """Wait for a worker's "ready" line (a barrier instead of a start time on the clock); returns what it
    printed before."""
    assert worker.stdout is not None
    said = []
    for line in iter(worker.stdout.readline, ""):
        if line.strip() == "ready":
            return "".join(said)
        said.append(line)
    raise AssertionError(f"a worker exited before it was ready: {''.join(said)}")


def start_all(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()


def run_worker(mode: str, *arguments: str) -> subprocess.Popen:
    """This module as a separate Python process (see the bottom of the file)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ducklake_assets_tests.test_concurrent_writers", mode, *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).parent.parent,
    )


if __name__ == "__main__":
    mode, *arguments = sys.argv[1:]
    if mode == "create":
        create_catalog_and_table_when_told(*arguments)
    else:
        increment_counter_many_times(*arguments)
