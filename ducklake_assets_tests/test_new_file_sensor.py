"""The new-file sensor: a cursor over the source, run keys that make a repeated tick harmless."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from ducklake_assets import SensorOptions, SourceOptions
from ducklake_assets.core.s3 import S3Settings
from ducklake_assets.core.sources import FileSource, find_new_files
from ducklake_assets.core.storage import ObjectStore
from ducklake_assets.pipeline import build_ducklake_pipeline
from ducklake_assets.resources import S3Resource
from ducklake_assets_tests.parquet_files import crew
from ducklake_assets_tests.services import S3Bucket

SNAPSHOT = dg.AssetKey(["space", "catalog_snapshot"])


def space_pipeline(source: str | SourceOptions, tmp_path: Path, **options) -> dg.Definitions:
    """The pipeline ``space`` over ``source``, its lake in ``tmp_path``."""
    return build_ducklake_pipeline("space", source, str(tmp_path / "space.ducklake"), str(tmp_path / "data"), **options)


def tick(defs: dg.Definitions, cursor: str | None, resources: dict | None = None):
    sensor = defs.resolve_sensor_def("space_new_files")
    with dg.build_sensor_context(cursor=cursor, resources=resources, definitions=defs) as context:
        return sensor.evaluate_tick(context)


def test_new_local_files_request_one_run_per_change(tmp_path: Path) -> None:
    source = tmp_path / "space"
    first = crew(source / "astronauts.p1.parquet")
    os.utime(first, (1_700_000_000, 1_700_000_000))
    defs = space_pipeline(str(source), tmp_path)

    initial = tick(defs, None)
    (request,) = initial.run_requests
    assert (
        set(request.asset_selection) == {SNAPSHOT, dg.AssetKey(["space", "astronauts"])}
        and request.tags["ducklake_assets/new_files"] == "1"
    )

    repeated = tick(defs, None)
    assert [r.run_key for r in repeated.run_requests] == [request.run_key]  # Dagster drops the duplicate

    quiet = tick(defs, initial.cursor)
    assert quiet.run_requests == [] and quiet.skip_message == f"No new files in {source}"

    same_time = crew(source / "astronauts.p2.parquet", 10)
    os.utime(same_time, (1_700_000_000, 1_700_000_000))
    later = crew(source / "astronauts.p3.parquet", 20)
    os.utime(later, (1_700_000_100, 1_700_000_100))
    changed = tick(defs, initial.cursor)

    (second,) = changed.run_requests
    assert second.run_key != request.run_key and second.tags["ducklake_assets/new_files"] == "2"
    assert tick(defs, changed.cursor).run_requests == []


def test_the_requested_run_registers_what_the_catalog_lacks(tmp_path: Path) -> None:
    source = tmp_path / "space"
    crew(source / "astronauts.p1.parquet")
    defs = space_pipeline(str(source), tmp_path)
    instance = dg.DagsterInstance.ephemeral()

    for _ in range(2):
        (request,) = tick(defs, None).run_requests
        result = dg.materialize(
            list(defs.assets), resources=defs.resources, instance=instance, selection=request.asset_selection
        )
        assert result.success

    lake = defs.resources["space_ducklake"]
    with lake.get_connection() as connection:
        assert connection.execute("SELECT count(*) FROM astronauts").fetchall() == [(10,)]


def test_s3_key_order_lists_only_keys_after_the_cursor(
    tmp_path: Path, s3_bucket: S3Bucket, s3_settings: S3Settings, s3_resource: S3Resource
) -> None:
    client = s3_bucket.client()
    local = crew(tmp_path / "crew.parquet")
    for day in range(1, 21):
        client.upload_file(str(local), s3_bucket.name, f"space/day={day:02d}/astronauts.parquet")
    source = SourceOptions(uri=s3_bucket.uri("space"), sensor=SensorOptions(order="key"))
    defs = space_pipeline(source, tmp_path, s3=s3_resource)
    resources = {"space_s3": s3_resource}

    initial = tick(defs, None, resources)
    assert initial.run_requests[0].tags["ducklake_assets/new_files"] == "20"
    assert tick(defs, initial.cursor, resources).run_requests == []

    for day in (21, 22):
        client.upload_file(str(local), s3_bucket.name, f"space/day={day:02d}/astronauts.parquet")
    store = ObjectStore(s3_settings)
    keys_listed: list[int] = []
    store.client().meta.events.register(
        "after-call.s3.ListObjectsV2", lambda parsed, **_: keys_listed.append(parsed.get("KeyCount", 0))
    )
    found = find_new_files(FileSource(s3_bucket.uri("space")), store, initial.cursor, "key")

    assert found.uris == (
        s3_bucket.uri("space/day=21/astronauts.parquet"),
        s3_bucket.uri("space/day=22/astronauts.parquet"),
    )
    assert sum(keys_listed) == 2  # the 20 older keys were not listed again
    changed = tick(defs, initial.cursor, resources)
    assert changed.run_requests[0].tags["ducklake_assets/new_files"] == "2"
    assert tick(defs, changed.cursor, resources).run_requests == []


def test_s3_modified_order_finds_new_keys_anywhere(
    tmp_path: Path, s3_bucket: S3Bucket, s3_resource: S3Resource
) -> None:
    client = s3_bucket.client()
    local = crew(tmp_path / "crew.parquet")
    client.upload_file(str(local), s3_bucket.name, "space/missions.p1.parquet")
    defs = space_pipeline(s3_bucket.uri("space"), tmp_path, s3=s3_resource)
    resources = {"space_s3": s3_resource}
    initial = tick(defs, None, resources)
    assert len(initial.run_requests) == 1

    time.sleep(1.1)  # S3 keeps LastModified in whole seconds
    client.upload_file(str(local), s3_bucket.name, "space/astronauts.p1.parquet")  # sorts before the cursor's key
    changed = tick(defs, initial.cursor, resources)

    assert changed.run_requests[0].tags["ducklake_assets/new_files"] == "1"
    assert tick(defs, changed.cursor, resources).run_requests == []


def test_a_manifest_triggers_a_run_when_it_changes(tmp_path: Path) -> None:
    crew(tmp_path / "space" / "astronauts.p1.parquet")
    manifest = tmp_path / "space" / "files.csv"
    manifest.write_text("full_path\nastronauts.p1.parquet\n")
    defs = space_pipeline(str(manifest), tmp_path)

    initial = tick(defs, None)
    assert len(initial.run_requests) == 1
    assert tick(defs, initial.cursor).run_requests == []

    crew(tmp_path / "space" / "astronauts.p2.parquet", 10)
    manifest.write_text("full_path\nastronauts.p1.parquet\nastronauts.p2.parquet\n")
    changed = tick(defs, initial.cursor)
    assert len(changed.run_requests) == 1 and changed.run_requests[0].run_key != initial.run_requests[0].run_key


@pytest.mark.parametrize("order", ["modified", "key"])
def test_an_empty_source_requests_nothing(tmp_path: Path, order: str) -> None:
    (tmp_path / "space").mkdir()
    found = find_new_files(FileSource(str(tmp_path / "space")), ObjectStore(), None, order)
    assert found.uris == ()


@pytest.mark.parametrize("order", ["modified", "key"])
def test_the_cursor_carries_everything_across_restarts(tmp_path: Path, order: str) -> None:
    """Each tick in a fresh Python process that knows only the cursor Dagster stored: the files seen before
    the restart are not requested again, the new ones are, and a quiet source requests nothing."""
    source = tmp_path / "space"
    for number in range(1, 4):
        crew(source / f"day={number}" / f"astronauts.{number}.parquet", number * 10)
    script = textwrap.dedent(
        f"""
        import json, sys
        import dagster as dg
        from ducklake_assets import SensorOptions, SourceOptions, build_ducklake_pipeline

        defs = build_ducklake_pipeline(
            "space",
            SourceOptions(uri={str(source)!r}, sensor=SensorOptions(order={order!r})),
            {str(tmp_path / "space.ducklake")!r},
            {str(tmp_path / "data")!r},
            tables=["astronauts"],
        )
        cursor = sys.stdin.read() or None
        with dg.build_sensor_context(cursor=cursor, definitions=defs) as context:
            result = defs.resolve_sensor_def("space_new_files").evaluate_tick(context)
        print(json.dumps({{
            "new": [int(r.tags["ducklake_assets/new_files"]) for r in result.run_requests],
            "cursor": result.cursor,
        }}))
        """
    )

    def tick_in_new_process(cursor: str | None) -> dict:
        done = subprocess.run(
            [sys.executable, "-c", script], input=cursor or "", capture_output=True, text=True, check=True
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = tick_in_new_process(None)
    time.sleep(0.02)
    crew(source / "day=4" / "astronauts.4.parquet", 40)
    crew(source / "day=4" / "astronauts.5.parquet", 50)
    after_restart = tick_in_new_process(first["cursor"])
    quiet = tick_in_new_process(after_restart["cursor"])

    assert first["new"] == [3] and after_restart["new"] == [2] and quiet["new"] == []


def test_a_cursor_of_the_previous_release_misses_no_file(tmp_path: Path) -> None:
    """Cursors without a version rounded times to the microsecond; now they are truncated, so a file one
    microsecond before such a mark, not seen yet, is still new (and a file seen at the mark is not)."""
    source = tmp_path / "space"
    seen = crew(source / "astronauts.p1.parquet")
    unseen = crew(source / "astronauts.p2.parquet", 10)
    os.utime(seen, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_001_000))
    os.utime(unseen, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_400))
    old_cursor = json.dumps({"modified": "2023-11-14T22:13:20.000001+00:00", "seen_at_mark": [str(seen)]})

    found = find_new_files(FileSource(str(source)), ObjectStore(), old_cursor)

    assert found.uris == (str(unseen),) and json.loads(found.cursor)["version"] == 2
    assert find_new_files(FileSource(str(source)), ObjectStore(), found.cursor).uris == ()


def test_a_source_that_is_one_file_is_not_new_again_in_key_order(tmp_path: Path) -> None:
    single = crew(tmp_path / "astronauts.p1.parquet")
    first = find_new_files(FileSource(str(single)), ObjectStore(), None, order="key")
    assert first.uris == (str(single),)
    assert find_new_files(FileSource(str(single)), ObjectStore(), first.cursor, order="key").uris == ()
