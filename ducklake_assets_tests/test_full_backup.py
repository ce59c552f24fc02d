"""Full backups: the catalog and every data file it references, copied incrementally into the backup store,
so the lake comes back after the catalog database and every data and source file are gone.

The lifecycle runs over the production matrix: every catalog kind x data on disk or S3 x a backup store
on disk or S3. Sums read every Parquet file (``count(*)`` is answered from DuckLake's metadata).
"""

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from ducklake_assets.core.backup import (
    check_backup_files,
    create_backup,
    fetch_backup,
    latest_backup,
    list_backups,
    list_pins,
    pin_backup,
    prune_backups,
    read_files_index,
    unpin_backup,
)
from ducklake_assets.core.catalog import DuckDBCatalog, SQLiteCatalog
from ducklake_assets.core.errors import BackupError, ConfigurationError, RestoreError
from ducklake_assets.core.lake import LakeSettings, connect_lake
from ducklake_assets.core.registration import register_files
from ducklake_assets.core.restore import restore_backup
from ducklake_assets.core.sources import FileSource
from ducklake_assets.core.sql import quote_literal
from ducklake_assets.core.storage import ObjectStore
from ducklake_assets_tests.backup_lakes import (
    KINDS,
    NO_INLINING,
    Place,
    fill,
    lake_settings,
    latest_snapshot,
    lose_catalog,
    place,
    plain_reader,
    row_counts,
    run,
)

TRIPS_SUM = sum(range(10, 100)) + sum(range(100, 110))
STATIONS_SUM = sum(range(7))


def store_bytes(folder: Place) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in Path(folder.root).rglob("*") if path.is_file()}


def write_parquet(target: Place, name: str, ids: range) -> str:
    """A source file written by another system, registered later by reference."""
    local = Path(os.environ.get("TMPDIR", "/tmp")) / f"src-{os.getpid()}-{name}"
    with duckdb.connect() as connection:
        connection.execute(
            f"COPY (SELECT range::INTEGER AS id, 'imported' AS city FROM range({ids.start}, {ids.stop})) "
            f"TO {quote_literal(str(local))} (FORMAT parquet)"
        )
    uri = target.uri(name)
    target.store.put_file(local, uri)
    local.unlink()
    return uri


def make_lake(catalog_kind: str, data: Place, tmp_path: Path, request: pytest.FixtureRequest) -> LakeSettings:
    pg = request.getfixturevalue("pg_database") if catalog_kind == "postgres" else None
    settings = lake_settings(catalog_kind, tmp_path / "lake", pg)
    return dataclasses.replace(settings, data_path=data.uri(""), s3=data.s3)


def register(settings: LakeSettings, table: str, uri: str) -> None:
    run(settings, f"CALL ducklake_add_data_files('lake', {quote_literal(table)}, {quote_literal(uri)})")


def restored_target(settings: LakeSettings, tmp_path: Path, data: Place) -> LakeSettings:
    catalog = settings.catalog
    if isinstance(catalog, DuckDBCatalog):
        catalog = DuckDBCatalog(str(tmp_path / "restored" / "catalog.ducklake"))
    elif isinstance(catalog, SQLiteCatalog):
        catalog = SQLiteCatalog(str(tmp_path / "restored" / "catalog.sqlite"))
    return LakeSettings(catalog=catalog, data_path=data.uri(""), s3=data.s3, attach_options=NO_INLINING)


def sums(connection: duckdb.DuckDBPyConnection, alias: str) -> tuple[int, int, int]:
    return connection.execute(
        f"SELECT (SELECT sum(id) FROM {alias}.trips), (SELECT count(*) FROM {alias}.trips), "
        f"(SELECT sum(id) FROM {alias}.stations)"
    ).fetchone()


