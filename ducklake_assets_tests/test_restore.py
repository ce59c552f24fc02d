"""Restoring static backups into catalogs of every kind, with the guards that keep a restore from
silently losing snapshots."""

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from ducklake_assets.core.backup import create_backup, list_backups
from ducklake_assets.core.catalog import DuckDBCatalog
from ducklake_assets.core.errors import RestoreError
from ducklake_assets.core.lake import LakeSettings
from ducklake_assets.core.restore import restore_backup
from ducklake_assets.core.storage import ObjectStore
from ducklake_assets_tests.backup_lakes import (
    KINDS,
    NO_INLINING,
    fill,
    lake_settings,
    latest_snapshot,
    row_counts,
    run,
    settings_for_kind,
    snapshot_ids,
)
from ducklake_assets_tests.services import postgres_database


@contextlib.contextmanager
def new_catalog(kind: str, folder: Path, request: pytest.FixtureRequest) -> Iterator[LakeSettings]:
    """An empty catalog of ``kind`` to restore into; its data path will come from the backup."""
    if kind == "postgres":
        with postgres_database(request.getfixturevalue("postgres_server")) as database:
            yield LakeSettings(catalog=lake_settings(kind, folder, database).catalog, attach_options=NO_INLINING)
        return
    yield LakeSettings(catalog=lake_settings(kind, folder, name="restored").catalog, attach_options=NO_INLINING)


def backup_location(location: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, ObjectStore]:
    if location == "local":
        return str(tmp_path / "backups"), ObjectStore()
    bucket = request.getfixturevalue("s3_bucket")
    return bucket.uri("backups"), ObjectStore(request.getfixturevalue("s3_settings"))


