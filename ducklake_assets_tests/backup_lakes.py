"""Small lakes of every catalog kind for the backup, restore and backup-check tests, and the production
matrix (:class:`Backend`: every catalog kind x data on disk or S3 x backups on disk or S3).

Lakes are made the way a user makes them: ``connect_lake`` and SQL, with data inlining off so every
insert writes a real Parquet file.
"""

import contextlib
import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import psycopg
import pytest

from ducklake_assets.core.catalog import DuckDBCatalog, PostgresCatalog, SQLiteCatalog
from ducklake_assets.core.extensions import load_extensions
from ducklake_assets.core.lake import LakeSettings, connect_lake
from ducklake_assets.core.s3 import S3Settings
from ducklake_assets.core.sql import qualified_name, quote_identifier, quote_literal
from ducklake_assets.core.storage import ObjectStore
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


@dataclass
class Place:
    """A folder on disk or a prefix in the test bucket: where data, sources or backups live."""

    root: str
    s3: S3Settings | None = None

    def uri(self, *names: str) -> str:
        return "/".join([self.root.rstrip("/"), *names])

    @property
    def store(self) -> ObjectStore:
        return ObjectStore(self.s3)

    def wipe(self) -> None:
        """Lose everything here, as a disaster would."""
        if self.s3 is None:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        bucket, _, prefix = self.root.removeprefix("s3://").partition("/")
        client = self.s3.boto3_client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])

    def files(self) -> dict[str, int]:
        """Everything here, relative path -> size."""
        found = self.store.list_prefix(self.root) if self.s3 or Path(self.root).exists() else []
        return {item.uri.removeprefix(self.uri("")): item.size for item in found}


def place(kind: str, tmp_path: Path, name: str, request: pytest.FixtureRequest) -> Place:
    if kind == "local":
        return Place(str(tmp_path / name))
    bucket = request.getfixturevalue("s3_bucket")
    return Place(bucket.uri(name), request.getfixturevalue("s3_settings"))


def lose_catalog(settings: LakeSettings) -> None:
    """The catalog database is gone: the file deleted, or every DuckLake table of the PostgreSQL database."""
    catalog = settings.catalog
    if isinstance(catalog, PostgresCatalog):
        with psycopg.connect(catalog.conninfo(with_password=True), autocommit=True) as connection:
            tables = connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'ducklake%'"
            ).fetchall()
            for (table,) in tables:
                connection.execute(f'DROP TABLE "{table}"')
        return
    for path in Path(catalog.path).parent.glob(Path(catalog.path).name + "*"):
        path.unlink()


MATRIX = [(catalog, data, backups) for catalog in KINDS for data in ("local", "s3") for backups in ("local", "s3")]
"""The production matrix: catalog kind, where the data files live, where the backups go."""


@dataclass
class Backend:
    """One cell of the production matrix: a lake's catalog and data, and a place for its backups."""

    catalog_kind: str
    settings: LakeSettings
    data: Place
    backups: Place

    @property
    def s3(self) -> S3Settings | None:
        return self.data.s3 or self.backups.s3

    def lose_everything(self) -> None:
        """The disaster: the catalog database and every data file are gone."""
        lose_catalog(self.settings)
        self.data.wipe()


def backend(cell: tuple[str, str, str], tmp_path: Path, request: pytest.FixtureRequest) -> Backend:
    catalog_kind, data_kind, backup_kind = cell
    data = place(data_kind, tmp_path, "data", request)
    backups = place(backup_kind, tmp_path, "backups", request)
    pg = request.getfixturevalue("pg_database") if catalog_kind == "postgres" else None
    settings = lake_settings(catalog_kind, tmp_path / "lake", pg)
    settings = LakeSettings(
        catalog=settings.catalog, data_path=data.uri(""), s3=data.s3 or backups.s3, attach_options=NO_INLINING
    )
    return Backend(catalog_kind, settings, data, backups)
