"""Benchmark: one tick of the new-file sensor against a bare listing of the same source.

Fills a source with ``--files`` files (local folder: hard links of one Parquet file, so writing 100,000
takes seconds; S3: moto's server on 127.0.0.1, in a process of its own, with ``--s3-files`` objects), then
each round adds ``--new`` files and times, interleaved on the same state:

* bare listing (the fastest way to learn what is there): locally a recursive ``os.scandir`` with one
  ``stat`` per file; on S3 a paginated ``list_objects_v2`` through the library's own boto3 client (the
  fastest we know); nothing compared, no cursor;
* ours: the pipeline's real sensor (``new_file_sensor``), evaluated through Dagster's
  ``build_sensor_context`` with the previous tick's cursor, in both orders: ``modified`` (any naming: the
  listing, then a comparison with the cursor's time) and ``key`` (names that sort by arrival: locally,
  folders and files that sort before the cursor are not read; on S3 the listing starts after it);
* naive: a sensor whose cursor is the JSON list of every path seen (``pathlib.rglob`` listing, set
  difference), the first recipe most people write.

Prints min and median per way, ours against the bare listing (goal: within 1.5x) and the naive way
against ours. Two local layouts: flat (``src/<n>.parquet``) and one folder per day
(``src/day=N/<n>.parquet``), where ``key`` order skips the old days.

    python benchmarks/sensor.py                           # 20,000 and 100,000 local files, 20,000 on S3
    python benchmarks/sensor.py --files 20000 --s3-files 0
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import dagster as dg
import duckdb

from ducklake_assets.core.sources import FileSource
from ducklake_assets.core.sql import quote_literal
from ducklake_assets.resources import S3Resource
from ducklake_assets.snapshot_assets import catalog_snapshot_key, new_file_sensor

PER_DAY = 1000


def bare_local(root: str) -> int:
    count = 0
    folders = [root]
    while folders:
        with os.scandir(folders.pop()) as listing:
            for entry in listing:
                if entry.is_dir():
                    folders.append(entry.path)
                else:
                    entry.stat()
                    count += 1
    return count


def naive_local(root: str, cursor: str | None) -> tuple[int, str]:
    seen = set(json.loads(cursor)) if cursor else set()
    paths = {str(path) for path in Path(root).rglob("*.parquet")}
    return len(paths - seen), json.dumps(sorted(paths))


def name_of(number: int, partitioned: bool) -> str:
    return f"day={number // PER_DAY:05d}/t.{number:07d}.parquet" if partitioned else f"t.{number:07d}.parquet"


def make_sensor(source: str, order: str) -> Callable[[str | None, dict | None], tuple[int, str]]:
    sensor = new_file_sensor("bench", FileSource(source), order=order)  # type: ignore[arg-type]

    @dg.asset(key=catalog_snapshot_key("bench"))
    def snapshot() -> None: ...

    defs = dg.Definitions(assets=[snapshot], sensors=[sensor])

    def tick(cursor: str | None, resources: dict | None = None) -> tuple[int, str]:
        with dg.build_sensor_context(cursor=cursor, resources=resources, definitions=defs) as context:
            result = sensor.evaluate_tick(context)
        new = sum(int(request.tags["ducklake_assets/new_files"]) for request in result.run_requests)
        return new, result.cursor or cursor or ""

    return tick


def timed(call: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    value = call()
    return time.perf_counter() - started, value


def report(title: str, times: dict[str, list[float]]) -> None:
    bare = statistics.median(times["bare listing"])
    ours = statistics.median(times["ours, modified order"])
    print(f"\n{title}")
    for label, values in times.items():
        median = statistics.median(values)
        print(
            f"  {label:<24} min {min(values) * 1000:8.1f} ms  median {median * 1000:8.1f} ms  "
            f"{median / bare:5.2f}x the bare listing  {median / ours:5.2f}x ours (modified)"
        )


def local_run(work: Path, files: int, new: int, rounds: int, partitioned: bool) -> None:
    root = work / ("days" if partitioned else "flat") / "src"
    root.mkdir(parents=True)
    template = work / "template.parquet"
    if not template.exists():
        duckdb.sql(f"COPY (SELECT range AS id FROM range(10)) TO {quote_literal(str(template))} (FORMAT parquet)")
    for number in range(files):
        path = root / name_of(number, partitioned)
        path.parent.mkdir(exist_ok=True)
        if number % 50_000 == 0:  # a file system allows some 65,000 links to one file
            shutil.copyfile(template, work / f"links-{number}.parquet")
        os.link(work / f"links-{number - number % 50_000}.parquet", path)
    ticks = {order: make_sensor(str(root), order) for order in ("modified", "key")}
    cursors: dict[str, str | None] = {order: tick(None)[1] for order, tick in ticks.items()}
    naive_cursor = naive_local(str(root), None)[1]
    times: dict[str, list[float]] = {
        "bare listing": [],
        "ours, modified order": [],
        "ours, key order": [],
        "naive (every path kept)": [],
    }
    total = files
    for _ in range(rounds):
        time.sleep(0.01)
        for number in range(total, total + new):
            path = root / name_of(number, partitioned)
            path.parent.mkdir(exist_ok=True)
            shutil.copyfile(template, path)
        total += new
        elapsed, count = timed(lambda: bare_local(str(root)))
        assert count == total, (count, total)
        times["bare listing"].append(elapsed)
        for order in ("modified", "key"):
            elapsed, (found, cursors[order]) = timed(lambda order=order: ticks[order](cursors[order]))
            assert found == new, (order, found)
            times[f"ours, {order} order"].append(elapsed)
        elapsed, (found, naive_cursor) = timed(lambda seen=naive_cursor: naive_local(str(root), seen))
        assert found == new
        times["naive (every path kept)"].append(elapsed)
    layout = f"one folder per {PER_DAY:,} files (day=N/)" if partitioned else "flat folder"
    report(f"local disk, {files:,} files, {layout}, {new} new per tick:", times)


def s3_run(files: int, new: int, rounds: int) -> None:
    from register_files import s3_endpoint  # moto in a process of its own, as for the registration figures

    server, settings = s3_endpoint()
    try:
        endpoint = settings.endpoint_url
        options = {"region_name": "us-east-1", "aws_access_key_id": "bench", "aws_secret_access_key": "bench-secret"}
        client = boto3.client("s3", endpoint_url=endpoint, **options)
        # The bare listing goes through the library's own client, the fastest we know (it reads S3's dates
        # with the standard library); the naive sensor through a stock boto3 client, as most people write it.
        fastest = settings.boto3_client()
        client.create_bucket(Bucket="bench")
        body = b"PAR1" + b"\0" * 64

        def put(number: int) -> None:
            client.put_object(Bucket="bench", Key=f"src/{name_of(number, True)}", Body=body)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(put, range(files)))
        resources = {"bench_s3": S3Resource(endpoint_url=endpoint, addressing_style="path", **options)}
        ticks = {order: make_sensor("s3://bench/src", order) for order in ("modified", "key")}
        cursors: dict[str, str | None] = {order: tick(None, resources)[1] for order, tick in ticks.items()}

        def bare() -> int:
            pages = fastest.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="src/")
            return sum(len(page.get("Contents", ())) for page in pages)

        def naive(cursor: str | None) -> tuple[int, str]:
            seen = set(json.loads(cursor)) if cursor else set()
            pages = client.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="src/")
            keys = {item["Key"] for page in pages for item in page.get("Contents", ())}
            return len(keys - seen), json.dumps(sorted(keys))

        naive_cursor = naive(None)[1]
        times: dict[str, list[float]] = {
            "bare listing": [],
            "ours, modified order": [],
            "ours, key order": [],
            "naive (every path kept)": [],
        }
        total = files
        for _ in range(rounds):
            time.sleep(1.1)  # S3 times have one-second resolution
            for number in range(total, total + new):
                put(number)
            total += new
            elapsed, count = timed(bare)
            assert count == total
            times["bare listing"].append(elapsed)
            for order in ("modified", "key"):
                elapsed, (found, cursors[order]) = timed(lambda order=order: ticks[order](cursors[order], resources))
                assert found == new, (order, found)
                times[f"ours, {order} order"].append(elapsed)
            elapsed, (found, naive_cursor) = timed(lambda seen=naive_cursor: naive(seen))
            assert found == new
            times["naive (every path kept)"].append(elapsed)
        report(f"S3 (moto on 127.0.0.1), {files:,} objects in day=N/ folders, {new} new per tick:", times)
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--files", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--s3-files", type=int, default=20_000, help="0 skips S3")
    parser.add_argument("--new", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    print(f"duckdb {duckdb.__version__}, dagster {dg.__version__}; {arguments.rounds} rounds, interleaved")
    for files in arguments.files:
        for partitioned in (False, True):
            with tempfile.TemporaryDirectory(prefix="sensor-bench-") as folder:
                local_run(Path(folder), files, arguments.new, arguments.rounds, partitioned)
    if arguments.s3_files:
        s3_run(arguments.s3_files, arguments.new, arguments.rounds)


if __name__ == "__main__":
    main()
