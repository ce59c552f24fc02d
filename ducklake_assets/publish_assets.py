"""Dagster definitions for the frozen lake: the ``frozen_lake`` asset and, in the same step, the two checks
that read it as a stranger would. How a frozen lake is published and read lives in ``core/publish/``; this module only
turns it into an asset and reports it.
"""

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
from pydantic import Field

from .backup_assets import run_checks, upstream_asset_keys
from .core.errors import ConfigurationError, DuckLakeAssetsError
from .core.lake import LakeSettings
from .core.locations import absolute_local_path
from .core.publish import (
    KEEP_REVISIONS,
    PublishResult,
    StrangerReport,
    attach_statement,
    catalog_contents,
    publish_frozen_lake,
    report_from_json,
    report_to_json,
    revision_uri,
    table_key,
    verify_as_stranger,
)
from .core.storage import ObjectStore
from .metadata import Metadata, markdown_table
from .resources import lake_and_store

_TABLE_NAMES = "table_names"
_VERIFIED = "verified_as_stranger"


def _publish_metadata(name: str, result: PublishResult) -> Metadata:
    contents = result.contents
    pinned_url = revision_uri(result.reader_url, result.revision.number, contents.snapshot_id)
    metadata: Metadata = {
        "up_to_date": result.up_to_date,
        "attach": dg.MetadataValue.md(f"```sql\n{result.attach_sql(name)}\n```"),
        "attach_sql": result.attach_sql(name),
        "pinned_attach_sql": attach_statement(pinned_url, name),
        "url": result.reader_url,
        "publish_uri": dg.MetadataValue.path(result.publish_uri),
        "revision": result.revision.number,
        "revision_uri": dg.MetadataValue.path(result.revision.uri),
        "snapshot_id": contents.snapshot_id,
        "format_version": contents.format_version,
        "source_format_version": result.source_format_version,
        "size_bytes": dg.MetadataValue.int(result.revision.size),
        "tables": dg.MetadataValue.md(
            markdown_table(["table", "rows"], [[table, rows] for table, rows in contents.tables.items()])
        ),
        _TABLE_NAMES: dg.MetadataValue.json(sorted(contents.tables)),
        "dagster/row_count": sum(contents.tables.values()),
        "data_path": result.data_path or "",
        "pruned_revisions": len(result.pruned),
        "current": result.exposed,
    }
    if result.files is not None:
        metadata |= {
            "files_copied": dg.MetadataValue.int(len(result.files.copied)),
            "bytes_copied": dg.MetadataValue.int(result.files.bytes_copied),
            "files_reused": dg.MetadataValue.int(len(result.files.reused)),
        }
    if result.legacy_uri:
        metadata["legacy_attach_sql"] = attach_statement(result.legacy_uri, name)
    if result.notes:
        metadata["notes"] = dg.MetadataValue.md("\n".join(f"- {note}" for note in result.notes))
    return metadata


def _stranger_metadata(report: StrangerReport) -> Metadata:
    return {
        "url": report.url,
        "snapshot_id": dg.MetadataValue.int(report.snapshot_id) if report.snapshot_id is not None else "not opened",
        "revision": dg.MetadataValue.int(report.revision) if report.revision is not None else "unknown",
        "tables": dg.MetadataValue.md(
            markdown_table(["table", "rows"], [[table, rows] for table, rows in report.tables.items()])
        ),
        "missing_tables": dg.MetadataValue.json(list(report.missing_tables)),
        "unreadable_files": dg.MetadataValue.json(list(report.unreadable_files)),
    }


class FrozenLakeConfig(dg.Config):
    """Run config of the ``frozen_lake`` asset (launchpad); automation runs use the defaults."""

    force: bool = Field(
        default=False,
        description=(
            "Publish a new revision even when the published file already holds the source's latest snapshot "
            "with the same settings."
        ),
    )


@dataclasses.dataclass(frozen=True)
class Published:
    """What the asset's step hands its checks: the materialization, the tables published, the verification
    of the published file (as recorded in the metadata) and whether nothing was published because it was up
    to date (then nothing was verified in this run)."""

    materialization: dg.MaterializeResult
    tables: list[str]
    verified: dict | None
    up_to_date: bool = False


def verified_report(
    recorded: dict | None, store: ObjectStore, publish_uri: str, probe_files: bool = True
) -> StrangerReport | None:
    """The asset's own verification of the published file (``recorded`` in its metadata), while that file is
    unchanged (same ETag or local version) and the verification probed the data files if ``probe_files``."""
    if not recorded:
        return None
    if probe_files and not recorded.get("probe_files"):
        return None
    current = store.stat_if_exists(publish_uri)
    if current is None or current.version != recorded["version"]:
        return None
    return report_from_json(recorded["report"])


