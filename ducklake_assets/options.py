"""The pipeline's settings, one validated model per stage, shared by Python and YAML.

:func:`~ducklake_assets.pipeline.build_ducklake_pipeline` takes these objects, and the YAML component's
keys ``source:``, ``backup:``, ``publish:``, ``checks:`` and ``schedules:`` are the same models, so every
setting has one name, one default and one description, wherever it is written:

.. code-block:: python

    from datetime import timedelta

    from ducklake_assets import BackupOptions, PublishOptions, SourceOptions, build_ducklake_pipeline

    defs = build_ducklake_pipeline(
        name="space",
        source=SourceOptions(uri="data/space", schema_drift="evolve"),
        catalog="lake/space.ducklake",
        data_path="lake/data",
        backup=BackupOptions(uri="backups", keep=14, keep_within=timedelta(days=2)),
        publish=PublishOptions(uri="public/space.ducklake", automation="0 2 * * *"),
    )

A setting given a wrong value fails when the object is made (in YAML: when ``dg check defs`` resolves
the file), naming the setting and what it accepts.
"""

import re
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal, get_args

import dagster as dg
from pydantic import ConfigDict, Field, ValidationError, field_validator

from .core.backup import BackupMode
from .core.errors import ConfigurationError
from .core.publish import KEEP_REVISIONS
from .core.registration import BadFiles, SchemaDrift
from .core.sources import DEFAULT_PATTERN, NewFileOrder, TableNameFrom
from .partitions import SourcePartitions

Status = Literal["running", "stopped"]
"""Whether a sensor or schedule runs from the first start of Dagster."""

EAGER = "eager"
KEEP_BACKUPS = 30
"""Backups kept by default."""

_DURATION = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_CRON = re.compile(r"^\s*([0-9A-Za-z*/,\-?LW#]+\s+){4}[0-9A-Za-z*/,\-?LW#]+\s*$")


def automation_condition(setting: str | None, setting_name: str) -> dg.AutomationCondition | None:
    """``"eager"``: after every upstream materialization; a cron string: at each tick of it, when upstream
    changed since the asset last ran; ``None``: only when someone (or a schedule) asks."""
    if setting is None:
        return None
    if setting == EAGER:
        # A table asset with no files yet stays missing; it must not hold the backup or publication back.
        return dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())
    if not isinstance(setting, str) or not _CRON.match(setting):
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


def parse_duration(value: Any) -> timedelta | None:
    """A ``timedelta``, a number of hours or a duration such as ``36h``, ``7d`` or ``1d12h``; ``None``."""
    if value is None:
        return None
    duration = timedelta()
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        duration = timedelta(hours=value)
    elif isinstance(value, str) and _DURATION.match(value):
        parts = _DURATION_PART.findall(value)
        duration = sum((timedelta(**{_UNITS[unit]: float(number)}) for number, unit in parts), duration)
    if duration <= timedelta(0):
        raise ConfigurationError(
            f"must be a positive number of hours or a duration like '36h', '7d', '1d12h'; got {value!r}"
        )
    return duration


def check_schedule(value: Any, *, eager_allowed: bool) -> str | None:
    """``value`` when it is a cron string (or, when allowed, ``"eager"``) or ``None``; else an error."""
    if value is None:
        return None
    valid = isinstance(value, str) and (value != EAGER or eager_allowed)
    if valid:
        try:
            automation_condition(value, "schedule")
        except ConfigurationError:
            valid = False
    if not valid:
        expected = (
            "'eager', a cron string such as '0 2 * * *'" if eager_allowed else "a cron string such as '0 3 * * *'"
        )
        raise ConfigurationError(f"must be {expected}, or null; got {value!r}")
    return value


def _setting(model: str, field: str, check: Any, value: Any) -> Any:
    """``check(value)``, with an error that names the setting (``BackupOptions.keep_within``)."""
    try:
        return check(value)
    except ConfigurationError as error:
        raise ConfigurationError(f"{model}.{field} {error}") from None


