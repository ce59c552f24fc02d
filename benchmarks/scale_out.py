"""Benchmark: registration scaled out over concurrent partition runs on one PostgreSQL catalog, and 100,000 files.

Part 1, throughput. ``--files`` small Parquet files over ``--tables`` tables in ``--partitions`` day
folders (``src/day=N/tableT.K.parquet``). The pipeline is built with
``partitions=SourcePartitions(folder="day={partition_key}")``; 1, 2 and 4 worker processes (``--workers``)
each take partitions from a queue and run them as real Dagster runs (``dg.materialize`` with a
``partition_key``), all into one fresh PostgreSQL-catalog lake. Workers start and import first; the clock
starts when they are all ready. In the same run, into fresh PostgreSQL catalogs too:

* fastest raw DuckLake way: one process, one transaction, per table ``CREATE TABLE ... WITH NO DATA`` and
  one ``CALL ducklake_add_data_files`` with a glob over every day folder (the layout known in advance);
* ours without partitions: one ``register_files`` call over the whole source, in one process;
* naive: one ``CALL ducklake_add_data_files`` per file (the frozen-lake tooling's script), on
  ``--naive-files`` files, its rate extrapolated (the output says so).

Part 2, size. ``--big-files`` files (default 100,000) registered in one call (``register_files``, DuckDB
catalog), against the raw glob per table, each in a process of its own whose peak memory (max RSS) is
reported; and the same files as ``--big-partitions`` partition runs one after the other, whose largest
peak shows what one run needs when the work is split.

PostgreSQL: ``DUCKLAKE_BENCH_PG_DSN`` (a user that may create databases, default
``dbname=postgres host=127.0.0.1 user=postgres``); the benchmark creates its databases and drops them.

    python benchmarks/scale_out.py                                  # 8,000 files, 16 partitions; 100,000 files
    python benchmarks/scale_out.py --files 2000 --big-files 0
"""

import argparse
import multiprocessing
import os
import resource
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql

TABLES = int(os.environ.get("SCALE_OUT_TABLES", "4"))
PG_DSN = os.environ.get("DUCKLAKE_BENCH_PG_DSN", "dbname=postgres host=127.0.0.1 user=postgres")


def write_files(root: Path, files: int, tables: int, partitions: int) -> None:
    templates = []
    with duckdb.connect() as connection:
        for table in range(tables):
            template = root.parent / f"template{table}.parquet"
            connection.execute(
                f"COPY (SELECT range AS id, 'row ' || range AS name, {table} AS t FROM range(20)) TO '{template}'"
            )
            templates.append(template)
    for number in range(files):
        table = number % tables
        folder = root / f"day={number % partitions:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        os.link(templates[table], folder / f"table{table}.{number:07d}.parquet")


def create_database() -> str:
    name = f"scale_{secrets.token_hex(4)}"
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = dict(item.split("=", 1) for item in PG_DSN.split())
    parts["dbname"] = name
    return " ".join(f"{key}={value}" for key, value in parts.items())


def drop_database(dsn: str) -> None:
    name = dict(item.split("=", 1) for item in dsn.split())["dbname"]
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def pipeline(source: str, catalog: str, data: str):
    from ducklake_assets import SourceOptions, SourcePartitions, build_ducklake_pipeline

    return build_ducklake_pipeline(
        "bench",
        SourceOptions(uri=source, partitions=SourcePartitions(folder="day={partition_key}")),
        catalog,
        data,
        tables=[f"table{table}" for table in range(TABLES)],
    )


def worker(source: str, catalog: str, data: str, keys, ready, results) -> None:
    import dagster as dg

    defs = pipeline(source, catalog, data)
    registration = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.partitions_def is not None]
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("bench_partitions", [f"{n:04d}" for n in range(10_000)])
        ready.wait()
        added = 0
        while True:
            try:
                key = keys.get_nowait()
            except Exception:
                break
            result = dg.materialize(
                list(defs.assets),
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                resources=defs.resources,
                instance=instance,
                partition_key=key,
                selection=[k for a in registration for k in a.keys],
            )
            for event in result.get_asset_materialization_events():
                if event.asset_key.path[-1] == "catalog_snapshot":
                    added += event.materialization.metadata["files_added"].value
        results.put(added)


