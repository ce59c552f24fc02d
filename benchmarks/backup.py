"""Benchmark: full backups against plain file copies, and the catalog copy against ``COPY FROM DATABASE``.

``--part files`` (the default): a lake of ``--data-files`` data files (``--file-kb`` KiB each) is backed
up in full (``create_backup(mode="full")``: the catalog, every data file copied, each verified by size
and MD5/ETag, the backup opened as a DuckLake before it is exposed), to a local folder and to S3 (moto's
server on 127.0.0.1), interleaved with, in the same run:

* fastest plain copy of the same files: a thread pool (as many threads as our copy uses) of
  ``shutil.copyfile`` to the folder, of boto3 ``upload_file`` to S3, no verification, no catalog;
* naive plain copy: the same, one file after the other;
* a second full backup after 10 new data files, which must copy exactly those 10 files.

Goals: the first full backup within 1.2x of the fastest plain copy; the second under 5% of the first.

``--part catalog``: builds one DuckLake per catalog kind (DuckDB file, PostgreSQL) with ``--files`` data
files of a table of ``--columns`` columns (the catalog keeps statistics per file and column), registered
over ``--snapshots`` commits, then times, in the same run:

* bare copy: attach the catalog database read-only and ``COPY FROM DATABASE`` it into a new DuckDB file
  (for PostgreSQL, where that statement fails on the primary-key indexes, one ``CREATE TABLE AS`` per
  catalog table, which is the same copy without indexes);
* backup: ``create_backup`` (consistent copy, manifest, checkpoint, verification by a read-only DuckLake
  attach, checksum, versioned file and ``latest`` exposed), and apart the fixed part of it that the
  verification needs: loading the DuckLake extension into a fresh DuckDB;
* for DuckDB catalogs also the copy a DuckLake user would run from Python: attach the lake, then
  ``COPY FROM DATABASE __ducklake_metadata_lake`` (it loads DuckLake, as the backup's verification does);
* restore: ``restore_backup`` of that backup into a new, empty catalog of the same kind.

The target is a catalog backup (``mode="metadata"``) <= 1.25x the bare copy. PostgreSQL:
``DUCKLAKE_BENCH_PG_DSN`` (a superuser DSN, default ``dbname=postgres host=127.0.0.1 user=postgres``);
the benchmark creates its own databases and drops them afterwards.

    python benchmarks/backup.py                      # full backups: 2,000 data files, local and S3
    python benchmarks/backup.py --part catalog       # 10,000 files, 1,000 snapshots, duckdb + postgres
    python benchmarks/backup.py --part catalog --kinds duckdb --files 2000 --snapshots 200
"""

import argparse
import dataclasses
import logging
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql

from ducklake_assets.core.backup import attach_catalog_database, catalog_extensions, create_backup, ducklake_tables
from ducklake_assets.core.catalog import DuckDBCatalog, PostgresCatalog
from ducklake_assets.core.extensions import load_extensions
from ducklake_assets.core.lake import LakeSettings, connect_lake, metadata_database
from ducklake_assets.core.restore import restore_backup
from ducklake_assets.core.s3 import S3Settings
from ducklake_assets.core.sql import qualified_name, quote_identifier, quote_literal
from ducklake_assets.core.storage import ObjectStore
from ducklake_assets.core.sync import _LOCAL_WORKERS, _REMOTE_WORKERS, transfer_config

DEFAULT_PG_DSN = "dbname=postgres host=127.0.0.1 user=postgres"


_COLUMN_EXPRESSIONS = [
    "'name ' || range",
    "range / 7.0",
    "TIMESTAMP '2026-01-01' + INTERVAL (range) MINUTE",
    "CAST(range % 100 AS INTEGER)",
]


def write_source_files(folder: Path, files: int, columns: int) -> list[str]:
    """``files`` small Parquet files of ``columns`` columns (copies of one file DuckDB writes), absolute paths."""
    folder.mkdir(parents=True)
    template = folder / "template.parquet"
    expressions = ["range AS id"] + [
        f"{_COLUMN_EXPRESSIONS[n % len(_COLUMN_EXPRESSIONS)]} AS {quote_identifier(f'c{n}')}"
        for n in range(columns - 1)
    ]
    duckdb.sql(
        f"COPY (SELECT {', '.join(expressions)} FROM range(20)) TO {quote_literal(str(template))} (FORMAT parquet)"
    )
    paths = []
    for number in range(files):
        path = folder / f"part-{number:06d}.parquet"
        shutil.copyfile(template, path)
        paths.append(str(path))
    template.unlink()
    return paths


