"""Benchmark: publishing a frozen lake (``publish_frozen_lake``) against ``fdl push`` and plain copies.

Builds one files-only DuckLake (``--files`` Parquet files of 100 rows referenced by absolute path,
registered over ``--snapshots`` commits) twice: as a DuckDB-file catalog for us, and as the SQLite catalog
of an ``fdl`` project (frozen-ducklake's CLI), then times, interleaved in the same run:

* ``fdl push`` to a local folder (it converts its SQLite catalog to a DuckDB file and copies it; it
  verifies nothing), run as the command a user types;
* ``ducklake-assets publish`` as a command too, and ``publish_frozen_lake`` in-process, with every data
  file's footer probed as a stranger and without;
* the fallback the issue names for machines without Python 3.13: a copy of the catalog file, a
  ``CHECKPOINT`` and one read-only DuckLake attach;
* the naive baseline: a plain copy of the catalog file.

``fdl`` needs Python 3.13 and is not a dependency: pass ``--fdl /path/to/fdl`` (a venv with
``pip install frozen-ducklake duckdb==1.5.5``). Its DuckDB cannot download extensions here, so the
benchmark installs ours from their wheels into a private ``HOME`` for it. Without ``--fdl`` the ratios
are against the fallback, and the output says so.

    python benchmarks/publish.py --fdl /tmp/fdl/bin/fdl        # 2,000 files, 200 snapshots
    python benchmarks/publish.py --files 500 --snapshots 50 --repeat 5
"""

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from ducklake_assets.core.extensions import load_extensions, wheel_extension_path
from ducklake_assets.core.publish import publish_frozen_lake, verify_as_stranger
from ducklake_assets.core.sql import quote_literal


def write_files(folder: Path, files: int) -> list[str]:
    folder.mkdir()
    paths = []
    with duckdb.connect() as connection:
        for number in range(files):
            path = folder / f"readings-{number:06d}.parquet"
            connection.execute(
                f"COPY (SELECT range AS sensor, random() AS reading FROM range(100)) TO {quote_literal(str(path))}"
            )
            paths.append(str(path))
    return paths