@pytest.mark.parametrize("location", ["local", "s3"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_backup_restores_into_a_new_catalog_of_the_same_kind(
    kind: str, location: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    source = settings_for_kind(request, kind, tmp_path / "lake")
    fill(source)
    backup_uri, store = backup_location(location, tmp_path, request)
    create_backup(source, backup_uri, store=store)

    with new_catalog(kind, tmp_path / "restored", request) as target:
        result = restore_backup(backup_uri, target, store=store)

        assert result.restored and not result.catalog_existed
        assert result.dropped_snapshots == [] and result.safety_backup is None
        assert row_counts(target) == row_counts(source) == {"main.stations": 7, "main.trips": 90}
        assert snapshot_ids(target) == snapshot_ids(source)
        run(target, "INSERT INTO trips VALUES (500, 'after the restore')")
        assert latest_snapshot(target) == 5
        assert row_counts(target)["main.trips"] == 91


@pytest.mark.parametrize(
    ("source_kind", "target_kind"),
    [("duckdb", "postgres"), ("postgres", "duckdb"), ("sqlite", "postgres"), ("postgres", "sqlite")],
)
def test_a_backup_restores_into_a_catalog_of_another_kind(
    source_kind: str, target_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    source = settings_for_kind(request, source_kind, tmp_path / "lake")
    fill(source)
    create_backup(source, str(tmp_path / "backups"), store=ObjectStore())

    with new_catalog(target_kind, tmp_path / "restored", request) as target:
        result = restore_backup(str(tmp_path / "backups"), target, store=ObjectStore())

        assert result.restored and result.snapshot_id == 4
        assert row_counts(target) == row_counts(source)
        run(target, "CREATE TABLE moved AS SELECT 1 AS ok", message="first commit in the new catalog")
        assert row_counts(target)["main.moved"] == 1


def test_an_older_versioned_backup_can_be_chosen(tmp_path: Path) -> None:
    source = lake_settings("duckdb", tmp_path / "lake")
    fill(source)
    older = create_backup(source, str(tmp_path / "backups"), store=ObjectStore()).backup
    run(source, "DROP TABLE stations", message="oops")
    create_backup(source, str(tmp_path / "backups"), store=ObjectStore())
    target = LakeSettings(catalog=DuckDBCatalog(str(tmp_path / "restored.ducklake")))

    result = restore_backup(older.uri, target, store=ObjectStore())

    assert result.snapshot_id == 4 and result.backup_uri == older.uri
    assert row_counts(target) == {"main.stations": 7, "main.trips": 90}


def test_a_dry_run_lists_the_snapshots_a_restore_would_drop_and_changes_nothing(tmp_path: Path) -> None:
    lake = lake_settings("duckdb", tmp_path / "lake")
    fill(lake)
    create_backup(lake, str(tmp_path / "backups"), store=ObjectStore())
    run(lake, "INSERT INTO trips VALUES (200, 'late')", message="late trip")
    run(lake, "DROP TABLE stations", message="drop stations")
    catalog_file = Path(lake.catalog.path)
    before = catalog_file.read_bytes()

    result = restore_backup(str(tmp_path / "backups"), lake, dry_run=True, store=ObjectStore())

    assert result.dry_run and not result.restored
    assert [(s.snapshot_id, s.author, s.commit_message) for s in result.dropped_snapshots] == [
        (5, "tester", "late trip"),
        (6, "tester", "drop stations"),
    ]
    assert "2 newer catalog snapshot(s) dropped: 5, 6" in result.summary()
    assert catalog_file.read_bytes() == before
    assert not (tmp_path / "backups" / "safety").exists()


def test_a_catalog_newer_than_the_backup_is_only_overwritten_when_forced(tmp_path: Path) -> None:
    lake = lake_settings("sqlite", tmp_path / "lake")
    fill(lake)
    create_backup(lake, str(tmp_path / "backups"), store=ObjectStore())
    run(lake, "INSERT INTO trips VALUES (200, 'late')", message="late trip")
    before = Path(lake.catalog.path).read_bytes()

    with pytest.raises(RestoreError, match=r"1 snapshot\(s\) the backup lacks \(latest 5\)") as refusal:
        restore_backup(str(tmp_path / "backups"), lake, store=ObjectStore())

    assert "force=True" in str(refusal.value)
    assert Path(lake.catalog.path).read_bytes() == before
    assert not (tmp_path / "backups" / "safety").exists()


def test_a_forced_restore_takes_a_safety_backup_first_so_it_can_be_undone(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    lake = settings_for_kind(request, "postgres", tmp_path / "lake")
    fill(lake)
    create_backup(lake, str(tmp_path / "backups"), store=ObjectStore())
    run(lake, "INSERT INTO trips SELECT range, 'late' FROM range(3)", message="late trips")
    run(lake, "CREATE TABLE audit AS SELECT 42 AS answer", message="audit table")
    newer_rows = row_counts(lake)
    password = lake.catalog.password

    with pytest.raises(RestoreError) as refusal:
        restore_backup(str(tmp_path / "backups"), lake, store=ObjectStore())
    assert password not in str(refusal.value) and "password=***" in str(refusal.value)

    result = restore_backup(str(tmp_path / "backups"), lake, force=True, store=ObjectStore())

    assert result.restored and [s.snapshot_id for s in result.dropped_snapshots] == [5, 6]
    assert result.safety_backup is not None and result.safety_backup.manifest.snapshot_id == 6
    assert result.safety_backup.backup.uri.startswith(str(tmp_path / "backups" / "safety"))
    assert password not in result.summary() and password not in repr(result)
    assert row_counts(lake) == {"main.stations": 7, "main.trips": 90}
    assert latest_snapshot(lake) == 4
    assert len(list_backups(str(tmp_path / "backups"), ObjectStore())) == 1, "safety backups are kept apart"

    undo = restore_backup(result.safety_backup.backup.uri, lake, store=ObjectStore())

    assert undo.restored and undo.dropped_snapshots == []
    assert row_counts(lake) == newer_rows
    run(lake, "INSERT INTO audit VALUES (43)")
    assert latest_snapshot(lake) == 7


def test_a_damaged_backup_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    lake = lake_settings("duckdb", tmp_path / "lake")
    fill(lake)
    backup = create_backup(lake, str(tmp_path / "backups"), store=ObjectStore()).backup
    with open(backup.uri, "r+b") as handle:
        handle.seek(backup.size_bytes // 2)
        handle.write(b"\x00garbage\x00")
    target = LakeSettings(catalog=DuckDBCatalog(str(tmp_path / "restored.ducklake")))

    with pytest.raises(RestoreError, match="does not match the checksum in its manifest"):
        restore_backup(backup.uri, target, store=ObjectStore())

    assert not Path(target.catalog.path).exists()


def test_a_failed_restore_into_a_new_catalog_leaves_nothing_behind(tmp_path: Path) -> None:
    lake = lake_settings("duckdb", tmp_path / "lake")
    fill(lake)
    backup = create_backup(lake, str(tmp_path / "backups"), store=ObjectStore()).backup
    foreign = tmp_path / "from-another-ducklake.ducklake"
    shutil.copyfile(backup.uri, foreign)
    with duckdb.connect(str(foreign)) as connection:
        connection.execute("UPDATE ducklake_metadata SET value = '0.3' WHERE key = 'version'")
    target = LakeSettings(catalog=DuckDBCatalog(str(tmp_path / "restored.ducklake")))

    with pytest.raises(RestoreError, match="older DuckLake format that duckdb .* cannot migrate"):
        restore_backup(str(foreign), target, store=ObjectStore())

    assert not Path(target.catalog.path).exists()
    assert not Path(target.catalog.path + ".wal").exists()


def test_restoring_from_a_folder_without_backups_says_so(tmp_path: Path) -> None:
    target = LakeSettings(catalog=DuckDBCatalog(str(tmp_path / "restored.ducklake")))

    with pytest.raises(RestoreError, match="No backup found under"):
        restore_backup(str(tmp_path / "empty"), target, store=ObjectStore())

    assert not Path(target.catalog.path).exists()


def test_a_truncated_backup_without_its_manifest_is_named_as_the_user_gave_it(tmp_path: Path) -> None:
    lake = lake_settings("duckdb", tmp_path / "lake")
    fill(lake)
    backup = create_backup(lake, str(tmp_path / "backups"), store=ObjectStore()).backup
    loose = tmp_path / "copied-by-hand.ducklake"
    loose.write_bytes(Path(backup.uri).read_bytes()[:4096])
    target = LakeSettings(catalog=DuckDBCatalog(str(tmp_path / "restored.ducklake")))

    with pytest.raises(RestoreError, match=f"{loose} is not a ducklake-assets backup") as refused:
        restore_backup(str(loose), target, store=ObjectStore())

    assert "fetched" not in str(refused.value), "the private copy's name is not shown"
    assert not Path(target.catalog.path).exists()
