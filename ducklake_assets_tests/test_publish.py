"""Publishing frozen lakes, as their readers meet them: one ATTACH line, from anywhere, during any update."""

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from ducklake_assets import ConfigurationError, PublishError
from ducklake_assets.core.backup import create_backup
from ducklake_assets.core.extensions import load_extensions
from ducklake_assets.core.lake import LakeSettings, connect_lake
from ducklake_assets.core.publish import (
    attach_statement,
    current_revision,
    list_revisions,
    prune_revisions,
    publish_frozen_lake,
    verify_as_stranger,
)
from ducklake_assets.core.s3 import S3Settings
from ducklake_assets.core.sql import quote_literal
from ducklake_assets.core.storage import ObjectStore
from ducklake_assets_tests.static_site import serve_folder

LEGACY_CATALOG_SQL = Path(__file__).parent / "data" / "ducklake_0_3_catalog.sql"


def lake_settings(folder: Path, s3: S3Settings | None = None) -> LakeSettings:
    """A DuckDB-file lake under ``folder`` that writes every insert to Parquet (no inlining)."""
    return LakeSettings.from_strings(
        str(folder / "catalog.ducklake"), str(folder / "data"), attach_options={"DATA_INLINING_ROW_LIMIT": 0}, s3=s3
    )


def add_missions(settings: LakeSettings, first: int, count: int) -> int:
    """Insert missions ``first..first+count-1`` (creating the table once); returns the new snapshot id."""
    with connect_lake(settings) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS missions (mission_id BIGINT, name VARCHAR)")
        connection.execute(
            "INSERT INTO missions SELECT range, 'mission ' || range FROM range(?, ?)", [first, first + count]
        )
        return connection.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0]


def reader(url: str, s3: S3Settings | None = None) -> duckdb.DuckDBPyConnection:
    """A fresh DuckDB as a stranger has it: extensions loaded, an S3 secret when given, nothing else."""
    connection = duckdb.connect()
    load_extensions(connection, ["ducklake", "httpfs"])
    if s3 is not None:
        s3.create_duckdb_secret(connection, "reader")
    return connection


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_local_publication_is_attached_with_one_line_from_another_folder(tmp_path, monkeypatch):
    settings = lake_settings(tmp_path / "lake")
    first = add_missions(settings, 0, 10)
    latest = add_missions(settings, 10, 5)
    catalog_bytes = Path(settings.catalog.path).read_bytes()

    result = publish_frozen_lake(settings, str(tmp_path / "site" / "space.ducklake"))

    assert result.revision.number == 1
    assert result.contents.snapshot_id == latest
    assert result.contents.tables == {"main.missions": 15}
    assert result.contents.format_version == result.source_format_version == "1.0"
    assert result.attach_sql("space") == f"ATTACH 'ducklake:{tmp_path}/site/space.ducklake' AS \"space\" (READ_ONLY)"
    assert Path(settings.catalog.path).read_bytes() == catalog_bytes
    assert not Path(f"{tmp_path}/site/space.ducklake.wal").exists()

    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    connection = reader(result.reader_url)
    connection.execute(result.attach_sql("space"))
    assert connection.execute("SELECT count(*), sum(mission_id) FROM space.missions").fetchone() == (15, 105)
    assert connection.execute("SELECT count(*) FROM space.missions AT (VERSION => ?)", [first]).fetchone() == (10,)
    with pytest.raises(duckdb.Error, match="read-only"):
        connection.execute("INSERT INTO space.missions VALUES (99, 'not allowed')")


