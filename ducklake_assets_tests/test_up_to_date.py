"""Nothing new, nothing written: a backup or publication of an unchanged lake leaves every byte where it was."""

import dataclasses
import hashlib
import shutil
from pathlib import Path

import dagster as dg
import pytest

from ducklake_assets import PublishOptions
from ducklake_assets.core.backup import check_backup_files, create_backup, list_backups
from ducklake_assets.core.errors import BackupError
from ducklake_assets.core.publish import list_revisions, publish_frozen_lake, verify_as_stranger
from ducklake_assets.core.restore import restore_backup
from ducklake_assets.core.storage import ObjectStore
from ducklake_assets.pipeline import build_ducklake_pipeline
from ducklake_assets.resources import S3Resource
from ducklake_assets_tests.backup_lakes import fill, lake_settings, latest_snapshot, run
from ducklake_assets_tests.parquet_files import crew
from ducklake_assets_tests.services import S3Bucket

BACKUP = dg.AssetKey(["space", "static_backup"])
FROZEN = dg.AssetKey(["space", "frozen_lake"])


def local_files(*folders: Path) -> dict[str, tuple[int, str, int]]:
    """Every file below ``folders``: path -> (size, SHA-256 of its content, mtime in ns)."""
    return {
        str(path): (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for folder in folders
        if folder.exists()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def bucket_files(bucket: S3Bucket) -> dict[str, tuple[int, str, str, str]]:
    """Every object in ``bucket``: key -> (size, SHA-256 of its content, ETag, LastModified)."""
    client = bucket.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=bucket.name, Key=item["Key"])["Body"].read()
            found[item["Key"]] = (
                item["Size"],
                hashlib.sha256(body).hexdigest(),
                item["ETag"],
                item["LastModified"].isoformat(),
            )
    return found


def space_pipeline(tmp_path: Path, backup_uri: str, publish_uri: str, s3: S3Resource | None = None) -> dg.Definitions:
    crew(tmp_path / "source" / "astronauts.p1.parquet", 0)
    return build_ducklake_pipeline(
        name="space",
        source=str(tmp_path / "source"),
        catalog=str(tmp_path / "lake" / "space.ducklake"),
        data_path=str(tmp_path / "lake" / "files"),
        backup=backup_uri,
        publish=PublishOptions(uri=publish_uri, self_contained=s3 is not None) if publish_uri else None,
        s3=s3,
    )


def materialize_all(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition | dg.AssetSpec)]
    result = dg.materialize([*assets, *(defs.asset_checks or [])], resources=defs.resources, instance=instance)
    assert result.success
    return result


def metadata_of(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, dg.MetadataValue]:
    (event,) = [e for e in result.get_asset_materialization_events() if e.materialization.asset_key == key]
    return event.materialization.metadata


