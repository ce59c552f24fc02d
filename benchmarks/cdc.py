"""Benchmark: trigger-based change data capture from PostgreSQL into DuckLake.

On a database of its own, a source table of ``--table-rows`` rows is captured (``setup_capture``; its
rows are snapshotted and loaded into the lake once, untimed), then ``--rounds`` rounds each write
``--changes`` row changes (half inserts, 30 % updates, 20 % deletes, ``--rows-per-statement`` rows per
statement, each statement its own transaction) and move them into a DuckLake (DuckDB-file catalog).
Every round measures, interleaved (the order of each pair alternates from round to round):

* capture overhead: the same write workload on a table without triggers (plain) and on the captured
  table; the ratio is captured write time / plain write time;
* getting the change log into the lake, ours: ``transfer_batch`` (swap the change table for an empty
  one, copy the batch into ``lake.cdc.changes`` and list it in ``lake.cdc.batches`` in one DuckLake
  transaction, drop the batch; a crash at any point loses and duplicates nothing), its swap, copy and
  drop steps timed apart;
* the same, fastest raw alternative: an identical copy of the round's change table (made untimed) moved
  by hand through DuckDB's postgres scanner: read the highest ``change_seq``, one
  ``INSERT INTO lake.raw.changes SELECT ... FROM pg.raw_audit.changes WHERE change_seq <= ?`` and one
  ``DELETE`` of those rows in PostgreSQL. It is what a competent user writes; it is not crash-safe (a
  crash between the lake commit and the delete copies the batch twice);
* the current state in the lake, ours: ``transfer_batch`` + ``apply_to_mirrors`` (the mirror
  ``lake.public.captured``), checked against the source at the end;
* the same, naive: re-copying the whole source table into the lake every batch
  (``CREATE OR REPLACE TABLE lake.naive.captured AS SELECT * FROM pg.public.captured``). It keeps no
  change history, and its cost grows with the table, not with the changes: try ``--table-rows``.

Printed: min and median of every step over the rounds, throughput in changes/s, and the ratios
captured / plain (capture overhead), ours / fastest raw (change log) and naive / ours (current state),
each at the minimum and at the median.

PostgreSQL: ``DUCKLAKE_BENCH_PG_DSN`` (a user that may create databases, default
``dbname=postgres host=127.0.0.1 user=postgres``); the benchmark creates its own database and drops it.

    python benchmarks/cdc.py                     # 1,000,000-row table, 3 rounds of 100,000 changes
    python benchmarks/cdc.py --changes 20000 --rows-per-statement 1
    python benchmarks/cdc.py --table-rows 5000000 --rounds 5
"""

import argparse
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql

from ducklake_assets.core.catalog import PostgresCatalog
from ducklake_assets.core.cdc import CaptureSettings, apply_to_mirrors, setup_capture, transfer_batch
from ducklake_assets.core.extensions import load_extension
from ducklake_assets.core.lake import LakeSettings, connect_lake
from ducklake_assets.core.sql import quote_literal

DEFAULT_PG_DSN = "dbname=postgres host=127.0.0.1 user=postgres"
TABLE_DEFINITION = "CREATE TABLE {} (id bigint PRIMARY KEY, name text, amount numeric(14, 2), at timestamptz)"


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


def write_workload(connection: psycopg.Connection, table: str, changes: int, per_statement: int, base: int) -> float:
    """Insert rows ``base + 1 ...``, update 30 % and delete 20 % of them (``changes`` row changes in all);
    return the seconds taken."""
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
            connection.execute(statement.format(target), [base + low, base + min(low + per_statement - 1, last)])
    return time.perf_counter() - started


def raw_transfer(pg: psycopg.Connection, lake: duckdb.DuckDBPyConnection) -> int:
    """The hand-written move of a change table into the lake: one INSERT ... SELECT, one DELETE."""
    (last,) = pg.execute("SELECT max(change_seq) FROM raw_audit.changes").fetchone()
    if last is None:
        return 0
    (copied,) = lake.execute(
        "INSERT INTO lake.raw.changes SELECT change_id, change_seq, captured_at, operation, table_schema, "
        "table_name, row_data::JSON FROM pg.raw_audit.changes WHERE change_seq <= ?",
        [last],
    ).fetchone()
    pg.execute("DELETE FROM raw_audit.changes WHERE change_seq <= %s", [last])
    return copied


