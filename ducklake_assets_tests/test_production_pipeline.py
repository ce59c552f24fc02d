"""The README's production setup, for real: a PostgreSQL catalog whose password comes from the
environment, data, backups and the frozen lake on S3, and a stranger reading the result."""

import dagster as dg
import duckdb

from ducklake_assets import PostgresCatalogConfig, S3Resource, build_ducklake_pipeline
from ducklake_assets.core.extensions import load_extensions
from ducklake_assets.core.sql import quote_literal
from ducklake_assets_tests.parquet_files import crew


def test_postgres_catalog_with_s3_data_backups_and_frozen_lake(
    tmp_path, pg_database, s3_bucket, s3_settings, monkeypatch
):
    monkeypatch.setenv("LAKE_PASSWORD", pg_database.password)
    monkeypatch.setenv("LAKE_S3_SECRET", s3_settings.aws_secret_access_key)
    for part in range(3):
        local = crew(tmp_path / f"astronauts.p{part}.parquet", part * 10)
        s3_bucket.client().upload_file(str(local), s3_bucket.name, f"landing/astronauts/astronauts.p{part}.parquet")
    s3 = S3Resource(
        endpoint_url=s3_settings.endpoint_url,
        region_name=s3_settings.region_name,
        aws_access_key_id=s3_settings.aws_access_key_id,
        aws_secret_access_key=dg.EnvVar("LAKE_S3_SECRET"),
        addressing_style="path",
    )
    defs = build_ducklake_pipeline(
        name="events",
        source=s3_bucket.uri("landing/"),
        catalog=PostgresCatalogConfig(
            host=pg_database.host,
            port=pg_database.port,
            dbname=pg_database.dbname,
            user=pg_database.user,
            password=dg.EnvVar("LAKE_PASSWORD"),
        ),
        data_path=s3_bucket.uri("lake/"),
        backup=s3_bucket.uri("backups/"),
        publish=s3_bucket.uri("public/events.ducklake"),
        s3=s3,
    )
    result = dg.materialize(
        [*(a for a in defs.assets if isinstance(a, dg.AssetsDefinition)), *defs.asset_checks],
        resources=defs.resources,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 5 and all(check.passed for check in checks), [c.description for c in checks]

    shown = [str(event) for event in result.all_events]
    assert not any(pg_database.password in text or s3_settings.aws_secret_access_key in text for text in shown)

    with duckdb.connect() as stranger:
        load_extensions(stranger, ["ducklake", "httpfs"])
        s3_settings.create_duckdb_secret(stranger, "reader")
        stranger.execute(
            f"ATTACH {quote_literal('ducklake:' + s3_bucket.uri('public/events.ducklake'))} AS lake (READ_ONLY)"
        )
        assert stranger.execute("SELECT count(*), count(DISTINCT id) FROM lake.astronauts").fetchone() == (30, 30)
