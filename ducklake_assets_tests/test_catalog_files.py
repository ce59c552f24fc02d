"""The one resolver of a DuckLake's data-file paths: the path it gives is the file DuckDB reads, and the
parts of the library that decide about files (registration, backups, maintenance) all see the same paths."""

from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from ducklake_assets.core.backup import backup_referenced_files, create_backup
from ducklake_assets.core.catalog import DuckDBCatalog
from ducklake_assets.core.files import catalog_files_sql, lake_data_path, lake_files, resolve_path, scheduled_files
from ducklake_assets.core.lake import LakeSettings, connect_lake, metadata_database
from ducklake_assets.core.maintenance import MaintenancePolicy, retained_copies, run_maintenance
from ducklake_assets.core.registration import registered_paths
from ducklake_assets.core.sql import qualified_name, quote_literal
from ducklake_assets.core.storage import ObjectStore
from ducklake_assets_tests.backup_lakes import KINDS, NO_INLINING, run, settings_for_kind
from ducklake_assets_tests.parquet_files import crew

EVERYTHING_OLD = MaintenancePolicy(expire_older_than=timedelta(0), cleanup_older_than=timedelta(0))


def build_lake(settings: LakeSettings, landing: Path) -> None:
    """DuckLake-written files in ``main.crew`` (with a delete file, replaced once), a file registered by
    absolute path from ``landing``, a table in schema ``flights`` (replaced once), and a table created and
    dropped."""
    registered = crew(landing / "crew-extra.parquet", first=100)
    run(settings, "CREATE TABLE crew (id BIGINT, name VARCHAR)", "INSERT INTO crew SELECT range, 'a' FROM range(10)")
    run(settings, f"CALL ducklake_add_data_files('lake', 'crew', {quote_literal(str(registered))})")
    run(settings, "DELETE FROM crew WHERE id = 3")
    run(settings, "DELETE FROM crew WHERE id = 4")
    run(settings, "CREATE SCHEMA flights", "CREATE TABLE flights.legs AS SELECT range AS leg FROM range(4)")
    run(settings, "CREATE OR REPLACE TABLE flights.legs AS SELECT range AS leg FROM range(5)")
    run(settings, "CREATE TABLE scratch AS SELECT 1 AS x")
    run(settings, "DROP TABLE scratch")


def listed_by_duckdb(connection: duckdb.DuckDBPyConnection, alias: str) -> set[str]:
    """Every data and delete file of the latest snapshot, as DuckLake itself lists them."""
    found: set[str] = set()
    tables = connection.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ?", [alias]
    ).fetchall()
    for schema, table in tables:
        rows = connection.execute(
            "SELECT data_file, delete_file FROM ducklake_list_files(?, ?, schema => ?)", [alias, table, schema]
        ).fetchall()
        found |= {path for row in rows for path in row if path}
    return found


def current_paths(connection: duckdb.DuckDBPyConnection, settings: LakeSettings) -> set[str]:
    return {file.path for file in lake_files(connection, settings) if file.end_snapshot is None}


@pytest.fixture
def lake(tmp_path: Path) -> LakeSettings:
    settings = LakeSettings(
        catalog=DuckDBCatalog(str(tmp_path / "lake.ducklake")),
        data_path=str(tmp_path / "data"),
        attach_options=NO_INLINING,
    )
    build_lake(settings, tmp_path / "landing")
    return settings


def test_the_resolver_names_the_files_duckdb_reads(lake: LakeSettings, tmp_path: Path) -> None:
    with connect_lake(lake) as connection:
        files = current_paths(connection, lake)
        assert files == listed_by_duckdb(connection, lake.alias)
        scheduled = [file.path for file in scheduled_files(connection, lake)]

    data = tmp_path / "data"
    assert str(tmp_path / "landing" / "crew-extra.parquet") in files
    assert {Path(path).parent for path in files} == {
        data / "main" / "crew",
        data / "flights" / "legs",
        tmp_path / "landing",
    }
    assert len([path for path in files if path.endswith("-delete.parquet")]) == 1
    assert all(Path(path).is_file() for path in files)
    assert scheduled, "the replaced delete file waits for cleanup"
    assert all(Path(path).is_file() for path in scheduled)


