"""``build_ducklake_pipeline``: one call that turns a source of Parquet files into a DuckLake pipeline."""

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias, TypeVar, cast

import dagster as dg
from pydantic import BaseModel

from .backup_assets import build_backup_definitions
from .core.errors import ConfigurationError
from .core.locations import is_remote, is_s3
from .core.registration import check_policies
from .core.sources import FileSource, TableNaming
from .core.sql import OptionValue
from .io_manager import DuckLakeIOManager
from .maintenance_assets import build_maintenance_definitions
from .options import (
    BackupOptions,
    CheckOptions,
    PublishOptions,
    ScheduleOptions,
    SensorOptions,
    SourceOptions,
    automation_condition,
    schedule_status,
    sensor_status,
)
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


def build_ducklake_pipeline(
    name: str,
    source: str | SourceOptions,
    catalog: str | CatalogConfig,
    data_path: str,
    backup: str | BackupOptions | None = None,
    publish: str | PublishOptions | None = None,
    s3: S3Resource | None = None,
    *,
    checks: CheckOptions | None = None,
    schedules: ScheduleOptions | None = None,
    attach_options: Mapping[str, OptionValue] | None = None,
    tables: Sequence[str] | None = None,
    translator: DuckLakeTranslator | None = None,
    source_deps: Sequence[AssetLike] = (),
    lake_writers: Sequence[AssetLike] = (),
    **flat_settings: Any,
) -> dg.Definitions:
    """Definitions for a DuckLake fed by Parquet files that another system writes.

    Args:
        name: prefixes every asset key and names the resources ``f"{name}_ducklake"``, ``f"{name}_s3"`` and
            ``f"{name}_io_manager"`` (a :class:`DuckLakeIOManager`).
        source: a folder, an ``s3://bucket/prefix`` or a manifest ``.csv`` with a ``full_path`` column; or a
            :class:`SourceOptions` that also says which files to take, how they become tables, how drift
            and bad files are handled, how the sensor ``f"{name}_new_files"`` watches, and the partitions
            (:class:`SourcePartitions`) that spread registration over runs.
        catalog: a DuckLake catalog string (DuckDB file, ``sqlite:...``, ``postgres:...``) or a catalog config
            such as ``PostgresCatalogConfig(..., password=dg.EnvVar("LAKE_PASSWORD"))``.
        data_path: where the lake's data files live: a folder or ``s3://`` prefix.
        backup: where static backups go (a folder or ``s3://`` prefix), or a :class:`BackupOptions` with
            their mode (``"full"``: the catalog and a copy of every data file, survives losing both;
            ``"metadata"``: the catalog only), retention, automation, schedule and freshness limits.
            ``None``: no backups.
        publish: where the frozen (read-only) lake is published, or a :class:`PublishOptions` with
            ``self_contained`` (copy every data file next to it, so it is complete wherever it is published),
            the revisions kept and its automation. ``None``: no publication.
        s3: an :class:`S3Resource`; needed when any location is on S3 (``S3Resource()`` alone uses boto3's
            default credentials).
        checks: :class:`CheckOptions`: whether a failing backup or frozen-lake check blocks downstream assets.
        schedules: :class:`ScheduleOptions`: the maintenance schedule (its assets never touch what a retained
            backup or published revision needs) and the first-start state of schedules and the automation
            sensor ``f"{name}_automation"``.
        attach_options: extra DuckLake ``ATTACH`` options, e.g. ``{"DATA_INLINING_ROW_LIMIT": 0}``.
        tables: the table assets to show (no I/O when definitions load); by default they are found when
            definitions load, from the source listing and the catalog (a new table appears after a reload).
        translator: a :class:`DuckLakeTranslator` that changes keys, groups, owners, tags, descriptions,
            freshness and automation per table.
        source_deps: the assets that write the source files: the tables depend on them and register after
            each of their materializations (eager automation), taking only the paths they report
            (:func:`written_paths_metadata`) when they do.
        lake_writers: your own assets that write the lake (through ``DuckLakeResource``, ``DuckLakeIOManager``,
            SQL command or CDC assets): backups and publication run after them too.
        **flat_settings: the keywords of earlier releases (``backup_uri=``, ``backup_mode=``,
            ``self_contained=``, ``sensor_order=``, ...) still work, each with a ``DeprecationWarning`` that
            names its place in the option objects.

    Each table is an asset ``[name, table]`` (``[name, schema, table]`` outside ``main``), made in the same
    step as ``[name, "catalog_snapshot"]``. Backups and publications follow eagerly by default (their
    ``automation``); every sensor and schedule starts RUNNING unless its status says otherwise.

    Examples:
        .. code-block:: python

            from ducklake_assets import BackupOptions, build_ducklake_pipeline

            defs = build_ducklake_pipeline(
                name="space",
                source="data/space",
                catalog="lake/space.ducklake",
                data_path="lake/data",
                backup=BackupOptions(uri="backups", keep=14),
                publish="public/space.ducklake",
            )
    """
    if not isinstance(name, str) or not _PIPELINE_NAME.match(name):
        raise ConfigurationError(
            f"pipeline name {name!r} must start with a letter or _ and hold only letters, digits and _, "
            "because it prefixes asset keys and resource names"
        )
    given = {"source": source, "backup": backup, "publish": publish, "checks": checks, "schedules": schedules}
    options = _with_flat_settings(given, flat_settings)
    source_options = _as_options(options["source"], SourceOptions, "source")
    backup_options = _as_options(options["backup"], BackupOptions, "backup")
    publish_options = _as_options(options["publish"], PublishOptions, "publish")
    check_options = _as_options(options["checks"], CheckOptions, "checks") or CheckOptions()
    schedule_options = _as_options(options["schedules"], ScheduleOptions, "schedules") or ScheduleOptions()
    if source_options is None:
        raise ConfigurationError("source is required: a folder, an s3:// prefix, a manifest .csv or a SourceOptions")
    sensor, partitions = source_options.sensor, source_options.partitions
    check_policies(source_options.schema_drift, source_options.bad_files)
    naming = TableNaming(
        source=source_options.table_name_from,
        regex=source_options.table_name_regex,
        schema=source_options.target_schema,
    )
    files = FileSource(source_options.uri, source_options.pattern, naming)
    backup_uri = backup_options.uri if backup_options else None
    publish_uri = publish_options.uri if publish_options else None
    locations = {"source": source_options.uri, "data_path": data_path, "backup": backup_uri, "publish": publish_uri}
    for setting, location in locations.items():
        if location is not None and (not isinstance(location, str) or not location.strip()):
            raise ConfigurationError(f"{setting} must be a non-empty path or URI, got {location!r}")
    require_s3(
        locations, s3 is not None, "pass s3=S3Resource(...) (S3Resource() alone uses boto3's default credentials)"
    )
    for setting in ("backup", "publish"):
        location = locations[setting]
        if location and is_remote(location) and not location.lower().startswith("s3://"):
            raise ConfigurationError(f"{setting} location {location!r} must be a local path or an s3:// URI")

    backup_condition = automation_condition(backup_options.automation, "backup.automation") if backup_options else None
    publish_condition = (
        automation_condition(publish_options.automation, "publish.automation") if publish_options else None
    )
    lake = DuckLakeResource(catalog=catalog, data_path=data_path, s3=s3, attach_options=dict(attach_options or {}))
    if publish_uri and not backup_uri and lake.catalog.kind != "duckdb":
        raise ConfigurationError(
            "publish needs backup when the catalog is not a DuckDB file: the frozen lake is "
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
        schema_drift=source_options.schema_drift,
        bad_files=source_options.bad_files,
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
                    order=sensor.order,
                    minimum_interval_seconds=sensor.interval_seconds,
                    default_status=sensor_status(sensor.default_status),
                    asset_keys=registration_keys,
                    partitions=partitions,
                )
            ],
            resources=resources,
        )
    ]
    automated: list[dg.AssetKey] = []
    if backup_options:
        backups = build_backup_definitions(
            name,
            backup_options.uri,
            lake_resource_key=lake_key,
            s3_resource_key=s3_key,
            mode=backup_options.mode,
            keep=backup_options.keep,
            keep_within=backup_options.keep_within,
            max_snapshot_lag=backup_options.max_snapshot_lag,
            max_age=backup_options.max_age,
            blocking=check_options.blocking,
            backup_cron=backup_options.cron,
            schedule_default_status=schedule_status(schedule_options.default_status),
            group_name=name,
            upstream_keys=lake_assets,
        )
        parts.append(with_automation(backups, backup_condition))
        automated += [dg.AssetKey([name, "static_backup"])] if backup_condition else []
    if publish_options:
        frozen = build_publish_definitions(
            name,
            publish_options.uri,
            lake_resource_key=lake_key,
            s3_resource_key=s3_key,
            backup_uri=backup_uri,
            keep_revisions=publish_options.keep_revisions,
            self_contained=publish_options.self_contained,
            blocking=check_options.blocking,
            group_name=name,
            upstream_keys=None if backup_uri else lake_assets,
        )
        parts.append(with_automation(frozen, publish_condition))
        automated += [dg.AssetKey([name, "frozen_lake"])] if publish_condition else []
    if schedule_options.maintenance_cron:
        parts.append(
            build_maintenance_definitions(
                name,
                lake_resource_key=lake_key,
                s3_resource_key=s3_key,
                backup_uris=[backup_uri] if backup_uri else [],
                publish_uris=[publish_uri] if publish_uri else [],
                cron_schedule=schedule_options.maintenance_cron,
                expire_older_than=schedule_options.expire_snapshots_older_than,
                schedule_default_status=schedule_status(schedule_options.default_status),
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
                        default_status=sensor_status(schedule_options.automation_sensor_status),
                        description=f"Runs the {name} registration (after its producers), backup and publication "
                        "when their upstream changes.",
                    )
                ]
            )
        )
    return dg.Definitions.merge(*parts)