def data_version_of(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> str:
    (event,) = [e for e in result.get_asset_materialization_events() if e.materialization.asset_key == key]
    return event.materialization.tags["dagster/data_version"]


def checks_of(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def assert_up_to_date(first: dg.ExecuteInProcessResult, second: dg.ExecuteInProcessResult) -> None:
    backup, frozen = metadata_of(second, BACKUP), metadata_of(second, FROZEN)
    assert backup["up_to_date"].value is True and frozen["up_to_date"].value is True
    assert backup["snapshot_id"].value == metadata_of(first, BACKUP)["snapshot_id"].value
    assert backup["backup_uri"].value == metadata_of(first, BACKUP)["backup_uri"].value
    assert backup["dagster/row_count"].value == metadata_of(first, BACKUP)["dagster/row_count"].value == 10
    assert frozen["revision"].value == metadata_of(first, FROZEN)["revision"].value == 1
    assert frozen["tables"].value == metadata_of(first, FROZEN)["tables"].value
    assert data_version_of(second, BACKUP) == data_version_of(first, BACKUP)
    assert data_version_of(second, FROZEN) == data_version_of(first, FROZEN)
    evaluations = checks_of(second)
    assert sorted(evaluations) == [
        "backup_files_exist",
        "backup_is_fresh",
        "backup_is_restorable",
        "frozen_lake_matches_catalog",
        "frozen_lake_opens_read_only",
    ]
    assert all(evaluation.passed for evaluation in evaluations.values()), evaluations


def test_materializing_an_unchanged_pipeline_again_leaves_backups_and_the_frozen_lake_byte_for_byte(
    tmp_path: Path,
) -> None:
    backups, public = tmp_path / "backups", tmp_path / "public"
    defs = space_pipeline(tmp_path, str(backups), str(public / "space.ducklake"))
    instance = dg.DagsterInstance.ephemeral()
    first = materialize_all(defs, instance)
    before = local_files(backups, public)

    second = materialize_all(defs, instance)

    assert local_files(backups, public) == before, "nothing new: not one file written, touched or removed"
    assert_up_to_date(first, second)
    logs = "\n".join(
        event.message for event in instance.all_logs(second.run_id) if event.message and "up to date" in event.message
    )
    snapshot = metadata_of(first, BACKUP)["snapshot_id"].value
    assert f"up to date at snapshot {snapshot}" in logs

    crew(tmp_path / "source" / "astronauts.p2.parquet", 10)
    third = materialize_all(defs, instance)

    assert metadata_of(third, BACKUP)["up_to_date"].value is False
    assert metadata_of(third, BACKUP)["snapshot_id"].value > snapshot
    assert len(list_backups(str(backups), ObjectStore())) == 2
    assert metadata_of(third, FROZEN)["up_to_date"].value is False and metadata_of(third, FROZEN)["revision"].value == 2
    assert metadata_of(third, FROZEN)["dagster/row_count"].value == 20
    assert all(evaluation.passed for evaluation in checks_of(third).values())


def test_an_unchanged_pipeline_on_s3_writes_no_object_the_second_time(
    tmp_path: Path, s3_bucket: S3Bucket, s3_resource: S3Resource
) -> None:
    defs = space_pipeline(tmp_path, s3_bucket.uri("backups"), s3_bucket.uri("public/space.ducklake"), s3=s3_resource)
    instance = dg.DagsterInstance.ephemeral()
    first = materialize_all(defs, instance)
    before = bucket_files(s3_bucket)
    assert "public/space.ducklake" in before
    assert any(key.startswith(("backups/data/", "backups/external/")) for key in before)

    second = materialize_all(defs, instance)

    assert bucket_files(s3_bucket) == before
    assert_up_to_date(first, second)

    crew(tmp_path / "source" / "astronauts.p2.parquet", 10)
    third = materialize_all(defs, instance)

    assert metadata_of(third, BACKUP)["up_to_date"].value is False
    assert metadata_of(third, FROZEN)["revision"].value == 2
    after = bucket_files(s3_bucket)
    assert len([key for key in after if key.startswith("backups/backup-") and key.endswith(".ducklake")]) == 2
    assert all(evaluation.passed for evaluation in checks_of(third).values())


def test_a_snapshot_id_reused_after_a_restore_is_backed_up_again(tmp_path: Path) -> None:
    settings = lake_settings("duckdb", tmp_path / "lake")
    fill(settings)
    older = str(tmp_path / "older")
    create_backup(settings, older)
    run(settings, "INSERT INTO trips VALUES (500, 'later')")
    backups = str(tmp_path / "backups")
    first = create_backup(settings, backups)
    assert create_backup(settings, backups).up_to_date
    restore_backup(older, settings, force=True)
    run(settings, "INSERT INTO trips VALUES (1, 'different data')")
    assert latest_snapshot(settings) == first.manifest.snapshot_id == 5

    again = create_backup(settings, backups)

    assert not again.up_to_date, "same id, another commit time: another snapshot"
    assert again.manifest.snapshot_time > first.manifest.snapshot_time
    assert [info.snapshot_id for info in list_backups(backups, ObjectStore())] == [5, 5]


def test_an_up_to_date_backup_says_so_and_force_makes_one_anyway(tmp_path: Path) -> None:
    settings = lake_settings("duckdb", tmp_path / "lake")
    fill(settings)
    backups = tmp_path / "backups"
    first = create_backup(settings, str(backups), keep=1)
    before = local_files(backups)

    again = create_backup(settings, str(backups), keep=1, count_rows=True)

    assert again.up_to_date and again.backup == first.backup and again.manifest == first.manifest
    assert again.table_rows is None and again.removed == [] and again.files is None
    assert local_files(backups) == before
    metadata = create_backup(settings, str(backups), mode="metadata")
    assert not metadata.up_to_date, "another mode is another backup"
    forced = create_backup(settings, str(backups), mode="metadata", force=True)
    assert not forced.up_to_date and forced.backup.uri != metadata.backup.uri


def test_a_publication_is_up_to_date_only_with_the_same_snapshot_and_settings(tmp_path: Path) -> None:
    settings = lake_settings("duckdb", tmp_path / "lake")
    fill(settings)
    catalog, public = settings.catalog.path, tmp_path / "public"
    publish_uri = str(public / "trips.ducklake")
    first = publish_frozen_lake(catalog, publish_uri, data_path=settings.data_path)
    before = local_files(public)

    again = publish_frozen_lake(catalog, publish_uri, data_path=settings.data_path, keep_revisions=1)

    assert again.up_to_date and not first.up_to_date
    assert again.revision == first.revision and again.contents == first.contents
    assert again.attach_sql() == first.attach_sql() and again.data_path == first.data_path
    assert local_files(public) == before, "no revision, no claim file, nothing pruned"
    self_contained = publish_frozen_lake(catalog, publish_uri, data_path=settings.data_path, self_contained=True)
    assert not self_contained.up_to_date and self_contained.revision.number == 2
    assert publish_frozen_lake(catalog, publish_uri, data_path=settings.data_path, self_contained=True).up_to_date
    forced = publish_frozen_lake(catalog, publish_uri, data_path=settings.data_path, self_contained=True, force=True)
    assert forced.revision.number == 3
    run(settings, "INSERT INTO trips VALUES (500, 'later')")
    moved_on = publish_frozen_lake(catalog, publish_uri, data_path=settings.data_path, self_contained=True)
    assert not moved_on.up_to_date and moved_on.contents.snapshot_id == 5
    assert [revision.number for revision in list_revisions(publish_uri, ObjectStore())] == [1, 2, 3, 4]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_frozen_lake_of_an_unchanged_backup_is_up_to_date(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = lake_settings("duckdb", tmp_path / "lake")
    fill(settings)
    if where == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        store = ObjectStore(request.getfixturevalue("s3_settings"))
        backups, publish_uri = bucket.uri("backups"), bucket.uri("public/trips.ducklake")
    else:
        store = ObjectStore()
        backups, publish_uri = str(tmp_path / "backups"), str(tmp_path / "public" / "trips.ducklake")
    create_backup(settings, backups, store=store)
    first = publish_frozen_lake(backups, publish_uri, store=store, self_contained=True)

    again = publish_frozen_lake(backups, publish_uri, store=store, self_contained=True)

    assert again.up_to_date and again.revision == first.revision
    assert again.contents.tables == first.contents.tables == {"main.stations": 7, "main.trips": 90}
    assert [revision.number for revision in list_revisions(publish_uri, store)] == [1]


def store_for(where: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[ObjectStore, str, S3Bucket | None]:
    """A store and the root to keep backups or frozen lakes in: a local folder, or a moto S3 bucket."""
    if where == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        return ObjectStore(request.getfixturevalue("s3_settings")), bucket.uri(), bucket
    return ObjectStore(), str(tmp_path / "store"), None


def delete_one(store: ObjectStore, prefix: str, bucket: S3Bucket | None, containing: str = "stations") -> str:
    """Delete one Parquet file below ``prefix`` (whose path contains ``containing``); return its URI."""
    files = [item.uri for item in store.list_prefix(prefix) if item.uri.endswith(".parquet")]
    lost = next(uri for uri in files if containing in uri)
    if bucket is None:
        Path(lost).unlink()
    else:
        bucket.client().delete_object(Bucket=bucket.name, Key=lost.removeprefix(f"s3://{bucket.name}/"))
    return lost


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_full_backup_whose_store_lost_a_data_file_is_backed_up_again_and_the_file_copied_back(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = lake_settings("duckdb", tmp_path / "lake")
    fill(settings)
    store, root, bucket = store_for(where, tmp_path, request)
    backups = root.rstrip("/") + "/backups"
    first = create_backup(settings, backups, store=store)
    lost = delete_one(store, backups + "/data", bucket)
    assert check_backup_files(backups, store, ObjectStore()).missing == [lost]

    again = create_backup(settings, backups, store=store)

    assert not again.up_to_date, "a backup whose files are gone is not up to date"
    assert again.manifest.snapshot_id == first.manifest.snapshot_id
    assert [item.uri for item in again.files.copied] == [lost], "only the missing file is copied again"
    assert check_backup_files(backups, store, ObjectStore()).ok
    assert create_backup(settings, backups, store=store).up_to_date


def test_a_full_backup_whose_store_holds_a_damaged_file_is_not_called_up_to_date(tmp_path: Path) -> None:
    settings = lake_settings("duckdb", tmp_path / "lake")
    fill(settings)
    backups = tmp_path / "backups"
    create_backup(settings, str(backups))
    damaged = next(path for path in sorted((backups / "data").rglob("*.parquet")) if "stations" in str(path))
    damaged.write_bytes(damaged.read_bytes()[:-10])

    with pytest.raises(BackupError, match="another size") as raised:
        create_backup(settings, str(backups))

    assert str(damaged) in str(raised.value) and "delete them and run again" in str(raised.value)
    assert len(list_backups(str(backups), ObjectStore())) == 1
    damaged.unlink()
    repaired = create_backup(settings, str(backups))
    assert not repaired.up_to_date and repaired.files is not None and len(repaired.files.copied) == 1


def test_a_backup_after_a_restore_into_another_data_path_records_the_new_data_path(tmp_path: Path) -> None:
    settings = lake_settings("duckdb", tmp_path / "lake")
    fill(settings)
    backups = str(tmp_path / "backups")
    first = create_backup(settings, backups, mode="metadata")
    moved = tmp_path / "moved"
    shutil.copytree(settings.data_path, moved)
    restored = dataclasses.replace(settings, data_path=str(moved))
    restore_backup(backups, restored)
    assert latest_snapshot(restored) == first.manifest.snapshot_id, "the restore keeps the snapshots"

    again = create_backup(restored, backups, mode="metadata")

    assert not again.up_to_date, "the catalog's data now lives elsewhere: the newest backup is stale"
    assert again.manifest.data_path == str(moved) + "/" != first.manifest.data_path
    recorded_only = dataclasses.replace(settings, data_path=None)
    assert create_backup(recorded_only, backups, mode="metadata").up_to_date, "the catalog records the new path"
    assert create_backup(restored, backups, mode="metadata").up_to_date


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_self_contained_frozen_lake_missing_a_copied_file_is_published_again(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = lake_settings("duckdb", tmp_path / "lake")
    fill(settings)
    store, root, bucket = store_for(where, tmp_path, request)
    publish_uri = root.rstrip("/") + "/public/trips.ducklake"
    publish = dict(store=store, data_store=ObjectStore(), data_path=settings.data_path, self_contained=True)
    first = publish_frozen_lake(settings.catalog.path, publish_uri, **publish)
    lost = delete_one(store, root.rstrip("/") + "/public/trips", bucket)
    assert not verify_as_stranger(publish_uri, store.s3, probe_files=True).ok, "a reader fails"

    again = publish_frozen_lake(settings.catalog.path, publish_uri, **publish)

    assert not again.up_to_date and again.revision.number == first.revision.number + 1
    assert [item.uri for item in again.files.copied] == [lost], "the incremental copy repairs what is missing"
    assert verify_as_stranger(publish_uri, store.s3, first.contents.tables, probe_files=True).ok
    assert publish_frozen_lake(settings.catalog.path, publish_uri, **publish).up_to_date


def test_a_publication_verified_without_opening_its_files_is_not_up_to_date_for_one_that_does(tmp_path: Path) -> None:
    settings = lake_settings("duckdb", tmp_path / "lake")
    fill(settings)
    publish_uri = str(tmp_path / "public" / "trips.ducklake")
    unprobed = publish_frozen_lake(settings.catalog.path, publish_uri, data_path=settings.data_path, probe_files=False)
    assert publish_frozen_lake(
        settings.catalog.path, publish_uri, data_path=settings.data_path, probe_files=False
    ).up_to_date

    probed = publish_frozen_lake(settings.catalog.path, publish_uri, data_path=settings.data_path)

    assert not probed.up_to_date and probed.revision.number == unprobed.revision.number + 1
    assert probed.report is not None and probed.report.ok