def test_a_data_path_relative_to_the_writers_folder_is_made_absolute(tmp_path, monkeypatch):
    writer_folder = tmp_path / "writer"
    writer_folder.mkdir()
    monkeypatch.chdir(writer_folder)
    connection = reader("")
    connection.execute("ATTACH 'ducklake:catalog.ducklake' AS lake (DATA_PATH 'data', DATA_INLINING_ROW_LIMIT 0)")
    connection.execute("CREATE TABLE lake.missions AS SELECT range AS mission_id FROM range(10)")
    connection.close()

    result = publish_frozen_lake("catalog.ducklake", str(tmp_path / "site" / "space.ducklake"))
    assert result.data_path == f"{writer_folder}/data/"

    stranger_folder = tmp_path / "stranger"
    stranger_folder.mkdir()
    monkeypatch.chdir(stranger_folder)
    original = reader("")
    original.execute(f"ATTACH {quote_literal('ducklake:' + str(writer_folder / 'catalog.ducklake'))} AS o (READ_ONLY)")
    with pytest.raises(duckdb.IOException, match="data/main/missions"):
        original.execute("SELECT sum(mission_id) FROM o.missions").fetchone()

    report = verify_as_stranger(result.reader_url, None, ["missions"])
    assert report.ok, report.problems()
    published = reader(result.reader_url)
    published.execute(result.attach_sql())
    assert published.execute("SELECT sum(mission_id) FROM frozen.missions").fetchone() == (45,)
    assert original.execute("SELECT value FROM o.options() WHERE option_name = 'data_path'").fetchone() == ("data/",)


def test_files_registered_by_relative_path_are_published_by_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("exports").mkdir()
    connection = reader("")
    connection.execute("COPY (SELECT range AS reading FROM range(4)) TO 'exports/readings.parquet'")
    connection.execute(f"ATTACH {quote_literal('ducklake:' + str(tmp_path / 'readings.duckdb'))} AS lake")
    connection.execute("CREATE TABLE lake.readings (reading BIGINT)")
    connection.execute("CALL ducklake_add_data_files('lake', 'readings', 'exports/readings.parquet')")
    connection.close()

    result = publish_frozen_lake(str(tmp_path / "readings.duckdb"), str(tmp_path / "site" / "readings.ducklake"))

    monkeypatch.chdir(tmp_path / "site")
    published = reader(result.reader_url)
    published.execute(result.attach_sql())
    assert published.execute("SELECT sum(reading) FROM frozen.readings").fetchone() == (6,)
    assert published.execute("SELECT data_file FROM ducklake_list_files('frozen', 'readings')").fetchall() == [
        (str(tmp_path / "exports" / "readings.parquet"),)
    ]


