"""Safe maintenance, as a user meets it: a lake with registered files, backups and a published revision goes
through flush, merge, expiry and cleanup, and every promise the lake made still holds afterwards."""

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ducklake_assets.core.backup import apply_retention, check_backup_files, check_backup_restorable, create_backup
from ducklake_assets.core.errors import ConfigurationError, MaintenanceError
from ducklake_assets.core.lake import LakeSettings, connect_lake
from ducklake_assets.core.maintenance import MaintenancePolicy, RetainedCopies, retained_copies, run_maintenance
from ducklake_assets.core.publish import publish_frozen_lake, verify_as_stranger
from ducklake_assets.core.sql import quote_literal
from ducklake_assets.core.storage import ObjectStore
from ducklake_assets.maintenance_assets import build_maintenance_definitions
from ducklake_assets.resources import DuckLakeResource

TABLES = ("trips", "events", "events2")
EVERYTHING_OLD = {"expire_older_than": timedelta(0), "cleanup_older_than": timedelta(0)}


@dataclass
class Lake:
    """A lake in use: registered source files, history, two static backups and a published revision."""

    resource: DuckLakeResource
    settings: LakeSettings
    data_path: Path
    external_files: list[Path]
    backup_uri: str
    publish_uri: str
    backup_snapshots: list[int]

    def row_counts(self) -> dict[str, int]:
        with connect_lake(self.settings) as connection:
            return {table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}

    def snapshot_ids(self) -> list[int]:
        with connect_lake(self.settings) as connection:
            return [row[0] for row in connection.execute("SELECT snapshot_id FROM lake.snapshots()").fetchall()]