def require_s3(locations: Mapping[str, str | None], s3_given: bool, fix: str) -> None:
    """Refuse locations on S3 without S3 settings, naming them and ``fix`` (how to give the settings)."""
    on_s3 = [setting for setting, location in locations.items() if location and is_s3(location)]
    if on_s3 and not s3_given:
        raise ConfigurationError(f"{', '.join(on_s3)} {'is' if len(on_s3) == 1 else 'are'} on S3: {fix}")


_Stage = TypeVar("_Stage", bound=BaseModel)


def _as_options(value: object, kind: type[_Stage], setting: str) -> _Stage | None:
    """``value`` as a ``kind`` (a location string becomes ``kind(uri=value)``); ``None`` stays ``None``."""
    if value is None or isinstance(value, kind):
        return value
    if isinstance(value, str) and "uri" in kind.model_fields:
        return kind(uri=value)
    accepted = f"a {kind.__name__}" + (" or a location string" if "uri" in kind.model_fields else "")
    raise ConfigurationError(f"{setting} must be {accepted}, got {value!r}")


def _status(value: Any) -> Any:
    """A Dagster sensor or schedule status as the options spell it (``"running"``); anything else as it is."""
    return value.value.lower() if isinstance(value, dg.DefaultSensorStatus | dg.DefaultScheduleStatus) else value


