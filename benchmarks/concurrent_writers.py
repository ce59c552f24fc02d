"""Benchmark: 100 single-row insert tasks spread over 3 worker processes, into one lake.

A published figure for this scenario (an orchestration tool's DuckLake support, "Insert 100 rows across 3
workers") is 28 s for a PostgreSQL-catalog DuckLake with pooled connections and 44 s, with "Conflicting
lock" errors, for plain DuckDB files. The target here is under 5 s, zero errors and every row present.
In one run:

* PostgreSQL catalog: each worker attaches the lake once and keeps the connection; every task is one
  ``INSERT`` (one DuckLake commit) through ``execute_with_retry``, so conflicts are retried;
* DuckDB-file catalog with retry: one process may hold the catalog, so every task attaches, inserts and
  detaches, attaching again while another worker holds it (``connect_lake`` with a retry policy);
* DuckDB-file catalog without retry: the same, failing on the first "Conflicting lock" (the baseline the
  published 44 s comes with).

Reported per scenario: wall time (workers started to last task done), the insert phase (first task start
to last task end), median and slowest task, conflicts retried, tasks failed and rows present. Workers are
forked, so their start-up does not include importing Python packages again.

PostgreSQL: ``DUCKLAKE_BENCH_PG_DSN`` (a user that may create databases, default
``dbname=postgres host=127.0.0.1 user=postgres``); the benchmark creates its own database and drops it.

    python benchmarks/concurrent_writers.py
    python benchmarks/concurrent_writers.py --tasks 300 --workers 6 --inlining-row-limit 0
"""

import argparse
import logging
import multiprocessing
import os
import re
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from ducklake_assets.core.catalog import PostgresCatalog
from ducklake_assets.core.lake import LakeSettings, connect_lake
from ducklake_assets.core.retry import RetryPolicy, execute_with_retry

DEFAULT_PG_DSN = "dbname=postgres host=127.0.0.1 user=postgres"
PUBLISHED_SECONDS = {"postgres": 28.0, "duckdb": 44.0}
TARGET_SECONDS = 5.0


@dataclass(frozen=True)
class Scenario:
    name: str
    settings: LakeSettings
    pooled: bool
    retry: RetryPolicy


@dataclass(frozen=True)
class TaskResult:
    started: float
    finished: float
    retries: int
    error: str | None


class _CountingLog:
    """Counts the retries ``retry_on_conflict`` announces in this worker."""

    def __init__(self) -> None:
        self.warnings = 0

    def warning(self, message: str) -> None:
        self.warnings += 1


_worker: dict[str, object] = {}


def _start_worker(scenario: Scenario) -> None:
    logging.disable(logging.CRITICAL)
    stack = ExitStack()
    log = _CountingLog()
    _worker.update(scenario=scenario, log=log, stack=stack)
    if scenario.pooled:
        _worker["connection"] = stack.enter_context(connect_lake(scenario.settings, retry=scenario.retry, log=log))


def _insert(task: int) -> TaskResult:
    scenario: Scenario = _worker["scenario"]
    log: _CountingLog = _worker["log"]
    before = log.warnings
    started = time.time()
    try:
        with ExitStack() as stack:
            connection = _worker.get("connection") or stack.enter_context(
                connect_lake(scenario.settings, retry=scenario.retry, log=log)
            )
            execute_with_retry(
                connection,
                "INSERT INTO inserts VALUES (?, ?, now())",
                [task, os.getpid()],
                policy=scenario.retry,
                log=log,
            )
        error = None
    except Exception as failure:
        text = " ".join(str(failure).split())
        conflict = re.search(r"Conflicting lock is held in \S+ \(PID \d+\)|Transaction conflict - [^.]*", text)
        error = f"{type(failure).__name__}: {conflict.group(0) if conflict else text[:160]}"
    return TaskResult(started, time.time(), log.warnings - before, error)