def test_a_lake_attached_with_another_data_path_resolves_where_it_is_now(lake: LakeSettings, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    (tmp_path / "data").rename(moved)
    elsewhere = LakeSettings(
        catalog=lake.catalog, data_path=str(moved), attach_options={"OVERRIDE_DATA_PATH": True}, read_only=True
    )
    with connect_lake(elsewhere) as connection:
        assert lake_data_path(connection, elsewhere) == f"{moved}/"
        files = current_paths(connection, elsewhere)
        assert files == listed_by_duckdb(connection, elsewhere.alias)
        assert all(Path(path).is_file() for path in files)
        assert all(Path(file.path).is_file() for file in scheduled_files(connection, elsewhere))


def test_python_and_sql_apply_the_same_rule_to_every_file(lake: LakeSettings) -> None:
    """resolve_path over the raw catalog rows equals the SQL listing, history and delete files included."""

    def table(name: str) -> str:
        return qualified_name(metadata_database(lake.alias), name)

    with connect_lake(lake) as connection:
        data_path = lake_data_path(connection, lake)
        raw = connection.execute(
            f"""
            SELECT f.data_file_id, s.path, s.path_is_relative, t.path, t.path_is_relative, f.path, f.path_is_relative
            FROM {table("ducklake_data_file")} f JOIN {table("ducklake_table")} t USING (table_id)
            JOIN {table("ducklake_schema")} s USING (schema_id)
            """
        ).fetchall()
        by_sql = {file.file_id: file.path for file in lake_files(connection, lake, kind="data")}
    by_python = {row[0]: resolve_path(data_path, (row[1], row[2]), (row[3], row[4]), (row[5], row[6])) for row in raw}
    assert by_python == by_sql and len(by_sql) >= 4


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE ducklake_schema SET path = NULL",
        "UPDATE ducklake_table SET path = NULL",
        "UPDATE ducklake_schema SET path = NULL, path_is_relative = false",
        "UPDATE ducklake_table SET path = NULL, path_is_relative = false",
        "UPDATE ducklake_table SET path_is_relative = false, "
        "path = (SELECT value FROM ducklake_metadata WHERE key = 'data_path') || 'main/crew/' "
        "WHERE table_name = 'crew'",
        "UPDATE ducklake_table SET path = 'crew' WHERE table_name = 'crew'",
        "UPDATE ducklake_metadata SET value = rtrim(value, '/') WHERE key = 'data_path'",
    ],
    ids=[
        "no schema path",
        "no table path",
        "absolute schema without path",
        "absolute table without path",
        "absolute table path",
        "table path without slash",
        "data path without slash",
    ],
)
def test_missing_and_unusual_catalog_paths_resolve_as_duckdb_reads_them(lake: LakeSettings, change: str) -> None:
    """Catalogs from older DuckLake versions or other writers: NULL paths add no folder, a relative path is
    appended as written, a data path gets its slash. Whatever DuckDB then reads, the resolver names."""
    with duckdb.connect(lake.catalog.path) as catalog:
        catalog.execute(change)
        copy_listing = catalog.execute(f"SELECT path FROM ({catalog_files_sql('lake')}) WHERE NOT ended").fetchall()
    reader = LakeSettings(catalog=lake.catalog, read_only=True)
    with connect_lake(reader) as connection:
        read_by_duckdb = listed_by_duckdb(connection, reader.alias)
        assert current_paths(connection, reader) == read_by_duckdb
    assert {path for (path,) in copy_listing} == read_by_duckdb


def test_a_missing_flag_counts_as_relative_and_a_missing_path_adds_no_folder() -> None:
    """DuckLake cannot read a row without its flag; the resolver still gives every file one path."""
    assert resolve_path("/lake", ("main/", None), ("t/", None), ("f.parquet", None)) == "/lake/main/t/f.parquet"
    assert resolve_path("/lake/", (None, False), ("t/", True), ("f.parquet", True)) == "/lake/t/f.parquet"
    assert resolve_path("/lake/", ("main/", True), ("t/", True), ("/in/f.parquet", False)) == "/in/f.parquet"


def test_registration_sees_every_file_the_catalog_holds(lake: LakeSettings, tmp_path: Path) -> None:
    registered = str(tmp_path / "landing" / "crew-extra.parquet")
    with connect_lake(lake) as connection:
        every = {file.path for file in lake_files(connection, lake, kind="data")}
        scheduled = scheduled_files(connection, lake)
        assert registered_paths(connection, lake) == every | {file.path for file in scheduled}
        by_name = lake_files(connection, lake, file_names=["crew-extra.parquet"])
        scheduled_by_name = scheduled_files(connection, lake, file_names=[Path(scheduled[0].path).name])
    assert [file.path for file in by_name] == [registered]
    assert scheduled_by_name == scheduled[:1]


@pytest.mark.parametrize("kind", KINDS)
def test_maintenance_keeps_exactly_the_files_a_backup_lists(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    """A metadata backup references the lake's own files; every file maintenance would free is kept when,
    and only when, the backup's file list names it, by the very same path."""
    settings = settings_for_kind(request, kind, tmp_path)
    build_lake(settings, tmp_path / "landing")
    backups = str(tmp_path / "backups")
    create_backup(settings, backups, mode="metadata", store=ObjectStore())
    run(settings, "DELETE FROM crew", "DROP TABLE flights.legs")
    run(settings, "CREATE TABLE later AS SELECT 1 AS x")
    run(settings, "DROP TABLE later")
    needed = set(backup_referenced_files(backups, ObjectStore()))
    retained = retained_copies(backup_uris=[backups])

    report = run_maintenance(settings, policy=EVERYTHING_OLD, retained=retained, dry_run=True)

    inside = [decision for decision in report.files if decision.action != "release"]
    kept = {decision.path for decision in inside if decision.action == "keep"}
    deleted = {decision.path for decision in inside if decision.action == "delete"}
    assert kept == {decision.path for decision in inside} & needed
    assert deleted and not deleted & needed
    assert len(kept) == 2, "the first flights.legs and the dropped scratch files are due, but the backup needs them"

    run_maintenance(settings, policy=EVERYTHING_OLD, retained=retained)
    assert all(Path(path).is_file() for path in needed)
    assert not any(Path(path).exists() for path in deleted)
