"""``build_ducklake_pipeline``: one call that turns a source of Parquet files into a DuckLake pipeline."""

import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TypeAlias

import dagster as dg

from .backup_assets import build_backup_definitions
from .core.backup import BackupMode
from .core.errors import ConfigurationError
from .core.lake import is_remote
from .core.registration import BadFiles, SchemaDrift, check_policies
from .core.sources import DEFAULT_PATTERN, FileSource, NewFileOrder, TableNameFrom, TableNaming
from .core.sql import OptionValue
from .io_manager import DuckLakeIOManager
from .maintenance_assets import build_maintenance_definitions
from .partitions import SourcePartitions
from .publish_assets import build_publish_definitions
from .resources import CatalogConfig, DuckLakeResource, S3Resource
from .snapshot_assets import (
    discover_tables,
    ducklake_resource_key,
    new_file_sensor,
    registration_assets,
    s3_resource_key,
    source_files_spec,
)
from .translator import DuckLakeTranslator

AssetLike: TypeAlias = dg.AssetKey | str | Sequence[str] | dg.AssetSpec | dg.AssetsDefinition
"""How ``source_deps`` and ``lake_writers`` name an asset: a key, a ``"a/b"`` string, a spec or a definition."""

_PIPELINE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

EAGER = "eager"
_CRON = re.compile(r"^\s*([0-9A-Za-z*/,\-?LW#]+\s+){4}[0-9A-Za-z*/,\-?LW#]+\s*$")


def automation_condition(setting: str | None, setting_name: str) -> dg.AutomationCondition | None:
    """``"eager"``: after every upstream materialization; a cron string: at each tick of it, when upstream
    changed since the asset last ran; ``None``: only when someone (or a schedule) asks."""
    if setting is None:
        return None
    if setting == EAGER:
        # A table asset with no files yet stays missing; it must not hold the backup or publication back.
        return dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())
    if not _CRON.match(setting):
        raise ConfigurationError(f"{setting_name} must be 'eager', a cron string or None, got {setting!r}")
    changed_since_last_run = dg.AutomationCondition.any_deps_updated().since(
        dg.AutomationCondition.newly_requested() | dg.AutomationCondition.newly_updated()
    )
    return (
        dg.AutomationCondition.cron_tick_passed(setting)
        & (changed_since_last_run | dg.AutomationCondition.missing())
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.in_progress()
    ).with_label(f"at {setting} when upstream changed")


