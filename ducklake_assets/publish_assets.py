"""Dagster definitions for the frozen lake: the ``frozen_lake`` asset and the two checks that read it as a
stranger would. How a frozen lake is published and read lives in ``core/publish.py``; this module only
turns it into an asset and reports it.
"""

import dataclasses
from collections.abc import Sequence

import dagster as dg

from .core.errors import ConfigurationError, DuckLakeAssetsError
from .core.lake import absolute_local_path
from .core.publish import (
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
from .metadata import markdown_table
from .resources import lake_and_store

_TABLE_NAMES = "table_names"
_VERIFIED = "verified_as_stranger"


def _publish_metadata(name: str, result: PublishResult) -> dict[str, object]:
    contents = result.contents
    pinned_url = revision_uri(result.reader_url, result.revision.number, contents.snapshot_id)
    metadata: dict[str, object] = {
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


def _stranger_metadata(report: StrangerReport) -> dict[str, object]:
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


def build_publish_definitions(
    name: str,
    publish_uri: str,
    *,
    lake_resource_key: str = "ducklake",
    s3_resource_key: str | None = None,
    upstream_key: dg.AssetKey | Sequence[str] | None = None,
    backup_uri: str | None = None,
    keep_revisions: int = 5,
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
    which must then be a DuckDB file (upstream ``[name, "catalog_snapshot"]``); ``upstream_key``
    overrides the upstream. ``reader_url`` is where readers find the file when it is not ``publish_uri``
    (a web server serving that folder); ``reader_data_path`` is where they find the lake's data folder.
    ``legacy_uri`` receives an unmigrated copy for old clients when the catalog's format is older than
    the running ``ducklake`` extension. ``self_contained`` copies every data file next to the frozen lake
    (incrementally), so it is complete wherever it is published; a remote publication whose data files
    are paths on this machine is refused without it. See
    :func:`ducklake_assets.core.publish.publish_frozen_lake`.

    The asset runs in the concurrency pool ``pool`` (default ``<name>_frozen_lake``): set a limit of 1
    with ``dagster instance concurrency set <name>_frozen_lake 1`` (or ``concurrency: pools:`` in
    ``dagster.yaml``) so an automation run and a click never publish at once. Two publications that do
    race are still safe: each claims its own revision number and only the newer becomes current.

    Checks, both reading the lake as a stranger (a fresh DuckDB sharing nothing with the writer):
    ``frozen_lake_opens_read_only`` passes when it attaches read-only, has every table it was published
    with (and ``expected_tables``) and, with ``probe_files``, every data file opens;
    ``frozen_lake_matches_catalog`` passes when its snapshot is the catalog's latest and every table's
    row count equals the catalog's at that snapshot (a lake that is only behind fails with severity WARN).
    While the published file is the one the asset verified (same ETag or local version), the checks use
    that verification instead of probing every data file again.
    ``blocking`` makes failing checks stop downstream assets in the same run.
    """
    if keep_revisions < 1:
        raise ConfigurationError(f"keep_revisions must be at least 1, not {keep_revisions}")
    if not isinstance(publish_uri, str) or not publish_uri.strip():
        raise ConfigurationError("publish_uri must be a local path or s3://bucket/key where the frozen lake goes")
    publish_uri = absolute_local_path(publish_uri)
    url = reader_url or publish_uri
    frozen_key = dg.AssetKey([name, "frozen_lake"])
    if upstream_key is None:
        upstream_key = [name, "static_backup" if backup_uri else "catalog_snapshot"]
    upstream = upstream_key if isinstance(upstream_key, dg.AssetKey) else dg.AssetKey(list(upstream_key))
    resource_keys = {lake_resource_key} | ({s3_resource_key} if s3_resource_key else set())

    source_text = f"the latest static backup under {backup_uri}" if backup_uri else "the catalog file"

    @dg.asset(
        key=frozen_key,
        pool=pool or f"{name}_frozen_lake",
        deps=[upstream],
        required_resource_keys=resource_keys,
        group_name=group_name,
        kinds={"ducklake"},
        description=(
            f"A frozen DuckLake published from {source_text} to {publish_uri}: anyone attaches it with "
            f"{attach_statement(url, name)}"
        ),
    )
    def frozen_lake(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        settings, store = lake_and_store(context.resources, lake_resource_key, s3_resource_key)
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
        )
        context.log.info(
            f"Published revision {result.revision.number} (snapshot {result.contents.snapshot_id}) to "
            f"{publish_uri}; attach it with {result.attach_sql(name)}"
        )
        for note in result.notes:
            context.log.warning(note)
        metadata = _publish_metadata(name, result)
        published = store.stat_if_exists(publish_uri) if result.exposed else None
        if published is not None and result.report is not None and url == publish_uri:
            metadata[_VERIFIED] = dg.MetadataValue.json(
                {"version": published.version, "report": report_to_json(result.report)}
            )
        return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(str(result.contents.snapshot_id)))

    def verified_report(context: dg.AssetCheckExecutionContext, store: ObjectStore) -> StrangerReport | None:
        """The asset's own verification of the published file, while that file is unchanged."""
        event = context.instance.get_latest_materialization_event(frozen_key)
        recorded = (
            event.asset_materialization.metadata.get(_VERIFIED) if event and event.asset_materialization else None
        )
        if recorded is None:
            return None
        current = store.stat_if_exists(publish_uri)
        if current is None or current.version != recorded.value["version"]:
            return None
        return report_from_json(recorded.value["report"])

    def published_tables(context: dg.AssetCheckExecutionContext) -> list[str]:
        event = context.instance.get_latest_materialization_event(frozen_key)
        recorded = (
            event.asset_materialization.metadata.get(_TABLE_NAMES) if event and event.asset_materialization else None
        )
        return sorted({*(recorded.value if recorded else []), *(table_key(t) for t in expected_tables)})

    @dg.asset_check(
        asset=frozen_key, name="frozen_lake_opens_read_only", blocking=blocking, required_resource_keys=resource_keys
    )
    def frozen_lake_opens_read_only(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        _, store = lake_and_store(context.resources, lake_resource_key, s3_resource_key)
        expected = published_tables(context)
        report = verified_report(context, store)
        if report is not None:
            report = dataclasses.replace(
                report, missing_tables=tuple(name for name in expected if name not in report.tables)
            )
        else:
            report = verify_as_stranger(url, store.s3, expected, probe_files=probe_files)
        if report.ok:
            description = (
                f"A stranger attached {url} read-only: revision {report.revision}, snapshot {report.snapshot_id}, "
                f"all {len(expected)} expected tables present"
                + (" and every data file readable." if probe_files else ".")
            )
        else:
            description = "A stranger cannot use the frozen lake: " + "; ".join(report.problems()) + "."
        return dg.AssetCheckResult(
            passed=report.ok,
            description=description,
            metadata={**_stranger_metadata(report), "expected_tables": dg.MetadataValue.json(expected)},
        )

    @dg.asset_check(
        asset=frozen_key, name="frozen_lake_matches_catalog", blocking=blocking, required_resource_keys=resource_keys
    )
    def frozen_lake_matches_catalog(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        settings, store = lake_and_store(context.resources, lake_resource_key, s3_resource_key)
        report = verified_report(context, store) or verify_as_stranger(url, store.s3, probe_files=False)
        if not report.opened:
            return dg.AssetCheckResult(
                passed=False, description="; ".join(report.problems()), metadata=_stranger_metadata(report)
            )
        try:
            catalog, latest = catalog_contents(settings, report.snapshot_id)
        except DuckLakeAssetsError as error:
            return dg.AssetCheckResult(
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

    return dg.Definitions(assets=[frozen_lake], asset_checks=[frozen_lake_opens_read_only, frozen_lake_matches_catalog])