def partition_runs(work: Path, source: Path, partitions: int, workers: int) -> tuple[float, int]:
    dsn = create_database()
    try:
        context = multiprocessing.get_context("spawn")
        keys = context.Queue()
        for number in range(partitions):
            keys.put(f"{number:04d}")
        ready = context.Barrier(workers + 1)
        results = context.Queue()
        data = work / f"data-{secrets.token_hex(3)}"
        processes = [
            context.Process(target=worker, args=(str(source), f"postgres:{dsn}", str(data), keys, ready, results))
            for _ in range(workers)
        ]
        for process in processes:
            process.start()
        ready.wait()
        started = time.perf_counter()
        added = sum(results.get() for _ in processes)
        elapsed = time.perf_counter() - started
        for process in processes:
            process.join()
        return elapsed, added
    finally:
        drop_database(dsn)


def raw_glob(catalog: str, data: str, source: Path, tables: int) -> float:
    """The fastest raw way of ``register_files.py`` (one glob per table over the day folders), timed."""
    from register_files import raw_glob as raw_glob_per_table

    from ducklake_assets.core.lake import LakeSettings

    started = time.perf_counter()
    raw_glob_per_table(LakeSettings.from_strings(catalog, data), str(source), tables, partitioned=True)
    return time.perf_counter() - started


def naive(catalog: str, data: str, source: Path, limit: int) -> tuple[float, int]:
    """The naive way of ``register_files.py`` (one CALL per file) on the first ``limit`` files, timed."""
    from register_files import naive as call_per_file

    from ducklake_assets.core.lake import LakeSettings

    paths = [str(path) for path in sorted(source.rglob("*.parquet"))[:limit]]
    started = time.perf_counter()
    call_per_file(LakeSettings.from_strings(catalog, data), paths)
    return time.perf_counter() - started, len(paths)


def throughput(work: Path, arguments: argparse.Namespace) -> None:
    source = work / "src"
    source.mkdir(parents=True)
    write_files(source, arguments.files, arguments.tables, arguments.partitions)
    print(
        f"\nPart 1: {arguments.files:,} files over {arguments.tables} tables in {arguments.partitions} day folders, "
        f"PostgreSQL catalog, {os.cpu_count()} cores"
    )
    raw_times: list[float] = []
    single: list[float] = []
    runs: dict[int, list[float]] = {workers: [] for workers in arguments.workers}
    for _ in range(arguments.rounds):
        for way, times in ((raw_glob, raw_times), (ours_one_call, single)):
            dsn = create_database()
            try:
                data = str(work / f"data-{secrets.token_hex(3)}")
                extra = (arguments.tables,) if way is raw_glob else ()
                times.append(way(f"postgres:{dsn}", data, source if extra else str(source), *extra))
            finally:
                drop_database(dsn)
        for workers in arguments.workers:
            elapsed, added = partition_runs(work, source, arguments.partitions, workers)
            assert added == arguments.files, (added, arguments.files)
            runs[workers].append(elapsed)
    dsn = create_database()
    try:
        naive_time, naive_done = naive(f"postgres:{dsn}", str(work / "naive"), source, arguments.naive_files)
    finally:
        drop_database(dsn)
    naive_all = naive_time / naive_done * arguments.files
    fastest = statistics.median(raw_times)
    one = statistics.median(runs[arguments.workers[0]])
    print(
        f"  {'raw glob per table, 1 process':<34} min {min(raw_times):7.2f} s  median {fastest:7.2f} s  "
        f"{arguments.files / fastest:8.0f} files/s"
    )
    median = statistics.median(single)
    print(
        f"  {'ours, one unpartitioned call':<34} min {min(single):7.2f} s  median {median:7.2f} s  "
        f"{arguments.files / median:8.0f} files/s  {median / fastest:5.2f}x the raw glob"
    )
    for workers, values in runs.items():
        median = statistics.median(values)
        print(
            f"  {f'ours, {workers} concurrent partition runs':<34} min {min(values):7.2f} s  median {median:7.2f} s  "
            f"{arguments.files / median:8.0f} files/s  {median / fastest:5.2f}x the raw glob  "
            f"{one / median:4.2f}x the speed of {arguments.workers[0]}  {naive_all / median:6.1f}x faster than naive"
        )
    print(f"  naive, one CALL per file: {naive_all:7.1f} s (extrapolated from {naive_done} files)")


