"""``DuckLakePipelineComponent``: the ``build_ducklake_pipeline`` factory, configured from a ``defs.yaml``.

.. code-block:: yaml

    type: ducklake_assets.DuckLakePipelineComponent
    attributes:
      name: space
      source: data/space
      catalog: lake/space.ducklake
      data_path: lake/data
      backup:
        uri: backups
      publish:
        uri: public/space.ducklake

Every key mirrors an argument of :func:`~ducklake_assets.pipeline.build_ducklake_pipeline`; the pipeline
itself is built by that function. Values are checked while the YAML is resolved, so a wrong value is
reported with the file, the line and the key. Relative local paths are taken from the project root.
"""

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import dagster as dg
from pydantic import ConfigDict, Field

from .core.catalog import DuckDBCatalog, PostgresCatalog, SQLiteCatalog, parse_catalog
from .core.errors import ConfigurationError
from .core.lake import is_remote
from .core.registration import BadFiles, SchemaDrift
from .core.sources import DEFAULT_PATTERN, NewFileOrder, TableNameFrom
from .pipeline import EAGER, build_ducklake_pipeline
from .resources import PostgresCatalogConfig, S3Resource

Status = Literal["running", "stopped"]

_ENV_TEMPLATE = re.compile(
    r"""^\s*\{\{\s*(?:env\.(?P<attribute>[A-Za-z_][A-Za-z0-9_]*)|env\(\s*(?P<quote>['"])(?P<call>[^'"]+)(?P=quote)\s*\))\s*\}\}\s*$"""
)
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*([smhdw])\s*)+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _choice(choices: Any) -> dg.Resolver:
    """A resolver that accepts one of the values of the ``Literal`` type ``choices``."""
    allowed = get_args(choices)

    def resolve(context: dg.ResolutionContext, value: Any) -> Any:
        value = context.resolve_value(value)
        if value not in allowed:
            raise ConfigurationError(f"must be one of {', '.join(map(repr, allowed))}; got {value!r}")
        return value

    return dg.Resolver(resolve, model_field_type=choices)


def _resolve_duration(context: dg.ResolutionContext, value: Any) -> timedelta | None:
    value = context.resolve_value(value)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return timedelta(hours=value)
    if isinstance(value, str) and _DURATION.match(value):
        duration = timedelta(
            **{_UNITS[unit]: sum(float(n) for n, u in _DURATION_PART.findall(value) if u == unit) for unit in _UNITS}
        )
        if duration > timedelta(0):
            return duration
    raise ConfigurationError(f"must be a positive number of hours or a duration like '36h', '7d', '1d12h'; got {value!r}")


def _resolve_automation(context: dg.ResolutionContext, value: Any) -> str | None:
    value = context.resolve_value(value)
    if value is None or value == EAGER or (isinstance(value, str) and dg.is_valid_cron_string(value)):
        return value
    raise ConfigurationError(f"must be 'eager', a cron string such as '0 2 * * *', or null; got {value!r}")


def _resolve_cron(context: dg.ResolutionContext, value: Any) -> str | None:
    value = context.resolve_value(value)
    if value is None or (isinstance(value, str) and dg.is_valid_cron_string(value)):
        return value
    raise ConfigurationError(f"must be a cron string such as '0 3 * * *', or null; got {value!r}")


def _resolve_secret(context: dg.ResolutionContext, value: Any) -> dg.EnvVar | str | None:
    """``{{ env.NAME }}`` becomes ``dg.EnvVar("NAME")``: read when a run starts and shown by name only."""
    if isinstance(value, str) and (match := _ENV_TEMPLATE.match(value)):
        return dg.EnvVar(match.group("attribute") or match.group("call"))
    return context.resolve_value(value)


