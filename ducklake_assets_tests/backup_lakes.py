"""Small lakes of every catalog kind for the backup, restore and backup-check tests.

Lakes are made the way a user makes them: ``connect_lake`` and SQL, with data inlining off so every
insert writes a real Parquet file.
"""

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from ducklake_assets.core.catalog import DuckDBCatalog, PostgresCatalog, SQLiteCatalog
from ducklake_assets.core.extensions import load_extensions
from ducklake_assets.core.lake import LakeSettings, connect_lake
from ducklake_assets.core.s3 import S3Settings
from ducklake_assets.core.sql import qualified_name, quote_identifier, quote_literal
from ducklake_assets_tests.services import PostgresDatabase

KINDS = ["duckdb", "sqlite", "postgres"]
NO_INLINING = {"DATA_INLINING_ROW_LIMIT": 0}


def lake_settings(kind: str, folder: Path, pg: PostgresDatabase | None = None, name: str = "catalog") -> LakeSettings:
    """Settings for a new lake of ``kind`` keeping its files in ``folder``."""
    if kind == "duckdb":
        catalog = DuckDBCatalog(str(folder / f"{name}.ducklake"))
    elif kind == "sqlite":
        catalog = SQLiteCatalog(str(folder / f"{name}.sqlite"))
    else:
        assert pg is not None, "a PostgreSQL lake needs a database"
        catalog = PostgresCatalog.from_dsn(pg.dsn())
    return LakeSettings(catalog=catalog, data_path=str(folder / "data"), attach_options=NO_INLINING)


def settings_for_kind(request: pytest.FixtureRequest, kind: str, folder: Path) -> LakeSettings:
    """Like :func:`lake_settings`, asking for a PostgreSQL database only when the kind needs one."""
    pg = request.getfixturevalue("pg_database") if kind == "postgres" else None
    return lake_settings(kind, folder, pg)


def run(settings: LakeSettings, *statements: str, message: str | None = None) -> None:
    """Run statements in one lake transaction (one snapshot), with a commit message when given."""
    with connect_lake(settings) as connection:
        connection.execute("BEGIN TRANSACTION")
        if message:
            connection.execute(f"CALL {quote_identifier(settings.alias)}.set_commit_message('tester', ?)", [message])
        for statement in statements:
            connection.execute(statement)
        connection.execute("COMMIT")


def fill(settings: LakeSettings) -> None:
    """Two tables over four snapshots, including a delete (so there is a delete file)."""
    run(settings, "CREATE TABLE trips (id INTEGER, city VARCHAR)", message="create trips")
    run(settings, "INSERT INTO trips SELECT range, 'city ' || (range % 3) FROM range(100)", message="load trips")
    run(settings, "CREATE TABLE stations AS SELECT range AS id FROM range(7)", message="load stations")
    run(settings, "DELETE FROM trips WHERE id < 10", message="drop test trips")


def row_counts(settings: LakeSettings, version: int | None = None) -> dict[str, int]:
    """``schema.table`` -> rows, now or at snapshot ``version``."""
    with connect_lake(settings) as connection:
        tables = connection.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ? ORDER BY ALL",
            [settings.alias],
        ).fetchall()
        at = " AT (VERSION => ?)" if version is not None else ""
        params = [version] if version is not None else []
        return {
            f"{schema}.{table}": connection.execute(
                f"SELECT count(*) FROM {qualified_name(settings.alias, schema, table)}{at}", params
            ).fetchone()[0]
            for schema, table in tables
        }


def latest_snapshot(settings: LakeSettings) -> int:
    with connect_lake(settings) as connection:
        return connection.execute("SELECT max(snapshot_id) FROM ducklake_snapshots(?)", [settings.alias]).fetchone()[0]


def snapshot_ids(settings: LakeSettings) -> list[int]:
    with connect_lake(settings) as connection:
        rows = connection.execute(
            "SELECT snapshot_id FROM ducklake_snapshots(?) ORDER BY snapshot_id", [settings.alias]
        ).fetchall()
    return [row[0] for row in rows]


def current_files(settings: LakeSettings) -> set[str]:
    """Every data and delete file DuckLake lists for the lake's tables now."""
    found: set[str] = set()
    with connect_lake(settings) as connection:
        tables = connection.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ?", [settings.alias]
        ).fetchall()
        for schema, table in tables:
            rows = connection.execute(
                "SELECT data_file, delete_file FROM ducklake_list_files(?, ?, schema => ?)",
                [settings.alias, table, schema],
            ).fetchall()
            found |= {path for row in rows for path in row if path}
    return found


@contextlib.contextmanager
def plain_reader(backup: str, s3: S3Settings | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A fresh DuckDB that opens ``backup`` exactly as the docs promise: ATTACH 'ducklake:<file>' (READ_ONLY)."""
    connection = duckdb.connect()
    try:
        load_extensions(connection, ["ducklake", "httpfs"] if s3 else ["ducklake"])
        if s3:
            s3.create_duckdb_secret(connection, "reader_s3")
        connection.execute(f"ATTACH {quote_literal('ducklake:' + backup)} AS backup (READ_ONLY)")
        yield connection
    finally:
        connection.close()


def reader_counts(connection: duckdb.DuckDBPyConnection) -> dict[str, int]:
    tables = connection.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'backup' ORDER BY ALL"
    ).fetchall()
    return {
        f"{schema}.{table}": connection.execute(
            f"SELECT count(*) FROM {qualified_name('backup', schema, table)}"
        ).fetchone()[0]
        for schema, table in tables
    }


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
