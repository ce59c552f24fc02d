"""Benchmark: full backups against plain file copies, and the catalog copy against ``COPY FROM DATABASE``.

Every contender runs ``--repeat`` times, interleaved with the others (their order rotates every round);
printed are the minimum and the median of each, and the ratios ours / fastest raw alternative and
naive / ours, at the minimum and at the median (a ratio below 1 means that alternative was faster).

``--part files`` (the default): a lake of ``--data-files`` data files (``--file-kb`` KiB each) is backed
up in full (``create_backup(mode="full")``: the catalog, every data file copied, each verified by size
and MD5/ETag, the backup opened as a DuckLake before it is exposed), to a local folder and to S3 (moto's
server on 127.0.0.1, which is slower than any real S3 and bounds all three S3 contenders alike),
against, in the same run:

* fastest plain copy of the same files: a thread pool (as many threads as our copy uses) of
  ``shutil.copyfile`` to the folder, of boto3 ``upload_file`` to S3, no verification, no catalog;
* naive plain copy: the same, one file after the other;
* then, every round, 10 new data files and a second backup into the same backup folder, which must copy
  exactly those 10 files, against the fastest raw alternative (a thread-pool copy of just those 10 files,
  known in advance) and the naive one (copying everything again one by one: the round's naive copy).

Goals: the first full backup within 1.2x of the fastest plain copy; the second under 5% of the first.

``--part catalog``: builds one DuckLake per catalog kind (DuckDB file, PostgreSQL) with ``--files`` data
files of a table of ``--columns`` columns (the catalog keeps statistics per file and column), registered
over ``--snapshots`` commits, then times, in the same run:

* bare copy, the fastest raw alternative for DuckDB catalogs and the naive one for PostgreSQL: attach the
  catalog database read-only and ``COPY FROM DATABASE`` it into a new DuckDB file (for PostgreSQL, where
  that statement fails on the primary-key indexes, one ``CREATE TABLE AS`` per catalog table, which is
  the same copy without indexes);
* ours: ``create_backup`` (consistent copy, manifest, checkpoint, verification by a read-only DuckLake
  attach, checksum, versioned file and ``latest`` exposed), and apart the fixed part of it that the
  verification needs: loading the DuckLake extension into a fresh DuckDB;
* naive, for DuckDB catalogs: the copy a DuckLake user would run from Python: attach the lake, then
  ``COPY FROM DATABASE __ducklake_metadata_lake`` (it loads DuckLake, as the backup's verification
  does);
* fastest raw, for PostgreSQL catalogs: ``pg_dump -Fc`` of the catalog database (when ``pg_dump`` is on
  ``PATH``), what a PostgreSQL user reaches for, though its dump restores only into PostgreSQL;
* restore: ``restore_backup`` of that backup into a new, empty catalog of the same kind (shown alone).

The target is a catalog backup (``mode="metadata"``) <= 1.25x the bare copy. PostgreSQL:
``DUCKLAKE_BENCH_PG_DSN`` (a superuser DSN, default ``dbname=postgres host=127.0.0.1 user=postgres``);
the benchmark creates its own databases and drops them afterwards.

    python benchmarks/backup.py                      # full backups: 500 data files, local and S3
    python benchmarks/backup.py --data-files 2000    # the larger lake (about 6 minutes, mostly moto)
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
import subprocess
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


def pg_dump(catalog: PostgresCatalog, target: Path) -> None:
    """What a PostgreSQL user runs by hand: ``pg_dump -Fc`` of the catalog database."""
    subprocess.run(
        ["pg_dump", "--format=custom", f"--file={target}", f"--dbname={catalog.conninfo()}"],
        check=True,
        capture_output=True,
        env={**os.environ, **({"PGPASSWORD": catalog.password} if catalog.password else {})},
    )


def interleaved(repeat: int, contenders: dict[str, Callable[[int], object]]) -> dict[str, list[float]]:
    """Wall times of ``repeat`` rounds of every contender (each gets the round number), the order rotating."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for attempt in range(repeat):
        shift = attempt % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            contenders[name](attempt)
            times[name].append(time.perf_counter() - started)
    return times


def ratios(top: list[float], bottom: list[float]) -> str:
    low = min(top) / min(bottom)
    mid = statistics.median(top) / statistics.median(bottom)
    return f"{low:.2f}x at the min, {mid:.2f}x at the median"


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