def naive_recopy(lake: duckdb.DuckDBPyConnection) -> None:
    lake.execute("CREATE OR REPLACE TABLE lake.naive.captured AS SELECT * FROM pg.public.captured")


def stats(values: list[float]) -> tuple[float, float]:
    return min(values), statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=100_000, help="row changes written per table and round")
    parser.add_argument("--rows-per-statement", type=int, default=1_000, help="rows each statement changes")
    parser.add_argument("--table-rows", type=int, default=1_000_000, help="rows of the source table before round 1")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (min and median shown)")
    args = parser.parse_args()
    dsn = os.environ.get("DUCKLAKE_BENCH_PG_DSN", DEFAULT_PG_DSN)
    times: dict[str, list[float]] = {}

    def clock(name: str, action: Callable[[], object]) -> object:
        started = time.perf_counter()
        value = action()
        times.setdefault(name, []).append(time.perf_counter() - started)
        return value

    with bench_database(dsn) as source, tempfile.TemporaryDirectory() as folder:
        lake = LakeSettings.from_strings(str(Path(folder) / "lake.ducklake"), str(Path(folder) / "data"))
        settings = CaptureSettings(source=source, tables=("captured",))
        with (
            psycopg.connect(source.conninfo(), password=source.password, autocommit=True) as pg,
            connect_lake(lake) as connection,
        ):
            started = time.perf_counter()
            for table in ("warmup", "plain", "captured"):
                pg.execute(sql.SQL(TABLE_DEFINITION).format(sql.Identifier(table)))
            for table in ("plain", "captured"):
                pg.execute(
                    sql.SQL(
                        "INSERT INTO {} SELECT g, 'name ' || g, g * 1.5, now() FROM generate_series(1, %s::bigint) AS g"
                    ).format(sql.Identifier(table)),
                    [args.table_rows],
                )
            pg.execute("VACUUM ANALYZE")
            setup_capture(settings)
            pg.execute("CREATE SCHEMA raw_audit")
            pg.execute("CREATE UNLOGGED TABLE raw_audit.changes (LIKE audit.changes)")
            initial = transfer_batch(settings, connection)
            apply_to_mirrors(settings, connection)
            load_extension(connection, "postgres_scanner")
            connection.execute(f"ATTACH {quote_literal(source.conninfo())} AS pg (TYPE postgres, READ_ONLY)")
            connection.execute("CREATE SCHEMA lake.raw")
            connection.execute(
                "CREATE TABLE lake.raw.changes (change_id UUID, change_seq BIGINT, captured_at TIMESTAMPTZ, "
                "operation VARCHAR, table_schema VARCHAR, table_name VARCHAR, row_data JSON)"
            )
            connection.execute("CREATE SCHEMA lake.naive")
            naive_recopy(connection)
            write_workload(pg, "warmup", min(args.changes, 10_000), args.rows_per_statement, 0)
            print(
                f"PostgreSQL CDC into DuckLake: source table of {args.table_rows:,} rows (snapshot of "
                f"{initial.changes:,} changes loaded in setup), {args.rounds} rounds of {args.changes:,} changes, "
                f"{args.rows_per_statement:,} rows per statement; setup {time.perf_counter() - started:.1f} s"
            )

            moved = 0
            for round_number in range(args.rounds):
                base = args.table_rows + round_number * args.changes
                writes = [("plain", "writes, plain table"), ("captured", "writes, captured table")]
                for table, name in writes if round_number % 2 == 0 else writes[::-1]:
                    times.setdefault(name, []).append(
                        write_workload(pg, table, args.changes, args.rows_per_statement, base)
                    )
                times.setdefault("capture overhead (captured / plain)", []).append(
                    times["writes, captured table"][-1] / times["writes, plain table"][-1]
                )
                pg.execute("INSERT INTO raw_audit.changes SELECT * FROM audit.changes")
                steps: dict[str, float] = {}

                def mark(step: str, batch_id: str, steps: dict[str, float] = steps) -> None:
                    steps[step] = time.perf_counter()

                def ours(steps: dict[str, float] = steps, mark: Callable[[str, str], None] = mark) -> int:
                    steps["started"] = time.perf_counter()
                    return transfer_batch(settings, connection, checkpoint=mark).changes

                def fastest() -> int:
                    return raw_transfer(pg, connection)

                transfers = [
                    ("change log: transfer_batch (ours)", ours),
                    ("change log: INSERT...SELECT (raw)", fastest),
                ]
                counts = {}
                for name, action in transfers if round_number % 2 == 0 else transfers[::-1]:
                    counts[name] = clock(name, action)
                assert counts["change log: transfer_batch (ours)"] == counts["change log: INSERT...SELECT (raw)"]
                moved += counts["change log: transfer_batch (ours)"]
                times.setdefault("  swap of the change table", []).append(steps["swapped"] - steps["started"])
                times.setdefault("  copy into the lake", []).append(steps["copied"] - steps["swapped"])
                times.setdefault("  drop of the batch table", []).append(steps["dropped"] - steps["copied"])
                clock("mirror: apply_to_mirrors (ours)", lambda: apply_to_mirrors(settings, connection))
                times.setdefault("state: transfer + mirror (ours)", []).append(
                    times["change log: transfer_batch (ours)"][-1] + times["mirror: apply_to_mirrors (ours)"][-1]
                )
                clock("state: re-copy whole table (naive)", lambda: naive_recopy(connection))

            (differences,) = connection.execute(
                "SELECT count(*) FROM ("
                "(SELECT * FROM lake.public.captured EXCEPT ALL SELECT * FROM pg.public.captured) UNION ALL "
                "(SELECT * FROM pg.public.captured EXCEPT ALL SELECT * FROM lake.public.captured))"
            ).fetchone()
            (mirror_rows,) = connection.execute("SELECT count(*) FROM lake.public.captured").fetchone()
            (source_rows,) = pg.execute("SELECT count(*) FROM captured").fetchone()
            (raw_rows,) = connection.execute("SELECT count(*) FROM lake.raw.changes").fetchone()
            connection.execute("DETACH pg")

    print()
    print(f"{'step':<42} {'min s':>8} {'median s':>9} {'changes/s at median':>20}")
    for name, values in times.items():
        low, mid = stats(values)
        if name.startswith("capture overhead"):
            print(f"{name:<42} {low:>7.2f}x {mid:>8.2f}x")
        elif name.startswith(" "):
            print(f"{name:<42} {low:>8.3f} {mid:>9.3f}")
        else:
            print(f"{name:<42} {low:>8.3f} {mid:>9.3f} {args.changes / mid:>20,.0f}")

    def ratio(label: str, top: str, bottom: str) -> None:
        low = min(times[top]) / min(times[bottom])
        mid = statistics.median(times[top]) / statistics.median(times[bottom])
        print(f"{label:<42} {low:>7.2f}x at the min, {mid:.2f}x at the median")

    print()
    low, mid = stats(times["capture overhead (captured / plain)"])
    print(f"{'capture overhead, captured / plain writes':<42} {low:>7.2f}x at the min, {mid:.2f}x at the median")
    ratio("change log, ours / fastest raw", "change log: transfer_batch (ours)", "change log: INSERT...SELECT (raw)")
    ratio("current state, naive / ours", "state: re-copy whole table (naive)", "state: transfer + mirror (ours)")
    print(
        f"changes moved {moved:,} (raw alternative {raw_rows:,}); mirror rows {mirror_rows:,}, source rows "
        f"{source_rows:,}, rows that differ {differences}"
    )
    assert differences == 0 and mirror_rows == source_rows and raw_rows == moved


if __name__ == "__main__":
    main()