Duration = Annotated[
    timedelta | None, dg.Resolver(_resolve_duration, model_field_type=float | str | None)
]
Automation = Annotated[str | None, dg.Resolver(_resolve_automation, model_field_type=str | None)]
Cron = Annotated[str | None, dg.Resolver(_resolve_cron, model_field_type=str | None)]
Secret = Annotated[
    dg.EnvVar | str | None, dg.Resolver(_resolve_secret, model_field_type=str | None, inject_before_resolve=False)
]


def _status(value: Status) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if value == "running" else dg.DefaultSensorStatus.STOPPED


class SensorAttributes(dg.Model, dg.Resolvable):
    """The sensor ``<name>_new_files`` that starts a catalog snapshot when files appear in the source."""

    order: Annotated[NewFileOrder, _choice(NewFileOrder)] = Field(
        default="modified",
        description=(
            "How new files are found: 'modified' (any naming; the source is listed on each tick) or 'key' "
            "(new files always sort after old ones; on S3 the listing starts after the last file seen)."
        ),
    )
    interval_seconds: int = Field(default=30, ge=1, description="Seconds between two checks of the source.")
    default_status: Annotated[Status, _choice(Status)] = Field(
        default="running", description="Whether the sensor runs from the first start: 'running' or 'stopped'."
    )


class SourceAttributes(dg.Model, dg.Resolvable):
    """Where the Parquet files come from and how they become tables."""

    uri: str = Field(
        description="A folder, an s3://bucket/prefix or a manifest .csv with a full_path column.",
        examples=["data/space", "s3://landing/space/", "manifests/space.csv"],
    )
    pattern: str = Field(
        default=DEFAULT_PATTERN, description="Glob of the files to register below a folder or prefix."
    )
    table_name_from: Annotated[TableNameFrom, _choice(TableNameFrom)] = Field(
        default="file_name",
        description=(
            "What names a file's table: 'file_name' (up to its first dot), 'parent_folder', or 'regex' "
            "(the named group 'table' of table_name_regex)."
        ),
    )
    table_name_regex: str | None = Field(
        default=None,
        description="With table_name_from: regex, a regex with a named group 'table', e.g. '(?P<table>[^/]+)/'.",
    )
    target_schema: str = Field(default="main", alias="schema", description="DuckLake schema the tables go to.")
    schema_drift: Annotated[SchemaDrift, _choice(SchemaDrift)] = Field(
        default="fail",
        description=(
            "A file whose columns differ from its table: 'fail' (nothing is registered), "
            "'ignore_extra_columns' (extra columns are not read) or 'evolve' (the table gains the columns)."
        ),
    )
    bad_files: Annotated[BadFiles, _choice(BadFiles)] = Field(
        default="fail",
        description="A file that is not readable Parquet: 'fail' (nothing is registered) or 'skip' (listed in metadata).",
    )
    sensor: SensorAttributes = Field(
        default_factory=SensorAttributes, description="The sensor that watches the source for new files."
    )


def _resolve_source(context: dg.ResolutionContext, value: Any) -> SourceAttributes:
    if isinstance(value, str):
        return SourceAttributes(uri=value)
    return SourceAttributes.resolve_from_model(context, value)


class BackupAttributes(dg.Model, dg.Resolvable):
    """Static backups of the catalog: the asset ``<name>/static_backup`` and its checks."""

    uri: str = Field(description="Folder or s3://bucket/prefix/ that holds the backups.")
    keep: int | None = Field(
        default=30, ge=1, description="Keep the newest N backups; null keeps all (unless keep_within is set)."
    )
    keep_within: Duration = Field(
        default=None,
        description="Also keep every backup younger than this: hours (48) or a duration ('36h', '7d', '1d12h').",
    )
    automation: Automation = Field(
        default=EAGER,
        description=(
            "When a backup follows a new snapshot: 'eager' (after every snapshot), a cron string "
            "(at most once per tick, when there is a new snapshot) or null (only when asked)."
        ),
    )
    cron: Cron = Field(default=None, description="A schedule that makes a backup at these times, e.g. '0 1 * * *'.")
    max_snapshot_lag: int = Field(
        default=0, ge=0, description="Check backup_is_fresh: how many snapshots the newest backup may be behind."
    )
    max_age: Duration = Field(
        default=None,
        description="Check backup_is_fresh: how long a snapshot may wait for its backup (hours or a duration).",
    )