_FLAT_SETTINGS: dict[str, tuple[str, str]] = {
    "pattern": ("source", "pattern"),
    "table_name_from": ("source", "table_name_from"),
    "table_name_regex": ("source", "table_name_regex"),
    "schema": ("source", "target_schema"),
    "schema_drift": ("source", "schema_drift"),
    "bad_files": ("source", "bad_files"),
    "partitions": ("source", "partitions"),
    "sensor_order": ("sensor", "order"),
    "sensor_interval_seconds": ("sensor", "interval_seconds"),
    "sensor_default_status": ("sensor", "default_status"),
    "backup_uri": ("backup", "uri"),
    "backup_automation": ("backup", "automation"),
    "backup_cron": ("backup", "cron"),
    "backup_mode": ("backup", "mode"),
    "keep_backups": ("backup", "keep"),
    "keep_backups_within": ("backup", "keep_within"),
    "backup_max_snapshot_lag": ("backup", "max_snapshot_lag"),
    "backup_max_age": ("backup", "max_age"),
    "publish_uri": ("publish", "uri"),
    "publish_automation": ("publish", "automation"),
    "keep_revisions": ("publish", "keep_revisions"),
    "self_contained": ("publish", "self_contained"),
    "blocking_checks": ("checks", "blocking"),
    "maintenance_cron": ("schedules", "maintenance_cron"),
    "expire_snapshots_older_than": ("schedules", "expire_snapshots_older_than"),
    "schedule_default_status": ("schedules", "default_status"),
    "automation_default_status": ("schedules", "automation_sensor_status"),
}
"""The flat keywords of earlier releases: ``keyword: (stage, field)``. Their statuses were Dagster enums."""

