"""The ``ducklake-assets`` command: the core verbs as a user types them, and the local HTTP server."""

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import duckdb

from ducklake_assets.core.extensions import load_extensions
from ducklake_assets.core.serve import serving
from ducklake_assets.core.sql import quote_literal
from ducklake_assets_tests.backup_lakes import fill, lake_settings


def cli(*arguments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = shutil.which("ducklake-assets")
    assert command, "pip install puts the ducklake-assets command on the PATH"
    return subprocess.run(
        [command, *arguments], capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )


def test_every_command_explains_itself() -> None:
    top = cli("--help")
    assert top.returncode == 0
    for command in ("backup", "restore", "backups", "pin", "publish", "verify", "revisions", "serve"):
        assert command in top.stdout
        assert cli(command, "--help").returncode == 0
    assert "--self-contained" in cli("publish", "--help").stdout
    assert "credentials come from the environment" in cli("backup", "--help").stdout


def test_back_up_lose_restore_publish_and_verify_from_the_command_line(tmp_path: Path) -> None:
    settings = lake_settings("duckdb", tmp_path / "lake")
    fill(settings)
    backups = tmp_path / "backups"

    backed_up = cli("backup", settings.catalog.path, str(backups), "--data-path", settings.data_path)
    assert backed_up.returncode == 0, backed_up.stderr
    assert "data files: 3 copied" in backed_up.stdout
    assert cli("pin", str(backups), "before-upgrade").returncode == 0
    listed = cli("backups", str(backups))
    assert "snapshot      4" in listed.stdout and "pinned as before-upgrade" in listed.stdout
    shutil.rmtree(tmp_path / "lake")

    plan = cli(
        "restore",
        str(backups),
        str(tmp_path / "new" / "lake.ducklake"),
        "--data-path",
        str(tmp_path / "new" / "data"),
        "--dry-run",
    )
    assert plan.returncode == 0, plan.stderr
    assert "would copy 3 data file(s)" in plan.stdout and not (tmp_path / "new").exists()
    restored = cli(
        "restore", str(backups), str(tmp_path / "new" / "lake.ducklake"), "--data-path", str(tmp_path / "new" / "data")
    )
    assert restored.returncode == 0, restored.stderr

    site = tmp_path / "site"
    published = cli("publish", str(tmp_path / "new" / "lake.ducklake"), str(site / "trips.ducklake"))
    assert published.returncode == 0, published.stderr
    assert "attach it with: ATTACH 'ducklake:" in published.stdout
    verified = cli("verify", str(site / "trips.ducklake"), "--table", "trips")
    assert verified.returncode == 0, verified.stderr
    assert "main.trips (90 rows)" in verified.stdout
    assert "revision      1" in cli("revisions", str(site / "trips.ducklake")).stdout


def test_a_mistake_is_one_line_on_stderr_with_status_2(tmp_path: Path) -> None:
    missing = cli("backup", str(tmp_path / "nowhere.ducklake"), str(tmp_path / "backups"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: ") and "nowhere.ducklake does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert cli("verify", str(tmp_path / "none.ducklake")).returncode == 2


def test_the_serve_command_serves_a_frozen_lake_duckdb_can_attach(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    with duckdb.connect(str(site / "plain.duckdb")) as connection:
        connection.execute("CREATE TABLE t AS SELECT range AS n FROM range(1000)")
    process = subprocess.Popen(
        [shutil.which("ducklake-assets"), "serve", str(site), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        # Started with SIGTERM ignored, as some launchers leave it: the server must still stop on it.
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN),
    )
    try:
        line = process.stdout.readline()
        url = line.split(" at ", 1)[1].split(" ", 1)[0].rstrip("/")
        with duckdb.connect() as reader:
            load_extensions(reader, ["httpfs"])
            reader.execute(f"ATTACH {quote_literal(url + '/plain.duckdb')} AS served (READ_ONLY)")
            assert reader.execute("SELECT sum(n) FROM served.t").fetchone() == (499500,)
    finally:
        process.terminate()
        stopped = process.wait(timeout=30)
    assert stopped == 0  # SIGTERM, as a service manager sends it, stops the server cleanly


def request(url: str, method: str = "GET", **headers: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers)) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_server_answers_ranges_etags_and_cors_as_a_cdn_would(tmp_path: Path) -> None:
    (tmp_path / "lake.ducklake").write_bytes(bytes(range(256)) * 4)
    (tmp_path.parent / "secret.txt").write_text("outside the served folder")
    with serving(tmp_path) as base:
        status, headers, body = request(f"{base}/lake.ducklake", Range="bytes=10-19")
        assert (status, body) == (206, bytes(range(10, 20)))
        assert headers["Content-Range"] == "bytes 10-19/1024" and headers["Accept-Ranges"] == "bytes"
        assert headers["Access-Control-Allow-Origin"] == "*" and "ETag" in headers["Access-Control-Expose-Headers"]
        etag, modified = headers["ETag"], headers["Last-Modified"]
        assert request(f"{base}/lake.ducklake", Range="bytes=-4")[2] == bytes(range(252, 256))
        assert request(f"{base}/lake.ducklake", Range="bytes=5000-")[0] == 416
        assert request(f"{base}/lake.ducklake", **{"If-None-Match": etag})[0] == 304
        head = request(f"{base}/lake.ducklake", "HEAD")
        assert head[0] == 200 and head[1]["Content-Length"] == "1024" and head[2] == b""
        assert request(f"{base}/lake.ducklake", "OPTIONS")[1]["Access-Control-Allow-Methods"] == "GET, HEAD, OPTIONS"

        time.sleep(0.01)
        replacement = tmp_path / ".next"
        replacement.write_bytes(b"a newer revision")
        os.replace(replacement, tmp_path / "lake.ducklake")
        status, headers, _ = request(f"{base}/lake.ducklake", Range="bytes=0-3", **{"If-Match": etag})
        assert status == 412, "a reader that asks for the revision it started with is told it changed"
        status, headers, body = request(f"{base}/lake.ducklake", Range="bytes=0-3", **{"If-Range": etag})
        assert (status, body) == (200, b"a newer revision"), "a stale If-Range gets the whole new file"
        assert headers["ETag"] != etag and headers["Last-Modified"] >= modified
        assert request(f"{base}/../secret.txt")[0] == 404
        assert request(f"{base}/nothing-here.ducklake")[0] == 404


def test_serving_a_folder_that_is_not_there_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ducklake_assets.cli", "serve", str(tmp_path / "folder")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "is not a folder" in result.stderr


def test_backing_up_or_publishing_an_unchanged_lake_again_writes_nothing_unless_forced(tmp_path: Path) -> None:
    settings = lake_settings("duckdb", tmp_path / "lake")
    fill(settings)
    backups, site = tmp_path / "backups", tmp_path / "site" / "trips.ducklake"
    backup = ("backup", settings.catalog.path, str(backups), "--data-path", settings.data_path)
    assert cli(*backup).returncode == 0
    assert cli("publish", str(backups), str(site)).returncode == 0
    before = sorted((str(p), p.stat().st_mtime_ns) for p in tmp_path.glob("[bs]*/**/*") if p.is_file())

    again = cli(*backup)
    republished = cli("publish", str(backups), str(site))

    assert again.returncode == 0 and republished.returncode == 0, again.stderr + republished.stderr
    assert again.stdout.startswith("up to date at snapshot 4: ") and "nothing written" in again.stdout
    assert republished.stdout.startswith("up to date at snapshot 4: ") and "revision 1" in republished.stdout
    assert sorted((str(p), p.stat().st_mtime_ns) for p in tmp_path.glob("[bs]*/**/*") if p.is_file()) == before
    forced = cli(*backup, "--force")
    assert forced.stdout.startswith("backed up snapshot 4 ")
    assert "published revision 2 " in cli("publish", str(backups), str(site), "--force").stdout
