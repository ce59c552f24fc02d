"""Benchmark: publishing a frozen lake (``publish_frozen_lake``) against a bare copy of the catalog file.

Builds a files-only DuckLake (a DuckDB-file catalog referencing ``--files`` Parquet files by absolute path,
registered over ``--snapshots`` commits), then times, in the same run:

* bare copy: copying the catalog file into the publish folder, which is all the hand-made practice does
  (``aws s3 cp lake.ducklake s3://...``) and proves nothing about the copy;
* publish: ``publish_frozen_lake`` (private copy, checkpoint, absolute references, format check, stamp,
  revision, verification as a stranger, atomic replacement, pruning), with and without opening every
  data file's footer (``probe_files``);
* stranger: ``verify_as_stranger`` alone, i.e. what each of the asset checks costs.

    python benchmarks/publish.py                       # 2,000 files, 200 snapshots
    python benchmarks/publish.py --files 500 --snapshots 50 --repeat 5
"""

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from ducklake_assets.core.extensions import load_extensions
from ducklake_assets.core.publish import publish_frozen_lake, verify_as_stranger
from ducklake_assets.core.sql import quote_literal


def build_lake(folder: Path, files: int, snapshots: int) -> Path:
    """A files-only lake: ``files`` Parquet files of 100 rows, registered in ``snapshots`` commits."""
    archive = folder / "archive"
    archive.mkdir()
    catalog = folder / "readings.ducklake"
    connection = duckdb.connect()
    load_extensions(connection, ["ducklake"])
    connection.execute(
        f"ATTACH {quote_literal('ducklake:' + str(catalog))} AS lake "
        f"(DATA_PATH {quote_literal(str(folder / 'always_empty'))})"
    )
    connection.execute("CREATE TABLE lake.readings (sensor BIGINT, reading DOUBLE)")
    per_snapshot = max(files // snapshots, 1)
    for first in range(0, files, per_snapshot):
        paths = []
        for number in range(first, min(first + per_snapshot, files)):
            path = archive / f"readings-{number:06d}.parquet"
            connection.execute(
                f"COPY (SELECT range AS sensor, random() AS reading FROM range(100)) TO {quote_literal(str(path))}"
            )
            paths.append(str(path))
        connection.execute("CALL ducklake_add_data_files('lake', 'readings', ?)", [paths])
    connection.close()
    return catalog


def timed(action: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` runs."""
    durations = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--snapshots", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as folder:
        root = Path(folder)
        started = time.perf_counter()
        catalog = build_lake(root, args.files, args.snapshots)
        print(f"lake: {args.files} files in {args.snapshots} snapshots, catalog {catalog.stat().st_size:,} bytes")
        print(f"      built in {time.perf_counter() - started:.1f}s")
        site = root / "site"
        site.mkdir()
        bare = timed(lambda: shutil.copyfile(catalog, site / "bare.ducklake"), args.repeat)
        publish_uri = str(site / "readings.ducklake")
        probed = timed(lambda: publish_frozen_lake(str(catalog), publish_uri, keep_revisions=2), args.repeat)
        unprobed = timed(
            lambda: publish_frozen_lake(str(catalog), publish_uri, keep_revisions=2, probe_files=False), args.repeat
        )
        stranger = timed(lambda: verify_as_stranger(publish_uri, None, ["readings"]), args.repeat)
        stranger_unprobed = timed(lambda: verify_as_stranger(publish_uri, None, probe_files=False), args.repeat)
        report = verify_as_stranger(publish_uri, None, ["readings"])
        assert report.ok and report.tables == {"main.readings": args.files * 100}, report
        print(f"bare copy of the catalog file       {bare * 1000:9.1f} ms   (baseline)")
        print(f"publish, every file's footer probed  {probed * 1000:9.1f} ms   {probed / bare:8.1f}x baseline")
        print(f"publish, files not probed            {unprobed * 1000:9.1f} ms   {unprobed / bare:8.1f}x baseline")
        print(f"stranger check, files probed         {stranger * 1000:9.1f} ms")
        print(f"stranger check, files not probed     {stranger_unprobed * 1000:9.1f} ms")
        print(f"probing costs {(probed - unprobed) / args.files * 1e6:.0f} us per data file")


if __name__ == "__main__":
    main()