class PublishAttributes(dg.Model, dg.Resolvable):
    """The frozen (read-only) lake: the asset ``<name>/frozen_lake`` and its checks."""

    uri: str = Field(
        description="Where the frozen lake's .ducklake file is published: a local path or s3:// URI.",
        examples=["public/space.ducklake", "s3://public-bucket/space.ducklake"],
    )
    keep_revisions: int = Field(default=5, ge=1, description="Published revisions kept for readers still using them.")
    automation: Automation = Field(
        default=EAGER,
        description=(
            "When a publication follows its upstream (the backup, else the snapshot): 'eager', a cron string "
            "such as '0 2 * * *' (publish nightly) or null (only when asked)."
        ),
    )


class CheckAttributes(dg.Model, dg.Resolvable):
    """How the asset checks act."""

    blocking: bool = Field(
        default=False,
        description="Whether a failing check of the backup or frozen lake stops the assets downstream of it.",
    )


class ScheduleAttributes(dg.Model, dg.Resolvable):
    """What runs without anyone clicking, apart from the new-file sensor."""

    maintenance_cron: Cron = Field(
        default=None,
        description="Adds the maintenance assets and a schedule at this cron, e.g. '0 3 * * 0'; null: no maintenance.",
    )
    expire_snapshots_older_than: Duration = Field(
        default=timedelta(days=7),
        description=(
            "Maintenance expires snapshots older than this (hours or a duration, default 7d); "
            "null: never expire. Snapshots a retained backup or published revision needs are kept."
        ),
    )
    default_status: Annotated[Status, _choice(Status)] = Field(
        default="running", description="Whether the schedules run from the first start: 'running' or 'stopped'."
    )
    automation_sensor_status: Annotated[Status, _choice(Status)] = Field(
        default="running",
        description="Whether the sensor <name>_automation (backup/publish automation) runs from the first start.",
    )