def test_a_files_only_lake_with_files_in_a_folder_and_on_s3_is_published_to_s3(tmp_path, s3_bucket, s3_settings):
    local_files = tmp_path / "archive"
    local_files.mkdir()
    writer = reader("", s3_settings)
    local_file = local_files / "stations.2025-01.parquet"
    s3_file = s3_bucket.uri("exports/stations.2025-02.parquet")
    writer.execute(
        f"COPY (SELECT range AS station_id, 'north' AS region FROM range(3)) TO {quote_literal(str(local_file))}"
    )
    writer.execute(f"COPY (SELECT range AS station_id, 'south' AS region FROM range(3, 7)) TO {quote_literal(s3_file)}")
    empty_data_path = tmp_path / "always_empty"
    catalog = tmp_path / "stations.ducklake"
    writer.execute(
        f"ATTACH {quote_literal('ducklake:' + str(catalog))} AS lake (DATA_PATH {quote_literal(str(empty_data_path))})"
    )
    writer.execute(
        f"CREATE TABLE lake.stations AS SELECT * FROM read_parquet({quote_literal(str(local_file))}) WITH NO DATA"
    )
    writer.execute("CALL ducklake_add_data_files('lake', 'stations', ?)", [str(local_file)])
    writer.execute("CALL ducklake_add_data_files('lake', 'stations', ?)", [s3_file])
    writer.close()
    s3_object_before = s3_bucket.client().head_object(Bucket=s3_bucket.name, Key="exports/stations.2025-02.parquet")
    local_before = local_file.read_bytes()

    publish_uri = s3_bucket.uri("lakes/stations.ducklake")
    with pytest.raises(PublishError, match="paths on this machine that no reader there can open") as refused:
        publish_frozen_lake(str(catalog), publish_uri, store=ObjectStore(s3_settings))
    assert str(local_file) in str(refused.value) and "self_contained=True" in str(refused.value)
    assert s3_file not in str(refused.value), "S3 files are reachable from elsewhere"
    assert [item["Key"] for item in s3_bucket.client().list_objects_v2(Bucket=s3_bucket.name)["Contents"]] == [
        "exports/stations.2025-02.parquet"
    ]

    result = publish_frozen_lake(str(catalog), publish_uri, store=ObjectStore(s3_settings), self_contained=True)

    assert result.contents.tables == {"main.stations": 7}
    assert len(result.files.copied) == 2
    assert local_file.read_bytes() == local_before
    s3_object_after = s3_bucket.client().head_object(Bucket=s3_bucket.name, Key="exports/stations.2025-02.parquet")
    assert s3_object_after["ETag"] == s3_object_before["ETag"]
    local_file.unlink()
    s3_bucket.client().delete_object(Bucket=s3_bucket.name, Key="exports/stations.2025-02.parquet")
    report = verify_as_stranger(publish_uri, s3_settings, ["stations"])
    assert report.ok, report.problems()
    assert report.tables == {"main.stations": 7}
    connection = reader(publish_uri, s3_settings)
    connection.execute(result.attach_sql("stations"))
    assert connection.execute(
        "SELECT region, count(*), sum(station_id) FROM stations.stations GROUP BY region ORDER BY region"
    ).fetchall() == [("north", 3, 3), ("south", 4, 18)]
    assert not any(path.is_file() for path in empty_data_path.rglob("*"))
    keys = sorted(item["Key"] for item in s3_bucket.client().list_objects_v2(Bucket=s3_bucket.name)["Contents"])
    revision = f"lakes/revisions/stations-r000001-s{result.contents.snapshot_id}"
    assert [key for key in keys if not key.startswith("lakes/stations/external/")] == [
        f"{revision}.ducklake",
        f"{revision}.files.json",
        "lakes/revisions/stations-r000001.claim",
        "lakes/stations.ducklake",
    ]
    assert len([key for key in keys if key.startswith("lakes/stations/external/")]) == 2


def test_revisions_on_s3_keep_the_newest_and_time_travel_works(tmp_path, s3_bucket, s3_settings):
    settings = lake_settings(tmp_path / "lake")
    publish_uri = s3_bucket.uri("lakes/space.ducklake")
    store = ObjectStore(s3_settings)
    snapshots = []
    for round_number in range(4):
        snapshots.append(add_missions(settings, round_number * 10, 10))
        result = publish_frozen_lake(settings, publish_uri, store=store, keep_revisions=2, self_contained=True)
        assert result.revision.number == round_number + 1

    assert [(r.number, r.snapshot_id) for r in list_revisions(publish_uri, store)] == [
        (3, snapshots[2]),
        (4, snapshots[3]),
    ]
    assert len(result.pruned) == 1 and "space-r000002" in result.pruned[0]
    assert current_revision(publish_uri, s3_settings) == 4
    connection = reader(publish_uri, s3_settings)
    connection.execute(result.attach_sql("space"))
    assert connection.execute("SELECT count(*) FROM space.missions").fetchone() == (40,)
    for number, snapshot in enumerate(snapshots, start=1):
        rows = connection.execute("SELECT count(*) FROM space.missions AT (VERSION => ?)", [snapshot]).fetchone()
        assert rows == (number * 10,)
    revision_three = list_revisions(publish_uri, store)[0]
    assert verify_as_stranger(revision_three.uri, s3_settings).tables == {"main.missions": 30}


def test_pruning_after_a_rollback_keeps_the_revision_readers_are_given(tmp_path):
    settings = lake_settings(tmp_path / "lake")
    publish_uri = str(tmp_path / "site" / "space.ducklake")
    store = ObjectStore()
    for round_number in range(3):
        add_missions(settings, round_number * 10, 10)
        publish_frozen_lake(settings, publish_uri, store=store, keep_revisions=5)
    first = list_revisions(publish_uri, store)[0]
    store.put_file(first.uri, publish_uri)

    pruned = prune_revisions(publish_uri, store, keep_revisions=1)

    assert [Path(uri).name for uri in pruned] == [f"space-r000002-s{first.snapshot_id + 1}.ducklake"]
    assert [revision.number for revision in list_revisions(publish_uri, store)] == [1, 3]
    assert verify_as_stranger(publish_uri).tables == {"main.missions": 10}


