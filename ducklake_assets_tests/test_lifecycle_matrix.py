"""The whole pipeline, as a Dagster user runs it, on every cell of the production matrix: each catalog kind
(DuckDB file, SQLite, PostgreSQL) x data files on disk or S3 x backups on disk or S3.

Source files -> table assets and catalog snapshot -> full backup -> frozen lake, every check green; a
downstream asset reads a table through the IO manager; a second file is backed up incrementally; then
the catalog database and every data file are lost and the restore job brings the lake back from the
backup alone. Sums read the Parquet files (``count(*)`` is answered from DuckLake's metadata).
"""

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from ducklake_assets import (
    BackupOptions,
    PostgresCatalogConfig,
    PublishOptions,
    S3Resource,
    build_ducklake_pipeline,
)
from ducklake_assets.core.catalog import PostgresCatalog
from ducklake_assets.core.lake import connect_lake
from ducklake_assets.core.sql import qualified_name
from ducklake_assets_tests.backup_lakes import NO_INLINING, Backend
from ducklake_assets_tests.parquet_files import crew

SNAPSHOT = dg.AssetKey(["space", "catalog_snapshot"])
BACKUP = dg.AssetKey(["space", "static_backup"])
FROZEN = dg.AssetKey(["space", "frozen_lake"])


def pipeline(backend: Backend, source: Path, public: Path, downstream: dg.AssetsDefinition) -> dg.Definitions:
    settings = backend.settings
    catalog = settings.catalog
    if isinstance(catalog, PostgresCatalog):
        lake_catalog: str | PostgresCatalogConfig = PostgresCatalogConfig(
            dsn=catalog.conninfo(), password=dg.EnvVar("LAKE_PASSWORD")
        )
    else:
        lake_catalog = ("sqlite:" if backend.catalog_kind == "sqlite" else "") + catalog.path
    s3 = backend.s3
    defs = build_ducklake_pipeline(
        "space",
        str(source),
        lake_catalog,
        settings.data_path,
        backup=BackupOptions(uri=backend.backups.uri(""), keep=3),
        publish=PublishOptions(uri=str(public), self_contained=True),
        s3=S3Resource(
            endpoint_url=s3.endpoint_url,
            region_name=s3.region_name,
            aws_access_key_id=s3.aws_access_key_id,
            aws_secret_access_key=dg.EnvVar("LAKE_S3_SECRET"),
            addressing_style="path",
        )
        if s3
        else None,
        attach_options=NO_INLINING,
        tables=["astronauts"],
    )
    return dg.Definitions.merge(defs, dg.Definitions(assets=[downstream]))


def run(defs: dg.Definitions, instance: dg.DagsterInstance, selection: list[dg.AssetKey] | None = None):
    assets = [asset for asset in defs.assets if isinstance(asset, dg.AssetsDefinition)]
    return dg.materialize(
        [*assets, *defs.asset_checks], resources=defs.resources, instance=instance, selection=selection
    )


def metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {name: getattr(value, "value", value) for name, value in event.materialization.metadata.items()}


def lake_sum(backend: Backend) -> tuple[int, int]:
    with connect_lake(backend.settings) as connection:
        return connection.execute(f"SELECT count(*), sum(id) FROM {qualified_name('lake', 'astronauts')}").fetchone()


def test_files_to_frozen_lake_and_back_from_the_backup_alone(
    lake_backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if isinstance(lake_backend.settings.catalog, PostgresCatalog):
        monkeypatch.setenv("LAKE_PASSWORD", lake_backend.settings.catalog.password or "")
    if lake_backend.s3:
        monkeypatch.setenv("LAKE_S3_SECRET", lake_backend.s3.aws_secret_access_key or "")
    source, public = tmp_path / "source", tmp_path / "public" / "space.ducklake"
    crew(source / "astronauts.p1.parquet", 0)
    crew(source / "astronauts.p2.parquet", 10)

    @dg.asset(ins={"astronauts": dg.AssetIn(key=["space", "astronauts"], input_manager_key="space_io_manager")})
    def crew_size(astronauts: pd.DataFrame) -> int:  # read through the pipeline's IO manager
        return int(astronauts["id"].count())

    defs = pipeline(lake_backend, source, public, crew_size)
    instance = dg.DagsterInstance.ephemeral()

    first = run(defs, instance, None)
    assert first.success
    checks = first.get_asset_check_evaluations()
    assert len(checks) == 5 and all(check.passed for check in checks), [c.description for c in checks]
    assert metadata(first, BACKUP)["files_copied"] == 2
    assert first.output_for_node("crew_size") == 20
    assert lake_sum(lake_backend) == (20, sum(range(20)))
    secrets = [lake_backend.s3.aws_secret_access_key if lake_backend.s3 else None]
    if isinstance(lake_backend.settings.catalog, PostgresCatalog):
        secrets.append(lake_backend.settings.catalog.password)
    shown = "\n".join(str(event) for event in first.all_events)
    assert not any(secret and secret in shown for secret in secrets), "no secret in what a user sees"

    crew(source / "astronauts.p3.parquet", 20)
    second = run(defs, instance, [SNAPSHOT, dg.AssetKey(["space", "astronauts"]), BACKUP])
    assert second.success
    assert (metadata(second, BACKUP)["files_copied"], metadata(second, BACKUP)["files_reused"]) == (1, 2)

    lake_backend.lose_everything()
    restore = defs.resolve_job_def("space_restore_catalog")
    restored = restore.execute_in_process(
        run_config={"ops": {"space_restore_catalog_op": {"config": {"dry_run": False}}}}, instance=instance
    )
    assert restored.success
    assert lake_sum(lake_backend) == (30, sum(range(30))), "every row is back, read from the restored files"

    crew(source / "astronauts.p4.parquet", 30)
    after = run(defs, instance, [SNAPSHOT, dg.AssetKey(["space", "astronauts"])])
    assert after.success and lake_sum(lake_backend) == (40, sum(range(40))), "the restored lake takes new files"
