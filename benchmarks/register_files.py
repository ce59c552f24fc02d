"""Benchmark: registering source Parquet files, the frozen-lake tooling's way against ``register_files``.

Writes ``--files`` small Parquet files spread over ``--tables`` tables (``<table>.<number>.parquet``) and
times, in the same run, on local disk and on an S3 endpoint (a moto server the benchmark starts):

* per-file (baseline): what the frozen-lake tooling's generated script does: ``CREATE TABLE ... AS
  SELECT * FROM read_parquet(first file) WITH NO DATA`` per table, then one autocommitted
  ``CALL ducklake_add_data_files`` per file (one snapshot per file);
* ours: list the source and ``register_files`` (skip what is registered, one snapshot, a glob per table);
* re-run: the same call again over the already registered files (no Parquet is read).

Targets (local): ours >= 1,000 files/s and >= 20x the per-file way; a re-run over 1,000 files < 0.5 s.
The per-file way is slow on S3, so it runs there on ``--s3-baseline-files`` files and its rate is
extrapolated to all files (the output says so).

    python benchmarks/register_files.py                 # 1,000 files over 4 tables
    python benchmarks/register_files.py --files 4030    # the size of the frozen-lake post's lake
"""

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import boto3
import duckdb
from moto.server import ThreadedMotoServer

from ducklake_assets.core.lake import LakeSettings, connect_lake
from ducklake_assets.core.registration import register_files
from ducklake_assets.core.s3 import S3Settings
from ducklake_assets.core.sources import FileSource
from ducklake_assets.core.sql import qualified_name, quote_literal
from ducklake_assets.core.storage import ObjectStore


def write_source_files(folder: Path, files: int, tables: int) -> list[Path]:
    """``files`` small Parquet files, round-robin over ``tables`` tables, each a copy of its table's template."""
    folder.mkdir(parents=True)
    templates = []
    for table in range(tables):
        template = folder / f"template{table}.bin"
        duckdb.sql(
            f"COPY (SELECT range AS id, 'name ' || range AS name, range / 7.0 AS value, {table} AS source "
            f"FROM range(20)) TO {quote_literal(str(template))} (FORMAT parquet)"
        )
        templates.append(template)
    paths = []
    for number in range(files):
        path = folder / f"table{number % tables}.{number:06d}.parquet"
        shutil.copyfile(templates[number % tables], path)
        paths.append(path)
    for template in templates:
        template.unlink()
    return paths


def per_file_way(settings: LakeSettings, uris: list[str]) -> float:
    """The frozen-lake tooling's script: a table per first file, then one autocommitted CALL per file."""
    started = time.perf_counter()
    with connect_lake(settings) as connection:
        created = set()
        for uri in uris:
            table = uri.rsplit("/", 1)[1].split(".", 1)[0]
            if table not in created:
                connection.execute(
                    f"CREATE TABLE {qualified_name(settings.alias, 'main', table)} AS "
                    "SELECT * FROM read_parquet(?) WITH NO DATA",
                    [uri],
                )
                created.add(table)
            connection.execute("CALL ducklake_add_data_files(?, ?, ?)", [settings.alias, table, uri])
    return time.perf_counter() - started


def our_way(settings: LakeSettings, source: FileSource) -> tuple[float, int, int]:
    """List the source and register it; returns seconds, files added and files already registered."""
    started = time.perf_counter()
    files = source.list_files(ObjectStore(settings.s3))
    with connect_lake(settings) as connection:
        result = register_files(connection, settings, files, author="benchmark", message="register_files benchmark")
    return time.perf_counter() - started, len(result.files_added), len(result.already_registered)


def row_count(settings: LakeSettings) -> int:
    with connect_lake(settings) as connection:
        tables = [row[0] for row in connection.execute("SHOW TABLES").fetchall()]
        return sum(
            connection.execute(f"SELECT count(*) FROM {qualified_name(settings.alias, 'main', t)}").fetchone()[0]
            for t in tables
        )