def test_a_lake_served_over_http_is_read_with_range_requests(tmp_path):
    site = tmp_path / "site"
    settings = lake_settings(site)
    first = add_missions(settings, 0, 3)
    add_missions(settings, 3, 3)
    with serve_folder(site) as (base_url, served):
        result = publish_frozen_lake(
            settings,
            str(site / "space.ducklake"),
            reader_url=f"{base_url}/space.ducklake",
            reader_data_path=f"{base_url}/data/",
        )
        assert result.attach_sql() == f"ATTACH 'ducklake:{base_url}/space.ducklake' AS \"frozen\" (READ_ONLY)"

        report = verify_as_stranger(result.reader_url, None, ["missions"])
        assert report.ok, report.problems()
        assert (report.revision, report.snapshot_id, report.tables) == (1, first + 1, {"main.missions": 6})
        connection = reader(result.reader_url)
        connection.execute(result.attach_sql())
        assert connection.execute("SELECT sum(mission_id) FROM frozen.missions").fetchone() == (15,)
        assert connection.execute(
            "SELECT sum(mission_id) FROM frozen.missions AT (VERSION => ?)", [first]
        ).fetchone() == (3,)
    assert any(line.startswith("GET /space.ducklake bytes=") for line in served)
    assert any(line.startswith("GET /data/main/missions/") for line in served)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_readers_during_publications_always_get_a_complete_revision(tmp_path, where, request):
    s3 = request.getfixturevalue("s3_settings") if where == "s3" else None
    publish_uri = (
        request.getfixturevalue("s3_bucket").uri("lakes/busy.ducklake")
        if where == "s3"
        else str(tmp_path / "site" / "busy.ducklake")
    )
    settings = lake_settings(tmp_path / "lake")
    store = ObjectStore(s3)
    rows_at = {add_missions(settings, 0, 10): 10}
    remote = where == "s3"
    publish_frozen_lake(settings, publish_uri, store=store, keep_revisions=10, self_contained=remote)
    downloaded: list[str] = []
    attached: list[tuple[int, int]] = []
    stop = threading.Event()

    def read_until_stopped() -> None:
        while not stop.is_set():
            copy = tmp_path / "downloaded.ducklake"
            copy.write_bytes(store.get_bytes(publish_uri))
            downloaded.append(digest(copy.read_bytes()))
            for url in (str(copy), publish_uri) if where == "local" else (str(copy),):
                connection = reader(url)
                connection.execute(attach_statement(url, "lake"))
                attached.append(
                    connection.execute(
                        "SELECT (SELECT id FROM lake.current_snapshot()), count(*) FROM lake.missions"
                    ).fetchone()
                )
                connection.close()

    thread = threading.Thread(target=read_until_stopped)
    thread.start()
    try:
        for round_number in range(1, 5):
            snapshot = add_missions(settings, round_number * 10, 10)
            rows_at[snapshot] = (round_number + 1) * 10
            publish_frozen_lake(settings, publish_uri, store=store, keep_revisions=10, self_contained=remote)
    finally:
        stop.set()
        thread.join()

    revisions = {digest(store.get_bytes(revision.uri)) for revision in list_revisions(publish_uri, store)}
    assert len(revisions) == 5
    assert set(downloaded) <= revisions
    assert len(set(downloaded)) > 1, "the reader never overlapped a publication"
    assert all(rows_at.get(snapshot) == rows for snapshot, rows in attached), attached


