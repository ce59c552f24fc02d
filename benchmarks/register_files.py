"""Benchmark: registering source Parquet files, against the fastest raw DuckLake way and the naive one.

For each size (``--files``, default 2,000 and 20,000) and layout, flat (``src/tableT.N.parquet``) and one
folder per day (``src/day=NNNNN/tableT.N.parquet``, ``--per-day`` files a day), on local disk and on S3
(moto's server on 127.0.0.1, in a process of its own, sizes ``--s3-files``), times, interleaved in the
same run (``--rounds`` rounds, min and median), each into a fresh lake (DuckDB catalog):

* ours: list the source (``FileSource.list_files``) and ``register_files`` (skip what is registered, one
  snapshot, the fewest globs that name exactly the new files);
* fastest raw DuckLake way, knowing the layout in advance: in one transaction, per table ``CREATE TABLE
  ... AS SELECT * FROM read_parquet(first file) WITH NO DATA`` and one ``CALL ducklake_add_data_files``
  with a glob over the table's files;
* naive: one autocommitted ``CALL ducklake_add_data_files`` per file (the frozen-lake tooling's generated
  script), on ``--naive-files`` files, its rate extrapolated (the output says so);
* ours again over the registered files (a re-run: nothing to add, no Parquet read).

Goal: ours within 1.1x of the raw glob on every layout, size and store.

    python benchmarks/register_files.py                          # 2,000 and 20,000 files local, 2,000 on S3
    python benchmarks/register_files.py --files 2000 --s3-files 2000 20000 --rounds 1
    python benchmarks/register_files.py --files --s3-files 20000 --layouts per-day --rounds 1
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import duckdb

from ducklake_assets.core.lake import LakeSettings, connect_lake
from ducklake_assets.core.registration import register_files
from ducklake_assets.core.s3 import S3Settings
from ducklake_assets.core.sources import FileSource
from ducklake_assets.core.sql import qualified_name, quote_literal
from ducklake_assets.core.storage import Listings, ObjectStore


def relative_name(number: int, tables: int, partitioned: bool, per_day: int) -> str:
    name = f"table{number % tables}.{number:07d}.parquet"
    return f"day={number // per_day:05d}/{name}" if partitioned else name


def write_files(root: Path, files: int, tables: int, partitioned: bool, per_day: int) -> list[str]:
    """Hard links of one small Parquet file per table (so 20,000 files take seconds to write)."""
    templates = []
    root.mkdir(parents=True)
    with duckdb.connect() as connection:
        for table in range(tables):
            template = root.parent / f"{root.name}-template{table}.parquet"
            select = f"SELECT range AS id, 'row ' || range AS name, {table} AS t FROM range(20)"
            connection.execute(f"COPY ({select}) TO {quote_literal(str(template))} (FORMAT parquet)")
            templates.append(template)
    names = []
    for number in range(files):
        name = relative_name(number, tables, partitioned, per_day)
        path = root / name
        path.parent.mkdir(exist_ok=True)
        os.link(templates[number % tables], path)
        names.append(name)
    return names


def ours(settings: LakeSettings, source: str) -> int:
    listings = Listings()  # as the snapshot asset does: what the S3 listing found is not listed again
    files = FileSource(source).list_files(ObjectStore(settings.s3), listings)
    with connect_lake(settings) as connection:
        return len(register_files(connection, settings, files, listings=listings).files_added)


def raw_glob(settings: LakeSettings, source: str, tables: int, partitioned: bool) -> int:
    folder = f"{source}/*" if partitioned else source
    with connect_lake(settings) as connection:
        connection.execute("BEGIN")
        for table in range(tables):
            glob = f"{folder}/table{table}.*.parquet"
            (first,) = connection.execute("SELECT file FROM glob(?) LIMIT 1", [glob]).fetchone()
            name = qualified_name(settings.alias, f"table{table}")
            connection.execute(
                f"CREATE TABLE {name} AS SELECT * FROM read_parquet(?, hive_partitioning => false) WITH NO DATA",
                [first],
            )
            connection.execute("CALL ducklake_add_data_files(?, ?, ?)", [settings.alias, f"table{table}", glob])
        connection.execute("COMMIT")
    return tables


def naive(settings: LakeSettings, uris: list[str]) -> None:
    with connect_lake(settings) as connection:
        created = set()
        for uri in uris:
            table = uri.rsplit("/", 1)[1].split(".")[0]
            if table not in created:
                name = qualified_name(settings.alias, table)
                connection.execute(
                    f"CREATE TABLE {name} AS SELECT * FROM read_parquet(?, hive_partitioning => false) WITH NO DATA",
                    [uri],
                )
                created.add(table)
            connection.execute("CALL ducklake_add_data_files(?, ?, ?)", [settings.alias, table, uri])


def rows(settings: LakeSettings, tables: int) -> int:
    with connect_lake(settings) as connection:
        return sum(
            connection.execute(f"SELECT sum(id + 1) FROM {qualified_name(settings.alias, f'table{t}')}").fetchone()[0]
            for t in range(tables)
        )


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def compare(
    title: str, work: Path, source: str, names: list[str], arguments: argparse.Namespace, s3: S3Settings | None
) -> None:
    partitioned = "/" in names[0]
    files, tables = len(names), arguments.tables
    counter = iter(range(10_000))

    def lake() -> LakeSettings:
        number = next(counter)
        return LakeSettings.from_strings(str(work / f"lake{number}.ducklake"), str(work / f"data{number}"), s3=s3)

    times: dict[str, list[float]] = {"ours": [], "raw glob per table": [], "ours, re-run": []}
    checked = None
    for attempt in range(arguments.rounds):
        order = ["ours", "raw glob per table"] if attempt % 2 == 0 else ["raw glob per table", "ours"]
        for label in order:
            settings = lake()
            if label == "ours":
                times[label].append(timed(lambda settings=settings: ours(settings, source)))
                times["ours, re-run"].append(timed(lambda settings=settings: ours(settings, source)))
                checked = checked or settings
            else:
                times[label].append(timed(lambda settings=settings: raw_glob(settings, source, tables, partitioned)))
    assert checked is not None and rows(checked, tables) == files * sum(range(1, 21))
    subset = [f"{source}/{name}" for name in names[: arguments.naive_files]]
    naive_all = timed(lambda: naive(lake(), subset)) / len(subset) * files
    fastest = statistics.median(times["raw glob per table"])
    mine = statistics.median(times["ours"])
    print(f"\n{title}: {files:,} files over {tables} tables")
    for label, values in times.items():
        median = statistics.median(values)
        print(
            f"  {label:<20} min {min(values):7.2f} s  median {median:7.2f} s  {files / median:9.0f} files/s  "
            f"{median / fastest:5.2f}x the raw glob"
        )
    print(
        f"  naive, CALL per file {naive_all:7.2f} s (extrapolated from {len(subset)} files)  "
        f"{naive_all / mine:5.1f}x slower than ours"
    )


_MOTO = """
import logging, threading
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.WARNING)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
threading.Event().wait()
"""


def s3_endpoint() -> tuple[subprocess.Popen, S3Settings]:
    """moto's S3 server on 127.0.0.1 in a process of its own, as a remote store would be: in this process its
    threads would share the interpreter, and its garbage collections over every stored object, with the code
    being timed (ours allocates more Python objects than the raw way, so it paid more of them)."""
    server = subprocess.Popen([sys.executable, "-c", _MOTO], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    port = int(server.stdout.readline())
    settings = S3Settings(
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="benchmark",
        aws_secret_access_key="benchmark-secret",
        path_style=True,
    )
    return server, settings


def upload(settings: S3Settings, root: Path, names: list[str], bucket: str) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="benchmark",
        aws_secret_access_key="benchmark-secret",
    )
    client.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda name: client.upload_file(str(root / name), bucket, f"src/{name}"), names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--files", type=int, nargs="*", default=[2000, 20000], help="local sizes")
    parser.add_argument("--s3-files", type=int, nargs="*", default=[2000], help="S3 sizes (none: skip S3)")
    parser.add_argument("--tables", type=int, default=4)
    parser.add_argument("--per-day", type=int, default=200, help="files per day folder in the partitioned layout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--naive-files", type=int, default=200)
    parser.add_argument("--layouts", nargs="*", choices=["flat", "per-day"], default=["flat", "per-day"])
    arguments = parser.parse_args()
    layouts = [layout == "per-day" for layout in arguments.layouts]
    print(f"duckdb {duckdb.__version__}; {arguments.rounds} rounds, interleaved; {os.cpu_count()} cores")
    # Each extension's signature is checked once per process: do it before the clock runs for anyone.
    from ducklake_assets.core.lake import new_connection

    new_connection(extensions=["ducklake", "httpfs", "postgres_scanner"]).close()
    with tempfile.TemporaryDirectory(prefix="register-files-") as folder:
        work = Path(folder)
        for files in arguments.files:
            for partitioned in layouts:
                layout = "partitioned (day=N/)" if partitioned else "flat"
                root = work / f"{files}-{layout[:4]}" / "src"
                names = write_files(root, files, arguments.tables, partitioned, arguments.per_day)
                compare(f"local disk, {layout}", root.parent, str(root), names, arguments, None)
                shutil.rmtree(root.parent)
        if arguments.s3_files:
            server, s3 = s3_endpoint()
            try:
                for files in arguments.s3_files:
                    for partitioned in layouts:
                        layout = "partitioned (day=N/)" if partitioned else "flat"
                        root = work / f"s3-{files}-{layout[:4]}" / "src"
                        names = write_files(root, files, arguments.tables, partitioned, arguments.per_day)
                        bucket = f"b{files}{'p' if partitioned else 'f'}"
                        upload(s3, root, names, bucket)
                        compare(
                            f"S3 (moto on 127.0.0.1), {layout}", root.parent, f"s3://{bucket}/src", names, arguments, s3
                        )
                        shutil.rmtree(root.parent)
            finally:
                server.terminate()
                server.wait()


if __name__ == "__main__":
    main()