def build_ducklake_pipeline(
    name: str,
    source: str,
    catalog: str | CatalogConfig,
    data_path: str,
    backup_uri: str | None = None,
    publish_uri: str | None = None,
    s3: S3Resource | None = None,
    *,
    pattern: str = DEFAULT_PATTERN,
    table_name_from: TableNameFrom = "file_name",
    table_name_regex: str | None = None,
    schema: str = "main",
    schema_drift: SchemaDrift = "fail",
    bad_files: BadFiles = "fail",
    sensor_order: NewFileOrder = "modified",
    sensor_interval_seconds: int = 30,
    sensor_default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    attach_options: Mapping[str, OptionValue] | None = None,
    backup_automation: str | None = EAGER,
    publish_automation: str | None = EAGER,
    automation_default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    backup_cron: str | None = None,
    backup_mode: BackupMode = "full",
    keep_backups: int | None = 30,
    keep_backups_within: timedelta | None = None,
    backup_max_snapshot_lag: int = 0,
    backup_max_age: timedelta | None = None,
    blocking_checks: bool = False,
    keep_revisions: int = 5,
    self_contained: bool = False,
    maintenance_cron: str | None = None,
    expire_snapshots_older_than: timedelta | None = timedelta(days=7),
    schedule_default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.RUNNING,
    tables: Sequence[str] | None = None,
    translator: DuckLakeTranslator | None = None,
    source_deps: Sequence[AssetLike] = (),
    lake_writers: Sequence[AssetLike] = (),
    partitions: SourcePartitions | None = None,
) -> dg.Definitions:
    """Definitions for a DuckLake fed by Parquet files that another system writes.

    ``name`` prefixes every asset key and names the resources ``f"{name}_ducklake"``,
    ``f"{name}_s3"`` and ``f"{name}_io_manager"`` (a ``DuckLakeIOManager``). ``source`` is a folder, an
    ``s3://bucket/prefix`` or a manifest ``.csv`` with a ``full_path`` column; ``pattern`` selects files
    below a folder or prefix. Tables are named after the
    file name up to its first dot, or (``table_name_from``) the parent folder or the named group
    ``table`` of ``table_name_regex``; they go to schema ``schema``. ``catalog`` is a DuckLake catalog
    string (DuckDB file, ``sqlite:...``, ``postgres:...``) or a catalog config such as
    ``PostgresCatalogConfig(..., password=dg.EnvVar("LAKE_PASSWORD"))``; ``data_path`` a folder or ``s3://`` prefix.
    ``schema_drift`` is ``fail``, ``ignore_extra_columns`` or ``evolve``; ``bad_files`` is ``fail`` or
    ``skip``. The sensor ``f"{name}_new_files"`` watches the source (``sensor_order``: ``modified`` or
    ``key``). ``s3`` is needed when any location is on S3.

    Publishing: ``self_contained=True`` copies every data file next to the frozen lake at ``publish_uri``
    (incrementally), so it is complete wherever it is published; a frozen lake on S3 whose data files
    are local is refused without it.

    Backups: ``backup_mode`` is ``"full"`` (default: the catalog and a copy of every data and delete file
    it references, so the backup survives losing the catalog database and every data file) or
    ``"metadata"`` (the catalog only, for users who replicate the data bucket themselves);
    ``keep_backups`` / ``keep_backups_within`` prune older backups and the files only they needed.

    Tables: each table is an asset ``[name, table]`` (``[name, schema, table]`` outside ``main``) made in
    the same step as ``[name, "catalog_snapshot"]``. ``tables`` names them (no I/O when definitions
    load); by default they are found when definitions load, from the source listing and the catalog
    (a new table appears after a reload). ``translator`` (a :class:`DuckLakeTranslator`) changes keys,
    groups, owners, tags, descriptions, freshness and automation per table. ``source_deps`` names the
    assets that write the source files: the tables depend on them and register after each of their
    materializations (eager automation), taking only the paths they report
    (:func:`written_paths_metadata`) when they do. ``lake_writers`` names your own assets that write
    the lake (through ``DuckLakeResource``, ``DuckLakeIOManager``, SQL command or CDC assets): backups
    and publication run after them too.

    Scale-out: ``partitions`` (a :class:`SourcePartitions`) partitions the registration step and the
    table assets by source folder (by day, by prefix; static, time-window or dynamic keys). The sensor
    requests one run per partition with new files, each run registers only its folder, and runs of
    different partitions write a PostgreSQL catalog side by side, so executors and run launchers spread
    the work over processes and machines.

    Automation: ``backup_automation`` and ``publish_automation`` are ``"eager"`` (after every upstream
    materialization, the default), a cron string (at most once per tick, when upstream changed) or ``None``;
    the sensor ``f"{name}_automation"`` that evaluates them starts RUNNING, as does the new-file sensor and
    every schedule you configure (``backup_cron``; ``maintenance_cron`` adds the maintenance assets, which
    never touch what a retained backup or published revision needs).

    .. code-block:: python

        from ducklake_assets import build_ducklake_pipeline

        defs = build_ducklake_pipeline(
            name="space", source="data/space", catalog="lake/space.ducklake", data_path="lake/data"
        )
    """
    if not isinstance(name, str) or not _PIPELINE_NAME.match(name):
        raise ConfigurationError(
            f"pipeline name {name!r} must start with a letter or _ and hold only letters, digits and _, "
            "because it prefixes asset keys and resource names"
        )
    check_policies(schema_drift, bad_files)
    if sensor_order not in ("modified", "key"):
        raise ConfigurationError(f"sensor_order must be 'modified' or 'key', got {sensor_order!r}")
    files = FileSource(source, pattern, TableNaming(source=table_name_from, regex=table_name_regex, schema=schema))
    locations = {"source": source, "data_path": data_path, "backup_uri": backup_uri, "publish_uri": publish_uri}
    for setting, location in locations.items():
        if location is not None and (not isinstance(location, str) or not location.strip()):
            raise ConfigurationError(f"{setting} must be a non-empty path or URI, got {location!r}")
    on_s3 = [
        setting
        for setting, location in locations.items()
        if location and location.lower().startswith(("s3://", "s3a://", "s3n://"))
    ]
    if on_s3 and s3 is None:
        raise ConfigurationError(
            f"{', '.join(on_s3)} {'is' if len(on_s3) == 1 else 'are'} on S3: pass s3=S3Resource(...) "
            "(S3Resource() alone uses boto3's default credentials)"
        )
    for setting in ("backup_uri", "publish_uri"):
        location = locations[setting]
        if location and is_remote(location) and not location.lower().startswith("s3://"):
            raise ConfigurationError(f"{setting} {location!r} must be a local path or an s3:// URI")

    backup_condition = automation_condition(backup_automation, "backup_automation")
    publish_condition = automation_condition(publish_automation, "publish_automation")
    lake = DuckLakeResource(catalog=catalog, data_path=data_path, s3=s3, attach_options=dict(attach_options or {}))
    if publish_uri and not backup_uri and lake.catalog.kind != "duckdb":
        raise ConfigurationError(
            "publish_uri needs backup_uri when the catalog is not a DuckDB file: the frozen lake is "
            "published from the latest static backup"
        )
    lake_key = ducklake_resource_key(name)
    s3_key = s3_resource_key(name) if s3 is not None else None
    resources: dict[str, object] = {lake_key: lake, io_manager_key(name): DuckLakeIOManager(lake=lake)}
    if s3_key:
        resources[s3_key] = s3
    producers = asset_keys(source_deps, "source_deps")
    writers = asset_keys(lake_writers, "lake_writers")
    source_spec = source_files_spec(name, files)
    registration = registration_assets(
        name,
        files,
        list(tables) if tables is not None else discover_tables(files, lake),
        translator=translator,
        source_deps=producers,
        schema_drift=schema_drift,
        bad_files=bad_files,
        io_manager_key=io_manager_key(name),
        partitions=partitions,
        automation_condition=dg.AutomationCondition.eager().ignore(dg.AssetSelection.assets(source_spec.key))
        if producers
        else None,
    )
    registration_keys = sorted(registration.keys, key=lambda key: key.to_user_string())
    lake_assets = [*registration_keys, *writers]
    parts = [
        dg.Definitions(
            assets=[source_spec, registration],
            sensors=[
                new_file_sensor(
                    name,
                    files,
                    order=sensor_order,
                    minimum_interval_seconds=sensor_interval_seconds,
                    default_status=sensor_default_status,
                    asset_keys=registration_keys,
                    partitions=partitions,
                )
            ],
            resources=resources,
        )
    ]
    automated: list[dg.AssetKey] = []
    if backup_uri:
        backups = build_backup_definitions(
            name,
            backup_uri,
            lake_resource_key=lake_key,
            s3_resource_key=s3_key,
            mode=backup_mode,
            keep_last=keep_backups,
            keep_within=keep_backups_within,
            max_snapshot_lag=backup_max_snapshot_lag,
            max_age=backup_max_age,
            blocking=blocking_checks,
            backup_cron=backup_cron,
            schedule_default_status=schedule_default_status,
            group_name=name,
            upstream_keys=lake_assets,
        )
        parts.append(with_automation(backups, backup_condition))
        automated += [dg.AssetKey([name, "static_backup"])] if backup_condition else []
    if publish_uri:
        frozen = build_publish_definitions(
            name,
            publish_uri,
            lake_resource_key=lake_key,
            s3_resource_key=s3_key,
            backup_uri=backup_uri,
            keep_revisions=keep_revisions,
            self_contained=self_contained,
            blocking=blocking_checks,
            group_name=name,
            upstream_keys=None if backup_uri else lake_assets,
        )
        parts.append(with_automation(frozen, publish_condition))
        automated += [dg.AssetKey([name, "frozen_lake"])] if publish_condition else []
    if maintenance_cron:
        parts.append(
            build_maintenance_definitions(
                name,
                lake_resource_key=lake_key,
                s3_resource_key=s3_key,
                backup_uris=[backup_uri] if backup_uri else [],
                publish_uris=[publish_uri] if publish_uri else [],
                cron_schedule=maintenance_cron,
                expire_older_than=expire_snapshots_older_than,
                schedule_default_status=schedule_default_status,
                group_name=name,
            )
        )
    automated += registration_keys if producers else []
    if automated:
        parts.append(
            dg.Definitions(
                sensors=[
                    dg.AutomationConditionSensorDefinition(
                        f"{name}_automation",
                        target=dg.AssetSelection.assets(*automated),
                        default_status=automation_default_status,
                        description=f"Runs the {name} registration (after its producers), backup and publication "
                        "when their upstream changes.",
                    )
                ]
            )
        )
    return dg.Definitions.merge(*parts)


