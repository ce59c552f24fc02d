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

Every key mirrors an argument of :func:`~ducklake_assets.pipeline.build_ducklake_pipeline`, which builds
the pipeline. Values are checked while the YAML is resolved, so ``dg check defs`` reports a wrong value or
an unknown key with the file, the line and the key. Relative local paths are taken from the project root.
"""

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import dagster as dg
from pydantic import ConfigDict, Field

from .core.backup import BackupMode
from .core.catalog import DuckDBCatalog, PostgresCatalog, SQLiteCatalog, parse_catalog
from .core.errors import ConfigurationError
from .core.lake import is_remote
from .core.registration import BadFiles, SchemaDrift
from .core.sources import DEFAULT_PATTERN, NewFileOrder, TableNameFrom
from .partitions import SourcePartitions
from .pipeline import EAGER, automation_condition, build_ducklake_pipeline
from .resources import PostgresCatalogConfig, S3Resource
from .translator import AttributesTranslator

Status = Literal["running", "stopped"]
AddressingStyle = Literal["auto", "virtual", "path"]

_ENV_TEMPLATE = re.compile(
    r"""^\s*\{\{\s*(?:env\.(?P<attribute>\w+)|env\(\s*(?P<quote>['"])(?P<call>\w+)(?P=quote)\s*\))\s*\}\}\s*$"""
)
_DURATION = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_S3_SCHEMES = ("s3://", "s3a://", "s3n://")

# Dagster's generated schema lets every field hold a template string, so a YAML key of the wrong kind would
# only be reported as "matches none of the choices". The extra schema below names the key and the value.


def _plain(description: str) -> dg.Resolver:
    return dg.Resolver.default(description=description)


def _count(description: str, minimum: int) -> dg.Resolver:
    """A whole number of at least ``minimum`` (pair it with ``Field(ge=minimum)``)."""
    return dg.Resolver.default(
        description=description, json_schema_extra={"if": {"type": "number"}, "then": {"minimum": minimum}}
    )


def _choice(choices: Any, description: str) -> dg.Resolver:
    """One of the values of the ``Literal`` type ``choices`` (or a template that renders to one)."""
    allowed = get_args(choices)

    def resolve(context: dg.ResolutionContext, value: Any) -> Any:
        value = context.resolve_value(value)
        if value not in allowed:
            raise ConfigurationError(f"must be one of {', '.join(map(repr, allowed))}; got {value!r}")
        return value

    return dg.Resolver(
        resolve,
        model_field_type=choices,
        description=description,
        json_schema_extra={"if": {"type": "string", "not": {"pattern": r"\{\{"}}, "then": {"enum": list(allowed)}},
    )


def _nested(
    attributes: type[dg.Resolvable], description: str, *, default: Any = None, resolve: Any = None
) -> dg.Resolver:
    """An object of ``attributes`` keys; ``default`` is what the schema shows when the key is left out."""
    schema = attributes.model().model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        return [inline(item) for item in node] if isinstance(node, list) else node

    extra = {"if": {"type": "object"}, "then": inline(schema), **({"default": default} if default is not None else {})}
    if resolve is None:
        return dg.Resolver.default(description=description, json_schema_extra=extra)
    return dg.Resolver(
        resolve, model_field_type=str | attributes.model(), description=description, json_schema_extra=extra
    )


def _duration(description: str, default: str | None = None) -> dg.Resolver:
    """A number of hours or a duration such as ``36h``, ``7d`` or ``1d12h``; null for none."""

    def resolve(context: dg.ResolutionContext, value: Any) -> timedelta | None:
        value = context.resolve_value(value)
        if value is None:
            return None
        duration = timedelta()
        if isinstance(value, int | float) and not isinstance(value, bool):
            duration = timedelta(hours=value)
        elif isinstance(value, str) and _DURATION.match(value):
            parts = _DURATION_PART.findall(value)
            duration = sum((timedelta(**{_UNITS[unit]: float(number)}) for number, unit in parts), duration)
        if duration <= timedelta(0):
            raise ConfigurationError(
                f"must be a positive number of hours or a duration like '36h', '7d', '1d12h'; got {value!r}"
            )
        return duration

    extra = {"default": default} if default is not None else None
    return dg.Resolver(resolve, model_field_type=float | str | None, description=description, json_schema_extra=extra)


def _is_schedule(value: Any, *, eager_allowed: bool) -> bool:
    """Whether ``value`` is a cron string (or, when allowed, ``"eager"``) as the pipeline accepts it."""
    if not isinstance(value, str) or (value == EAGER and not eager_allowed):
        return False
    try:
        automation_condition(value, "schedule")
    except ConfigurationError:
        return False
    return True


def _schedule(description: str, *, eager_allowed: bool) -> dg.Resolver:
    expected = "'eager', a cron string such as '0 2 * * *'" if eager_allowed else "a cron string such as '0 3 * * *'"

    def resolve(context: dg.ResolutionContext, value: Any) -> str | None:
        value = context.resolve_value(value)
        if value is not None and not _is_schedule(value, eager_allowed=eager_allowed):
            raise ConfigurationError(f"must be {expected}, or null; got {value!r}")
        return value

    return dg.Resolver(resolve, model_field_type=str | None, description=description)


def _secret(description: str) -> dg.Resolver:
    """``{{ env.NAME }}`` becomes ``dg.EnvVar("NAME")``: read when a run starts, shown by name in the UI."""

    def resolve(context: dg.ResolutionContext, value: Any) -> dg.EnvVar | str | None:
        if isinstance(value, str) and (match := _ENV_TEMPLATE.match(value)):
            return dg.EnvVar(match.group("attribute") or match.group("call"))
        return context.resolve_value(value)

    return dg.Resolver(resolve, model_field_type=str | None, description=description, inject_before_resolve=False)


class SensorAttributes(dg.Model, dg.Resolvable):
    """The sensor ``<name>_new_files`` that starts a catalog snapshot when files appear in the source."""

    order: Annotated[
        NewFileOrder,
        _choice(
            NewFileOrder,
            "How new files are found: 'modified' (any naming; the source is listed on each tick) or 'key' "
            "(new files always sort after old ones; on S3 the listing starts after the last file seen).",
        ),
    ] = "modified"
    interval_seconds: Annotated[int, _count("Seconds between two looks at the source.", 1)] = Field(default=30, ge=1)
    default_status: Annotated[
        Status, _choice(Status, "Whether the sensor runs from the first start: 'running' or 'stopped'.")
    ] = "running"


PartitionKind = Literal["dynamic", "daily", "static"]


class PartitionAttributes(dg.Model, dg.Resolvable):
    """Register the source one partition (one folder) per run; see ``SourcePartitions``."""

    folder: Annotated[
        str,
        _plain("Where a partition's files live below the source, with {partition_key}, e.g. 'day={partition_key}'."),
    ] = "{partition_key}"
    kind: Annotated[
        PartitionKind,
        _choice(
            PartitionKind,
            "'dynamic' (the sensor adds a key per new folder), 'daily' (keys YYYY-MM-DD from start_date to today) or "
            "'static' (the keys listed).",
        ),
    ] = "dynamic"
    start_date: Annotated[str | None, _plain("With kind: daily, the first day, e.g. '2026-01-01'.")] = None
    keys: Annotated[list[str] | None, _plain("With kind: static, the partition keys.")] = None

    def partitions(self) -> SourcePartitions:
        if self.kind == "daily":
            if not self.start_date:
                raise ConfigurationError("source.partitions.kind: daily needs source.partitions.start_date")
            definition: dg.PartitionsDefinition | None = dg.DailyPartitionsDefinition(
                start_date=self.start_date, end_offset=1
            )
        elif self.kind == "static":
            if not self.keys:
                raise ConfigurationError("source.partitions.kind: static needs source.partitions.keys")
            definition = dg.StaticPartitionsDefinition(self.keys)
        else:
            definition = None
        return SourcePartitions(folder=self.folder, definition=definition)


class SourceAttributes(dg.Model, dg.Resolvable):
    """Where the Parquet files come from and how they become tables."""

    uri: Annotated[str, _plain("A folder, an s3://bucket/prefix or a manifest .csv with a full_path column.")]
    pattern: Annotated[str, _plain("Glob of the files to register below a folder or prefix.")] = DEFAULT_PATTERN
    table_name_from: Annotated[
        TableNameFrom,
        _choice(
            TableNameFrom,
            "What names a file's table: 'file_name' (up to its first dot), 'parent_folder', or 'regex' "
            "(the named group 'table' of table_name_regex).",
        ),
    ] = "file_name"
    table_name_regex: Annotated[
        str | None, _plain("With table_name_from: regex, a regex with a named group 'table', e.g. '(?P<table>[^/]+)/'.")
    ] = None
    target_schema: Annotated[str, _plain("DuckLake schema the tables go to.")] = Field(default="main", alias="schema")
    schema_drift: Annotated[
        SchemaDrift,
        _choice(
            SchemaDrift,
            "A file whose columns differ from its table: 'fail' (nothing is registered), "
            "'ignore_extra_columns' (extra columns are not read) or 'evolve' (the table gains the columns).",
        ),
    ] = "fail"
    bad_files: Annotated[
        BadFiles,
        _choice(
            BadFiles, "A file that is not readable Parquet: 'fail' (nothing is registered) or 'skip' (it is listed)."
        ),
    ] = "fail"
    sensor: Annotated[
        SensorAttributes, _nested(SensorAttributes, "The sensor that watches the source for new files.", default={})
    ] = Field(default_factory=SensorAttributes)
    partitions: Annotated[
        PartitionAttributes | None,
        _nested(PartitionAttributes, "Register one folder per run (scale-out over runs); leave out for none."),
    ] = None


def _resolve_source(context: dg.ResolutionContext, value: Any) -> SourceAttributes:
    if isinstance(value, str):
        return SourceAttributes(uri=value)
    return SourceAttributes.resolve_from_model(context, value)


class BackupAttributes(dg.Model, dg.Resolvable):
    """Static backups of the catalog: the asset ``<name>/static_backup`` and its checks."""

    uri: Annotated[str, _plain("Folder or s3://bucket/prefix/ that holds the backups.")]
    mode: Annotated[
        BackupMode,
        _choice(
            BackupMode,
            "'full': the catalog and a copy of every data file it references (survives losing the catalog and "
            "the data); 'metadata': the catalog only (for data buckets you replicate yourself).",
        ),
    ] = "full"
    keep: Annotated[int | None, _count("Keep the newest N backups; null keeps all unless keep_within is set.", 1)] = (
        Field(default=30, ge=1)
    )
    keep_within: Annotated[
        timedelta | None,
        _duration("Also keep every backup younger than this: hours (48) or a duration ('36h', '7d', '1d12h')."),
    ] = None
    automation: Annotated[
        str | None,
        _schedule(
            "When a backup follows a new snapshot: 'eager' (after every snapshot), a cron string "
            "(at most once per tick, when there is a new snapshot) or null (only when asked).",
            eager_allowed=True,
        ),
    ] = EAGER
    cron: Annotated[
        str | None, _schedule("A schedule that makes a backup at these times, e.g. '0 1 * * *'.", eager_allowed=False)
    ] = None
    max_snapshot_lag: Annotated[
        int, _count("Check backup_is_fresh: how many snapshots the newest backup may be behind.", 0)
    ] = Field(default=0, ge=0)
    max_age: Annotated[
        timedelta | None,
        _duration("Check backup_is_fresh: how long a snapshot may wait for its backup (hours or a duration)."),
    ] = None


class PublishAttributes(dg.Model, dg.Resolvable):
    """The frozen (read-only) lake: the asset ``<name>/frozen_lake`` and its checks."""

    uri: Annotated[str, _plain("Where the frozen lake's .ducklake file is published: a local path or s3:// URI.")]
    self_contained: Annotated[
        bool,
        _plain(
            "Copy every data file next to the frozen lake (incrementally), so it is complete wherever it is "
            "published; needed when the lake's files are local and the frozen lake is on S3 or served over HTTP."
        ),
    ] = False
    keep_revisions: Annotated[int, _count("Published revisions kept for readers still using them.", 1)] = Field(
        default=5, ge=1
    )
    automation: Annotated[
        str | None,
        _schedule(
            "When a publication follows its upstream (the backup, else the snapshot): 'eager', a cron string "
            "such as '0 2 * * *' (publish nightly) or null (only when asked).",
            eager_allowed=True,
        ),
    ] = EAGER


class CheckAttributes(dg.Model, dg.Resolvable):
    """How the asset checks act."""

    blocking: Annotated[
        bool, _plain("Whether a failing check of the backup or frozen lake stops the assets downstream of it.")
    ] = False


class ScheduleAttributes(dg.Model, dg.Resolvable):
    """What runs without anyone clicking, apart from the new-file sensor."""

    maintenance_cron: Annotated[
        str | None,
        _schedule(
            "Adds the maintenance assets and a schedule at this cron, e.g. '0 3 * * 0'; null: no maintenance.",
            eager_allowed=False,
        ),
    ] = None
    expire_snapshots_older_than: Annotated[
        timedelta | None,
        _duration(
            "Maintenance expires snapshots older than this (hours or a duration); null: never. "
            "Snapshots a retained backup or published revision needs are kept.",
            default="7d",
        ),
    ] = timedelta(days=7)
    default_status: Annotated[
        Status, _choice(Status, "Whether the schedules run from the first start: 'running' or 'stopped'.")
    ] = "running"
    automation_sensor_status: Annotated[
        Status,
        _choice(
            Status, "Whether the sensor <name>_automation (backup and publish automation) runs from the first start."
        ),
    ] = "running"


class S3Attributes(dg.Model, dg.Resolvable):
    """S3 or an S3-compatible store (MinIO, R2, moto); the field names of ``S3Resource``."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    endpoint_url: Annotated[str | None, _plain("Endpoint of an S3-compatible store; null for AWS.")] = None
    region_name: Annotated[str | None, _plain("Region, e.g. us-east-1.")] = None
    aws_access_key_id: Annotated[
        dg.EnvVar | str | None, _secret("Access key id, e.g. '{{ env.AWS_ACCESS_KEY_ID }}'.")
    ] = None
    aws_secret_access_key: Annotated[
        dg.EnvVar | str | None,
        _secret("Secret key. Write '{{ env.NAME }}': it is read when a run starts and the UI shows NAME only."),
    ] = None
    aws_session_token: Annotated[dg.EnvVar | str | None, _secret("Session token of temporary credentials.")] = None
    use_ssl: Annotated[bool | None, _plain("Use TLS; null follows endpoint_url's scheme.")] = None
    addressing_style: Annotated[
        AddressingStyle,
        _choice(AddressingStyle, "'path' for most S3-compatible stores, 'virtual' or 'auto' for AWS."),
    ] = "auto"

    def resource(self) -> S3Resource:
        return S3Resource(**self.model_dump())


class TableAttributes(dg.Model, dg.Resolvable):
    """Attributes of table assets; every key is optional and left-out keys keep the default."""

    model_config = ConfigDict(extra="forbid")

    key: Annotated[str | None, _plain("The asset key as 'a/b/c' (default '<name>/<table>').")] = None
    key_prefix: Annotated[str | None, _plain("Prefix put before the key, as 'a/b'.")] = None
    group_name: Annotated[str | None, _plain("Asset group (default: the pipeline's name).")] = None
    description: Annotated[str | None, _plain("Description shown in the UI.")] = None
    owners: Annotated[list[str] | None, _plain("Owners: e-mail addresses or 'team:name'.")] = None
    tags: Annotated[dict[str, str] | None, _plain("Tags, merged with the default ones.")] = None
    automation: Annotated[
        str | None,
        _schedule("'eager' or a cron string: when the table registers its new files by itself.", eager_allowed=True),
    ] = None
    freshness_fail_window: Annotated[
        timedelta | None, _duration("Freshness policy: fail when not materialized for this long (hours or '26h').")
    ] = None

    def attributes(self) -> dict[str, object]:
        """The ``dg.AssetSpec`` attributes these keys set."""
        attributes: dict[str, object] = {
            name: value
            for name, value in {
                "key": self.key,
                "key_prefix": self.key_prefix.split("/") if self.key_prefix else None,
                "group_name": self.group_name,
                "description": self.description,
                "owners": self.owners,
                "tags": self.tags,
            }.items()
            if value is not None
        }
        if self.automation is not None:
            attributes["automation_condition"] = automation_condition(self.automation, "translation.automation")
        if self.freshness_fail_window is not None:
            attributes["freshness_policy"] = dg.FreshnessPolicy.time_window(fail_window=self.freshness_fail_window)
        return attributes


class TranslationAttributes(TableAttributes):
    """How tables become assets: attributes for every table, and ``tables:`` per table name on top."""

    tables: Annotated[
        dict[str, TableAttributes] | None,
        _plain("Attributes per table, keyed by table name (or schema.table), applied after the shared ones."),
    ] = None

    def translator(self) -> AttributesTranslator:
        every = self.attributes()
        return AttributesTranslator(every, {name: table.attributes() for name, table in (self.tables or {}).items()})


class DuckLakePipelineScaffolder(dg.Scaffolder):
    """``dg scaffold defs ducklake_assets.DuckLakePipelineComponent <folder>``: a pipeline named after the
    folder, on local folders below the project root, that ``dg check defs`` accepts as it is."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        name = re.sub(r"\W", "_", request.target_path.name)
        dg.scaffold_component(
            request,
            {
                "name": name,
                "source": f"data/{name}",
                "catalog": f"lake/{name}.ducklake",
                "data_path": f"lake/{name}_files",
                "backup": {"uri": f"backups/{name}"},
                "publish": {"uri": f"public/{name}.ducklake"},
            },
        )


@dg.scaffold_with(DuckLakePipelineScaffolder)
class DuckLakePipelineComponent(dg.Component, dg.Model, dg.Resolvable):
    """A DuckLake fed by Parquet files: register new files, back up the catalog, publish a frozen lake.

    The YAML attributes mirror ``build_ducklake_pipeline``; the README's section "The YAML component"
    describes every key.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: Annotated[str, _plain("Prefixes every asset key and names the resources <name>_ducklake and <name>_s3.")]
    source: Annotated[
        SourceAttributes,
        _nested(
            SourceAttributes,
            "A folder, s3:// prefix or manifest .csv; or an object with uri and how files become tables.",
            resolve=_resolve_source,
        ),
    ]
    catalog: Annotated[
        str, _plain("DuckLake catalog: a DuckDB file ('lake/space.ducklake'), 'sqlite:<path>' or 'postgres:<dsn>'.")
    ]
    catalog_password: Annotated[
        dg.EnvVar | str | None,
        _secret("Password of a postgres: catalog. Write '{{ env.NAME }}': it is read when a run starts."),
    ] = None
    data_path: Annotated[str, _plain("Where the lake's data files live: a folder or s3://bucket/prefix/.")]
    attach_options: Annotated[
        dict[str, str | int | float | bool] | None,
        _plain("Extra DuckLake ATTACH options, e.g. {DATA_INLINING_ROW_LIMIT: 0}."),
    ] = None
    backup: Annotated[BackupAttributes | None, _nested(BackupAttributes, "Static backups; leave out for none.")] = None
    publish: Annotated[
        PublishAttributes | None, _nested(PublishAttributes, "Frozen lake publication; leave out for none.")
    ] = None
    checks: Annotated[CheckAttributes, _nested(CheckAttributes, "How the asset checks act.", default={})] = Field(
        default_factory=CheckAttributes
    )
    schedules: Annotated[
        ScheduleAttributes,
        _nested(ScheduleAttributes, "Maintenance and the first-start state of schedules and automation.", default={}),
    ] = Field(default_factory=ScheduleAttributes)
    s3: Annotated[S3Attributes | None, _nested(S3Attributes, "S3 settings; needed when any location is s3://.")] = None
    tables: Annotated[
        list[str] | None,
        _plain("The tables to show as assets; default: found when definitions load (source listing and catalog)."),
    ] = None
    translation: Annotated[
        TranslationAttributes | None,
        _nested(TranslationAttributes, "Keys, groups, owners, tags, automation and freshness of the table assets."),
    ] = None
    source_deps: Annotated[
        list[str] | None,
        _plain("Assets ('a/b') that write the source files: tables register after each of their materializations."),
    ] = None
    lake_writers: Annotated[
        list[str] | None,
        _plain("Your own assets ('a/b') that write the lake: backups and publication run after them too."),
    ] = None

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        root = Path(context.project_root)
        source, backup, publish, schedules = self.source, self.backup, self.publish, self.schedules
        locations = {
            "source": source.uri,
            "data_path": self.data_path,
            "backup.uri": backup.uri if backup else "",
            "publish.uri": publish.uri if publish else "",
        }
        on_s3 = [key for key, location in locations.items() if location.lower().startswith(_S3_SCHEMES)]
        if on_s3 and self.s3 is None:
            raise ConfigurationError(
                f"{', '.join(on_s3)} {'is' if len(on_s3) == 1 else 'are'} on S3: add an s3: block to the attributes "
                "(s3: {} uses boto3's default credentials)"
            )
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
            sensor_default_status=_sensor_status(source.sensor.default_status),
            attach_options=self.attach_options,
            backup_automation=backup.automation if backup else None,
            publish_automation=publish.automation if publish else None,
            automation_default_status=_sensor_status(schedules.automation_sensor_status),
            backup_cron=backup.cron if backup else None,
            backup_mode=backup.mode if backup else "full",
            keep_backups=backup.keep if backup else None,
            keep_backups_within=backup.keep_within if backup else None,
            backup_max_snapshot_lag=backup.max_snapshot_lag if backup else 0,
            backup_max_age=backup.max_age if backup else None,
            blocking_checks=self.checks.blocking,
            keep_revisions=publish.keep_revisions if publish else 5,
            self_contained=publish.self_contained if publish else False,
            maintenance_cron=schedules.maintenance_cron,
            expire_snapshots_older_than=schedules.expire_snapshots_older_than,
            schedule_default_status=(
                dg.DefaultScheduleStatus.RUNNING
                if schedules.default_status == "running"
                else dg.DefaultScheduleStatus.STOPPED
            ),
            tables=self.tables,
            translator=self.translation.translator() if self.translation else None,
            source_deps=self.source_deps or (),
            lake_writers=self.lake_writers or (),
            partitions=source.partitions.partitions() if source.partitions else None,
        )

    def _catalog(self, root: Path) -> str | PostgresCatalogConfig:
        """The catalog string with relative file paths taken from ``root``; a PostgreSQL catalog with
        ``catalog_password`` becomes a config, so an ``EnvVar`` password stays unresolved until a run."""
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


def _sensor_status(value: Status) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if value == "running" else dg.DefaultSensorStatus.STOPPED


def _from_root(path: str, root: Path) -> str:
    """A relative local path taken from the project root; anything else unchanged."""
    if is_remote(path):
        return path
    local = Path(path).expanduser()
    return str(local if local.is_absolute() else root / local)