def frozen_lake_opens_read_only(
    key: dg.AssetCheckKey,
    url: str,
    store: ObjectStore,
    expected: list[str],
    verified: StrangerReport | None,
    probe_files: bool = True,
) -> dg.AssetCheckResult:
    """Whether a stranger attaches ``url`` read-only and finds every ``expected`` table (and, with ``probe_files``,
    every data file); ``verified`` is the asset's own verification of the unchanged file, used instead."""
    if verified is not None:
        report = dataclasses.replace(
            verified, missing_tables=tuple(name for name in expected if name not in verified.tables)
        )
    else:
        report = verify_as_stranger(url, store.s3, expected, probe_files=probe_files)
    if report.ok:
        description = (
            f"A stranger attached {url} read-only: revision {report.revision}, snapshot {report.snapshot_id}, "
            f"all {len(expected)} expected tables present" + (" and every data file readable." if probe_files else ".")
        )
    else:
        description = "A stranger cannot use the frozen lake: " + "; ".join(report.problems()) + "."
    return dg.AssetCheckResult(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=report.ok,
        description=description,
        metadata={**_stranger_metadata(report), "expected_tables": dg.MetadataValue.json(expected)},
    )


def frozen_lake_matches_catalog(
    key: dg.AssetCheckKey,
    url: str,
    settings: LakeSettings,
    store: ObjectStore,
    verified: StrangerReport | None,
    frozen_key: dg.AssetKey,
) -> dg.AssetCheckResult:
    """Whether the frozen lake at ``url`` holds the catalog's latest snapshot with the catalog's row counts
    (only behind: severity WARN)."""
    report = verified or verify_as_stranger(url, store.s3, probe_files=False)
    if not report.opened:
        return dg.AssetCheckResult(
            asset_key=key.asset_key,
            check_name=key.name,
            passed=False,
            description="; ".join(report.problems()),
            metadata=_stranger_metadata(report),
        )
    assert report.snapshot_id is not None, "an opened frozen lake reports its snapshot"
    try:
        catalog, latest = catalog_contents(settings, report.snapshot_id)
    except DuckLakeAssetsError as error:
        return dg.AssetCheckResult(
            asset_key=key.asset_key,
            check_name=key.name,
            passed=False,
            description=f"The frozen lake holds snapshot {report.snapshot_id}, which cannot be compared: {error}",
            metadata=_stranger_metadata(report),
        )
    names = sorted(set(catalog.tables) | set(report.tables))
    rows = []
    differing = []
    for table in names:
        frozen_rows, catalog_rows = report.tables.get(table, "missing"), catalog.tables.get(table, "missing")
        matches = frozen_rows == catalog_rows
        rows.append([table, frozen_rows, catalog_rows, "ok" if matches else "differs"])
        if not matches:
            differing.append(table)
    behind = latest - report.snapshot_id
    reasons = []
    if differing:
        reasons.append(
            f"{len(differing)} table(s) differ from the catalog at snapshot {report.snapshot_id}: "
            + ", ".join(differing)
        )
    if behind:
        reasons.append(
            f"the frozen lake holds snapshot {report.snapshot_id} but the catalog is at {latest} "
            f"({behind} snapshot(s) behind): materialize {frozen_key.to_user_string()} again"
        )
    return dg.AssetCheckResult(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=not reasons,
        severity=dg.AssetCheckSeverity.ERROR if differing else dg.AssetCheckSeverity.WARN,
        description=(
            f"Snapshot {report.snapshot_id} and all {len(names)} tables' row counts equal the catalog's."
            if not reasons
            else "The frozen lake does not match the catalog: " + "; ".join(reasons) + "."
        ),
        metadata={
            "frozen_snapshot_id": report.snapshot_id,
            "catalog_snapshot_id": latest,
            "snapshots_behind": behind,
            "tables": dg.MetadataValue.md(markdown_table(["table", "frozen rows", "catalog rows", "result"], rows)),
            "tables_differing": dg.MetadataValue.json(differing),
        },
    )