def io_manager_key(name: str) -> str:
    """Key of the pipeline's ``DuckLakeIOManager``, through which downstream assets read its tables."""
    return f"{name}_io_manager"


def with_automation(definitions: dg.Definitions, condition: dg.AutomationCondition | None) -> dg.Definitions:
    """``definitions`` with ``condition`` set on every asset it builds."""
    if condition is None:
        return definitions
    assets = dg.map_asset_specs(
        lambda spec: spec.replace_attributes(automation_condition=condition), definitions.assets
    )
    return dg.Definitions(
        assets=assets,
        asset_checks=definitions.asset_checks,
        jobs=definitions.jobs,
        schedules=definitions.schedules,
        sensors=definitions.sensors,
        resources=definitions.resources,
    )


def asset_keys(assets: Sequence[AssetLike], setting: str) -> list[dg.AssetKey]:
    """The keys of ``assets`` (keys, ``"a/b"`` strings, key paths, specs or definitions), in order."""
    if isinstance(assets, str | dg.AssetKey | dg.AssetSpec | dg.AssetsDefinition):
        assets = [assets]
    keys: list[dg.AssetKey] = []
    for asset in assets:
        if isinstance(asset, dg.AssetKey):
            keys.append(asset)
        elif isinstance(asset, str):
            keys.append(dg.AssetKey.from_user_string(asset))
        elif isinstance(asset, dg.AssetSpec):
            keys.append(asset.key)
        elif isinstance(asset, dg.AssetsDefinition):
            keys.extend(asset.keys)
        elif isinstance(asset, Sequence) and all(isinstance(part, str) for part in asset):
            keys.append(dg.AssetKey(list(asset)))
        else:
            raise ConfigurationError(
                f"{setting}: {asset!r} is not an asset; give an AssetKey, a 'prefix/name' string, an AssetSpec or "
                "an asset definition"
            )
    return list(dict.fromkeys(keys))