def test_an_unreachable_s3_endpoint_leaves_the_published_revision_in_place(tmp_path, s3_bucket, s3_settings):
    settings = lake_settings(tmp_path / "lake")
    add_missions(settings, 0, 10)
    publish_uri = s3_bucket.uri("lakes/space.ducklake")
    publish_frozen_lake(settings, publish_uri, store=ObjectStore(s3_settings), self_contained=True)
    before = ObjectStore(s3_settings).get_bytes(publish_uri)
    add_missions(settings, 10, 10)
    unreachable = S3Settings(
        endpoint_url="http://127.0.0.1:9",
        region_name=s3_settings.region_name,
        aws_access_key_id=s3_settings.aws_access_key_id,
        aws_secret_access_key=s3_settings.aws_secret_access_key,
        path_style=True,
    )

    with pytest.raises(PublishError) as raised:
        publish_frozen_lake(settings, publish_uri, store=ObjectStore(unreachable))

    message = str(raised.value)
    assert "http://127.0.0.1:9 is unreachable" in message
    assert f"{publish_uri} is left as it was." in message
    assert s3_settings.aws_secret_access_key not in message
    assert digest(ObjectStore(s3_settings).get_bytes(publish_uri)) == digest(before)
    assert [r.number for r in list_revisions(publish_uri, ObjectStore(s3_settings))] == [1]


def test_a_missing_bucket_is_a_clear_error(tmp_path, s3_settings):
    settings = lake_settings(tmp_path / "lake")
    add_missions(settings, 0, 1)

    with pytest.raises(PublishError, match="bucket 'no-such-bucket' does not exist; create it first"):
        publish_frozen_lake(settings, "s3://no-such-bucket/space.ducklake", store=ObjectStore(s3_settings))