def build_publish_definitions(
    name: str,
    publish_uri: str,
    *,
    lake_resource_key: str = "ducklake",
    s3_resource_key: str | None = None,
    upstream_key: dg.AssetKey | Sequence[str] | None = None,
    upstream_keys: Sequence[dg.AssetKey | str | Sequence[str]] | None = None,
    backup_uri: str | None = None,
    keep_revisions: int = KEEP_REVISIONS,
    reader_url: str | None = None,
    reader_data_path: str | None = None,
    legacy_uri: str | None = None,
    expected_tables: Sequence[str] = (),
    probe_files: bool = True,
    self_contained: bool = False,
    blocking: bool = False,
    group_name: str | None = None,
    pool: str | None = None,
) -> dg.Definitions:
    """A frozen lake of the lake behind resource ``lake_resource_key`` (a ``DuckLakeResource``).

    Creates asset ``[name, "frozen_lake"]``, which publishes a read-only DuckLake file to ``publish_uri``
    (a local path or ``s3://bucket/key``, written through the ``S3Resource`` ``s3_resource_key``, else
    the lake's own S3 settings), keeping ``keep_revisions`` revisions. Its source is the latest static
    backup under ``backup_uri`` when given (upstream ``[name, "static_backup"]``), else the catalog itself,
    which must then be a DuckDB file (upstream ``upstream_keys``: every asset that writes to the lake,
    default ``[[name, "catalog_snapshot"]]``); ``upstream_key`` overrides the upstream. ``reader_url`` is
    where readers find the file when it is not ``publish_uri`` (a web server serving that folder);
    ``reader_data_path`` is where they find the lake's data folder.
    ``legacy_uri`` receives an unmigrated copy for old clients when the catalog's format is older than
    the running ``ducklake`` extension. ``self_contained`` copies every data file next to the frozen lake
    (incrementally), so it is complete wherever it is published; a remote publication whose data files
    are paths on this machine is refused without it. See
    :func:`ducklake_assets.core.publish.publish_frozen_lake`.

    The asset runs in the concurrency pool ``pool`` (default ``<name>_frozen_lake``): set a limit of 1
    with ``dagster instance concurrency set <name>_frozen_lake 1`` (or ``concurrency: pools:`` in
    ``dagster.yaml``) so an automation run and a click never publish at once. Two publications that do
    race are still safe: each claims its own revision number and only the newer becomes current. When
    ``publish_uri`` already holds the source's latest snapshot with these settings, nothing is written:
    the materialization says ``up_to_date`` and reports the revision it holds.

    Checks, evaluated in the asset's own step right after the publication (or alone, when only they are
    selected), both reading the lake as a stranger (a fresh DuckDB sharing nothing with the writer):
    ``frozen_lake_opens_read_only`` passes when it attaches read-only, has every table it was published
    with (and ``expected_tables``) and, with ``probe_files``, every data file opens;
    ``frozen_lake_matches_catalog`` passes when its snapshot is the catalog's latest and every table's
    row count equals the catalog's at that snapshot (a lake that is only behind fails with severity WARN).
    While the published file is the one the asset verified (same ETag or local version), the checks use
    that verification instead of probing every data file again; after an up-to-date run (nothing published,
    so nothing verified) they verify as a stranger again, once for both. The run config ``force``
    (:class:`FrozenLakeConfig`) publishes a new revision even when ``publish_uri`` is up to date.
    ``blocking`` makes failing checks stop downstream assets in the same run.
    """
    if keep_revisions < 1:
        raise ConfigurationError(f"keep_revisions must be at least 1, not {keep_revisions}")
    if not isinstance(publish_uri, str) or not publish_uri.strip():
        raise ConfigurationError("publish_uri must be a local path or s3://bucket/key where the frozen lake goes")
    publish_uri = absolute_local_path(publish_uri)
    url = reader_url or publish_uri
    frozen_key = dg.AssetKey([name, "frozen_lake"])
    if upstream_key is not None and upstream_keys is not None:
        raise ConfigurationError("pass upstream_key or upstream_keys, not both (upstream_key overrides the upstream)")
    if upstream_key is not None:
        upstream = [upstream_key if isinstance(upstream_key, dg.AssetKey) else dg.AssetKey(list(upstream_key))]
    elif backup_uri:
        upstream = [dg.AssetKey([name, "static_backup"])]
    else:
        upstream = upstream_asset_keys(upstream_keys, [name, "catalog_snapshot"])
    resource_keys = {lake_resource_key} | ({s3_resource_key} if s3_resource_key else set())

    source_text = f"the latest static backup under {backup_uri}" if backup_uri else "the catalog file"

    opens_key = dg.AssetCheckKey(frozen_key, "frozen_lake_opens_read_only")
    matches_key = dg.AssetCheckKey(frozen_key, "frozen_lake_matches_catalog")
    check_specs = [
        dg.AssetCheckSpec(
            opens_key.name,
            asset=frozen_key,
            blocking=blocking,
            description=(
                f"A stranger (a fresh DuckDB sharing nothing with the writer) attaches {url} read-only: passes when "
                "it opens and has every table it was published with"
                + (f" and {', '.join(expected_tables)}" if expected_tables else "")
                + (", and every data file opens." if probe_files else ".")
            ),
        ),
        dg.AssetCheckSpec(
            matches_key.name,
            asset=frozen_key,
            blocking=blocking,
            description=(
                "Passes when the frozen lake holds the catalog's latest snapshot and every table's row count equals "
                "the catalog's at that snapshot; a lake that is only behind fails with severity WARN."
            ),
        ),
    ]
    spec = dg.AssetSpec(
        frozen_key,
        deps=upstream,
        group_name=group_name,
        kinds={"ducklake"},
        description=(
            f"A frozen DuckLake published from {source_text} to {publish_uri}: anyone attaches it with "
            f"{attach_statement(url, name)}"
        ),
    )

    def latest_metadata(context: dg.AssetExecutionContext, key: str) -> object | None:
        event = context.instance.get_latest_materialization_event(frozen_key)
        recorded = event.asset_materialization.metadata.get(key) if event and event.asset_materialization else None
        return recorded.value if recorded is not None else None

    def publish(
        context: dg.AssetExecutionContext, settings: LakeSettings, store: ObjectStore, force: bool
    ) -> Published:
        result = publish_frozen_lake(
            backup_uri or settings,
            publish_uri,
            store=store,
            keep_revisions=keep_revisions,
            reader_url=reader_url,
            data_path=settings.data_path,
            reader_data_path=reader_data_path,
            legacy_uri=legacy_uri,
            probe_files=probe_files,
            self_contained=self_contained,
            data_store=ObjectStore(settings.s3),
            force=force,
        )
        if result.up_to_date:
            context.log.info(
                f"{publish_uri} is up to date at snapshot {result.contents.snapshot_id} (revision "
                f"{result.revision.number}): nothing new to publish, nothing written; attach it with "
                f"{result.attach_sql(name)}"
            )
        else:
            context.log.info(
                f"Published revision {result.revision.number} (snapshot {result.contents.snapshot_id}) to "
                f"{publish_uri}; attach it with {result.attach_sql(name)}"
            )
        for note in result.notes:
            context.log.warning(note)
        metadata = _publish_metadata(name, result)
        verified: dict[str, Any] | None = None
        if result.exposed and result.report is not None and url == publish_uri:
            published = store.stat_if_exists(publish_uri)
            if published is not None:
                verified = {
                    "version": published.version,
                    "probe_files": probe_files,
                    "report": report_to_json(result.report),
                }
        if verified is not None:
            metadata[_VERIFIED] = dg.MetadataValue.json(verified)
        materialization: dg.MaterializeResult = dg.MaterializeResult(
            asset_key=frozen_key,
            metadata=metadata,
            data_version=dg.DataVersion(str(result.contents.snapshot_id)),
        )
        return Published(materialization, sorted(result.contents.tables), verified, result.up_to_date)

    @dg.multi_asset(
        name=f"{name}__frozen_lake",
        specs=[spec],
        check_specs=check_specs,
        can_subset=True,
        pool=pool or f"{name}_frozen_lake",
        required_resource_keys=resource_keys,
    )
    def frozen_lake(
        context: dg.AssetExecutionContext, config: FrozenLakeConfig
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        settings, store = lake_and_store(context.resources, lake_resource_key, s3_resource_key)
        up_to_date = False
        if frozen_key in context.selected_asset_keys:
            published = publish(context, settings, store, config.force)
            yield published.materialization
            tables, verified, up_to_date = published.tables, published.verified, published.up_to_date
        else:
            recorded_tables = latest_metadata(context, _TABLE_NAMES)
            recorded_verified = latest_metadata(context, _VERIFIED)
            tables = recorded_tables if isinstance(recorded_tables, list) else []
            verified = recorded_verified if isinstance(recorded_verified, dict) else None
        expected = sorted({*tables, *(table_key(t) for t in expected_tables)})

        @functools.cache
        def report() -> StrangerReport | None:
            if up_to_date:
                return verify_as_stranger(url, store.s3, expected, probe_files=probe_files)
            return verified_report(verified, store, publish_uri, probe_files)

        yield from run_checks(
            context,
            {
                opens_key: lambda: frozen_lake_opens_read_only(opens_key, url, store, expected, report(), probe_files),
                matches_key: lambda: frozen_lake_matches_catalog(
                    matches_key, url, settings, store, report(), frozen_key
                ),
            },
        )

    return dg.Definitions(assets=[frozen_lake], asset_checks=[])
