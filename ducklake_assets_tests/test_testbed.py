"""Tests of the test bed itself.

They prove the services are real enough to catch the bugs they exist for: a
wrong password is rejected by scram-sha-256 authentication, and DuckDB's
httpfs really reads and writes objects on the moto endpoint.
"""

from pathlib import Path

import duckdb
import duckdb_extension_httpfs
import psycopg
import pytest

from ducklake_assets_tests.services import PostgresDatabase, PostgresServer, S3Bucket


def _sql_string(value: str) -> str:
    """A DuckDB SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def test_postgres_enforces_scram_password_auth(postgres_server: PostgresServer, pg_database: PostgresDatabase) -> None:
    for conninfo in (pg_database.dsn(), pg_database.url()):
        with psycopg.connect(conninfo) as conn:
            row = conn.execute("SELECT current_user, current_database()").fetchone()
        assert row == (pg_database.user, pg_database.dbname)

    with psycopg.connect(postgres_server.dsn("postgres")) as conn:
        row = conn.execute(
            "SELECT starts_with(rolpassword, 'SCRAM-SHA-256$') FROM pg_authid WHERE rolname = %s",
            (pg_database.user,),
        ).fetchone()
    assert row == (True,)

    wrong = PostgresDatabase(pg_database.host, pg_database.port, pg_database.user, "wrong", pg_database.dbname)
    try:
        psycopg.connect(wrong.dsn()).close()
    except psycopg.OperationalError as exc:
        assert "password authentication failed" in str(exc)
    else:
        pytest.fail(
            "the server accepted a wrong password; a server given by DUCKLAKE_TEST_PG_DSN "
            "must use password (scram-sha-256) authentication for host connections"
        )


def test_duckdb_httpfs_reaches_moto_bucket(s3_bucket: S3Bucket, empty_home: Path) -> None:
    endpoint = s3_bucket.endpoint
    extension = (
        Path(duckdb_extension_httpfs.__file__).parent
        / "extensions"
        / f"v{duckdb.__version__}"
        / "httpfs.duckdb_extension"
    )
    uri = s3_bucket.uri("x.parquet")
    with duckdb.connect() as con:
        con.execute(f"LOAD {_sql_string(str(extension))}")
        con.execute(
            f"""
            CREATE SECRET (
                TYPE s3,
                KEY_ID {_sql_string(endpoint.aws_access_key_id)},
                SECRET {_sql_string(endpoint.aws_secret_access_key)},
                REGION {_sql_string(endpoint.region_name)},
                ENDPOINT {_sql_string(f"{endpoint.host}:{endpoint.port}")},
                URL_STYLE 'path',
                USE_SSL false
            )
            """
        )
        con.execute(f"COPY (SELECT 1 AS x) TO {_sql_string(uri)}")
        assert con.execute(f"SELECT x FROM read_parquet({_sql_string(uri)})").fetchall() == [(1,)]

    listed = s3_bucket.client().list_objects_v2(Bucket=s3_bucket.name)
    assert [obj["Key"] for obj in listed["Contents"]] == ["x.parquet"]