def run_scenario(scenario: Scenario, tasks: int, workers: int) -> dict[str, object]:
    with connect_lake(scenario.settings) as connection:
        connection.execute("CREATE OR REPLACE TABLE inserts (task INTEGER, worker INTEGER, inserted_at TIMESTAMPTZ)")
    context = multiprocessing.get_context("fork")
    began = time.time()
    with context.Pool(workers, initializer=_start_worker, initargs=(scenario,)) as pool:
        results = pool.map(_insert, range(tasks), chunksize=1)
    wall = time.time() - began
    with connect_lake(scenario.settings) as connection:
        rows, distinct = connection.execute("SELECT count(*), count(DISTINCT task) FROM inserts").fetchone()
    errors = [result.error for result in results if result.error]
    return {
        "wall": wall,
        "inserts": max(r.finished for r in results) - min(r.started for r in results),
        "median_task": statistics.median(r.finished - r.started for r in results),
        "slowest_task": max(r.finished - r.started for r in results),
        "retries": sum(r.retries for r in results),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "rows": rows,
        "distinct": distinct,
    }


@contextmanager
def throwaway_database(admin_dsn: str) -> Iterator[PostgresCatalog]:
    name = f"ducklake_bench_writers_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin_catalog = PostgresCatalog.from_dsn(admin_dsn)
    params = tuple((key, value) for key, value in admin_catalog.params if key != "dbname") + (("dbname", name),)
    try:
        yield PostgresCatalog(params=params, password=admin_catalog.password)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument(
        "--inlining-row-limit",
        type=int,
        default=None,
        help="DuckLake DATA_INLINING_ROW_LIMIT (default: DuckLake's, 10, so single rows are inlined in the "
        "catalog; 0 writes one Parquet file per insert)",
    )
    args = parser.parse_args()
    options = {} if args.inlining_row_limit is None else {"DATA_INLINING_ROW_LIMIT": args.inlining_row_limit}
    retry = RetryPolicy(max_attempts=50, base_delay_seconds=0.02, max_delay_seconds=0.5)
    dsn = os.environ.get("DUCKLAKE_BENCH_PG_DSN", DEFAULT_PG_DSN)
    with tempfile.TemporaryDirectory(prefix="ducklake-bench-writers-") as folder, throwaway_database(dsn) as pg:
        root = Path(folder)
        duckdb_settings = LakeSettings.from_strings(
            str(root / "duckdb" / "catalog.ducklake"), str(root / "duckdb" / "data"), attach_options=options
        )
        scenarios = [
            Scenario(
                "postgres catalog, pooled, retry",
                LakeSettings(catalog=pg, data_path=str(root / "pg" / "data"), attach_options=options),
                pooled=True,
                retry=retry,
            ),
            Scenario("duckdb-file catalog, retry", duckdb_settings, pooled=False, retry=retry),
            Scenario("duckdb-file catalog, no retry", duckdb_settings, pooled=False, retry=RetryPolicy(max_attempts=1)),
        ]
        print(
            f"{args.tasks} single-row insert tasks over {args.workers} worker processes; "
            f"inlining row limit {args.inlining_row_limit if options else 'default'}"
        )
        columns = ("wall s", "inserts s", "median ms", "max ms", "retries", "errors", "rows")
        print(f"{'scenario':34} " + " ".join(f"{column:>9}" for column in columns))
        measured = {}
        for scenario in scenarios:
            figures = run_scenario(scenario, args.tasks, args.workers)
            measured[scenario.name] = figures
            print(
                f"{scenario.name:34} {figures['wall']:9.2f} {figures['inserts']:9.2f} "
                f"{figures['median_task'] * 1000:9.1f} {figures['slowest_task'] * 1000:9.1f} "
                f"{figures['retries']:9d} {figures['errors']:9d} "
                f"{figures['rows']:9d}"
            )
            if figures["first_error"]:
                print(f"{'':34} first error: {figures['first_error']}")
        postgres = measured["postgres catalog, pooled, retry"]
        duckdb_file = measured["duckdb-file catalog, retry"]
        print()
        print(f"postgres catalog vs published 28 s: {PUBLISHED_SECONDS['postgres'] / postgres['wall']:.1f}x faster")
        print(f"duckdb-file catalog vs published 44 s: {PUBLISHED_SECONDS['duckdb'] / duckdb_file['wall']:.1f}x faster")
        print(
            f"postgres catalog vs duckdb-file catalog (this run): {duckdb_file['wall'] / postgres['wall']:.1f}x faster"
        )
        for name in ("postgres catalog, pooled, retry", "duckdb-file catalog, retry"):
            figures = measured[name]
            ok = figures["wall"] < TARGET_SECONDS and not figures["errors"] and figures["distinct"] == args.tasks
            target = f"< {TARGET_SECONDS:.0f} s, 0 errors, {args.tasks} rows"
            print(f"target ({target}) for {name}: {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
