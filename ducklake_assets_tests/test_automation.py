"""New files -> catalog snapshot -> static backup -> frozen lake, without anyone clicking."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from ducklake_assets import (
    BackupOptions,
    ConfigurationError,
    PublishOptions,
    ScheduleOptions,
    build_ducklake_pipeline,
)
from ducklake_assets_tests.parquet_files import crew

SNAPSHOT = dg.AssetKey(["space", "catalog_snapshot"])
BACKUP = dg.AssetKey(["space", "static_backup"])
FROZEN = dg.AssetKey(["space", "frozen_lake"])


def pipeline(tmp_path: Path, backup: dict | None = None, publish: dict | None = None, **options) -> dg.Definitions:
    crew(tmp_path / "data" / "astronauts.p1.parquet", 0)
    return build_ducklake_pipeline(
        name="space",
        source=str(tmp_path / "data"),
        catalog=str(tmp_path / "lake" / "space.ducklake"),
        data_path=str(tmp_path / "lake" / "files"),
        backup=BackupOptions(uri=str(tmp_path / "backups"), **(backup or {})),
        publish=PublishOptions(uri=str(tmp_path / "public" / "space.ducklake"), **(publish or {})),
        **options,
    )


def materialize(defs: dg.Definitions, instance: dg.DagsterInstance, keys: set[dg.AssetKey]) -> None:
    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
    result = dg.materialize(assets, resources=defs.resources, instance=instance, selection=list(keys))
    assert result.success


def requested(result: dg.EvaluateAutomationConditionsResult) -> set[dg.AssetKey]:
    return {key for key in (SNAPSHOT, BACKUP, FROZEN) if result.get_num_requested(key)}


def test_each_hop_runs_after_the_one_before_it(tmp_path: Path) -> None:
    defs = pipeline(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert requested(first) == set(), "nothing runs before the lake has a snapshot"

    materialize(defs, instance, {SNAPSHOT})
    after_snapshot = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert requested(after_snapshot) == {BACKUP, FROZEN}, "a new snapshot is backed up, then published"

    materialize(defs, instance, {BACKUP, FROZEN})
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after_snapshot.cursor)
    assert requested(settled) == set(), "once everything is current, nothing more runs"

    crew(tmp_path / "data" / "astronauts.p2.parquet", 10)
    materialize(defs, instance, {SNAPSHOT})
    again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=settled.cursor)
    assert requested(again) == {BACKUP, FROZEN}


def test_publish_nightly_while_backing_up_every_snapshot(tmp_path: Path) -> None:
    defs = pipeline(tmp_path, publish={"automation": "0 2 * * *"})
    instance = dg.DagsterInstance.ephemeral()
    now = datetime.now(UTC)
    next_night = (now + timedelta(days=1)).replace(hour=2, minute=0, second=0, microsecond=0)
    if next_night - now > timedelta(days=1):
        next_night -= timedelta(days=1)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=now)
    materialize(defs, instance, {SNAPSHOT, BACKUP})
    later = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=first.cursor, evaluation_time=now + timedelta(seconds=30)
    )
    assert requested(later) == set(), "the frozen lake waits for its nightly tick"
    night = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=later.cursor, evaluation_time=next_night + timedelta(minutes=1)
    )
    assert requested(night) == {FROZEN}
    materialize(defs, instance, {FROZEN})
    next_evening = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=night.cursor, evaluation_time=next_night + timedelta(hours=20)
    )
    assert requested(next_evening) == set()
    quiet_night = dg.evaluate_automation_conditions(
        defs=defs,
        instance=instance,
        cursor=next_evening.cursor,
        evaluation_time=next_night + timedelta(days=1, minutes=1),
    )
    assert requested(quiet_night) == set(), "no new backup since the last publication: nothing to publish"


def test_sensors_and_schedules_start_the_way_a_user_expects(tmp_path: Path) -> None:
    defs = pipeline(tmp_path, backup={"cron": "0 * * * *"}, schedules=ScheduleOptions(maintenance_cron="0 3 * * *"))
    repository = defs.get_repository_def()
    sensors = {sensor.name: sensor for sensor in repository.sensor_defs}
    assert sensors["space_new_files"].default_status == dg.DefaultSensorStatus.RUNNING
    automation = sensors["space_automation"]
    assert automation.default_status == dg.DefaultSensorStatus.RUNNING
    assert isinstance(automation, dg.AutomationConditionSensorDefinition)
    schedules = {schedule.name: schedule for schedule in repository.schedule_defs}
    assert schedules["space_static_backup_schedule"].cron_schedule == "0 * * * *"
    assert schedules["space_maintenance_schedule"].cron_schedule == "0 3 * * *"
    assert {s.default_status for s in schedules.values()} == {dg.DefaultScheduleStatus.RUNNING}

    manual = pipeline(tmp_path, backup={"automation": None}, publish={"automation": None})
    assert "space_automation" not in {sensor.name for sensor in manual.get_repository_def().sensor_defs}
    with pytest.raises(ConfigurationError, match="BackupOptions.automation must be 'eager', a cron string"):
        pipeline(tmp_path, backup={"automation": "sometimes"})


def test_the_whole_pipeline_with_every_option_loads_in_dagster(tmp_path: Path) -> None:
    defs = pipeline(
        tmp_path,
        backup={"cron": "0 * * * *"},
        publish={"automation": "0 2 * * *"},
        schedules=ScheduleOptions(maintenance_cron="0 3 * * *"),
    )
    dg.Definitions.validate_loadable(defs)
