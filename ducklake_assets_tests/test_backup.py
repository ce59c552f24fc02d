"""Static backups: one DuckDB file per backup that opens with a plain read-only ATTACH, taken at one
snapshot, exposed only once verified, versioned, pruned and listed."""

import json
import socket
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from ducklake_assets.core.backup import (
    MANIFEST_TABLE,
    apply_retention,
    backup_referenced_files,
    create_backup,
    latest_backup,
    list_backups,
    read_manifest,
    read_manifest_from_file,
)
from ducklake_assets.core.catalog import DuckDBCatalog, PostgresCatalog
from ducklake_assets.core.errors import BackupError, ConfigurationError, StorageError
from ducklake_assets.core.extensions import load_extensions
from ducklake_assets.core.lake import LakeSettings
from ducklake_assets.core.s3 import S3Settings
from ducklake_assets.core.storage import ObjectStore
from ducklake_assets_tests.backup_lakes import (
    KINDS,
    current_files,
    fill,
    lake_settings,
    latest_snapshot,
    plain_reader,
    reader_counts,
    row_counts,
    run,
    settings_for_kind,
    sha256,
)
from ducklake_assets_tests.services import S3Bucket


def folder_listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def tree(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` with its bytes: what a backup store holds."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def wait_for_commits_after(settings: LakeSettings, snapshot_id: int) -> None:
    """Wait until another process has committed past ``snapshot_id``."""
    deadline = time.monotonic() + 60
    while latest_snapshot(settings) <= snapshot_id:
        assert time.monotonic() < deadline, "the writer process made no commits"
        time.sleep(0.05)


class FullDisk(ObjectStore):
    """Local storage whose disk fills up after ``writes_allowed`` file writes."""

    def __init__(self, writes_allowed: int):
        super().__init__()
        self.writes_allowed = writes_allowed

    def put_file(self, source, uri):
        if self.writes_allowed == 0:
            raise StorageError(f"Cannot write {uri}: No space left on device")
        self.writes_allowed -= 1
        return super().put_file(source, uri)


@pytest.mark.parametrize("kind", KINDS)
def test_a_local_backup_opens_with_a_plain_read_only_attach(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = settings_for_kind(request, kind, tmp_path / "lake")
    fill(settings)
    backups = tmp_path / "backups"

    result = create_backup(settings, str(backups), store=ObjectStore(), count_rows=True)

    name = result.backup.uri.rsplit("/", 1)[-1]
    assert name.startswith("backup-") and name.endswith(f"-snapshot-{latest_snapshot(settings)}.ducklake")
    assert folder_listing(backups) == sorted(
        [
            name,
            name.replace(".ducklake", ".json"),
            name.replace(".ducklake", ".files.json"),
            "latest.ducklake",
            "latest.json",
            "data",
        ]
    )
    live = row_counts(settings)
    assert result.table_rows == live == {"main.stations": 7, "main.trips": 90}
    copies = sorted(path.relative_to(backups / "data") for path in (backups / "data").rglob("*.parquet"))
    originals = sorted(
        Path(path).relative_to((tmp_path / "lake" / "data").resolve()) for path in current_files(settings)
    )
    assert copies == originals and len(result.files.copied) == 3 and not result.files.reused
    for path in (result.backup.uri, result.latest_uri):
        with plain_reader(path) as reader:
            assert reader_counts(reader) == live
            assert reader.execute("SELECT sum(id) FROM backup.trips").fetchone()[0] == sum(range(10, 100))
            assert reader.execute("SELECT max(snapshot_id) FROM backup.snapshots()").fetchone()[0] == 4
            (data_path,) = reader.execute("SELECT data_path FROM ducklake_settings('backup')").fetchone()
        assert data_path == str(backups / "data") + "/"
        assert not Path(path + ".wal").exists()

    manifest = json.loads((backups / "latest.json").read_text())
    assert manifest["snapshot_id"] == 4
    assert manifest["catalog_kind"] == kind
    assert manifest["ducklake_version"] == "1.0"
    assert manifest["mode"] == "full" and manifest["files"] == 3
    assert manifest["data_path"] == str((tmp_path / "lake" / "data").resolve()) + "/"
    assert manifest["sha256"] == sha256(Path(result.backup.uri).read_bytes())
    assert manifest["sha256"] == sha256((backups / "latest.ducklake").read_bytes())
    assert manifest["size_bytes"] == result.backup.size_bytes == Path(result.backup.uri).stat().st_size
    assert datetime.fromisoformat(manifest["created_at"]) <= datetime.now(UTC)
    inside = read_manifest_from_file(result.backup.uri)
    assert inside.snapshot_id == 4 and inside.catalog == settings.describe() and inside.sha256 is None
    assert read_manifest(result.backup.uri, ObjectStore()) == result.manifest


def test_a_postgres_backup_never_contains_the_password(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    settings = settings_for_kind(request, "postgres", tmp_path / "lake")
    fill(settings)
    password = settings.catalog.password

    result = create_backup(settings, str(tmp_path / "backups"), store=ObjectStore())

    assert "password=***" in result.manifest.catalog
    for name, content in tree(tmp_path / "backups").items():
        assert password.encode() not in content, name
    assert password not in repr(result)


@pytest.mark.parametrize("kind", KINDS)
def test_a_backup_to_s3_opens_straight_from_the_bucket(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, s3_bucket: S3Bucket, s3_settings: S3Settings
) -> None:
    settings = settings_for_kind(request, kind, tmp_path / "lake")
    fill(settings)
    backup_uri = s3_bucket.uri("backups/nightly")

    result = create_backup(settings, backup_uri, store=ObjectStore(s3_settings))

    keys = sorted(o["Key"] for o in s3_bucket.client().list_objects_v2(Bucket=s3_bucket.name)["Contents"])
    versioned = result.backup.uri.removeprefix(s3_bucket.uri())
    data_keys = [key for key in keys if key.startswith("backups/nightly/data/")]
    assert sorted(set(keys) - set(data_keys)) == sorted(
        [
            versioned,
            versioned.replace(".ducklake", ".json"),
            versioned.replace(".ducklake", ".files.json"),
            "backups/nightly/latest.ducklake",
            "backups/nightly/latest.json",
        ]
    )
    assert len(data_keys) == len(current_files(settings)) == 3
    with plain_reader(s3_bucket.uri("backups/nightly/latest.ducklake"), s3_settings) as reader:
        assert reader_counts(reader) == row_counts(settings)
        assert reader.execute("SELECT sum(id) FROM backup.trips").fetchone()[0] == sum(range(10, 100))
    assert list_backups(backup_uri, ObjectStore(s3_settings)) == [result.backup]
    assert latest_backup(backup_uri, ObjectStore(s3_settings)) == result.backup


def test_a_backup_holds_exactly_one_snapshot_while_another_process_commits(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = settings_for_kind(request, "postgres", tmp_path / "lake")
    fill(settings)
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys
                from pathlib import Path
                from ducklake_assets.core.catalog import PostgresCatalog
                from ducklake_assets.core.lake import LakeSettings, connect_lake
                settings = LakeSettings(catalog=PostgresCatalog.from_dsn(sys.argv[1]),
                                        attach_options={"DATA_INLINING_ROW_LIMIT": 0})
                commits = 0
                with connect_lake(settings) as connection:
                    while not Path(sys.argv[2]).exists() or commits < 10:
                        connection.execute("INSERT INTO trips SELECT range, 'busy' FROM range(5)")
                        commits += 1
                print(commits)
                """
            ),
            request.getfixturevalue("pg_database").dsn(),
            str(stop),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        results = []
        for _ in range(3):
            wait_for_commits_after(settings, results[-1].manifest.snapshot_id if results else 4)
            results.append(create_backup(settings, str(tmp_path / "backups"), store=ObjectStore()))
    finally:
        stop.touch()
        output, _ = writer.communicate(timeout=120)
    assert writer.returncode == 0 and int(output) >= 10

    assert latest_snapshot(settings) > results[-1].manifest.snapshot_id
    for result in results:
        with plain_reader(result.backup.uri) as reader:
            assert reader.execute("SELECT max(snapshot_id) FROM backup.snapshots()").fetchone()[0] == (
                result.manifest.snapshot_id
            )
            newer_files = reader.execute(
                "SELECT count(*) FROM __ducklake_metadata_backup.ducklake_data_file WHERE begin_snapshot > ?",
                [result.manifest.snapshot_id],
            ).fetchone()[0]
            assert newer_files == 0
            assert reader_counts(reader) == row_counts(settings, version=result.manifest.snapshot_id)


def test_an_older_storage_version_is_written_on_request(tmp_path: Path) -> None:
    settings = lake_settings("duckdb", tmp_path, name="lake")
    fill(settings)

    def storage_number(path: str) -> int:
        header = Path(path).read_bytes()[:20]
        assert header[8:12] == b"DUCK"
        return int.from_bytes(header[12:20], "little")

    default = create_backup(settings, str(tmp_path / "default"), store=ObjectStore())
    newer = create_backup(settings, str(tmp_path / "newer"), store=ObjectStore(), storage_version="v1.4.0")
    older = create_backup(settings, str(tmp_path / "older"), store=ObjectStore(), storage_version="v1.0.0")

    assert default.manifest.storage_version is None
    assert older.manifest.storage_version == "v1.0.0"
    # 64 is the storage number DuckDB 0.10.2 and every 1.x release reads; v1.4.0 writes a newer one.
    assert storage_number(default.backup.uri) == storage_number(older.backup.uri) == 64
    assert storage_number(newer.backup.uri) > 64
    for result in (default, newer, older):
        with plain_reader(result.backup.uri) as reader:
            assert reader_counts(reader) == row_counts(settings)


def test_an_unknown_storage_version_fails_before_anything_is_exposed(tmp_path: Path) -> None:
    settings = LakeSettings(catalog=DuckDBCatalog(str(tmp_path / "lake.ducklake")), data_path=str(tmp_path / "data"))
    fill(settings)
    first = create_backup(settings, str(tmp_path / "backups"), store=ObjectStore())
    before = tree(tmp_path / "backups")

    with pytest.raises(BackupError, match="v9.9.9") as failure:
        create_backup(settings, str(tmp_path / "backups"), store=ObjectStore(), storage_version="v9.9.9")

    assert "nothing was exposed" in str(failure.value)
    assert tree(tmp_path / "backups") == before
    assert list_backups(str(tmp_path / "backups"), ObjectStore()) == [first.backup]


def test_a_disk_full_while_exposing_keeps_the_previous_backup(tmp_path: Path) -> None:
    settings = lake_settings("duckdb", tmp_path, name="lake")
    fill(settings)
    backups = tmp_path / "backups"
    first = create_backup(settings, str(backups), store=ObjectStore())
    run(settings, "INSERT INTO trips VALUES (1000, 'new city')")

    with pytest.raises(BackupError, match="No space left on device") as failure:
        create_backup(settings, str(backups), store=FullDisk(writes_allowed=0))
    assert "previous backup is unchanged" in str(failure.value)

    assert list_backups(str(backups), ObjectStore()) == [first.backup]
    assert latest_backup(str(backups), ObjectStore()) == first.backup
    assert not [name for name in folder_listing(backups) if name.endswith(".tmp")]
    with plain_reader(str(backups / "latest.ducklake")) as reader:
        assert reader.execute("SELECT max(snapshot_id) FROM backup.snapshots()").fetchone()[0] == 4

    # This time the file index, the versioned manifest and the backup file fit; updating latest fails.
    with pytest.raises(BackupError, match="No space left on device"):
        create_backup(settings, str(backups), store=FullDisk(writes_allowed=3))
    newest = list_backups(str(backups), ObjectStore())[0]
    assert newest.snapshot_id == 5, "the versioned copy was stored before the disk filled up"
    assert latest_backup(str(backups), ObjectStore()) == first.backup
    with plain_reader(str(backups / "latest.ducklake")) as reader:
        assert reader.execute("SELECT max(snapshot_id) FROM backup.snapshots()").fetchone()[0] == 4

    removed = apply_retention(str(backups), ObjectStore(), keep=1)
    assert removed == [], "retention keeps the newest backup and the one latest points to"


def test_an_unreachable_s3_endpoint_leaves_the_previous_backup(
    tmp_path: Path, s3_bucket: S3Bucket, s3_settings: S3Settings
) -> None:
    settings = LakeSettings(catalog=DuckDBCatalog(str(tmp_path / "lake.ducklake")), data_path=str(tmp_path / "data"))
    fill(settings)
    backup_uri = s3_bucket.uri("backups")
    first = create_backup(settings, backup_uri, store=ObjectStore(s3_settings))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    down = S3Settings(
        endpoint_url=f"http://127.0.0.1:{closed_port}",
        region_name=s3_settings.region_name,
        aws_access_key_id=s3_settings.aws_access_key_id,
        aws_secret_access_key=s3_settings.aws_secret_access_key,
        path_style=True,
    )

    with pytest.raises(BackupError, match=f"127.0.0.1:{closed_port}") as failure:
        create_backup(settings, backup_uri, store=ObjectStore(down))

    assert s3_settings.aws_secret_access_key not in str(failure.value)
    assert list_backups(backup_uri, ObjectStore(s3_settings)) == [first.backup]
    with plain_reader(s3_bucket.uri("backups/latest.ducklake"), s3_settings) as reader:
        assert reader_counts(reader) == row_counts(settings)


def test_retention_keeps_the_last_backups_and_the_young_ones(tmp_path: Path) -> None:
    settings = lake_settings("duckdb", tmp_path, name="lake")
    fill(settings)
    backups = str(tmp_path / "backups")
    made = []
    for number in range(4):
        run(settings, f"INSERT INTO trips VALUES ({1000 + number}, 'later')")
        made.append(create_backup(settings, backups, store=ObjectStore()).backup)

    result = create_backup(settings, backups, store=ObjectStore(), keep=3, force=True)

    assert [info.uri for info in result.removed] == [made[1].uri, made[0].uri]
    assert list_backups(backups, ObjectStore()) == [result.backup, made[3], made[2]]
    assert not Path(made[0].manifest_uri).exists()
    assert apply_retention(backups, ObjectStore(), keep_within=timedelta(hours=1)) == []
    two_hours_later = datetime.now(UTC) + timedelta(hours=2)
    gone = apply_retention(backups, ObjectStore(), keep_within=timedelta(hours=1), now=two_hours_later)
    assert gone == [made[3], made[2]]
    assert list_backups(backups, ObjectStore()) == [result.backup]
    with plain_reader(str(tmp_path / "backups" / "latest.ducklake")) as reader:
        assert reader_counts(reader) == row_counts(settings)


def test_bad_retention_settings_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    settings = LakeSettings(catalog=DuckDBCatalog(str(tmp_path / "lake.ducklake")), data_path=str(tmp_path / "data"))
    fill(settings)

    with pytest.raises(ConfigurationError, match="keep must be at least 1"):
        create_backup(settings, str(tmp_path / "backups"), store=ObjectStore(), keep=0)
    with pytest.raises(ConfigurationError, match="keep_within must be a positive duration"):
        create_backup(settings, str(tmp_path / "backups"), store=ObjectStore(), keep_within=timedelta(0))
    with pytest.raises(ConfigurationError, match="names a file"):
        create_backup(settings, str(tmp_path / "backups" / "mine.ducklake"), store=ObjectStore())

    assert not (tmp_path / "backups").exists()


def test_a_missing_catalog_is_reported_and_nothing_is_written(tmp_path: Path) -> None:
    missing = LakeSettings(catalog=DuckDBCatalog(str(tmp_path / "nowhere.ducklake")))

    with pytest.raises(BackupError, match=r"nowhere\.ducklake does not exist"):
        create_backup(missing, str(tmp_path / "backups"), store=ObjectStore())

    assert not (tmp_path / "backups").exists()
    assert not (tmp_path / "nowhere.ducklake").exists()


def test_a_wrong_postgres_password_fails_without_showing_it(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    settings = settings_for_kind(request, "postgres", tmp_path / "lake")
    fill(settings)
    wrong_password = "not-it'; --"
    wrong = LakeSettings(catalog=PostgresCatalog(settings.catalog.params, wrong_password))

    with pytest.raises(BackupError, match="password authentication failed") as failure:
        create_backup(wrong, str(tmp_path / "backups"), store=ObjectStore())

    assert wrong_password not in str(failure.value)
    assert list_backups(str(tmp_path / "backups"), ObjectStore()) == []


def test_listing_shows_backups_newest_first_and_nothing_else(tmp_path: Path) -> None:
    settings = LakeSettings(catalog=DuckDBCatalog(str(tmp_path / "lake.ducklake")), data_path=str(tmp_path / "data"))
    fill(settings)
    backups = tmp_path / "backups"
    older = create_backup(settings, str(backups), store=ObjectStore()).backup
    newer = create_backup(settings, str(backups), store=ObjectStore(), force=True).backup
    create_backup(settings, str(backups / "safety"), store=ObjectStore())
    (backups / "notes.txt").write_text("not a backup")

    listed = list_backups(str(backups), ObjectStore())

    assert listed == [newer, older]
    assert listed[0].snapshot_id == 4 and listed[0].size_bytes == Path(newer.uri).stat().st_size
    assert list_backups(str(tmp_path / "no-backups-yet"), ObjectStore()) == []
    assert latest_backup(str(tmp_path / "no-backups-yet"), ObjectStore()) is None


def test_referenced_files_are_the_absolute_paths_duckdb_reads(tmp_path: Path) -> None:
    settings = lake_settings("duckdb", tmp_path, name="lake")
    fill(settings)
    run(settings, "DROP TABLE stations", message="stations moved elsewhere")
    create_backup(settings, str(tmp_path / "backups"), mode="metadata", store=ObjectStore())

    live = backup_referenced_files(str(tmp_path / "backups"), ObjectStore(), include_history=False)
    everything = backup_referenced_files(str(tmp_path / "backups"), ObjectStore())

    assert set(live) == current_files(settings)
    dropped = [path for path in everything if "/main/stations/" in path]
    assert len(dropped) == 1 and set(everything) == set(live) | set(dropped)
    assert all(Path(path).is_absolute() and Path(path).is_file() for path in everything)


def test_a_relative_data_path_is_made_absolute_so_readers_elsewhere_find_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    connection = duckdb.connect()
    load_extensions(connection, ["ducklake"])
    connection.execute("ATTACH 'ducklake:lake.ducklake' AS lake (DATA_PATH 'relative_data', DATA_INLINING_ROW_LIMIT 0)")
    connection.execute("CREATE TABLE lake.numbers AS SELECT range AS n FROM range(5)")
    connection.close()
    result = create_backup(LakeSettings.from_strings("lake.ducklake"), "backups", store=ObjectStore())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    with plain_reader(str(tmp_path / "backups" / "latest.ducklake")) as reader:
        assert reader.execute("SELECT sum(n) FROM backup.numbers").fetchone()[0] == 10
    assert result.manifest.data_path == str(tmp_path / "relative_data") + "/"


def test_the_manifest_table_inside_the_backup_does_not_disturb_ducklake(tmp_path: Path) -> None:
    settings = LakeSettings(catalog=DuckDBCatalog(str(tmp_path / "lake.ducklake")), data_path=str(tmp_path / "data"))
    fill(settings)
    result = create_backup(settings, str(tmp_path / "backups"), store=ObjectStore())

    with plain_reader(result.backup.uri) as reader:
        rows = dict(reader.execute(f"SELECT key, value FROM __ducklake_metadata_backup.{MANIFEST_TABLE}").fetchall())
        tables = reader.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'backup'").fetchall()
    assert rows["snapshot_id"] == "4" and rows["format"] == "ducklake-assets-backup/1"
    assert sorted(tables) == [("stations",), ("trips",)]
