"""Benchmark: static backup (``create_backup``) against a bare ``COPY FROM DATABASE`` of the same catalog.

Builds one DuckLake per catalog kind (DuckDB file, PostgreSQL) with ``--files`` data files of a table of
``--columns`` columns (the catalog keeps statistics per file and column), registered over ``--snapshots``
commits, then times, in the same run:

* bare copy: attach the catalog database read-only and ``COPY FROM DATABASE`` it into a new DuckDB file
  (for PostgreSQL, where that statement fails on the primary-key indexes, one ``CREATE TABLE AS`` per
  catalog table, which is the same copy without indexes);
* backup: ``create_backup`` (consistent copy, manifest, checkpoint, verification by a read-only DuckLake
  attach, checksum, versioned file and ``latest`` exposed), and apart the fixed part of it that the
  verification needs: loading the DuckLake extension into a fresh DuckDB;
* for DuckDB catalogs also the copy a DuckLake user would run from Python: attach the lake, then
  ``COPY FROM DATABASE __ducklake_metadata_lake`` (it loads DuckLake, as the backup's verification does);
* restore: ``restore_backup`` of that backup into a new, empty catalog of the same kind.

The target is backup <= 1.25x the bare copy. PostgreSQL: ``DUCKLAKE_BENCH_PG_DSN`` (a superuser DSN,
default ``dbname=postgres host=127.0.0.1 user=postgres``); the benchmark creates its own databases and
drops them afterwards.

    python benchmarks/backup.py                      # 10,000 files, 1,000 snapshots, duckdb + postgres
    python benchmarks/backup.py --kinds duckdb --files 2000 --snapshots 200
"""

import argparse
import dataclasses
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
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
from ducklake_assets.core.sql import qualified_name, quote_identifier, quote_literal
from ducklake_assets.core.storage import ObjectStore

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
            create_backup(source, str(folder / "backups"), store=store)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000, help="data files to register (default 10000)")
    parser.add_argument("--snapshots", type=int, default=1_000, help="commits that register them (default 1000)")
    parser.add_argument("--columns", type=int, default=12, help="columns of the lake's table (default 12)")
    parser.add_argument("--kinds", default="duckdb,postgres", help="catalog kinds, comma separated")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per contender (median is shown)")
    args = parser.parse_args()
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