@pytest.mark.parametrize("store_kind", ["local", "s3"])
@pytest.mark.parametrize("data_kind", ["local", "s3"])
@pytest.mark.parametrize("catalog_kind", KINDS)
def test_a_lake_comes_back_from_its_full_backup_after_the_catalog_and_every_file_are_lost(
    catalog_kind: str, data_kind: str, store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data = place(data_kind, tmp_path, "data", request)
    sources = place(data_kind, tmp_path, "sources", request)
    backups = place(store_kind, tmp_path, "backups", request)
    settings = make_lake(catalog_kind, data, tmp_path, request)
    fill(settings)
    register(settings, "trips", write_parquet(sources, "imported.parquet", range(100, 110)))
    with connect_lake(settings) as connection:
        assert sums(connection, "lake") == (TRIPS_SUM, 100, STATIONS_SUM)

    result = create_backup(settings, backups.uri(), store=backups.store, data_store=data.store, count_rows=True)

    assert result.manifest.mode == "full" and result.manifest.files == 4
    assert len(result.files.copied) == 4 and result.files.bytes_copied == result.manifest.files_bytes
    assert {name for name in backups.files() if name.startswith("external/")} == {
        name for name in backups.files() if name.endswith("/imported.parquet")
    }
    lose_catalog(settings)
    data.wipe()
    sources.wipe()

    with plain_reader(backups.uri("latest.ducklake"), backups.s3) as stranger:
        assert sums(stranger, "backup") == (TRIPS_SUM, 100, STATIONS_SUM)

    new_data = place(data_kind, tmp_path, "restored-data", request)
    target = restored_target(settings, tmp_path, new_data)
    plan = restore_backup(backups.uri(), target, dry_run=True, store=backups.store, data_store=new_data.store)
    assert (plan.files_to_copy, plan.bytes_to_copy) == (4, result.manifest.files_bytes)
    assert new_data.files() == {}
    restored = restore_backup(backups.uri(), target, store=backups.store, data_store=new_data.store)
    assert restored.restored and len(restored.files.copied) == 4
    backups.wipe()

    with connect_lake(target) as connection:
        assert sums(connection, "lake") == (TRIPS_SUM, 100, STATIONS_SUM)
        connection.execute("INSERT INTO trips VALUES (5000, 'after the restore')")
        assert sums(connection, "lake") == (TRIPS_SUM + 5000, 101, STATIONS_SUM)
    assert len(new_data.files()) == 5


def test_the_second_backup_copies_exactly_the_new_source_files(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    data, sources, backups = (Place(str(tmp_path / name)) for name in ("data", "sources", "backups"))
    settings = make_lake("duckdb", data, tmp_path, request)
    fill(settings)
    first = create_backup(settings, backups.uri())
    for number in range(2):
        register(settings, "trips", write_parquet(sources, f"day-{number}.parquet", range(200 + number, 201 + number)))

    second = create_backup(settings, backups.uri())

    assert len(first.files.copied) == 3
    assert sorted(Path(item.uri).name for item in second.files.copied) == ["day-0.parquet", "day-1.parquet"]
    assert {item.uri for item in second.files.reused} == {item.uri for item in first.files.copied}
    assert second.store_bytes == sum(backups.files().values())
    index = read_files_index(second.backup.uri, ObjectStore())
    assert len(index) == 5 and all(etag for _, etag in index.values())


def test_duckdbs_documented_recovery_works_from_the_backup_store_alone(tmp_path: Path) -> None:
    """DuckLake's recovery recipe, ``COPY FROM DATABASE`` into a new catalog, reads the backup's copies."""
    data, sources, backups = (Place(str(tmp_path / name)) for name in ("data", "sources", "backups"))
    settings = lake_settings("duckdb", tmp_path / "lake")
    settings = dataclasses.replace(settings, data_path=data.uri(""))
    fill(settings)
    register(settings, "trips", write_parquet(sources, "imported.parquet", range(100, 110)))
    result = create_backup(settings, backups.uri())
    lose_catalog(settings)
    data.wipe()
    sources.wipe()

    with plain_reader(result.backup.uri) as connection:
        connection.execute(f"ATTACH {quote_literal(str(tmp_path / 'recovered.ducklake'))} AS recovered")
        connection.execute("COPY FROM DATABASE __ducklake_metadata_backup TO recovered")
        connection.execute("DETACH recovered")
        connection.execute(f"ATTACH {quote_literal('ducklake:' + str(tmp_path / 'recovered.ducklake'))} AS lake")
        assert sums(connection, "lake") == (TRIPS_SUM, 100, STATIONS_SUM)


def test_retention_deletes_only_files_no_kept_backup_needs_and_pins_keep_a_backup(tmp_path: Path) -> None:
    data, backups = Place(str(tmp_path / "data")), Place(str(tmp_path / "backups"))
    settings = dataclasses.replace(lake_settings("duckdb", tmp_path / "lake"), data_path=data.uri(""))
    fill(settings)
    first = create_backup(settings, backups.uri())
    stations_copy = next(item.uri for item in first.files.copied if "/stations/" in item.uri)
    run(settings, "DROP TABLE stations")
    with connect_lake(settings) as connection:
        connection.execute("CALL ducklake_expire_snapshots('lake', older_than => now() + INTERVAL 1 second)")
    pin = pin_backup(backups.uri(), "before-stations-left", ObjectStore(), backup="latest")
    second = create_backup(settings, backups.uri())
    run(settings, "INSERT INTO trips VALUES (1000, 'later')")

    kept = create_backup(settings, backups.uri(), keep=1)

    assert [info.uri for info in kept.removed] == [second.backup.uri], "the pinned first backup stays"
    assert kept.removed_files == 0 and Path(stations_copy).is_file()
    assert [p.name for p in list_pins(backups.uri(), ObjectStore())] == ["before-stations-left"]
    assert pin.backup_uri == first.backup.uri and pin.snapshot_id == first.manifest.snapshot_id
    with plain_reader(first.backup.uri) as reader:
        assert reader.execute("SELECT sum(id) FROM backup.stations").fetchone()[0] == STATIONS_SUM

    unpin_backup(backups.uri(), "before-stations-left", ObjectStore())
    pruned = prune_backups(backups.uri(), ObjectStore(), keep=1)

    assert pruned.backups == [first.backup]
    assert pruned.files == [stations_copy], "trips files are still needed by the kept backup"
    assert list_backups(backups.uri(), ObjectStore()) == [kept.backup]
    assert check_backup_files(backups.uri(), ObjectStore(), ObjectStore()).ok
    with plain_reader(backups.uri("latest.ducklake")) as reader:
        assert reader.execute("SELECT sum(id), count(*) FROM backup.trips").fetchone() == (
            sum(range(10, 100)) + 1000,
            91,
        )
    with pytest.raises(ConfigurationError, match="pin name"):
        pin_backup(backups.uri(), "../escape", ObjectStore())
    with pytest.raises(BackupError, match="no such versioned backup"):
        pin_backup(backups.uri(), "gone", ObjectStore(), backup=first.backup.uri)


def test_a_file_left_by_a_failed_run_goes_once_it_is_old(tmp_path: Path) -> None:
    data, backups = Place(str(tmp_path / "data")), Place(str(tmp_path / "backups"))
    settings = dataclasses.replace(lake_settings("duckdb", tmp_path / "lake"), data_path=data.uri(""))
    fill(settings)
    create_backup(settings, backups.uri())
    stray = Path(backups.uri("data", "main", "trips", "ducklake-left-by-a-killed-run.parquet"))
    stray.write_bytes(b"partial")
    run(settings, "INSERT INTO trips VALUES (1000, 'later')")
    create_backup(settings, backups.uri())

    assert prune_backups(backups.uri(), ObjectStore(), keep=1).files == []
    assert stray.is_file(), "a young unlisted file may belong to a backup still copying"
    tomorrow = datetime.now(UTC) + timedelta(days=2)
    run(settings, "INSERT INTO trips VALUES (1001, 'later')")
    create_backup(settings, backups.uri())
    assert prune_backups(backups.uri(), ObjectStore(), keep=1, now=tomorrow).files == [str(stray)]


def test_bad_input_names_the_file_and_leaves_earlier_backups_as_they_were(tmp_path: Path) -> None:
    data, backups = Place(str(tmp_path / "data")), Place(str(tmp_path / "backups"))
    settings = dataclasses.replace(lake_settings("duckdb", tmp_path / "lake"), data_path=data.uri(""))
    fill(settings)
    first = create_backup(settings, backups.uri())
    before = {path: Path(path).read_bytes() for path in map(str, Path(backups.root).rglob("*")) if Path(path).is_file()}

    def unchanged() -> None:
        now = {
            path: Path(path).read_bytes() for path in map(str, Path(backups.root).rglob("*")) if Path(path).is_file()
        }
        assert now == before
        assert latest_backup(backups.uri(), ObjectStore()) == first.backup

    run(settings, "INSERT INTO trips SELECT range, 'more' FROM range(500, 600)")
    newest = max(Path(data.root).rglob("*.parquet"), key=lambda path: path.stat().st_mtime)
    newest.rename(newest.with_suffix(".moved"))
    with pytest.raises(BackupError, match=f"{newest} is missing") as vanished:
        create_backup(settings, backups.uri())
    assert "nothing was exposed and earlier backups are unchanged" in str(vanished.value)
    unchanged()

    newest.with_suffix(".moved").rename(newest)
    newest.write_bytes(newest.read_bytes()[:-10])
    with pytest.raises(BackupError, match=f"{newest} has .* bytes, the catalog recorded"):
        create_backup(settings, backups.uri())
    unchanged()

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the backup store should be")
    with pytest.raises(BackupError, match="not-a-folder"):
        create_backup(settings, str(blocker / "backups"))
    with pytest.raises(ConfigurationError, match="backup mode must be 'full'"):
        create_backup(settings, backups.uri(), mode="everything")
    unchanged()


def test_a_store_copy_of_another_size_is_never_overwritten(tmp_path: Path) -> None:
    data, backups = Place(str(tmp_path / "data")), Place(str(tmp_path / "backups"))
    settings = dataclasses.replace(lake_settings("duckdb", tmp_path / "lake"), data_path=data.uri(""))
    fill(settings)
    first = create_backup(settings, backups.uri())
    copy = Path(next(item.uri for item in first.files.copied if "/stations/" in item.uri))
    copy.write_bytes(b"damaged")
    run(settings, "INSERT INTO trips VALUES (1000, 'later')")

    report = check_backup_files(backups.uri(), ObjectStore(), ObjectStore())
    assert report.damaged == [str(copy)] and not report.ok
    with pytest.raises(BackupError, match="already exist at the destination with another size"):
        create_backup(settings, backups.uri())
    assert copy.read_bytes() == b"damaged"


def test_a_full_backup_to_s3_is_checked_with_one_listing_and_notices_a_lost_copy(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    backups = place("s3", tmp_path, "backups", request)
    settings = dataclasses.replace(lake_settings("duckdb", tmp_path / "lake"), data_path=str(tmp_path / "data"))
    fill(settings)
    result = create_backup(settings, backups.uri(), store=backups.store)
    assert check_backup_files(backups.uri(), backups.store, ObjectStore()).ok
    lost = result.files.copied[0].uri
    backups.store.delete(lost)

    report = check_backup_files(backups.uri(), backups.store, ObjectStore())

    assert report.missing == [lost] and report.location == "backup store"


def test_an_older_format_catalog_is_backed_up_as_it_is_and_restored_migrated(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.ducklake"
    with duckdb.connect(str(legacy)) as connection:
        connection.execute((Path(__file__).parent / "data" / "ducklake_0_3_catalog.sql").read_text())
    settings = LakeSettings(catalog=DuckDBCatalog(str(legacy)), data_path=str(tmp_path / "data"))

    result = create_backup(settings, str(tmp_path / "backups"), count_rows=True)

    assert result.manifest.ducklake_version == "0.3"
    assert result.table_rows == {"main.crew": 5, "main.missions": 4}
    with duckdb.connect(result.backup.uri, read_only=True) as plain:
        assert plain.execute("SELECT value FROM ducklake_metadata WHERE key = 'version'").fetchone()[0] == "0.3"
    target = LakeSettings(catalog=SQLiteCatalog(str(tmp_path / "restored.sqlite")), data_path=str(tmp_path / "new"))
    restore_backup(str(tmp_path / "backups"), target)
    with connect_lake(target) as connection:
        assert connection.execute("SELECT sum(mission_id) FROM missions").fetchone()[0] == 6
        assert (
            connection.execute("SELECT value FROM lake.options() WHERE option_name = 'version'").fetchone()[0] != "0.3"
        )


KILLED_BACKUP = textwrap.dedent(
    """
    import os, signal, sys
    from ducklake_assets.core.backup import create_backup
    from ducklake_assets.core.catalog import DuckDBCatalog
    from ducklake_assets.core.lake import LakeSettings

    catalog, data_path, backup_uri, step = sys.argv[1:5]

    def checkpoint(at, detail):
        if at == step:
            os.kill(os.getpid(), signal.SIGKILL)

    create_backup(LakeSettings(catalog=DuckDBCatalog(catalog), data_path=data_path), backup_uri, checkpoint=checkpoint)
    """
)


def _killed_lake(tmp_path: Path) -> tuple[LakeSettings, Place, int]:
    data, backups = Place(str(tmp_path / "data")), Place(str(tmp_path / "backups"))
    settings = dataclasses.replace(lake_settings("duckdb", tmp_path / "lake"), data_path=data.uri(""))
    fill(settings)
    first = create_backup(settings, backups.uri())
    for number in range(8):
        run(
            settings,
            f"INSERT INTO trips SELECT range, 'batch {number}' FROM range({1000 * number}, {1000 * number + 50})",
        )
    return settings, backups, first.manifest.snapshot_id


def _after_the_kill(settings: LakeSettings, backups: Place, first_snapshot: int, tmp_path: Path) -> None:
    """Whatever the kill interrupted, a reader finds an intact backup and the next run finishes the job."""
    latest = latest_backup(backups.uri(), ObjectStore())
    assert latest.snapshot_id in (first_snapshot, latest_snapshot(settings))
    expected = row_counts(settings, version=latest.snapshot_id)
    with plain_reader(latest.uri) as reader:
        assert reader.execute("SELECT count(*), sum(id) FROM backup.trips").fetchone()[0] == expected["main.trips"]
    for pointer in ("latest.ducklake", latest.uri.rsplit("/", 1)[-1]):
        fetch_backup(backups.uri(pointer), ObjectStore(), tmp_path)
    before = backups.files()
    held = {name for name in before if name.startswith("data/") and ".tmp-" not in name}

    again = create_backup(settings, backups.uri())

    if again.up_to_date:
        assert latest.snapshot_id == latest_snapshot(settings), "the killed run had finished: nothing left to do"
        assert again.backup == latest and backups.files() == before
    else:
        needed = {item.uri.removeprefix(backups.uri("")) for item in again.files.files()}
        assert {item.uri.removeprefix(backups.uri("")) for item in again.files.copied} == needed - held
    assert not [name for name in backups.files() if ".tmp-" in name], "a killed run's temporary files are removed"
    assert check_backup_files(backups.uri(), ObjectStore(), ObjectStore()).ok
    with plain_reader(backups.uri("latest.ducklake")) as reader:
        assert reader.execute("SELECT count(*) FROM backup.trips").fetchone()[0] == row_counts(settings)["main.trips"]
        reader.execute("SELECT sum(id) FROM backup.trips").fetchone()
    scratch = [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("ducklake-assets-backup-*")]
    assert not [p for p in scratch if p.stat().st_mtime < time.time() - 1 and _owner_dead(p)]


def _owner_dead(folder: Path) -> bool:
    pid = int(folder.name.split("-")[4])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize(
    "step", ["copied", "staged", "exposed-index", "exposed-manifest", "exposed-backup", "exposed-latest-file"]
)
def test_a_backup_killed_at_each_step_leaves_the_previous_one_and_the_next_run_finishes(
    step: str, tmp_path: Path
) -> None:
    settings, backups, first_snapshot = _killed_lake(tmp_path)

    killed = subprocess.run(
        [sys.executable, "-c", KILLED_BACKUP, settings.catalog.path, settings.data_path, backups.uri(), step],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _after_the_kill(settings, backups, first_snapshot, tmp_path)


@pytest.mark.parametrize("delay", [0.3, 0.9, 1.6])
def test_a_backup_killed_at_a_random_moment_leaves_an_intact_store(delay: float, tmp_path: Path) -> None:
    settings, backups, first_snapshot = _killed_lake(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_BACKUP, settings.catalog.path, settings.data_path, backups.uri(), "never"],
        stderr=subprocess.PIPE,
    )
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)

    _after_the_kill(settings, backups, first_snapshot, tmp_path)


def test_a_restore_into_a_data_path_holding_another_file_of_that_name_is_refused(tmp_path: Path) -> None:
    data, backups = Place(str(tmp_path / "data")), Place(str(tmp_path / "backups"))
    settings = dataclasses.replace(lake_settings("duckdb", tmp_path / "lake"), data_path=data.uri(""))
    fill(settings)
    result = create_backup(settings, backups.uri())
    target = LakeSettings(catalog=DuckDBCatalog(str(tmp_path / "restored.ducklake")), data_path=str(tmp_path / "new"))
    clash = tmp_path / "new" / result.files.copied[0].uri.split("/data/", 1)[1]
    clash.parent.mkdir(parents=True)
    clash.write_bytes(b"someone else's file")

    with pytest.raises(RestoreError, match="already exist at the destination with another size"):
        restore_backup(backups.uri(), target)

    assert not Path(target.catalog.path).exists()
    assert clash.read_bytes() == b"someone else's file"


@pytest.mark.parametrize("source_kind", ["local", "s3"])
def test_source_files_that_survive_a_disaster_are_not_registered_again_after_the_restore(
    source_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The restore copies files registered by reference into the data path; the source folder the
    pipeline lists still holds them, and the next registration must know them, not add them twice."""
    sources = place(source_kind, tmp_path, "sources", request)
    data = Place(str(tmp_path / "data"))
    settings = dataclasses.replace(lake_settings("duckdb", tmp_path / "lake"), data_path=data.uri(""), s3=sources.s3)
    uris = [write_parquet(sources, f"trips.p{part}.parquet", range(part * 10, part * 10 + 10)) for part in range(3)]
    files = FileSource(sources.uri("")).list_files(sources.store)
    with connect_lake(settings) as connection:
        assert len(register_files(connection, settings, files).files_added) == 3
    create_backup(settings, str(tmp_path / "backups"), data_store=sources.store)
    lose_catalog(settings)
    data.wipe()

    restore_backup(str(tmp_path / "backups"), settings, store=ObjectStore(), data_store=ObjectStore(sources.s3))
    with connect_lake(settings) as connection:
        again = register_files(connection, settings, FileSource(sources.uri("")).list_files(sources.store))
        assert again.files_added == () and again.already_registered == tuple(sorted(uris))
        assert connection.execute("SELECT count(*), sum(id) FROM lake.trips").fetchone() == (30, sum(range(30)))