def build_lake(settings: LakeSettings, paths: list[str], snapshots: int) -> None:
    """Register ``paths`` into table ``events`` over ``snapshots`` commits."""
    per_commit = max(1, len(paths) // snapshots)
    with connect_lake(settings) as connection:
        connection.execute("CREATE TABLE events AS SELECT * FROM read_parquet(?) LIMIT 0", [paths[0]])
        for start in range(0, len(paths), per_commit):
            connection.execute(
                "CALL ducklake_add_data_files(?, 'events', ?)", [settings.alias, paths[start : start + per_commit]]
            )
        (snapshot_count,) = connection.execute(
            "SELECT count(*) FROM ducklake_snapshots(?)", [settings.alias]
        ).fetchone()
        (file_count,) = connection.execute(
            f"SELECT count(*) FROM {metadata_database(settings.alias)}.ducklake_data_file"
        ).fetchone()
    print(f"  built: {file_count} data files, {snapshot_count} snapshots")


def load_ducklake() -> None:
    """What verifying a backup costs before it reads anything: a fresh DuckDB loading DuckLake."""
    connection = duckdb.connect()
    try:
        load_extensions(connection, ["ducklake"])
    finally:
        connection.close()


def bare_copy(settings: LakeSettings, target: Path) -> None:
    """The documented recipe: attach the catalog database read-only and copy it into a new DuckDB file.

    DuckDB's ``COPY FROM DATABASE`` of a PostgreSQL database fails on the primary-key indexes ("Cannot bind
    index 'ducklake_snapshot', unknown index type"), so for PostgreSQL the bare copy is what that
    statement does minus the indexes: one ``CREATE TABLE ... AS SELECT`` per catalog table.
    """
    connection = duckdb.connect()
    try:
        load_extensions(connection, catalog_extensions(settings.catalog))
        attach_catalog_database(connection, settings.catalog, "source", read_only=True)
        connection.execute(f"ATTACH {quote_literal(str(target))} AS bare_copy")
        if isinstance(settings.catalog, PostgresCatalog):
            for table in ducklake_tables(connection, "source", "public"):
                connection.execute(
                    f"CREATE TABLE {qualified_name('bare_copy', 'main', table)} "
                    f"AS SELECT * FROM {qualified_name('source', 'public', table)}"
                )
        else:
            connection.execute("COPY FROM DATABASE source TO bare_copy")
        connection.execute("DETACH bare_copy")
    finally:
        connection.close()


def copy_through_ducklake(settings: LakeSettings, target: Path) -> None:
    """The copy a DuckLake user runs from Python: attach the lake, COPY FROM DATABASE its catalog database.

    Only for DuckDB catalogs (the PostgreSQL one fails on its primary keys, see :func:`bare_copy`).
    """
    with connect_lake(dataclasses.replace(settings, read_only=True)) as connection:
        connection.execute(f"ATTACH {quote_literal(str(target))} AS bare_copy")
        connection.execute(f"COPY FROM DATABASE {metadata_database(settings.alias)} TO bare_copy")
        connection.execute("DETACH bare_copy")


def timed(repeat: int, run: Callable[[int], None]) -> float:
    """Median wall time of ``repeat`` runs (run gets the attempt number)."""
    times = []
    for attempt in range(repeat):
        started = time.perf_counter()
        run(attempt)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@contextmanager
def postgres_databases(admin_dsn: str, count: int) -> Iterator[list[str]]:
    """``count`` new databases on the server of ``admin_dsn``, dropped afterwards."""
    names = [f"ducklake_bench_{secrets.token_hex(4)}" for _ in range(count)]
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        for name in names:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield names
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            for name in names:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def with_dbname(dsn: str, dbname: str) -> PostgresCatalog:
    admin = PostgresCatalog.from_dsn(dsn)
    params = tuple(sorted({**dict(admin.params), "dbname": dbname}.items()))
    return PostgresCatalog(params=params, password=admin.password)


def run_kind(kind: str, work: Path, paths: list[str], args: argparse.Namespace) -> dict[str, float]:
    store = ObjectStore()
    folder = work / kind
    folder.mkdir()
    pg_dsn = os.environ.get("DUCKLAKE_BENCH_PG_DSN", DEFAULT_PG_DSN)

    def measure(source: LakeSettings, restore_targets: list[LakeSettings]) -> dict[str, float]:
        build_started = time.perf_counter()
        build_lake(source, paths, args.snapshots)
        print(f"  build took {time.perf_counter() - build_started:.1f}s")
        figures = {}
        # Alternate the two contenders so that caches and background load affect both alike.
        bare_times, backup_times = [], []
        for attempt in range(args.repeat):
            started = time.perf_counter()
            bare_copy(source, folder / f"bare-{attempt}.duckdb")
            bare_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            create_backup(source, str(folder / "backups"), mode="metadata", store=store, force=True)
            backup_times.append(time.perf_counter() - started)
        figures["bare COPY FROM DATABASE"] = statistics.median(bare_times)
        figures["create_backup"] = statistics.median(backup_times)
        figures["  of which: load DuckLake"] = timed(args.repeat, lambda attempt: load_ducklake())
        if kind == "duckdb":
            figures["copy via attached DuckLake"] = timed(
                args.repeat, lambda attempt: copy_through_ducklake(source, folder / f"through-{attempt}.duckdb")
            )
        figures["restore_backup (new catalog)"] = timed(
            len(restore_targets),
            lambda attempt: restore_backup(str(folder / "backups"), restore_targets[attempt], store=store),
        )
        return figures

    if kind == "duckdb":
        source = LakeSettings(catalog=DuckDBCatalog(str(folder / "catalog.ducklake")), data_path=str(folder / "data"))
        targets = [LakeSettings(catalog=DuckDBCatalog(str(folder / f"restored-{n}.ducklake"))) for n in range(3)]
        return measure(source, targets)
    with postgres_databases(pg_dsn, 4) as names:
        source = LakeSettings(catalog=with_dbname(pg_dsn, names[0]), data_path=str(folder / "data"))
        targets = [LakeSettings(catalog=with_dbname(pg_dsn, name)) for name in names[1:]]
        return measure(source, targets)


def build_data_lake(folder: Path, data_files: int, file_kb: int) -> tuple[LakeSettings, list[Path]]:
    """A DuckDB-catalog lake whose table ``events`` has ``data_files`` data files of about ``file_kb`` KiB,
    written under its data path as DuckLake writes them (random payload, so compression keeps the size)."""
    settings = LakeSettings(
        catalog=DuckDBCatalog(str(folder / "catalog.ducklake")),
        data_path=str(folder / "data"),
        attach_options={"DATA_INLINING_ROW_LIMIT": 0},
    )
    rows = max(1, file_kb * 1024 // 40)
    with connect_lake(settings) as connection:
        connection.execute("CREATE TABLE events (id BIGINT, payload VARCHAR)")
        connection.execute(
            "CREATE TEMP TABLE template AS SELECT range AS id, md5(random()::VARCHAR) AS payload FROM range(?)",
            [rows],
        )
        add_files(connection, data_files)
    return settings, sorted((folder / "data").rglob("*.parquet"))


def add_files(connection: duckdb.DuckDBPyConnection, count: int) -> None:
    """``count`` inserts, each one new data file."""
    for _ in range(count):
        connection.execute("INSERT INTO events SELECT * FROM template")


def plain_local_copy(files: list[Path], target: Path, threads: int) -> None:
    def copy(path: Path) -> None:
        destination = target / path.name
        shutil.copyfile(path, destination)

    target.mkdir(parents=True)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(copy, files))


def plain_s3_copy(files: list[Path], client, bucket: str, prefix: str, threads: int) -> None:
    config = transfer_config()

    def upload(path: Path) -> None:
        client.upload_file(str(path), bucket, f"{prefix}/{path.name}", Config=config)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(upload, files))


