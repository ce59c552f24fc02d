"""Benchmark: publishing a frozen lake (``publish_frozen_lake``) against ``fdl push`` and the recipes by hand.

Builds one files-only DuckLake (``--files`` Parquet files of 100 rows referenced by absolute path,
registered over ``--snapshots`` commits) as a DuckDB-file catalog (and, with ``--fdl``, once more as the
SQLite catalog of an ``fdl`` project, frozen-ducklake's CLI), then times ``--repeat`` rounds, the
contenders interleaved (their order rotates every round), after one untimed warm-up run of each:

* ours: ``ducklake-assets publish`` as the command a user types, and ``publish_frozen_lake`` in-process,
  with every data file's footer probed as a stranger and without (each: a private copy checkpointed,
  paths made absolute, a revision claimed, stamped, verified as a stranger, exposed atomically, old
  revisions pruned);
* fastest raw alternatives: ``fdl push`` to a local folder (it converts its SQLite catalog to a DuckDB
  file and copies it; it verifies nothing), run as a command, when ``--fdl`` is given; and, always, the
  least a publication that checks anything does by hand: a copy of the catalog file, a ``CHECKPOINT``
  and one read-only DuckLake attach counting the rows;
* naive: the frozen-DuckLake blog's recipe done by hand: copy the catalog file where readers are, then
  attach the copy read-only and count the rows of the table to see the data is there (no checkpoint, so
  a write-ahead log beside the catalog would be left behind; no footer probed; no atomic replace).

Printed: min and median of each, then ours / fastest raw (``fdl push`` when given, else the copy +
CHECKPOINT + attach) and ours / copy + CHECKPOINT + attach, and naive / ours, each at the minimum and at
the median. A bare ``shutil.copyfile`` of the catalog (what ``aws s3 cp`` does locally) is shown as a
floor only, never as a ratio.

``fdl`` needs Python 3.13 and is not a dependency: pass ``--fdl /path/to/fdl`` (a Python 3.13 venv with
``pip install frozen-ducklake duckdb==1.5.5``). Its DuckDB cannot download extensions here, so the
benchmark installs ours from their wheels into a private ``HOME`` for it. Without ``--fdl`` that column
is skipped and the output says so.

    python benchmarks/publish.py --fdl /tmp/fdl/bin/fdl        # 2,000 files, 200 snapshots, 5 rounds
    python benchmarks/publish.py                               # the same without fdl push
    python benchmarks/publish.py --files 20000 --snapshots 2000 --repeat 3 --fdl /tmp/fdl/bin/fdl
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


def count_rows(target: Path) -> int:
    with duckdb.connect(config={"autoinstall_known_extensions": False}) as connection:
        load_extensions(connection, ["ducklake"])
        connection.execute(f"ATTACH {quote_literal('ducklake:' + str(target))} AS lake (READ_ONLY)")
        (rows,) = connection.execute("SELECT count(*) FROM lake.readings").fetchone()
    return rows


def fallback(catalog: Path, target: Path) -> None:
    """Copy, CHECKPOINT, one read-only DuckLake attach: the least a publication that checks anything does."""
    shutil.copyfile(catalog, target)
    with duckdb.connect(str(target)) as connection:
        connection.execute("CHECKPOINT")
    count_rows(target)


def naive(catalog: Path, target: Path) -> None:
    """The blog's recipe by hand: copy the catalog file, then attach the copy and look at the data."""
    shutil.copyfile(catalog, target)
    count_rows(target)


OURS = (
    "ours: ducklake-assets publish (command)",
    "ours: publish_frozen_lake, footers probed",
    "ours: publish_frozen_lake, not probed",
)
FDL = "fastest raw: fdl push (command)"
FALLBACK = "fastest raw: copy + CHECKPOINT + attach"
NAIVE = "naive: copy + attach, no checkpoint"
FLOOR = "floor: bare copy of the catalog file"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--snapshots", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5, help="rounds (min and median shown)")
    parser.add_argument("--fdl", help="path of the fdl command (frozen-ducklake, Python 3.13)")
    args = parser.parse_args()
    if args.fdl and not (Path(args.fdl).is_file() and Path(args.fdl).with_name("python").is_file()):
        parser.error(f"--fdl {args.fdl}: not the fdl command of a virtual environment (no python beside it)")
    command = shutil.which("ducklake-assets")
    if command is None:
        parser.error("the ducklake-assets command is not on PATH: activate the project's virtual environment")
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
        print(f"      built in {time.perf_counter() - started:.1f}s; {args.repeat} rounds")
        site = root / "site"
        site.mkdir()
        publish_uri = str(site / "readings.ducklake")
        contenders: list[tuple[str, Callable[[], object]]] = [
            (FLOOR, lambda: shutil.copyfile(catalog, site / "bare.ducklake")),
            (NAIVE, lambda: naive(catalog, site / "naive.ducklake")),
            (FALLBACK, lambda: fallback(catalog, site / "fallback.ducklake")),
            (
                OURS[0],
                lambda: subprocess.run(
                    [command, "publish", str(catalog), publish_uri, "--keep-revisions", "2", "--force"],
                    check=True,
                    capture_output=True,
                ),
            ),
            (OURS[1], lambda: publish_frozen_lake(str(catalog), publish_uri, keep_revisions=2, force=True)),
            (
                OURS[2],
                lambda: publish_frozen_lake(str(catalog), publish_uri, keep_revisions=2, probe_files=False, force=True),
            ),
        ]
        if fdl_env:
            contenders.append(
                (
                    FDL,
                    lambda: subprocess.run(
                        [args.fdl, "push", "default"],
                        cwd=fdl_env["FDL_PROJECT"],
                        env=fdl_env,
                        check=True,
                        capture_output=True,
                    ),
                )
            )
        for _, action in contenders:
            action()
        times: dict[str, list[float]] = {name: [] for name, _ in contenders}
        for round_number in range(args.repeat):
            shift = round_number % len(contenders)
            for name, action in contenders[shift:] + contenders[:shift]:
                clock(times, name, action)
        report = verify_as_stranger(publish_uri, None, ["readings"])
        assert report.ok and report.tables == {"main.readings": args.files * 100}, report
        for name in ("naive.ducklake", "fallback.ducklake"):
            assert count_rows(site / name) == args.files * 100
    print()
    print(f"{'step':<44} {'min ms':>9} {'median ms':>10}")
    for name, values in times.items():
        print(f"{name:<44} {min(values) * 1000:>9.1f} {statistics.median(values) * 1000:>10.1f}")
    if not fdl_env:
        print(
            "\nno --fdl given: fdl push (frozen-ducklake, Python 3.13) skipped; the fastest raw alternative "
            "is the copy + CHECKPOINT + attach"
        )

    def ratio(top: str, bottom: str) -> str:
        low = min(times[top]) / min(times[bottom])
        mid = statistics.median(times[top]) / statistics.median(times[bottom])
        return f"{low:6.2f}x at the min, {mid:6.2f}x at the median"

    print()
    fastest = FDL if fdl_env else FALLBACK
    for ours in OURS:
        print(f"{ours + ' / ' + fastest.removeprefix('fastest raw: '):<82} {ratio(ours, fastest)}")
        if fdl_env:
            print(f"{ours + ' / ' + FALLBACK.removeprefix('fastest raw: '):<82} {ratio(ours, FALLBACK)}")
    for ours in OURS:
        print(f"{NAIVE.removeprefix('naive: ') + ' (naive) / ' + ours.removeprefix('ours: '):<82} {ratio(NAIVE, ours)}")


if __name__ == "__main__":
    main()