def register(attach_sql: str, paths: list[str], snapshots: int) -> None:
    """Register ``paths`` into table ``readings`` of the lake ``attach_sql`` attaches as ``lake``."""
    connection = duckdb.connect()
    load_extensions(connection, ["ducklake", "sqlite_scanner", "httpfs"])
    connection.execute(attach_sql)
    connection.execute("CREATE TABLE lake.readings (sensor BIGINT, reading DOUBLE)")
    per_snapshot = max(len(paths) // snapshots, 1)
    for first in range(0, len(paths), per_snapshot):
        listed = "[" + ", ".join(quote_literal(p) for p in paths[first : first + per_snapshot]) + "]"
        connection.execute(f"CALL ducklake_add_data_files('lake', 'readings', {listed})")
    connection.close()


def fdl_project(root: Path, fdl: str, paths: list[str], snapshots: int) -> dict[str, str]:
    """An fdl project holding the same lake; returns the environment ``fdl`` runs in."""
    home = root / "fdl-home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    python = str(Path(fdl).with_name("python"))
    installs = "; ".join(
        f"c.execute(\"INSTALL '{wheel_extension_path(name)}'\")" for name in ("ducklake", "httpfs", "sqlite_scanner")
    )
    subprocess.run([python, "-c", f"import duckdb; c = duckdb.connect(); {installs}"], env=env, check=True)
    project = root / "fdl-project"
    project.mkdir()
    subprocess.run(
        [
            fdl,
            "init",
            "readings",
            "--public-url",
            "http://localhost:4001",
            "--target-url",
            str(root / "fdl-site"),
            "--target-name",
            "default",
        ],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
    )
    catalog = project / ".fdl" / "default" / "ducklake.sqlite"
    register(f"ATTACH {quote_literal('ducklake:sqlite:' + str(catalog))} AS lake", paths, snapshots)
    return {**env, "FDL_PROJECT": str(project)}


def clock(times: dict[str, list[float]], name: str, action: Callable[[], object]) -> None:
    started = time.perf_counter()
    action()
    times.setdefault(name, []).append(time.perf_counter() - started)


def fallback(catalog: Path, target: Path) -> None:
    """Copy, CHECKPOINT, one read-only DuckLake attach: the least a publication that checks anything does."""
    shutil.copyfile(catalog, target)
    with duckdb.connect(str(target)) as connection:
        connection.execute("CHECKPOINT")
    with duckdb.connect() as connection:
        load_extensions(connection, ["ducklake"])
        connection.execute(f"ATTACH {quote_literal('ducklake:' + str(target))} AS lake (READ_ONLY)")
        connection.execute("SELECT count(*) FROM lake.readings").fetchone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--snapshots", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fdl", help="path of the fdl command (frozen-ducklake, Python 3.13)")
    args = parser.parse_args()
    command = shutil.which("ducklake-assets")
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as folder:
        root = Path(folder)
        started = time.perf_counter()
        paths = write_files(root / "archive", args.files)
        catalog = root / "readings.ducklake"
        register(
            f"ATTACH {quote_literal('ducklake:' + str(catalog))} AS lake "
            f"(DATA_PATH {quote_literal(str(root / 'always_empty'))})",
            paths,
            args.snapshots,
        )
        fdl_env = fdl_project(root, args.fdl, paths, args.snapshots) if args.fdl else None
        print(f"lake: {args.files} files in {args.snapshots} snapshots, catalog {catalog.stat().st_size:,} bytes")
        print(f"      built in {time.perf_counter() - started:.1f}s")
        site = root / "site"
        site.mkdir()
        publish_uri = str(site / "readings.ducklake")
        times: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            clock(times, "plain copy of the catalog file", lambda: shutil.copyfile(catalog, site / "bare.ducklake"))
            clock(times, "copy + CHECKPOINT + one read-only attach", lambda: fallback(catalog, site / "f.ducklake"))
            if fdl_env:
                clock(
                    times,
                    "fdl push (command)",
                    lambda: subprocess.run(
                        [args.fdl, "push", "default"],
                        cwd=fdl_env["FDL_PROJECT"],
                        env=fdl_env,
                        check=True,
                        capture_output=True,
                    ),
                )
            clock(
                times,
                "ducklake-assets publish (command, probed)",
                lambda: subprocess.run(
                    [command, "publish", str(catalog), publish_uri, "--keep-revisions", "2", "--force"],
                    check=True,
                    capture_output=True,
                ),
            )
            clock(
                times,
                "publish_frozen_lake, every footer probed",
                lambda: publish_frozen_lake(str(catalog), publish_uri, keep_revisions=2, force=True),
            )
            clock(
                times,
                "publish_frozen_lake, files not probed",
                lambda: publish_frozen_lake(str(catalog), publish_uri, keep_revisions=2, probe_files=False, force=True),
            )
        report = verify_as_stranger(publish_uri, None, ["readings"])
        assert report.ok and report.tables == {"main.readings": args.files * 100}, report
    print()
    print(f"{'step':<44} {'min ms':>9} {'median ms':>10}")
    for name, values in times.items():
        print(f"{name:<44} {min(values) * 1000:>9.1f} {statistics.median(values) * 1000:>10.1f}")
    median = {name: statistics.median(values) for name, values in times.items()}
    fastest = "fdl push (command)" if fdl_env else "copy + CHECKPOINT + one read-only attach"
    if not fdl_env:
        print(
            "\nno --fdl given: comparing with the fallback (copy + CHECKPOINT + read-only attach) instead of fdl push"
        )
    print()
    for ours in (
        "ducklake-assets publish (command, probed)",
        "publish_frozen_lake, every footer probed",
        "publish_frozen_lake, files not probed",
    ):
        print(
            f"{ours:<44} {median[ours] / median[fastest]:5.2f}x {fastest}; "
            f"{median[ours] / median['plain copy of the catalog file']:7.1f}x a plain copy"
        )
    if fdl_env:
        fb = median["copy + CHECKPOINT + one read-only attach"]
        print(f"{'fdl push (command)':<44} {median[fastest] / fb:5.2f}x the fallback")


if __name__ == "__main__":
    main()
