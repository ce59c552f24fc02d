"""Benchmark: trigger-based change data capture from PostgreSQL into DuckLake.

In one run, on a database of its own:

* capture overhead: the same write workload (``--changes`` changes: half inserts, 30 % updates, 20 %
  deletes, ``--rows-per-statement`` rows per statement, each statement its own transaction) on a table
  without triggers (the baseline) and on a captured table;
* transfer: ``transfer_batch`` moving all captured changes into a DuckLake (DuckDB-file catalog), with the
  swap, copy and drop steps timed apart;
* mirror: ``apply_to_mirrors`` applying them to the current-state mirror, checked against the source.

PostgreSQL: ``DUCKLAKE_BENCH_PG_DSN`` (a user that may create databases, default
``dbname=postgres host=127.0.0.1 user=postgres``); the benchmark creates its own database and drops it.

    python benchmarks/cdc.py                     # 100,000 changes
    python benchmarks/cdc.py --changes 20000 --rows-per-statement 1
"""

import argparse
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from ducklake_assets.core.catalog import PostgresCatalog
from ducklake_assets.core.cdc import CaptureSettings, apply_to_mirrors, setup_capture, transfer_batch
from ducklake_assets.core.lake import LakeSettings, connect_lake

DEFAULT_PG_DSN = "dbname=postgres host=127.0.0.1 user=postgres"


@contextmanager
def bench_database(admin_dsn: str) -> Iterator[PostgresCatalog]:
    """A fresh database on the benchmark server, dropped afterwards."""
    name = f"ducklake_cdc_bench_{secrets.token_hex(4)}"
    admin = PostgresCatalog.from_dsn(admin_dsn)
    with psycopg.connect(admin.conninfo(), password=admin.password, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        params = tuple(sorted({**dict(admin.params), "dbname": name}.items()))
        yield PostgresCatalog(params=params, password=admin.password)
    finally:
        with psycopg.connect(admin.conninfo(), password=admin.password, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def write_workload(connection: psycopg.Connection, table: str, changes: int, per_statement: int) -> float:
    """Insert, update and delete rows of ``table`` (``changes`` row changes in all); return the seconds taken."""
    inserts, updates = changes // 2, changes * 3 // 10
    deletes = changes - inserts - updates
    target = sql.Identifier(table)
    statements = [
        (
            sql.SQL("INSERT INTO {} SELECT g, 'name ' || g, g * 1.5, now() FROM generate_series(%s::bigint, %s) AS g"),
            1,
            inserts,
        ),
        (sql.SQL("UPDATE {} SET amount = amount + 1, name = name || '!' WHERE id BETWEEN %s AND %s"), 1, updates),
        (sql.SQL("DELETE FROM {} WHERE id BETWEEN %s AND %s"), updates + 1, updates + deletes),
    ]
    started = time.perf_counter()
    for statement, first, last in statements:
        for low in range(first, last + 1, per_statement):
            connection.execute(statement.format(target), [low, min(low + per_statement - 1, last)])
    return time.perf_counter() - started


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>12,.0f} changes/s  ({seconds:7.2f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=100_000, help="row changes written per table")
    parser.add_argument("--rows-per-statement", type=int, default=1_000, help="rows each statement changes")
    args = parser.parse_args()
    dsn = os.environ.get("DUCKLAKE_BENCH_PG_DSN", DEFAULT_PG_DSN)

    with bench_database(dsn) as source, tempfile.TemporaryDirectory() as folder:
        with psycopg.connect(source.conninfo(), password=source.password, autocommit=True) as connection:
            for table in ("warmup", "plain", "captured"):
                connection.execute(
                    sql.SQL(
                        "CREATE TABLE {} (id bigint PRIMARY KEY, name text, amount numeric(14, 2), at timestamptz)"
                    ).format(sql.Identifier(table))
                )
            settings = CaptureSettings(source=source, tables=("captured",))
            setup_capture(settings)
            write_workload(connection, "warmup", min(args.changes, 10_000), args.rows_per_statement)
            plain = write_workload(connection, "plain", args.changes, args.rows_per_statement)
            captured = write_workload(connection, "captured", args.changes, args.rows_per_statement)

        lake = LakeSettings.from_strings(str(Path(folder) / "lake.ducklake"), str(Path(folder) / "data"))
        steps: dict[str, float] = {}

        def timed(step: str, batch_id: str) -> None:
            steps[step] = time.perf_counter()

        with connect_lake(lake) as connection:
            steps["started"] = time.perf_counter()
            transfer = transfer_batch(settings, connection, checkpoint=timed)
            transferred = time.perf_counter() - steps["started"]
            started = time.perf_counter()
            mirrors = apply_to_mirrors(settings, connection)
            mirrored = time.perf_counter() - started
            (mirror_rows,) = connection.execute("SELECT count(*) FROM lake.public.captured").fetchone()

    moved = transfer.changes
    print(f"PostgreSQL CDC into DuckLake: {args.changes:,} changes, {args.rows_per_statement:,} rows per statement")
    print(f"  writes without triggers (baseline) {rate(args.changes, plain)}")
    print(f"  writes with capture triggers       {rate(args.changes, captured)}")
    print(f"  capture overhead                   {captured / plain:>12.2f} x the baseline write time")
    print(f"  transfer (swap, copy, drop)        {rate(moved, transferred)}")
    print(f"    swap of the change table         {steps['swapped'] - steps['started']:7.2f} s")
    print(f"    copy into the lake               {steps['copied'] - steps['swapped']:7.2f} s")
    print(f"    drop of the batch table          {steps['dropped'] - steps['copied']:7.2f} s")
    print(f"  mirror apply                       {rate(moved, mirrored)}")
    print(f"  transfer vs baseline writes        {(moved / transferred) / (args.changes / plain):>12.2f} x")
    print(f"  changes moved {moved:,}; mirror rows {mirror_rows:,} (source rows {mirrors.mirrors[0].rows:,})")


if __name__ == "__main__":
    main()