@contextmanager
def moto_bucket() -> Iterator[tuple[S3Settings, str]]:
    """An S3 HTTP endpoint on 127.0.0.1 (moto's server) with one bucket."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = S3Settings(
            endpoint_url=f"http://{host}:{port}",
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench-secret",
            path_style=True,
        )
        s3.boto3_client().create_bucket(Bucket="bench")
        yield s3, "bench"
    finally:
        server.stop()


def run_files(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="ducklake-bench-full-") as scratch, moto_bucket() as (s3, bucket_name):
        work = Path(scratch)
        started = time.perf_counter()
        settings, files = build_data_lake(work / "lake", args.data_files, args.file_kb)
        total = sum(path.stat().st_size for path in files)
        print(f"lake: {len(files)} data files, {total / 1e6:.1f} MB, built in {time.perf_counter() - started:.1f}s")
        client = s3.boto3_client()

        def bucket_uri(key: str) -> str:
            return f"s3://{bucket_name}/{key}"

        times: dict[str, list[float]] = {}

        def clock(name: str, run: Callable[[], object]) -> object:
            began = time.perf_counter()
            value = run()
            times.setdefault(name, []).append(time.perf_counter() - began)
            return value

        def one_round(attempt: int) -> None:
            local, prefix = work / f"round-{attempt}", f"round-{attempt}"
            clock("local: naive copy, one by one", lambda: plain_local_copy(files, local / "naive", 1))
            clock(
                f"local: fastest copy, {_LOCAL_WORKERS} threads",
                lambda: plain_local_copy(files, local / "fast", _LOCAL_WORKERS),
            )
            first = clock("local: full backup (ours)", lambda: create_backup(settings, str(local / "backups")))
            assert len(first.files.copied) == len(files)
            clock(
                "s3: naive boto3 upload, one by one",
                lambda: plain_s3_copy(files, client, bucket_name, f"{prefix}/naive", 1),
            )
            clock(
                f"s3: fastest boto3 upload, {_REMOTE_WORKERS} threads",
                lambda: plain_s3_copy(files, client, bucket_name, f"{prefix}/fast", _REMOTE_WORKERS),
            )
            first = clock(
                "s3: full backup (ours)",
                lambda: create_backup(settings, bucket_uri(f"{prefix}/backups"), store=ObjectStore(s3)),
            )
            assert len(first.files.copied) == len(files)

        for attempt in range(args.repeat):
            one_round(attempt)
        with connect_lake(settings) as connection:
            connection.execute(
                "CREATE TEMP TABLE template AS SELECT range AS id, md5(random()::VARCHAR) AS payload FROM range(?)",
                [max(1, args.file_kb * 1024 // 40)],
            )
            add_files(connection, 10)
        last = f"round-{args.repeat - 1}"
        copied = {
            "local": clock(
                "local: second backup, 10 new files", lambda: create_backup(settings, str(work / last / "backups"))
            ),
            "s3": clock(
                "s3: second backup, 10 new files",
                lambda: create_backup(settings, bucket_uri(f"{last}/backups"), store=ObjectStore(s3)),
            ),
        }
    print()
    print(f"{'step':<42} {'min s':>8} {'median s':>9}")
    for name, values in times.items():
        print(f"{name:<42} {min(values):>8.3f} {statistics.median(values):>9.3f}")
    print()
    for where, fast, naive in (
        ("local", f"local: fastest copy, {_LOCAL_WORKERS} threads", "local: naive copy, one by one"),
        ("s3", f"s3: fastest boto3 upload, {_REMOTE_WORKERS} threads", "s3: naive boto3 upload, one by one"),
    ):
        ours = statistics.median(times[f"{where}: full backup (ours)"])
        print(
            f"{where}: full backup / fastest plain copy {ours / statistics.median(times[fast]):.2f}x "
            f"(goal 1.2x); / naive copy {ours / statistics.median(times[naive]):.2f}x"
        )
        second = times[f"{where}: second backup, 10 new files"][0]
        print(
            f"{where}: second backup copied {len(copied[where].files.copied)} files "
            f"in {second:.3f}s = {100 * second / ours:.1f}% of the first (goal < 5%)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["files", "catalog"], default="files", help="what to measure")
    parser.add_argument("--data-files", type=int, default=2_000, help="files: data files in the lake (default 2000)")
    parser.add_argument("--file-kb", type=int, default=64, help="files: size of each data file in KiB (default 64)")
    parser.add_argument("--files", type=int, default=10_000, help="catalog: data files to register (default 10000)")
    parser.add_argument("--snapshots", type=int, default=1_000, help="commits that register them (default 1000)")
    parser.add_argument("--columns", type=int, default=12, help="columns of the lake's table (default 12)")
    parser.add_argument("--kinds", default="duckdb,postgres", help="catalog kinds, comma separated")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per contender (min and median shown)")
    args = parser.parse_args()
    if args.part == "files":
        run_files(args)
        return
    with tempfile.TemporaryDirectory(prefix="ducklake-bench-backup-") as scratch:
        work = Path(scratch)
        paths = write_source_files(work / "source", args.files, args.columns)
        results = {}
        for kind in args.kinds.split(","):
            print(f"{kind}: {args.files} files of {args.columns} columns over {args.snapshots} snapshots")
            results[kind] = run_kind(kind, work, paths, args)
    print()
    print(f"{'catalog':<10} {'step':<30} {'seconds':>9} {'x bare copy':>12}")
    for kind, figures in results.items():
        bare = figures["bare COPY FROM DATABASE"]
        for step, seconds in figures.items():
            print(f"{kind:<10} {step:<30} {seconds:>9.3f} {seconds / bare:>11.2f}x")
        verdict = "meets" if figures["create_backup"] <= 1.25 * bare else "MISSES"
        print(f"{kind:<10} backup {verdict} the 1.25x target ({figures['create_backup'] / bare:.2f}x)")
        if "copy via attached DuckLake" in figures:
            through = figures["create_backup"] / figures["copy via attached DuckLake"]
            print(f"{kind:<10} backup / copy via attached DuckLake: {through:.2f}x")


if __name__ == "__main__":
    main()