_STAGE_OPTIONS: dict[str, type[BaseModel]] = {
    "source": SourceOptions,
    "sensor": SensorOptions,
    "backup": BackupOptions,
    "publish": PublishOptions,
    "checks": CheckOptions,
    "schedules": ScheduleOptions,
}


def _with_flat_settings(given: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """The stage options with the flat keywords of earlier releases applied on top (each one warned)."""
    unknown = sorted(set(flat) - set(_FLAT_SETTINGS))
    if unknown:
        raise TypeError(f"build_ducklake_pipeline() got an unexpected keyword argument {unknown[0]!r}")
    updates: dict[str, dict[str, Any]] = {}
    for keyword, value in flat.items():
        stage, field = _FLAT_SETTINGS[keyword]
        updates.setdefault(stage, {})[field] = _status(value)
        where = (
            f"source=SourceOptions(sensor=SensorOptions({field}=...))"
            if stage == "sensor"
            else (f"{stage}={_STAGE_OPTIONS[stage].__name__}({field}=...)")
        )
        warnings.warn(
            f"build_ducklake_pipeline({keyword}=...) is now {where}; the flat keyword will be removed",
            DeprecationWarning,
            stacklevel=3,
        )
    options = dict(given)
    if "sensor" in updates:
        updates.setdefault("source", {})["sensor"] = _updated(
            SensorOptions,
            getattr(_as_options(options["source"], SourceOptions, "source"), "sensor", None),
            updates.pop("sensor"),
        )
    for stage, fields in updates.items():
        kind = _STAGE_OPTIONS[stage]
        current = _as_options(options[stage], kind, stage)
        if current is None and "uri" in kind.model_fields and "uri" not in fields:
            continue  # a backup or publish setting without a location: that stage is off, as it always was
        options[stage] = _updated(kind, current, fields)
    return options


def _updated(kind: type[_Stage], current: BaseModel | None, fields: dict[str, Any]) -> _Stage:
    """A new ``kind`` with ``current``'s settings and ``fields`` on top (validated again)."""
    values = {name: getattr(current, name) for name in kind.model_fields} if current is not None else {}
    return kind(**{**values, **fields})


def io_manager_key(name: str) -> str:
    """Key of the pipeline's ``DuckLakeIOManager``, through which downstream assets read its tables."""
    return f"{name}_io_manager"


def with_automation(definitions: dg.Definitions, condition: dg.AutomationCondition | None) -> dg.Definitions:
    """``definitions`` with ``condition`` set on every asset it builds."""
    if condition is None:
        return definitions
    # The stage builders return asset definitions only, never bare specs or source assets.
    built = cast(list[dg.AssetsDefinition], list(definitions.assets or []))
    assets = dg.map_asset_specs(lambda spec: spec.replace_attributes(automation_condition=condition), built)
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
