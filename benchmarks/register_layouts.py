"""Benchmark: registration on a flat and a partitioned layout, against the fastest raw DuckLake way.

Writes ``--files`` small Parquet files over ``--tables`` tables twice, flat (``src/<table>.<n>.parquet``)
and partitioned by day (``src/day=<n>/<table>.<n>.parquet``), and times, interleaved in the same run
(``--rounds`` rounds, min and median), each into a fresh local lake:

* ours: list the source and ``register_files`` (one snapshot, the fewest globs that name exactly the
  new files);
* fastest raw way: per table ``CREATE TABLE ... AS SELECT * FROM read_parquet(first) WITH NO DATA`` and
  one ``CALL ducklake_add_data_files`` with a glob over the table's files (knowing the layout in advance);
* naive: one ``CALL ducklake_add_data_files`` per file (the frozen-lake tooling's generated script), on
  ``--naive-files`` files, its rate extrapolated to all files (the output says so).

    python benchmarks/register_layouts.py --files 2000
"""

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from ducklake_assets.core.lake import LakeSettings, connect_lake
from ducklake_assets.core.registration import register_files
from ducklake_assets.core.sources import FileSource
from ducklake_assets.core.sql import qualified_name, quote_literal
from ducklake_assets.core.storage import ObjectStore


def write_files(root: Path, files: int, tables: int, partitioned: bool) -> None:
    templates = []
    root.mkdir(parents=True, exist_ok=True)
    with duckdb.connect() as connection:
        for table in range(tables):
            template = root.parent / f"template{table}.parquet"
            select = f"SELECT range AS id, 'row ' || range AS name, {table} AS t FROM range(20)"
            connection.execute(f"COPY ({select}) TO {quote_literal(str(template))} (FORMAT parquet)")
            templates.append(template)
    for number in range(files):
        table = number % tables
        folder = root / f"day={number // tables:05d}" if partitioned else root
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(templates[table], folder / f"table{table}.{number}.parquet")


def fresh_lake(work: Path, name: str) -> LakeSettings:
    return LakeSettings.from_strings(str(work / f"{name}.ducklake"), str(work / f"{name}_data"))


def ours(settings: LakeSettings, root: Path) -> None:
    source = FileSource(str(root))
    with connect_lake(settings) as connection:
        register_files(connection, settings, source.list_files(ObjectStore()))


def raw_glob(settings: LakeSettings, root: Path, tables: int, partitioned: bool) -> None:
    folder = f"{root}/*" if partitioned else str(root)
    with connect_lake(settings) as connection:
        connection.execute("BEGIN")
        for table in range(tables):
            glob = f"{folder}/table{table}.*.parquet"
            first = sorted(root.rglob(f"table{table}.*.parquet"))[0]
            name = qualified_name(settings.alias, f"table{table}")
            connection.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet(?) WITH NO DATA", [str(first)])
            connection.execute("CALL ducklake_add_data_files(?, ?, ?)", [settings.alias, f"table{table}", glob])
        connection.execute("COMMIT")


def naive(settings: LakeSettings, root: Path, tables: int, limit: int) -> int:
    paths = sorted(root.rglob("*.parquet"))[:limit]
    with connect_lake(settings) as connection:
        created = set()
        for path in paths:
            table = path.name.split(".")[0]
            if table not in created:
                name = qualified_name(settings.alias, table)
                connection.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet(?) WITH NO DATA", [str(path)])
                created.add(table)
            connection.execute("CALL ducklake_add_data_files(?, ?, ?)", [settings.alias, table, str(path)])
    return len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--tables", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--naive-files", type=int, default=200)
    arguments = parser.parse_args()
    print(f"duckdb {duckdb.__version__}; {arguments.files} files over {arguments.tables} tables, local disk")
    with tempfile.TemporaryDirectory(prefix="register-layouts-") as folder:
        work = Path(folder)
        for partitioned in (False, True):
            layout = "partitioned (day=N/)" if partitioned else "flat"
            root = work / ("partitioned" if partitioned else "flat") / "src"
            write_files(root, arguments.files, arguments.tables, partitioned)
            times: dict[str, list[float]] = {"ours": [], "raw glob per table": []}
            for attempt in range(arguments.rounds):
                for label in times:
                    settings = fresh_lake(work, f"{layout[:4]}-{label[:3]}-{attempt}")
                    started = time.perf_counter()
                    if label == "ours":
                        ours(settings, root)
                    else:
                        raw_glob(settings, root, arguments.tables, partitioned)
                    times[label].append(time.perf_counter() - started)
            started = time.perf_counter()
            done = naive(fresh_lake(work, f"{layout[:4]}-naive"), root, arguments.tables, arguments.naive_files)
            naive_all = (time.perf_counter() - started) / done * arguments.files
            fastest = statistics.median(times["raw glob per table"])
            print(f"\n{layout}:")
            for label, values in times.items():
                median = statistics.median(values)
                print(
                    f"  {label:<22} min {min(values):6.2f} s  median {median:6.2f} s  "
                    f"{median / fastest:5.2f}x the fastest raw way  {naive_all / median:6.1f}x faster than naive"
                )
            print(f"  naive, one CALL per file: {naive_all:6.2f} s (extrapolated from {done} files)")


if __name__ == "__main__":
    main()
