"""One setting, one name, one default: the option objects the factory and the YAML component share."""

import inspect
import warnings
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from ducklake_assets import (
    BackupOptions,
    CheckOptions,
    ConfigurationError,
    DuckLakePipelineComponent,
    PublishOptions,
    ScheduleOptions,
    SensorOptions,
    SourceOptions,
    build_ducklake_pipeline,
)
from ducklake_assets_tests.parquet_files import crew


def shape(defs: dg.Definitions) -> dict:
    """What a user sees of the definitions in the UI: assets, checks, sensors and schedules with their states."""
    repository = defs.get_repository_def()
    return {
        "assets": sorted(key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()),
        "checks": sorted(str(key) for key in repository.asset_graph.asset_check_keys),
        "sensors": sorted((s.name, s.default_status.value, s.minimum_interval_seconds) for s in repository.sensor_defs),
        "schedules": sorted((s.name, s.cron_schedule, s.default_status.value) for s in repository.schedule_defs),
    }


def test_the_flat_keywords_of_earlier_releases_build_the_same_pipeline_and_say_where_they_went(tmp_path: Path) -> None:
    crew(tmp_path / "data" / "astronauts.parquet")
    where = {"catalog": str(tmp_path / "lake.ducklake"), "data_path": str(tmp_path / "files")}
    backups, public = str(tmp_path / "backups"), str(tmp_path / "public" / "space.ducklake")

    current = build_ducklake_pipeline(
        "space",
        SourceOptions(uri=str(tmp_path / "data"), sensor=SensorOptions(order="key", interval_seconds=60)),
        backup=BackupOptions(uri=backups, mode="metadata", keep=3, cron="0 1 * * *"),
        publish=PublishOptions(uri=public, self_contained=True, keep_revisions=2),
        checks=CheckOptions(blocking=True),
        schedules=ScheduleOptions(maintenance_cron="0 3 * * 0", default_status="stopped"),
        **where,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        earlier = build_ducklake_pipeline(
            "space",
            str(tmp_path / "data"),
            backup_uri=backups,
            publish_uri=public,
            sensor_order="key",
            sensor_interval_seconds=60,
            backup_mode="metadata",
            keep_backups=3,
            backup_cron="0 1 * * *",
            self_contained=True,
            keep_revisions=2,
            blocking_checks=True,
            maintenance_cron="0 3 * * 0",
            schedule_default_status=dg.DefaultScheduleStatus.STOPPED,
            **where,
        )

    assert shape(earlier) == shape(current)
    messages = [str(warning.message) for warning in caught if warning.category is DeprecationWarning]
    assert "build_ducklake_pipeline(backup_mode=...) is now backup=BackupOptions(mode=...)" in messages[4]
    assert any("self_contained=...) is now publish=PublishOptions(self_contained=...)" in m for m in messages)
    assert any("sensor_order=...) is now source=SourceOptions(sensor=SensorOptions(order=...))" in m for m in messages)
    assert len(messages) == 12
    assert {warning.filename for warning in caught} == {__file__}, "the warning points at the caller's line"

    result = dg.materialize(
        [a for a in earlier.assets if isinstance(a, dg.AssetsDefinition)],
        resources=earlier.resources,
        selection=[dg.AssetKey(["space", "catalog_snapshot"]), dg.AssetKey(["space", "static_backup"])],
    )
    (backup,) = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "static_backup"]
    assert backup.materialization.metadata["mode"].value == "metadata", "backup_mode= still decides the mode"


def test_a_wrong_setting_fails_when_the_object_is_made_and_names_the_setting() -> None:
    with pytest.raises(ConfigurationError, match=r"BackupOptions.cron must be a cron string .* got 'eager'"):
        BackupOptions(uri="backups", cron="eager")
    with pytest.raises(ConfigurationError, match=r"PublishOptions.automation must be 'eager', a cron string"):
        PublishOptions(uri="public/space.ducklake", automation="nightly")
    with pytest.raises(ConfigurationError, match=r"BackupOptions.keep_within must be a positive number of hours"):
        BackupOptions(uri="backups", keep_within="forever")
    with pytest.raises(
        ConfigurationError, match=r"^BackupOptions.keep: Input should be greater than or equal to 1, got 0$"
    ):
        BackupOptions(uri="backups", keep=0)
    with pytest.raises(ConfigurationError, match=r"^BackupOptions has no setting 'keep_last'$"):
        BackupOptions(uri="backups", keep_last=3)
    with pytest.raises(
        ConfigurationError, match=r"SourceOptions.schema_drift: .*'fail', 'ignore_extra_columns' or 'evolve'"
    ):
        SourceOptions(uri="data", schema_drift="loose")
    with pytest.raises(
        ConfigurationError, match=r"^SensorOptions.order: Input should be 'modified' or 'key', got 'x'$"
    ):
        SourceOptions(uri="data", sensor={"order": "x"})
    with pytest.raises(TypeError, match="unexpected keyword argument 'backup_folder'"):
        build_ducklake_pipeline("space", "data", "lake.ducklake", "files", backup_folder="backups")
    with pytest.raises(ConfigurationError, match="backup must be a BackupOptions or a location string, got 30"):
        build_ducklake_pipeline("space", "data", "lake.ducklake", "files", backup=30)


def test_durations_mean_the_same_in_python_and_yaml(tmp_path: Path) -> None:
    assert BackupOptions(uri="b", keep_within=48).keep_within == timedelta(hours=48), "a number is hours, as in YAML"
    assert BackupOptions(uri="b", max_age="1d12h").max_age == timedelta(hours=36)
    assert ScheduleOptions().expire_snapshots_older_than == timedelta(days=7)
    assert ScheduleOptions(expire_snapshots_older_than=None).expire_snapshots_older_than is None

    component = DuckLakePipelineComponent.resolve_from_yaml(
        f"""
name: space
source: {tmp_path / "data"}
catalog: {tmp_path / "lake.ducklake"}
data_path: {tmp_path / "files"}
backup: {{uri: {tmp_path / "backups"}, keep_within: 48, max_age: 1d12h}}
"""
    )
    assert component.backup == BackupOptions(uri=str(tmp_path / "backups"), keep_within=48, max_age="1d12h")
    assert isinstance(component.source, SourceOptions) and isinstance(component.schedules, ScheduleOptions)


def test_the_factory_takes_one_object_per_stage() -> None:
    parameters = inspect.signature(build_ducklake_pipeline).parameters
    keywords = [name for name, p in parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    assert keywords[:7] == ["name", "source", "catalog", "data_path", "backup", "publish", "s3"]
    assert len(keywords) <= 14, keywords
    assert {"checks", "schedules", "source_deps", "lake_writers"} <= set(keywords)
    options = DuckLakePipelineComponent.model_fields
    assert options["backup"].annotation == BackupOptions | None, "the YAML's backup: is the Python BackupOptions"
    assert options["publish"].annotation == PublishOptions | None
    assert options["checks"].annotation is CheckOptions