def measured(target, *args) -> tuple[float, float]:
    """Run ``target(*args)`` in a fresh process; returns (seconds it reported, peak RSS in MB)."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_measure_child, args=(target, args, results))
    process.start()
    seconds, peak_kb = results.get()
    process.join()
    return seconds, peak_kb / 1024


def _measure_child(target, args, results) -> None:
    seconds = target(*args)
    results.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def ours_one_call(catalog: str, data: str, source: str) -> float:
    from ducklake_assets.core.lake import LakeSettings, connect_lake
    from ducklake_assets.core.registration import register_files
    from ducklake_assets.core.sources import FileSource
    from ducklake_assets.core.storage import ObjectStore

    settings = LakeSettings.from_strings(catalog, data)
    started = time.perf_counter()
    files = FileSource(source).list_files(ObjectStore())
    with connect_lake(settings) as connection:
        result = register_files(connection, settings, files)
    assert len(result.files_added) == len(files)
    return time.perf_counter() - started


def ours_partition(catalog: str, data: str, source: str, key: str) -> float:
    from ducklake_assets.core.lake import LakeSettings, connect_lake
    from ducklake_assets.core.registration import register_files
    from ducklake_assets.core.sources import FileSource, PartitionFolders
    from ducklake_assets.core.storage import ObjectStore

    settings = LakeSettings.from_strings(catalog, data)
    started = time.perf_counter()
    part = PartitionFolders("day={partition_key}").source(FileSource(source), key)
    with connect_lake(settings) as connection:
        register_files(connection, settings, part.list_files(ObjectStore()), claims=[key])
    return time.perf_counter() - started


def size(work: Path, arguments: argparse.Namespace) -> None:
    source = work / "big" / "src"
    source.mkdir(parents=True)
    write_files(source, arguments.big_files, arguments.tables, arguments.big_partitions)
    files = arguments.big_files
    print(f"\nPart 2: {files:,} files over {arguments.tables} tables, DuckDB catalog, each way in its own process")
    raw_seconds, raw_mb = measured(
        raw_glob, str(work / "big" / "raw.ducklake"), str(work / "big" / "rd"), source, arguments.tables
    )
    ours_seconds, ours_mb = measured(
        ours_one_call, str(work / "big" / "ours.ducklake"), str(work / "big" / "od"), str(source)
    )
    part_times, part_peaks = [], []
    for number in range(arguments.big_partitions):
        seconds, peak = measured(
            ours_partition, str(work / "big" / "parts.ducklake"), str(work / "big" / "pd"), str(source), f"{number:04d}"
        )
        part_times.append(seconds)
        part_peaks.append(peak)
    print(
        f"  {'raw glob per table':<36} {raw_seconds:7.1f} s  peak {raw_mb:7.0f} MB  "
        f"({raw_mb * 1024 / files:5.1f} KB/file)"
    )
    print(
        f"  {'ours, one register_files call':<36} {ours_seconds:7.1f} s  peak {ours_mb:7.0f} MB  "
        f"({ours_mb * 1024 / files:5.1f} KB/file)  {ours_seconds / raw_seconds:5.2f}x the raw time, "
        f"{ours_mb / raw_mb:4.2f}x its memory"
    )
    print(
        f"  {f'ours, {arguments.big_partitions} partition runs in turn':<36} {sum(part_times):7.1f} s  "
        f"largest peak {max(part_peaks):7.0f} MB per run  (median run {statistics.median(part_times):.1f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--files", type=int, default=8000)
    parser.add_argument("--tables", type=int, default=4)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--naive-files", type=int, default=200)
    parser.add_argument("--big-files", type=int, default=100_000, help="0 skips part 2")
    parser.add_argument("--big-partitions", type=int, default=10)
    arguments = parser.parse_args()
    os.environ["SCALE_OUT_TABLES"] = str(arguments.tables)  # read by the spawned workers
    print(f"duckdb {duckdb.__version__}")
    # Each extension's signature is checked once per process: do it before the clock runs for anyone.
    from ducklake_assets.core.lake import new_connection

    new_connection(extensions=["ducklake", "httpfs", "postgres_scanner"]).close()
    with tempfile.TemporaryDirectory(prefix="scale-out-") as folder:
        work = Path(folder)
        if arguments.files:
            throughput(work, arguments)
        if arguments.big_files:
            size(work, arguments)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
