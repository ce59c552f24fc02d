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

Its nested keys are the option objects of :func:`~ducklake_assets.pipeline.build_ducklake_pipeline`
(:mod:`ducklake_assets.options`), so a setting has the same name, default and check in YAML and Python.
Values are checked while the YAML is resolved, so ``dg check defs`` reports a wrong value or an unknown
key with the file, the line and the key. Relative local paths are taken from the project root.
"""

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
from pydantic import ConfigDict, Field

from .core.catalog import DuckDBCatalog, PostgresCatalog, SQLiteCatalog, parse_catalog
from .core.errors import ConfigurationError
from .core.locations import is_remote
from .options import (
    BackupOptions,
    CheckOptions,
    PublishOptions,
    ScheduleOptions,
    SourceOptions,
    automation_condition,
    choice,
    duration,
    nested,
    plain,
    schedule,
)
from .pipeline import build_ducklake_pipeline, require_s3
from .resources import PostgresCatalogConfig, S3Resource
from .translator import AttributesTranslator, SpecAttributes

AddressingStyle = Literal["auto", "virtual", "path"]

_ENV_TEMPLATE = re.compile(
    r"""^\s*\{\{\s*(?:env\.(?P<attribute>\w+)|env\(\s*(?P<quote>['"])(?P<call>\w+)(?P=quote)\s*\))\s*\}\}\s*$"""
)


def _secret(description: str) -> dg.Resolver:
    """``{{ env.NAME }}`` becomes ``dg.EnvVar("NAME")``: read when a run starts, shown by name in the UI."""

    def resolve(context: dg.ResolutionContext, value: Any) -> dg.EnvVar | str | None:
        if isinstance(value, str) and (match := _ENV_TEMPLATE.match(value)):
            return dg.EnvVar(match.group("attribute") or match.group("call"))
        return context.resolve_value(value)

    return dg.Resolver(resolve, model_field_type=str | None, description=description, inject_before_resolve=False)


def _resolve_source(context: dg.ResolutionContext, value: Any) -> SourceOptions:
    if isinstance(value, str):
        return SourceOptions(uri=value)
    return SourceOptions.resolve_from_model(context, value)


class S3Attributes(dg.Model, dg.Resolvable):
    """S3 or an S3-compatible store (MinIO, R2, moto); the field names of ``S3Resource``."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    endpoint_url: Annotated[str | None, plain("Endpoint of an S3-compatible store; null for AWS.")] = None
    region_name: Annotated[str | None, plain("Region, e.g. us-east-1.")] = None
    aws_access_key_id: Annotated[
        dg.EnvVar | str | None, _secret("Access key id, e.g. '{{ env.AWS_ACCESS_KEY_ID }}'.")
    ] = None
    aws_secret_access_key: Annotated[
        dg.EnvVar | str | None,
        _secret("Secret key. Write '{{ env.NAME }}': it is read when a run starts and the UI shows NAME only."),
    ] = None
    aws_session_token: Annotated[dg.EnvVar | str | None, _secret("Session token of temporary credentials.")] = None
    use_ssl: Annotated[bool | None, plain("Use TLS; null follows endpoint_url's scheme.")] = None
    addressing_style: Annotated[
        AddressingStyle,
        choice(AddressingStyle, "'path' for most S3-compatible stores, 'virtual' or 'auto' for AWS."),
    ] = "auto"

    def resource(self) -> S3Resource:
        return S3Resource(**self.model_dump())


class TableAttributes(dg.Model, dg.Resolvable):
    """Attributes of table assets; every key is optional and left-out keys keep the default."""

    model_config = ConfigDict(extra="forbid")

    key: Annotated[str | None, plain("The asset key as 'a/b/c' (default '<name>/<table>').")] = None
    key_prefix: Annotated[str | None, plain("Prefix put before the key, as 'a/b'.")] = None
    group_name: Annotated[str | None, plain("Asset group (default: the pipeline's name).")] = None
    description: Annotated[str | None, plain("Description shown in the UI.")] = None
    owners: Annotated[list[str] | None, plain("Owners: e-mail addresses or 'team:name'.")] = None
    tags: Annotated[dict[str, str] | None, plain("Tags, merged with the default ones.")] = None
    automation: Annotated[
        str | None,
        schedule("'eager' or a cron string: when the table registers its new files by itself.", eager_allowed=True),
    ] = None
    freshness_fail_window: Annotated[
        timedelta | None, duration("Freshness policy: fail when not materialized for this long (hours or '26h').")
    ] = None

    def attributes(self) -> SpecAttributes:
        """The ``dg.AssetSpec`` attributes these keys set."""
        attributes = SpecAttributes()
        if self.key is not None:
            attributes["key"] = self.key
        if self.key_prefix:
            attributes["key_prefix"] = self.key_prefix.split("/")
        if self.group_name is not None:
            attributes["group_name"] = self.group_name
        if self.description is not None:
            attributes["description"] = self.description
        if self.owners is not None:
            attributes["owners"] = self.owners
        if self.tags is not None:
            attributes["tags"] = self.tags
        if self.automation is not None:
            attributes["automation_condition"] = automation_condition(self.automation, "translation.automation")
        if self.freshness_fail_window is not None:
            attributes["freshness_policy"] = dg.FreshnessPolicy.time_window(fail_window=self.freshness_fail_window)
        return attributes


class TranslationAttributes(TableAttributes):
    """How tables become assets: attributes for every table, and ``tables:`` per table name on top."""

    tables: Annotated[
        dict[str, TableAttributes] | None,
        plain("Attributes per table, keyed by table name (or schema.table), applied after the shared ones."),
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

    The YAML attributes are the option objects of ``build_ducklake_pipeline`` (``source:`` is a
    ``SourceOptions``, ``backup:`` a ``BackupOptions``, ...); ``docs/reference/settings.md`` lists every key
    and ``docs/how-to/yaml-component.md`` shows them at work.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: Annotated[str, plain("Prefixes every asset key and names the resources <name>_ducklake and <name>_s3.")]
    source: Annotated[
        SourceOptions,
        nested(
            SourceOptions,
            "A folder, s3:// prefix or manifest .csv; or an object with uri and how files become tables.",
            resolve=_resolve_source,
        ),
    ]
    catalog: Annotated[
        str, plain("DuckLake catalog: a DuckDB file ('lake/space.ducklake'), 'sqlite:<path>' or 'postgres:<dsn>'.")
    ]
    catalog_password: Annotated[
        dg.EnvVar | str | None,
        _secret("Password of a postgres: catalog. Write '{{ env.NAME }}': it is read when a run starts."),
    ] = None
    data_path: Annotated[str, plain("Where the lake's data files live: a folder or s3://bucket/prefix/.")]
    attach_options: Annotated[
        dict[str, str | int | float | bool] | None,
        plain("Extra DuckLake ATTACH options, e.g. {DATA_INLINING_ROW_LIMIT: 0}."),
    ] = None
    backup: Annotated[BackupOptions | None, nested(BackupOptions, "Static backups; leave out for none.")] = None
    publish: Annotated[
        PublishOptions | None, nested(PublishOptions, "Frozen lake publication; leave out for none.")
    ] = None
    checks: Annotated[CheckOptions, nested(CheckOptions, "How the asset checks act.", default={})] = Field(
        default_factory=CheckOptions
    )
    schedules: Annotated[
        ScheduleOptions,
        nested(ScheduleOptions, "Maintenance and the first-start state of schedules and automation.", default={}),
    ] = Field(default_factory=ScheduleOptions)
    s3: Annotated[S3Attributes | None, nested(S3Attributes, "S3 settings; needed when any location is s3://.")] = None
    tables: Annotated[
        list[str] | None,
        plain("The tables to show as assets; default: found when definitions load (source listing and catalog)."),
    ] = None
    translation: Annotated[
        TranslationAttributes | None,
        nested(TranslationAttributes, "Keys, groups, owners, tags, automation and freshness of the table assets."),
    ] = None
    source_deps: Annotated[
        list[str] | None,
        plain("Assets ('a/b') that write the source files: tables register after each of their materializations."),
    ] = None
    lake_writers: Annotated[
        list[str] | None,
        plain("Your own assets ('a/b') that write the lake: backups and publication run after them too."),
    ] = None

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        root = Path(context.project_root)
        backup, publish = self.backup, self.publish
        locations: dict[str, str | None] = {"source": self.source.uri, "data_path": self.data_path}
        locations |= {"backup.uri": backup.uri if backup else None, "publish.uri": publish.uri if publish else None}
        require_s3(locations, self.s3 is not None, "add an s3: block to the attributes (s3: {} uses boto3's defaults)")
        return build_ducklake_pipeline(
            name=self.name,
            source=_uri_from_root(self.source, root),
            catalog=self._catalog(root),
            data_path=_from_root(self.data_path, root),
            backup=_uri_from_root(backup, root),
            publish=_uri_from_root(publish, root),
            s3=self.s3.resource() if self.s3 else None,
            checks=self.checks,
            schedules=self.schedules,
            attach_options=self.attach_options,
            tables=self.tables,
            translator=self.translation.translator() if self.translation else None,
            source_deps=self.source_deps or (),
            lake_writers=self.lake_writers or (),
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


def _uri_from_root(options: Any, root: Path) -> Any:
    """``options`` with its ``uri`` taken from the project root (see :func:`_from_root`)."""
    return None if options is None else options.model_copy(update={"uri": _from_root(options.uri, root)})


def _from_root(path: str, root: Path) -> str:
    """A relative local path taken from the project root; anything else unchanged."""
    if is_remote(path):
        return path
    local = Path(path).expanduser()
    return str(local if local.is_absolute() else root / local)