def fingerprint(path: Path) -> tuple[int, int, str]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def files_on_disk(folder: Path) -> dict[str, int]:
    return {str(path): path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


def make_lake(tmp_path: Path, resource: DuckLakeResource) -> Lake:
    """Registered files in ``trips`` and ``scratch``, many small inserts (some inlined), a dropped table and a
    replaced one; a backup and a publication of it, more changes, a second backup, more changes and a
    table created and dropped since (its file is what no backup needs)."""
    external = tmp_path / "landing"
    external.mkdir()
    writer = duckdb.connect()
    for part in range(3):
        target = quote_literal(str(external / f"trips-{part}.parquet"))
        writer.execute(f"COPY (SELECT range + {part * 100} AS id, 'landing' AS source FROM range(100)) TO {target}")
    writer.execute(f"COPY (SELECT 1 AS x) TO {quote_literal(str(external / 'scratch.parquet'))}")
    settings = resource.lake_settings()
    backup_uri = str(tmp_path / "backups")
    publish_uri = str(tmp_path / "published" / "lake.ducklake")
    with connect_lake(settings) as connection:
        connection.execute("CREATE TABLE trips (id BIGINT, source VARCHAR)")
        connection.execute("CALL ducklake_add_data_files('lake', 'trips', ?)", [str(external / "trips-*.parquet")])
        connection.execute("CREATE TABLE scratch (x INTEGER)")
        connection.execute("CALL ducklake_add_data_files('lake', 'scratch', ?)", [str(external / "scratch.parquet")])
        connection.execute("CREATE TABLE events (id BIGINT)")
        for step in range(5):
            connection.execute("INSERT INTO events SELECT range FROM range(?)", [20 + step])
            connection.execute("INSERT INTO trips VALUES (?, 'lake')", [1000 + step])
    first = create_backup(settings, backup_uri)
    publish_frozen_lake(backup_uri, publish_uri)
    with connect_lake(settings) as connection:
        connection.execute("DELETE FROM events WHERE id < 5")
        connection.execute("DROP TABLE scratch")
        connection.execute("CREATE TABLE events2 AS SELECT range AS id FROM range(50)")
        connection.execute("CREATE OR REPLACE TABLE events2 AS SELECT range AS id FROM range(60)")
    second = create_backup(settings, backup_uri)
    with connect_lake(settings) as connection:
        for value in range(3):
            connection.execute("INSERT INTO events VALUES (?)", [value])
        connection.execute("CREATE TABLE staging AS SELECT range AS id FROM range(40)")
        connection.execute("DROP TABLE staging")
    return Lake(
        resource=resource,
        settings=settings,
        data_path=Path(resource.data_path),
        external_files=sorted(external.glob("*.parquet")),
        backup_uri=backup_uri,
        publish_uri=publish_uri,
        backup_snapshots=[first.manifest.snapshot_id, second.manifest.snapshot_id],
    )


def assert_every_promise_holds(lake: Lake, external_before: dict, rows_before: dict) -> None:
    for path in lake.external_files:
        assert fingerprint(path) == external_before[path], f"registered file {path} was touched"
    store = ObjectStore()
    backups = sorted(lake.backup_uri + "/" + name for name in os.listdir(lake.backup_uri) if name.startswith("backup-"))
    for backup in (b for b in backups if b.endswith(".ducklake")):
        restorable = check_backup_restorable(backup, lake.settings, store)
        assert restorable.passed, [t for t in restorable.tables if not t.matches]
        assert check_backup_files(backup, store, store).missing == []
    stranger = verify_as_stranger(lake.publish_uri)
    assert stranger.ok, stranger.problems()
    assert lake.row_counts() == rows_before


def test_maintenance_keeps_registered_files_backups_and_published_revisions(postgres_lake, tmp_path):
    lake = make_lake(tmp_path, postgres_lake)
    external_before = {path: fingerprint(path) for path in lake.external_files}
    rows_before = lake.row_counts()
    defs = build_maintenance_definitions(
        "trips",
        backup_uris=[lake.backup_uri],
        publish_uris=[lake.publish_uri],
        merge_external_files=True,
        **EVERYTHING_OLD,
    )

    result = dg.materialize(list(defs.assets), resources={"ducklake": lake.resource})

    assert result.success
    metadata = {
        event.asset_key.path[-1]: {key: getattr(value, "value", value) for key, value in event.metadata.items()}
        for event in result.get_asset_materialization_events()
        for event in [event.event_specific_data.materialization]
    }
    assert metadata["flush_inlined_data"]["rows_flushed"] > 0
    assert metadata["merge_adjacent_files"]["files_merged"] > 0
    assert metadata["expire_snapshots"]["snapshots_expired"] > 0
    assert metadata["cleanup_old_files"]["files_deleted"] > 0
    assert metadata["cleanup_old_files"]["files_handed_back"] == 3, "the merged trips files went back to the user"
    assert metadata["cleanup_old_files"]["files_kept"] > 0, "files only the backups still need"
    for backup_snapshot in lake.backup_snapshots:
        assert backup_snapshot in lake.snapshot_ids()
        assert str(backup_snapshot) in metadata["expire_snapshots"]["snapshots_kept_for_retained_copies"]
    deleted = [
        line.split("`")[1]
        for line in metadata["cleanup_old_files"]["files"].splitlines()
        if line.startswith("| delete")
    ]
    assert deleted and all(path.startswith(str(lake.data_path) + "/") and not Path(path).exists() for path in deleted)
    assert_every_promise_holds(lake, external_before, rows_before)


def test_a_file_kept_for_a_backup_goes_once_retention_drops_the_backup(postgres_lake, tmp_path):
    lake = make_lake(tmp_path, postgres_lake)
    external_before = {path: fingerprint(path) for path in lake.external_files}
    rows_before = lake.row_counts()
    store = ObjectStore()
    policy = MaintenancePolicy(**EVERYTHING_OLD)
    first = run_maintenance(
        lake.settings, policy=policy, retained=retained_copies(backup_uris=[lake.backup_uri], store=store)
    )
    kept = first.files_with("keep")
    assert kept and all(Path(path).exists() for path in kept)
    assert first.merge_skipped["main.trips"].startswith("3 registered file(s) outside the data path")

    third = create_backup(lake.settings, lake.backup_uri)
    apply_retention(lake.backup_uri, store, keep=1)
    second = run_maintenance(
        lake.settings, policy=policy, retained=retained_copies(backup_uris=[lake.backup_uri], store=store)
    )

    assert set(lake.backup_snapshots) <= set(second.expired_snapshots), "no retained copy holds them any more"
    assert second.protected_snapshots == ()
    assert set(kept) <= set(second.files_with("delete"))
    assert not any(Path(path).exists() for path in kept)
    assert second.files_with("release") == [str(lake.external_files[0].parent / "scratch.parquet")]
    for path in lake.external_files:
        assert fingerprint(path) == external_before[path]
    assert check_backup_files(third.backup.uri, store, store).missing == []
    assert check_backup_restorable(third.backup.uri, lake.settings, store).passed
    assert lake.row_counts() == rows_before


def test_a_dry_run_lists_what_would_go_and_changes_nothing(postgres_lake, tmp_path):
    lake = make_lake(tmp_path, postgres_lake)
    defs = build_maintenance_definitions("trips", backup_uris=[lake.backup_uri], **EVERYTHING_OLD)
    snapshots_before = lake.snapshot_ids()
    disk_before = files_on_disk(tmp_path)

    result = dg.materialize(
        list(defs.assets),
        resources={"ducklake": lake.resource},
        run_config={"ops": {"trips_maintenance_steps": {"config": {"dry_run": True}}}},
    )

    assert result.success
    assert result.get_asset_materialization_events() == [], "a dry run materializes nothing"
    observed = {
        event.asset_key.path[-1]: {key: getattr(value, "value", value) for key, value in event.metadata.items()}
        for event in result.get_asset_observation_events()
        for event in [event.event_specific_data.asset_observation]
    }
    assert set(observed) == {"flush_inlined_data", "merge_adjacent_files", "expire_snapshots", "cleanup_old_files"}
    assert all(step["dry_run"] is True for step in observed.values())
    assert observed["flush_inlined_data"]["rows_flushed"] == 8, "5 trips rows and 3 events rows are inlined"
    assert (
        "| main.trips | 3 registered file(s) outside the data path"
        in observed["merge_adjacent_files"]["tables_skipped"]
    )
    assert observed["expire_snapshots"]["snapshots_expired"] == len(snapshots_before) - 3
    assert observed["cleanup_old_files"]["files_deleted"] > 0
    assert "| keep | `" in observed["cleanup_old_files"]["files"]
    assert lake.snapshot_ids() == snapshots_before
    assert files_on_disk(tmp_path) == disk_before


def test_the_schedule_runs_the_maintenance_job(postgres_lake, tmp_path):
    lake = make_lake(tmp_path, postgres_lake)
    external_before = {path: fingerprint(path) for path in lake.external_files}
    rows_before = lake.row_counts()
    defs = dg.Definitions.merge(
        build_maintenance_definitions(
            "trips",
            backup_uris=[lake.backup_uri],
            publish_uris=[lake.publish_uri],
            cron_schedule="30 2 * * *",
            keep_last_snapshots=2,
            expire_older_than=None,
            cleanup_older_than=timedelta(0),
        ),
        dg.Definitions(resources={"ducklake": lake.resource}),
    )
    schedule = defs.resolve_schedule_def("trips_maintenance_schedule")
    assert schedule.cron_schedule == "30 2 * * *"
    assert schedule.job_name == "trips_maintenance"

    result = defs.resolve_job_def("trips_maintenance").execute_in_process()

    assert result.success
    remaining = lake.snapshot_ids()
    assert set(lake.backup_snapshots) <= set(remaining)
    assert len(remaining) == 2 + 2, "the newest two, and the two the backups hold"
    assert_every_promise_holds(lake, external_before, rows_before)


def test_maintenance_on_s3_deletes_only_under_the_data_prefix(s3_bucket, s3_settings, s3_resource, tmp_path):
    landing = s3_bucket.uri("landing/events-0.parquet")
    ducklake = DuckLakeResource(
        catalog=str(tmp_path / "catalog.ducklake"),
        data_path=s3_bucket.uri("lake/"),
        attach_options={"DATA_INLINING_ROW_LIMIT": 0},
        s3=s3_resource,
    )
    settings = ducklake.lake_settings()
    store = ObjectStore(s3_settings)
    with connect_lake(settings) as connection:
        connection.execute(f"COPY (SELECT range AS id FROM range(10)) TO {quote_literal(landing)}")
        connection.execute("CREATE TABLE events (id BIGINT)")
        connection.execute("CALL ducklake_add_data_files('lake', 'events', ?)", [landing])
        for value in range(4):
            connection.execute("INSERT INTO events VALUES (?)", [100 + value])
    backup_uri = s3_bucket.uri("backups")
    backup = create_backup(settings, backup_uri, store=store, count_rows=True)
    with connect_lake(settings) as connection:
        connection.execute("CREATE TABLE staging AS SELECT range AS id FROM range(5)")
        connection.execute("DROP TABLE staging")
        connection.execute("DELETE FROM events WHERE id >= 100")
        connection.execute("DROP TABLE events")

    report = run_maintenance(
        settings,
        policy=MaintenancePolicy(merge_external_files=True, **EVERYTHING_OLD),
        retained=retained_copies(backup_uris=[backup_uri], store=store),
        store=store,
    )

    assert store.exists(landing)
    assert report.protected_snapshots == (backup.manifest.snapshot_id,)
    deleted = report.files_with("delete")
    assert deleted and all(path.startswith(s3_bucket.uri("lake/")) for path in deleted)
    assert not any(store.exists(path) for path in deleted)
    assert check_backup_files(backup.backup.uri, store, store).missing == []
    assert check_backup_restorable(backup.backup.uri, settings, store).passed


def test_refusals_name_the_problem_and_change_nothing(tmp_path):
    resource = DuckLakeResource(catalog=str(tmp_path / "catalog.ducklake"), data_path=str(tmp_path / "data"))
    with resource.get_connection() as connection:
        connection.execute("CREATE TABLE t AS SELECT 1 AS x")
        connection.execute("INSERT INTO t VALUES (2)")
    settings = resource.lake_settings()
    before = files_on_disk(tmp_path)

    with pytest.raises(ConfigurationError, match="keep_last_snapshots must be at least 1"):
        MaintenancePolicy(keep_last_snapshots=0)
    with pytest.raises(ConfigurationError, match=r"Unknown maintenance step\(s\) \['vacuum'\]"):
        run_maintenance(settings, steps=["vacuum"])
    read_only = DuckLakeResource(
        catalog=str(tmp_path / "catalog.ducklake"), data_path=str(tmp_path / "data"), read_only=True
    ).lake_settings()
    with pytest.raises(MaintenanceError, match="attached read-only: maintenance needs a writable lake"):
        run_maintenance(read_only, policy=MaintenancePolicy(**EVERYTHING_OLD))

    with pytest.raises(MaintenanceError, match="holds no backup, so maintenance could not protect it"):
        retained_copies(backup_uris=[str(tmp_path / "bakups")])
    with pytest.raises(MaintenanceError, match="has no revision, so maintenance could not protect it"):
        retained_copies(publish_uris=[str(tmp_path / "published" / "lake.ducklake")])

    assert files_on_disk(tmp_path) == before
    report = run_maintenance(read_only, policy=MaintenancePolicy(**EVERYTHING_OLD), dry_run=True)
    assert report.expired_snapshots and files_on_disk(tmp_path) == before


def test_retained_copies_match_files_by_name_across_urls():
    retained = RetainedCopies(files=frozenset({"https://cdn.example/lake/main/t/ducklake-0192.parquet"}))
    assert retained.references("/srv/lake/main/t/ducklake-0192.parquet")
    assert not retained.references("/srv/lake/main/t/ducklake-0193.parquet")