BARE = "bare copy into a DuckDB file"
OURS = "create_backup (ours)"
LOAD = "  of which: load DuckLake"
THROUGH = "copy via attached DuckLake (naive)"
PG_DUMP = "pg_dump -Fc (fastest, PostgreSQL only)"
RESTORE = "restore_backup (new catalog)"


def run_kind(kind: str, work: Path, paths: list[str], args: argparse.Namespace) -> dict[str, list[float]]:
    store = ObjectStore()
    folder = work / kind
    folder.mkdir()
    pg_dsn = os.environ.get("DUCKLAKE_BENCH_PG_DSN", DEFAULT_PG_DSN)

    def measure(source: LakeSettings, restore_targets: list[LakeSettings]) -> dict[str, list[float]]:
        build_started = time.perf_counter()
        build_lake(source, paths, args.snapshots)
        print(f"  build took {time.perf_counter() - build_started:.1f}s")
        contenders: dict[str, Callable[[int], object]] = {
            BARE: lambda attempt: bare_copy(source, folder / f"bare-{attempt}.duckdb"),
            OURS: lambda attempt: create_backup(
                source, str(folder / "backups"), mode="metadata", store=store, force=True
            ),
            LOAD: lambda attempt: load_ducklake(),
        }
        if kind == "duckdb":
            contenders[THROUGH] = lambda attempt: copy_through_ducklake(source, folder / f"through-{attempt}.duckdb")
        elif shutil.which("pg_dump"):
            contenders[PG_DUMP] = lambda attempt: pg_dump(source.catalog, folder / f"dump-{attempt}.pgdump")
        else:
            print("  pg_dump is not on PATH: the naive PostgreSQL alternative is skipped")
        figures = interleaved(args.repeat, contenders)
        figures[RESTORE] = interleaved(
            len(restore_targets),
            {RESTORE: lambda attempt: restore_backup(str(folder / "backups"), restore_targets[attempt], store=store)},
        )[RESTORE]
        return figures

    if kind == "duckdb":
        source = LakeSettings(catalog=DuckDBCatalog(str(folder / "catalog.ducklake")), data_path=str(folder / "data"))
        targets = [
            LakeSettings(catalog=DuckDBCatalog(str(folder / f"restored-{n}.ducklake"))) for n in range(args.repeat)
        ]
        return measure(source, targets)
    with postgres_databases(pg_dsn, 1 + args.repeat) as names:
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
        print(f"      {args.repeat} rounds; copy threads: {_LOCAL_WORKERS} local, {_REMOTE_WORKERS} to S3")
        client = s3.boto3_client()

        def bucket_uri(key: str) -> str:
            return f"s3://{bucket_name}/{key}"

        def lake_files() -> list[Path]:
            return sorted((work / "lake" / "data").rglob("*.parquet"))

        times: dict[str, list[float]] = {}

        def clock(name: str, run: Callable[[], object]) -> object:
            began = time.perf_counter()
            value = run()
            times.setdefault(name, []).append(time.perf_counter() - began)
            return value

        def rotated(attempt: int, steps: list[tuple[str, Callable[[], object]]]) -> dict[str, object]:
            shift = attempt % len(steps)
            return {name: clock(name, run) for name, run in steps[shift:] + steps[:shift]}

        copied: dict[str, list[int]] = {"local": [], "s3": []}

        def one_round(attempt: int) -> None:
            files = lake_files()
            local, prefix = work / f"round-{attempt}", f"round-{attempt}"
            local_backups, s3_backups = str(local / "backups"), bucket_uri(f"{prefix}/backups")
            done = rotated(
                attempt,
                [
                    ("local: naive copy, one by one", lambda: plain_local_copy(files, local / "naive", 1)),
                    (
                        "local: fastest copy, threads",
                        lambda: plain_local_copy(files, local / "fast", _LOCAL_WORKERS),
                    ),
                    ("local: full backup (ours)", lambda: create_backup(settings, local_backups)),
                ],
            )
            assert len(done["local: full backup (ours)"].files.copied) == len(files)
            done = rotated(
                attempt,
                [
                    (
                        "s3: naive boto3 upload, one by one",
                        lambda: plain_s3_copy(files, client, bucket_name, f"{prefix}/naive", 1),
                    ),
                    (
                        "s3: fastest boto3 upload, threads",
                        lambda: plain_s3_copy(files, client, bucket_name, f"{prefix}/fast", _REMOTE_WORKERS),
                    ),
                    (
                        "s3: full backup (ours)",
                        lambda: create_backup(settings, s3_backups, store=ObjectStore(s3)),
                    ),
                ],
            )
            assert len(done["s3: full backup (ours)"].files.copied) == len(files)
            with connect_lake(settings) as connection:
                connection.execute(
                    "CREATE TEMP TABLE template AS SELECT range AS id, md5(random()::VARCHAR) AS payload FROM range(?)",
                    [max(1, args.file_kb * 1024 // 40)],
                )
                add_files(connection, 10)
            new = sorted(set(lake_files()) - set(files))
            done = rotated(
                attempt,
                [
                    (
                        "local: fastest copy of the 10 new files",
                        lambda: plain_local_copy(new, local / "fast-new", _LOCAL_WORKERS),
                    ),
                    ("local: second backup, 10 new (ours)", lambda: create_backup(settings, local_backups)),
                ],
            )
            copied["local"].append(len(done["local: second backup, 10 new (ours)"].files.copied))
            done = rotated(
                attempt,
                [
                    (
                        "s3: fastest upload of the 10 new files",
                        lambda: plain_s3_copy(new, client, bucket_name, f"{prefix}/fast-new", _REMOTE_WORKERS),
                    ),
                    (
                        "s3: second backup, 10 new (ours)",
                        lambda: create_backup(settings, s3_backups, store=ObjectStore(s3)),
                    ),
                ],
            )
            copied["s3"].append(len(done["s3: second backup, 10 new (ours)"].files.copied))

        for attempt in range(args.repeat):
            one_round(attempt)
    print()
    print(f"{'step':<42} {'min s':>8} {'median s':>9}")
    for name, values in times.items():
        print(f"{name:<42} {min(values):>8.3f} {statistics.median(values):>9.3f}")
    print()
    for where, fast, naive in (
        ("local", "local: fastest copy, threads", "local: naive copy, one by one"),
        ("s3", "s3: fastest boto3 upload, threads", "s3: naive boto3 upload, one by one"),
    ):
        ours = times[f"{where}: full backup (ours)"]
        print(f"{where}: full backup (ours) / fastest plain copy   {ratios(ours, times[fast])} (goal 1.2x)")
        print(f"{where}: naive copy / full backup (ours)           {ratios(times[naive], ours)}")
        second = times[f"{where}: second backup, 10 new (ours)"]
        fast_new = (
            "local: fastest copy of the 10 new files"
            if where == "local"
            else ("s3: fastest upload of the 10 new files")
        )
        print(f"{where}: second backup (ours) / fastest copy of the 10 new files  {ratios(second, times[fast_new])}")
        print(f"{where}: naive copy of everything again / second backup (ours)   {ratios(times[naive], second)}")
        print(
            f"{where}: second backup copied {sorted(set(copied[where]))} files; its median "
            f"{statistics.median(second):.3f}s = {100 * statistics.median(second) / statistics.median(ours):.1f}% "
            "of the first's (goal < 5%)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["files", "catalog"], default="files", help="what to measure")
    parser.add_argument("--data-files", type=int, default=500, help="files: data files in the lake (default 500)")
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
    print(f"{'catalog':<10} {'step':<38} {'min s':>8} {'median s':>9} {'x bare (median)':>16}")
    for kind, figures in results.items():
        bare = statistics.median(figures[BARE])
        for step, seconds in figures.items():
            print(
                f"{kind:<10} {step:<38} {min(seconds):>8.3f} {statistics.median(seconds):>9.3f} "
                f"{statistics.median(seconds) / bare:>15.2f}x"
            )
        print(f"{kind:<10} ours / bare copy: {ratios(figures[OURS], figures[BARE])}")
        verdict = "meets" if statistics.median(figures[OURS]) <= 1.25 * bare else "MISSES"
        print(f"{kind:<10} backup {verdict} the 1.25x target at the median")
        if PG_DUMP in figures:
            print(f"{kind:<10} ours / pg_dump -Fc (fastest raw): {ratios(figures[OURS], figures[PG_DUMP])}")
            print(f"{kind:<10} bare copy (naive) / ours: {ratios(figures[BARE], figures[OURS])}")
        if THROUGH in figures:
            print(f"{kind:<10} copy via attached DuckLake (naive) / ours: {ratios(figures[THROUGH], figures[OURS])}")


if __name__ == "__main__":
    main()