def test_a_revision_readers_could_not_read_is_never_exposed(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    catalog = tmp_path / "readings.ducklake"
    connection = reader("")
    connection.execute(f"ATTACH {quote_literal('ducklake:' + str(catalog))} AS lake")
    connection.execute("CREATE TABLE lake.readings (reading BIGINT)")
    for month in (1, 2):
        path = archive / f"readings-{month}.parquet"
        connection.execute(f"COPY (SELECT {month} AS reading) TO {quote_literal(str(path))}")
        connection.execute("CALL ducklake_add_data_files('lake', 'readings', ?)", [str(path)])
    connection.close()
    publish_uri = str(tmp_path / "site" / "readings.ducklake")
    publish_frozen_lake(str(catalog), publish_uri)
    before = Path(publish_uri).read_bytes()
    (archive / "readings-2.parquet").unlink()

    with pytest.raises(PublishError) as raised:
        publish_frozen_lake(str(catalog), publish_uri, force=True)

    assert f"data files a reader cannot open: {archive}/readings-2.parquet" in str(raised.value)
    assert f"{publish_uri} is left as it was." in str(raised.value)
    assert Path(publish_uri).read_bytes() == before
    assert [r.number for r in list_revisions(publish_uri, ObjectStore())] == [1]


def legacy_catalog(path: Path) -> Path:
    """A DuckLake catalog in format 0.3 (as duckdb 1.4 wrote it; its rows are inlined in the catalog)."""
    connection = duckdb.connect(str(path))
    connection.execute(LEGACY_CATALOG_SQL.read_text())
    connection.close()
    return path


def test_an_older_catalog_is_published_migrated_and_kept_for_old_clients(tmp_path):
    catalog = legacy_catalog(tmp_path / "legacy.ducklake")
    catalog_bytes = catalog.read_bytes()
    with pytest.raises(duckdb.Error, match="catalog version is 0.3, but the extension requires version 1.0"):
        reader("").execute(f"ATTACH {quote_literal('ducklake:' + str(catalog))} AS old (READ_ONLY)")

    site = tmp_path / "site"
    legacy_uri = str(site / "space-0.3.ducklake")
    result = publish_frozen_lake(str(catalog), str(site / "space.ducklake"), legacy_uri=legacy_uri)

    assert (result.source_format_version, result.contents.format_version, result.migrated) == ("0.3", "1.0", True)
    assert result.legacy_uri == legacy_uri
    assert catalog.read_bytes() == catalog_bytes
    report = verify_as_stranger(result.reader_url, None, ["missions", "crew"])
    assert report.ok and report.format_version == "1.0"
    connection = reader("")
    connection.execute(result.attach_sql())
    assert connection.execute("SELECT count(*) FROM frozen.missions AT (VERSION => 1)").fetchone() == (3,)
    assert connection.execute("SELECT count(*) FROM frozen.missions").fetchone() == (4,)
    plain = duckdb.connect(result.legacy_uri, read_only=True)
    assert plain.execute("SELECT value FROM ducklake_metadata WHERE key = 'version'").fetchone() == ("0.3",)
    assert plain.execute("SELECT revision FROM ducklake_assets_publication").fetchone() == (1,)


def test_a_current_catalog_writes_no_legacy_copy_and_says_why(tmp_path):
    settings = lake_settings(tmp_path / "lake")
    add_missions(settings, 0, 1)
    legacy_uri = str(tmp_path / "site" / "space-old.ducklake")

    result = publish_frozen_lake(settings, str(tmp_path / "site" / "space.ducklake"), legacy_uri=legacy_uri)

    assert result.legacy_uri is None and not Path(legacy_uri).exists()
    assert result.notes == (
        f"No legacy copy written to {legacy_uri}: the catalog is already at format 1.0, the format of the running "
        "ducklake extension.",
    )


def test_a_catalog_from_a_newer_ducklake_is_refused(tmp_path):
    settings = lake_settings(tmp_path / "lake")
    add_missions(settings, 0, 1)
    with duckdb.connect(settings.catalog.path) as catalog:
        catalog.execute("UPDATE ducklake_metadata SET value = '9.0' WHERE key = 'version'")
    publish_uri = tmp_path / "site" / "space.ducklake"

    with pytest.raises(PublishError, match=r"is in DuckLake format 9.0, which the ducklake extension of duckdb"):
        publish_frozen_lake(settings, str(publish_uri))

    assert not publish_uri.parent.exists()


def test_the_latest_static_backup_is_published_not_the_live_catalog(tmp_path):
    settings = lake_settings(tmp_path / "lake")
    backed_up = add_missions(settings, 0, 10)
    backup_uri = str(tmp_path / "backups")
    create_backup(settings, backup_uri)
    add_missions(settings, 10, 10)

    result = publish_frozen_lake(backup_uri, str(tmp_path / "site" / "space.ducklake"))

    assert (result.contents.snapshot_id, result.contents.tables) == (backed_up, {"main.missions": 10})
    plain = duckdb.connect(result.publish_uri, read_only=True)
    tables = {row[0] for row in plain.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert "ducklake_assets_backup_manifest" not in tables and "ducklake_assets_publication" in tables


def test_a_catalog_another_process_is_writing_is_refused(tmp_path):
    settings = lake_settings(tmp_path / "lake")
    add_missions(settings, 0, 1)
    script = "import sys, duckdb; connection = duckdb.connect(sys.argv[1]); print('open', flush=True); sys.stdin.read()"
    writer = subprocess.Popen(
        [sys.executable, "-c", script, settings.catalog.path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "open"
        with pytest.raises(PublishError, match="If another process has the lake open for writing, publish its static"):
            publish_frozen_lake(settings, str(tmp_path / "site" / "space.ducklake"))
    finally:
        writer.communicate("")
    assert not (tmp_path / "site").exists()


def test_bad_settings_are_refused_before_anything_is_written(tmp_path):
    sqlite_lake = LakeSettings.from_strings(f"sqlite:{tmp_path / 'catalog.sqlite'}", str(tmp_path / "data"))
    with pytest.raises(PublishError, match="is not a DuckDB file, so it cannot be published as is: publish its latest"):
        publish_frozen_lake(sqlite_lake, str(tmp_path / "site" / "space.ducklake"))
    with pytest.raises(ConfigurationError, match="keep_revisions must be at least 1, not 0"):
        publish_frozen_lake(str(tmp_path / "catalog.ducklake"), str(tmp_path / "site" / "x.ducklake"), keep_revisions=0)
    with pytest.raises(PublishError, match="does not exist: check the catalog path"):
        publish_frozen_lake(str(tmp_path / "missing.ducklake"), str(tmp_path / "site" / "x.ducklake"))
    assert sorted(os.listdir(tmp_path)) == []
