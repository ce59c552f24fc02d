"""``build_ducklake_pipeline``: one call that turns a source of Parquet files into a DuckLake pipeline."""

import re
from collections.abc import Mapping

import dagster as dg

from .backup_assets import build_backup_definitions
from .core.errors import ConfigurationError
from .core.lake import is_remote
from .core.registration import BadFiles, SchemaDrift, check_policies
from .core.sources import DEFAULT_PATTERN, FileSource, NewFileOrder, TableNameFrom, TableNaming
from .core.sql import OptionValue
from .publish_assets import build_publish_definitions
from .resources import DuckLakeResource, S3Resource
from .snapshot_assets import (
    catalog_snapshot_asset,
    ducklake_resource_key,
    new_file_sensor,
    s3_resource_key,
    source_files_spec,
)

_PIPELINE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def build_ducklake_pipeline(
    name: str,
    source: str,
    catalog: str,
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
    sensor_default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
    attach_options: Mapping[str, OptionValue] | None = None,
) -> dg.Definitions:
    """Definitions for a DuckLake fed by Parquet files that another system writes.

    ``name`` prefixes every asset key and names the resources ``f"{name}_ducklake"`` and
    ``f"{name}_s3"``. ``source`` is a folder, an ``s3://bucket/prefix`` or a manifest ``.csv`` with a
    ``full_path`` column; ``pattern`` selects files below a folder or prefix. Tables are named after the
    file name up to its first dot, or (``table_name_from``) the parent folder or the named group
    ``table`` of ``table_name_regex``; they go to schema ``schema``. ``catalog`` is a DuckLake catalog
    string (DuckDB file, ``sqlite:...``, ``postgres:...``), ``data_path`` a folder or ``s3://`` prefix.
    ``schema_drift`` is ``fail``, ``ignore_extra_columns`` or ``evolve``; ``bad_files`` is ``fail`` or
    ``skip``. The sensor ``f"{name}_new_files"`` watches the source (``sensor_order``: ``modified`` or
    ``key``). ``s3`` is needed when any location is on S3.

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

    lake = DuckLakeResource(catalog=catalog, data_path=data_path, s3=s3, attach_options=dict(attach_options or {}))
    resources: dict[str, object] = {ducklake_resource_key(name): lake}
    if s3 is not None:
        resources[s3_resource_key(name)] = s3
    assets: list[dg.AssetsDefinition | dg.AssetSpec] = [
        source_files_spec(name, files),
        catalog_snapshot_asset(name, files, schema_drift=schema_drift, bad_files=bad_files),
    ]
    asset_checks: list[dg.AssetChecksDefinition] = []
    sensors: list[dg.SensorDefinition] = [
        new_file_sensor(
            name,
            files,
            order=sensor_order,
            minimum_interval_seconds=sensor_interval_seconds,
            default_status=sensor_default_status,
        )
    ]
    schedules: list[dg.ScheduleDefinition] = []
    if publish_uri:
        if not backup_uri and lake.catalog.kind != "duckdb":
            raise ConfigurationError(
                "publish_uri needs backup_uri when the catalog is not a DuckDB file: the frozen lake is "
                "published from the latest static backup"
            )
        frozen = build_publish_definitions(
            name,
            publish_uri,
            lake_resource_key=ducklake_resource_key(name),
            s3_resource_key=s3_resource_key(name) if s3 is not None else None,
            backup_uri=backup_uri,
            group_name=name,
        )
        assets.extend(frozen.assets)
        asset_checks.extend(frozen.asset_checks)
    definitions = dg.Definitions(
        assets=assets, asset_checks=asset_checks, sensors=sensors, schedules=schedules, resources=resources
    )
    if backup_uri:
        backups = build_backup_definitions(
            name,
            backup_uri,
            lake_resource_key=ducklake_resource_key(name),
            s3_resource_key=s3_resource_key(name) if s3 is not None else None,
            group_name=name,
        )
        definitions = dg.Definitions.merge(definitions, backups)
    return definitions