def report(place: str, files: int, baseline: float, baseline_files: int, ours: float, rerun: float) -> None:
    baseline_rate = baseline_files / baseline
    ours_rate = files / ours
    note = f" (measured on {baseline_files} files, rate extrapolated)" if baseline_files != files else ""
    print(f"\n{place}: {files} files")
    print(f"  per-file way   {baseline:8.2f} s  {baseline_rate:9.0f} files/s{note}")
    print(
        f"  ours           {ours:8.2f} s  {ours_rate:9.0f} files/s  {ours_rate / baseline_rate:6.1f}x the per-file way"
    )
    print(f"  re-run         {rerun:8.3f} s  (all {files} files already registered)")


def local_benchmark(work: Path, files: int, tables: int) -> None:
    paths = write_source_files(work / "local" / "space", files, tables)
    uris = sorted(str(path) for path in paths)
    baseline_lake = LakeSettings.from_strings(str(work / "local" / "baseline.ducklake"), str(work / "local" / "bd"))
    baseline = per_file_way(baseline_lake, uris)
    lake = LakeSettings.from_strings(str(work / "local" / "ours.ducklake"), str(work / "local" / "od"))
    source = FileSource(str(work / "local" / "space"))
    ours, added, _ = our_way(lake, source)
    rerun, again, already = our_way(lake, source)
    assert added == files and again == 0 and already == files, (added, again, already)
    assert row_count(lake) == row_count(baseline_lake) == files * 20
    report("local disk", files, baseline, files, ours, rerun)
    ratio = (files / ours) / (files / baseline)
    print(
        f"  targets: >= 1,000 files/s {'met' if files / ours >= 1000 else 'MISSED'}; "
        f">= 20x {'met' if ratio >= 20 else 'MISSED'}; "
        f"re-run < 0.5 s {'met' if rerun < 0.5 else 'MISSED'}"
    )


def s3_benchmark(work: Path, files: int, tables: int, baseline_files: int) -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        settings = S3Settings(
            endpoint_url=f"http://{host}:{port}",
            region_name="us-east-1",
            aws_access_key_id="benchmark",
            aws_secret_access_key="benchmark-secret",
            path_style=True,
        )
        client = boto3.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="benchmark",
            aws_secret_access_key="benchmark-secret",
        )
        client.create_bucket(Bucket="space")
        paths = write_source_files(work / "s3-upload", files, tables)
        started = time.perf_counter()
        for path in paths:
            client.upload_file(str(path), "space", f"space/{path.name}")
        print(f"\n(uploaded {files} files to the moto S3 endpoint in {time.perf_counter() - started:.1f} s)")
        uris = sorted(f"s3://space/space/{path.name}" for path in paths)
        subset = uris[: min(baseline_files, files)]
        baseline_lake = LakeSettings.from_strings(
            str(work / "s3" / "baseline.ducklake"), str(work / "s3" / "bd"), s3=settings
        )
        baseline = per_file_way(baseline_lake, subset)
        lake = LakeSettings.from_strings(str(work / "s3" / "ours.ducklake"), str(work / "s3" / "od"), s3=settings)
        source = FileSource("s3://space/space")
        ours, added, _ = our_way(lake, source)
        rerun, again, already = our_way(lake, source)
        assert added == files and again == 0 and already == files, (added, again, already)
        assert row_count(lake) == files * 20
        report("S3 (moto endpoint)", files, baseline, len(subset), ours, rerun)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--files", type=int, default=1000, help="source files to register (default 1000)")
    parser.add_argument("--tables", type=int, default=4, help="tables the files are spread over (default 4)")
    parser.add_argument(
        "--s3-baseline-files", type=int, default=200, help="files the per-file way registers on S3 (default 200)"
    )
    parser.add_argument("--skip-s3", action="store_true", help="only the local-disk benchmark")
    arguments = parser.parse_args()
    print(f"duckdb {duckdb.__version__}; {arguments.files} files over {arguments.tables} tables")
    with tempfile.TemporaryDirectory(prefix="register-files-benchmark-") as folder:
        work = Path(folder)
        local_benchmark(work, arguments.files, arguments.tables)
        if not arguments.skip_s3:
            s3_benchmark(work, arguments.files, arguments.tables, arguments.s3_baseline_files)


if __name__ == "__main__":
    main()