class S3Attributes(dg.Model, dg.Resolvable):
    """S3 or an S3-compatible store (MinIO, R2, moto); the field names of ``S3Resource``."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    endpoint_url: str | None = Field(default=None, description="Endpoint of an S3-compatible store; null for AWS.")
    region_name: str | None = Field(default=None, description="Region, e.g. us-east-1.")
    aws_access_key_id: Secret = Field(default=None, description="Access key id; '{{ env.AWS_ACCESS_KEY_ID }}'.")
    aws_secret_access_key: Secret = Field(
        default=None,
        description="Secret key. Write '{{ env.NAME }}': it is read when a run starts and the UI shows NAME only.",
    )
    aws_session_token: Secret = Field(default=None, description="Session token of temporary credentials.")
    use_ssl: bool | None = Field(default=None, description="Use TLS; null follows endpoint_url's scheme.")
    addressing_style: Annotated[Literal["auto", "virtual", "path"], _choice(Literal["auto", "virtual", "path"])] = (
        Field(default="auto", description="'path' for most S3-compatible stores, 'virtual' or 'auto' for AWS.")
    )

    def resource(self) -> S3Resource:
        return S3Resource(**self.model_dump())


class DuckLakePipelineComponent(dg.Component, dg.Model, dg.Resolvable):
    """A DuckLake fed by Parquet files: register new files, back up the catalog, publish a frozen lake.

    The YAML attributes mirror ``build_ducklake_pipeline``; see docs/component.md for every key.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str = Field(
        description="Prefixes every asset key and names the resources <name>_ducklake and <name>_s3.",
        examples=["space"],
    )
    source: Annotated[
        SourceAttributes, dg.Resolver(_resolve_source, model_field_type=str | SourceAttributes.model())
    ] = Field(description="A folder, s3:// prefix or manifest .csv; or an object with uri and the settings below.")
    catalog: str = Field(
        description="DuckLake catalog: a DuckDB file ('lake/space.ducklake'), 'sqlite:<path>' or 'postgres:<libpq dsn>'.",
        examples=["lake/space.ducklake", "postgres:host=db dbname=lake user=etl"],
    )
    catalog_password: Secret = Field(
        default=None,
        description="Password of a postgres: catalog. Write '{{ env.NAME }}': it is read when a run starts.",
    )
    data_path: str = Field(description="Where the lake's data files live: a folder or s3://bucket/prefix/.")
    attach_options: dict[str, str | int | float | bool] | None = Field(
        default=None, description="Extra DuckLake ATTACH options, e.g. {DATA_INLINING_ROW_LIMIT: 0}."
    )
    backup: BackupAttributes | None = Field(default=None, description="Static backups; omit for none.")
    publish: PublishAttributes | None = Field(default=None, description="Frozen lake publication; omit for none.")
    checks: CheckAttributes = Field(default_factory=CheckAttributes, description="How the asset checks act.")
    schedules: ScheduleAttributes = Field(
        default_factory=ScheduleAttributes, description="Maintenance schedule and the first-start state of automation."
    )
    s3: S3Attributes | None = Field(default=None, description="S3 settings; needed when any location is s3://.")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        root = Path(context.project_root)
        source = self.source
        backup = self.backup
        publish = self.publish
        return build_ducklake_pipeline(
            name=self.name,
            source=_from_root(source.uri, root),
            catalog=self._catalog(root),
            data_path=_from_root(self.data_path, root),
            backup_uri=_from_root(backup.uri, root) if backup else None,
            publish_uri=_from_root(publish.uri, root) if publish else None,
            s3=self.s3.resource() if self.s3 else None,
            pattern=source.pattern,
            table_name_from=source.table_name_from,
            table_name_regex=source.table_name_regex,
            schema=source.target_schema,
            schema_drift=source.schema_drift,
            bad_files=source.bad_files,
            sensor_order=source.sensor.order,
            sensor_interval_seconds=source.sensor.interval_seconds,
            sensor_default_status=_status(source.sensor.default_status),
            attach_options=self.attach_options,
            backup_automation=backup.automation if backup else None,
            publish_automation=publish.automation if publish else None,
            automation_default_status=_status(self.schedules.automation_sensor_status),
            backup_cron=backup.cron if backup else None,
            keep_backups=backup.keep if backup else None,
            keep_backups_within=backup.keep_within if backup else None,
            backup_max_snapshot_lag=backup.max_snapshot_lag if backup else 0,
            backup_max_age=backup.max_age if backup else None,
            blocking_checks=self.checks.blocking,
            keep_revisions=publish.keep_revisions if publish else 5,
            maintenance_cron=self.schedules.maintenance_cron,
            expire_snapshots_older_than=self.schedules.expire_snapshots_older_than,
            schedule_default_status=(
                dg.DefaultScheduleStatus.RUNNING
                if self.schedules.default_status == "running"
                else dg.DefaultScheduleStatus.STOPPED
            ),
        )

    def _catalog(self, root: Path) -> Any:
        catalog = parse_catalog(self.catalog)
        if self.catalog_password is not None and not isinstance(catalog, PostgresCatalog):
            raise ConfigurationError("catalog_password applies to a postgres: catalog only")
        if isinstance(catalog, DuckDBCatalog):
            return _from_root(catalog.path, root)
        if isinstance(catalog, SQLiteCatalog):
            return "sqlite:" + _from_root(catalog.path, root)
        if self.catalog_password is not None:
            return PostgresCatalogConfig(dsn=catalog.conninfo(), password=self.catalog_password)
        return self.catalog


def _from_root(path: str, root: Path) -> str:
    """A relative local path taken from the project root; anything else unchanged."""
    if is_remote(path):
        return path
    local = Path(path).expanduser()
    return str(local if local.is_absolute() else root / local)
