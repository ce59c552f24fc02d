"""How each lake table becomes a Dagster asset: ``LakeTable`` (what is known about it) and the translator.

Subclass :class:`DuckLakeTranslator` to change keys, groups, owners, tags, descriptions, freshness or
automation per table, as ``DagsterSlingTranslator`` and ``DagsterDltTranslator`` do for streams and
resources. The YAML component's ``translation:`` key builds the same hook from attributes.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypedDict

import dagster as dg


@dataclass(frozen=True)
class LakeTable:
    """One table a pipeline registers source files into.

    ``pipeline`` is the pipeline's name, ``schema`` and ``name`` the DuckLake table, ``source`` where its
    files come from; ``deps`` and ``automation_condition`` are what the pipeline gives every table asset
    (the source assets it reads, eager automation when producers are named in ``source_deps``).
    """

    pipeline: str
    schema: str
    name: str
    source: str
    deps: tuple[dg.AssetKey, ...] = ()
    automation_condition: dg.AutomationCondition | None = field(default=None, compare=False)

    @property
    def display_name(self) -> str:
        """``name`` in schema ``main``, else ``schema.name``: how the table is written in SQL after ``USE``."""
        return self.name if self.schema == "main" else f"{self.schema}.{self.name}"


class DuckLakeTranslator:
    """Turns a :class:`LakeTable` into the ``dg.AssetSpec`` of its asset.

    The default key is ``[pipeline, table]`` (``[pipeline, schema, table]`` outside schema ``main``), the
    group the pipeline's name, kind ``ducklake``, and a freshness policy that fails when the table was
    not materialized for ``freshness_fail_window`` (``None``: no policy).

    .. code-block:: python

        import dagster as dg
        from ducklake_assets import DuckLakeTranslator, LakeTable

        class TeamTranslator(DuckLakeTranslator):
            def get_asset_spec(self, table: LakeTable) -> dg.AssetSpec:
                spec = super().get_asset_spec(table)
                return spec.replace_attributes(group_name="crew" if table.name == "astronauts" else "fleet")
    """

    def __init__(
        self,
        freshness_fail_window: timedelta | None = timedelta(hours=26),
        freshness_warn_window: timedelta | None = None,
    ) -> None:
        self.freshness_fail_window = freshness_fail_window
        self.freshness_warn_window = freshness_warn_window

    def get_asset_key(self, table: LakeTable) -> dg.AssetKey:
        """``[pipeline, table]``, or ``[pipeline, schema, table]`` outside schema ``main``."""
        parts = [table.pipeline] + ([table.schema] if table.schema != "main" else []) + [table.name]
        return dg.AssetKey(parts)

    def get_asset_spec(self, table: LakeTable) -> dg.AssetSpec:
        """The whole spec of the table's asset; override this to change anything about it."""
        freshness = (
            dg.FreshnessPolicy.time_window(
                fail_window=self.freshness_fail_window, warn_window=self.freshness_warn_window
            )
            if self.freshness_fail_window
            else None
        )
        return dg.AssetSpec(
            key=self.get_asset_key(table),
            deps=table.deps,
            group_name=table.pipeline,
            kinds={"ducklake"},
            description=(
                f"DuckLake table `{table.display_name}`: the Parquet files of {table.source} that name it, "
                "registered by reference. Read it with `SELECT * FROM "
                f"{table.display_name}` through the pipeline's DuckLakeResource or DuckLakeIOManager."
            ),
            metadata={
                "dagster/table_name": f"{table.schema}.{table.name}",
                "schema": table.schema,
                "ducklake_assets/source": table.source,
            },
            automation_condition=table.automation_condition,
            freshness_policy=freshness,
        )


class SpecAttributes(TypedDict, total=False):
    """``dg.AssetSpec`` attributes a translation sets; every key is optional, left-out keys keep the spec's.

    ``key`` is ``"a/b/c"`` or a list of parts, ``key_prefix`` a string or list put before the key.
    ``None`` clears an attribute, as it does in ``dg.AssetSpec.replace_attributes``.
    """

    key: str | Sequence[str]
    key_prefix: str | Sequence[str] | None
    group_name: str | None
    description: str | None
    owners: Sequence[str] | None
    tags: Mapping[str, str] | None
    metadata: Mapping[str, Any] | None
    automation_condition: dg.AutomationCondition | None
    freshness_policy: dg.FreshnessPolicy | None


class AttributesTranslator(DuckLakeTranslator):
    """A translator that applies the same attributes to every table, then per-table ones on top.

    ``every`` and each value of ``tables`` (keyed by table name, or ``schema.name``) are
    :class:`SpecAttributes`: ``key``, ``key_prefix``, ``group_name``, ``description``, ``owners``,
    ``tags``, ``metadata``, ``automation_condition``, ``freshness_policy``. ``tags`` and ``metadata``
    are merged; the rest replace. This is what the YAML component's ``translation:`` builds.
    """

    def __init__(
        self,
        every: SpecAttributes | None = None,
        tables: Mapping[str, SpecAttributes] | None = None,
        base: DuckLakeTranslator | None = None,
    ) -> None:
        super().__init__()
        self.base = base or DuckLakeTranslator()
        self.every = every.copy() if every else SpecAttributes()
        self.tables = {name: attributes.copy() for name, attributes in (tables or {}).items()}

    def get_asset_spec(self, table: LakeTable) -> dg.AssetSpec:
        spec = self.base.get_asset_spec(table)
        for attributes in (self.every, self.tables.get(table.display_name) or self.tables.get(table.name) or {}):
            spec = apply_attributes(spec, attributes)
        return spec


def apply_attributes(spec: dg.AssetSpec, attributes: SpecAttributes) -> dg.AssetSpec:
    """``spec`` with ``attributes`` applied: ``tags`` and ``metadata`` merged, ``key_prefix`` prepended."""
    replaced: dict[str, Any] = dict(attributes)  # keyword arguments of replace_attributes
    merged = {name: replaced.pop(name) for name in ("tags", "metadata") if replaced.get(name)}
    prefix = replaced.pop("key_prefix", None)
    if "key" in replaced:
        key = replaced.pop("key")
        replaced["key"] = dg.AssetKey.from_user_string(key) if isinstance(key, str) else dg.AssetKey(list(key))
    if prefix:
        key = replaced.get("key", spec.key)
        replaced["key"] = key.with_prefix(prefix if isinstance(prefix, str) else list(prefix))
    spec = spec.replace_attributes(**replaced) if replaced else spec
    return spec.merge_attributes(**merged) if merged else spec


def table_specs(tables: Sequence[LakeTable], translator: DuckLakeTranslator) -> dict[tuple[str, str], dg.AssetSpec]:
    """Each table's spec, keyed by ``(schema, name)`` in lower case (DuckDB names are case-insensitive)."""
    return {(table.schema.lower(), table.name.lower()): translator.get_asset_spec(table) for table in tables}