# Resolvers: how each YAML key is read. Dagster's generated schema lets every field hold a template
# string, so a key of the wrong kind would only be reported as "matches none of the choices"; the extra
# schema below names the key and the value.


def plain(description: str) -> dg.Resolver:
    return dg.Resolver.default(description=description)


def count(description: str, minimum: int) -> dg.Resolver:
    """A whole number of at least ``minimum`` (pair it with ``Field(ge=minimum)``)."""
    return dg.Resolver.default(
        description=description, json_schema_extra={"if": {"type": "number"}, "then": {"minimum": minimum}}
    )


def choice(choices: Any, description: str) -> dg.Resolver:
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


def nested(
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


def duration(description: str, default: str | None = None) -> dg.Resolver:
    """A number of hours or a duration such as ``36h``, ``7d`` or ``1d12h``; null for none."""

    def resolve(context: dg.ResolutionContext, value: Any) -> timedelta | None:
        return parse_duration(context.resolve_value(value))

    extra = {"default": default} if default is not None else None
    return dg.Resolver(resolve, model_field_type=float | str | None, description=description, json_schema_extra=extra)


def schedule(description: str, *, eager_allowed: bool) -> dg.Resolver:
    def resolve(context: dg.ResolutionContext, value: Any) -> str | None:
        return check_schedule(context.resolve_value(value), eager_allowed=eager_allowed)

    return dg.Resolver(resolve, model_field_type=str | None, description=description)


class _Options(dg.Model, dg.Resolvable):
    """Options are values: unknown keywords are refused, and a made object does not change."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, arbitrary_types_allowed=True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            name = type(self).__name__
            problems = "; ".join(
                f"{name} has no setting {'.'.join(map(str, problem['loc']))!r}"
                if problem["type"] == "extra_forbidden"
                else f"{name}.{'.'.join(map(str, problem['loc']))}: {problem['msg']}, got {problem['input']!r}"
                for problem in error.errors()
            )
            raise ConfigurationError(problems) from None

    @field_validator("*", mode="before")
    @classmethod
    def _durations_and_schedules(cls, value: Any, info: Any) -> Any:
        field = info.field_name
        if field in cls._DURATIONS:
            return _setting(cls.__name__, field, parse_duration, value)
        if field in cls._SCHEDULES:
            eager = cls._SCHEDULES[field]
            return _setting(cls.__name__, field, lambda v: check_schedule(v, eager_allowed=eager), value)
        return value

    _DURATIONS: ClassVar[frozenset[str]] = frozenset()
    _SCHEDULES: ClassVar[dict[str, bool]] = {}  # field: whether "eager" is allowed


class SensorOptions(_Options):
    """The sensor ``<name>_new_files`` that starts a catalog snapshot when files appear in the source."""

    order: Annotated[
        NewFileOrder,
        choice(
            NewFileOrder,
            "How new files are found: 'modified' (any naming; the source is listed on each tick) or 'key' "
            "(new files always sort after old ones; on S3 the listing starts after the last file seen).",
        ),
    ] = "modified"
    interval_seconds: Annotated[int, count("Seconds between two looks at the source.", 1)] = Field(default=30, ge=1)
    default_status: Annotated[
        Status, choice(Status, "Whether the sensor runs from the first start: 'running' or 'stopped'.")
    ] = "running"


PartitionKind = Literal["dynamic", "daily", "static"]


class PartitionOptions(_Options):
    """YAML's ``source.partitions``: register the source one partition (one folder) per run.

    In Python, pass a :class:`~ducklake_assets.SourcePartitions` as ``SourceOptions(partitions=...)``."""

    folder: Annotated[
        str,
        plain("Where a partition's files live below the source, with {partition_key}, e.g. 'day={partition_key}'."),
    ] = "{partition_key}"
    kind: Annotated[
        PartitionKind,
        choice(
            PartitionKind,
            "'dynamic' (the sensor adds a key per new folder), 'daily' (keys YYYY-MM-DD from start_date to today) or "
            "'static' (the keys listed).",
        ),
    ] = "dynamic"
    start_date: Annotated[str | None, plain("With kind: daily, the first day, e.g. '2026-01-01'.")] = None
    keys: Annotated[list[str] | None, plain("With kind: static, the partition keys.")] = None

    def partitions(self) -> SourcePartitions:
        definition: dg.PartitionsDefinition | None = None
        if self.kind == "daily":
            if not self.start_date:
                raise ConfigurationError("source.partitions.kind: daily needs source.partitions.start_date")
            definition = dg.DailyPartitionsDefinition(start_date=self.start_date, end_offset=1)
        elif self.kind == "static":
            if not self.keys:
                raise ConfigurationError("source.partitions.kind: static needs source.partitions.keys")
            definition = dg.StaticPartitionsDefinition(self.keys)
        return SourcePartitions(folder=self.folder, definition=definition)


def _resolve_partitions(context: dg.ResolutionContext, value: Any) -> SourcePartitions | None:
    if value is None:
        return None
    return PartitionOptions.resolve_from_model(context, value).partitions()


class SourceOptions(_Options):
    """Where the Parquet files come from and how they become tables (YAML: ``source:``)."""

    uri: Annotated[str, plain("A folder, an s3://bucket/prefix or a manifest .csv with a full_path column.")]
    pattern: Annotated[str, plain("Glob of the files to register below a folder or prefix.")] = DEFAULT_PATTERN
    table_name_from: Annotated[
        TableNameFrom,
        choice(
            TableNameFrom,
            "What names a file's table: 'file_name' (up to its first dot), 'parent_folder', or 'regex' "
            "(the named group 'table' of table_name_regex).",
        ),
    ] = "file_name"
    table_name_regex: Annotated[
        str | None, plain("With table_name_from: regex, a regex with a named group 'table', e.g. '(?P<table>[^/]+)/'.")
    ] = None
    target_schema: Annotated[str, plain("DuckLake schema the tables go to.")] = Field(default="main", alias="schema")
    schema_drift: Annotated[
        SchemaDrift,
        choice(
            SchemaDrift,
            "A file whose columns differ from its table: 'fail' (nothing is registered), "
            "'ignore_extra_columns' (extra columns are not read) or 'evolve' (the table gains the columns).",
        ),
    ] = "fail"
    bad_files: Annotated[
        BadFiles,
        choice(
            BadFiles, "A file that is not readable Parquet: 'fail' (nothing is registered) or 'skip' (it is listed)."
        ),
    ] = "fail"
    sensor: Annotated[
        SensorOptions, nested(SensorOptions, "The sensor that watches the source for new files.", default={})
    ] = Field(default_factory=SensorOptions)
    partitions: Annotated[
        SourcePartitions | None,
        nested(
            PartitionOptions,
            "Register one folder per run (scale-out over runs); leave out for none.",
            resolve=_resolve_partitions,
        ),
    ] = None


class BackupOptions(_Options):
    """Static backups: the asset ``<name>/static_backup`` and its checks (YAML: ``backup:``)."""

    _DURATIONS: ClassVar[frozenset[str]] = frozenset({"keep_within", "max_age"})
    _SCHEDULES: ClassVar[dict[str, bool]] = {"automation": True, "cron": False}

    uri: Annotated[str, plain("Folder or s3://bucket/prefix/ that holds the backups.")]
    mode: Annotated[
        BackupMode,
        choice(
            BackupMode,
            "'full': the catalog and a copy of every data file it references (survives losing the catalog and "
            "the data); 'metadata': the catalog only (for data buckets you replicate yourself).",
        ),
    ] = "full"
    keep: Annotated[int | None, count("Keep the newest N backups; null keeps all unless keep_within is set.", 1)] = (
        Field(default=KEEP_BACKUPS, ge=1)
    )
    keep_within: Annotated[
        timedelta | None,
        duration("Also keep every backup younger than this: hours (48) or a duration ('36h', '7d', '1d12h')."),
    ] = None
    automation: Annotated[
        str | None,
        schedule(
            "When a backup follows a new snapshot: 'eager' (after every snapshot), a cron string "
            "(at most once per tick, when there is a new snapshot) or null (only when asked).",
            eager_allowed=True,
        ),
    ] = EAGER
    cron: Annotated[
        str | None, schedule("A schedule that makes a backup at these times, e.g. '0 1 * * *'.", eager_allowed=False)
    ] = None
    max_snapshot_lag: Annotated[
        int, count("Check backup_is_fresh: how many snapshots the newest backup may be behind.", 0)
    ] = Field(default=0, ge=0)
    max_age: Annotated[
        timedelta | None,
        duration("Check backup_is_fresh: how long a snapshot may wait for its backup (hours or a duration)."),
    ] = None


class PublishOptions(_Options):
    """The frozen (read-only) lake: the asset ``<name>/frozen_lake`` and its checks (YAML: ``publish:``)."""

    _SCHEDULES: ClassVar[dict[str, bool]] = {"automation": True}

    uri: Annotated[str, plain("Where the frozen lake's .ducklake file is published: a local path or s3:// URI.")]
    self_contained: Annotated[
        bool,
        plain(
            "Copy every data file next to the frozen lake (incrementally), so it is complete wherever it is "
            "published; needed when the lake's files are local and the frozen lake is on S3 or served over HTTP."
        ),
    ] = False
    keep_revisions: Annotated[int, count("Published revisions kept for readers still using them.", 1)] = Field(
        default=KEEP_REVISIONS, ge=1
    )
    automation: Annotated[
        str | None,
        schedule(
            "When a publication follows its upstream (the backup, else the snapshot): 'eager', a cron string "
            "such as '0 2 * * *' (publish nightly) or null (only when asked).",
            eager_allowed=True,
        ),
    ] = EAGER


class CheckOptions(_Options):
    """How the asset checks act (YAML: ``checks:``)."""

    blocking: Annotated[
        bool, plain("Whether a failing check of the backup or frozen lake stops the assets downstream of it.")
    ] = False


class ScheduleOptions(_Options):
    """What runs without anyone clicking, apart from the new-file sensor (YAML: ``schedules:``)."""

    _DURATIONS: ClassVar[frozenset[str]] = frozenset({"expire_snapshots_older_than"})
    _SCHEDULES: ClassVar[dict[str, bool]] = {"maintenance_cron": False}

    maintenance_cron: Annotated[
        str | None,
        schedule(
            "Adds the maintenance assets and a schedule at this cron, e.g. '0 3 * * 0'; null: no maintenance.",
            eager_allowed=False,
        ),
    ] = None
    expire_snapshots_older_than: Annotated[
        timedelta | None,
        duration(
            "Maintenance expires snapshots older than this (hours or a duration); null: never. "
            "Snapshots a retained backup or published revision needs are kept.",
            default="7d",
        ),
    ] = timedelta(days=7)
    default_status: Annotated[
        Status, choice(Status, "Whether the schedules run from the first start: 'running' or 'stopped'.")
    ] = "running"
    automation_sensor_status: Annotated[
        Status,
        choice(
            Status, "Whether the sensor <name>_automation (backup and publish automation) runs from the first start."
        ),
    ] = "running"


def sensor_status(value: Status) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if value == "running" else dg.DefaultSensorStatus.STOPPED


def schedule_status(value: Status) -> dg.DefaultScheduleStatus:
    return dg.DefaultScheduleStatus.RUNNING if value == "running" else dg.DefaultScheduleStatus.STOPPED
