"""Registering source Parquet files into a DuckLake: each file once, one snapshot per call, all or nothing."""

import contextlib
import functools
import http.server
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ducklake_assets.core.errors import BadSourceFileError, ConfigurationError, SchemaDriftError
from ducklake_assets.core.lake import LakeSettings, connect_lake
from ducklake_assets.core.registration import RegistrationResult, TableSummary, register_files, table_summaries
from ducklake_assets.core.retry import RetryPolicy
from ducklake_assets.core.s3 import S3Settings
from ducklake_assets.core.sources import FileSource, SourceFile, TableNaming
from ducklake_assets.core.sql import qualified_name, quote_literal
from ducklake_assets.core.storage import Listings, ObjectStore
from ducklake_assets_tests.parquet_files import crew, parquet
from ducklake_assets_tests.services import PostgresDatabase, S3Bucket


@pytest.fixture
def lake(tmp_path: Path) -> LakeSettings:
    return LakeSettings.from_strings(str(tmp_path / "lake" / "catalog.ducklake"), str(tmp_path / "lake" / "data"))


def register(settings: LakeSettings, files: list[SourceFile] | FileSource, **options) -> RegistrationResult:
    """Register ``files``; a source is listed first, and what its S3 listing found is handed over, as the
    snapshot asset does."""
    if isinstance(files, FileSource):
        listings = Listings()
        files = files.list_files(ObjectStore(settings.s3), listings)
        options.setdefault("listings", listings)
    with connect_lake(settings) as connection:
        return register_files(connection, settings, files, **options)


def query(settings: LakeSettings, sql: str, parameters: list | None = None) -> list[tuple]:
    with connect_lake(settings) as connection:
        return connection.execute(sql, parameters or []).fetchall()


def snapshot_count(settings: LakeSettings) -> int:
    return query(settings, "SELECT count(*) FROM lake.snapshots()")[0][0]


def assert_column_answers_as_the_files_do(settings: LakeSettings, source: Path, column: str) -> None:
    """Counts, NULL tests and min/max of ``column`` of the lake's astronauts equal those of the source files."""
    files = f"read_parquet({quote_literal(str(source / '*.parquet'))}, union_by_name => true)"
    for sql in (
        "SELECT count(*), count({column}) FROM {table}",
        "SELECT count(*) FROM {table} WHERE {column} IS NULL",
        "SELECT count(*) FROM {table} WHERE {column} IS NOT NULL",
        "SELECT min({column}), max({column}) FROM {table}",
    ):
        lake_answer = query(settings, sql.format(column=column, table="astronauts"))
        assert lake_answer == query(settings, sql.format(column=column, table=files)), sql


def test_a_folder_becomes_tables_in_one_snapshot_named_after_the_run(tmp_path: Path, lake: LakeSettings) -> None:
    source = tmp_path / "space"
    crew(source / "astronauts.p1.parquet", 0)
    crew(source / "astronauts.p2.parquet", 10)
    parquet(source / "2024" / "missions.p1.parquet", "SELECT 7 AS mission_id, 'Apollo' AS name")
    before = snapshot_count(lake)
    progress: list[tuple[int, int]] = []

    result = register(
        lake,
        FileSource(str(source)),
        author="dagster run 1234",
        message="space/catalog_snapshot (run 1234)",
        extra_info={"dagster_run_id": "1234"},
        progress=lambda done, total: progress.append((done, total)),
    )

    assert snapshot_count(lake) == before + 1
    assert result.created_snapshot and result.tables_created == ("astronauts", "missions")
    assert len(result.files_added) == 3 and result.already_registered == () and result.skipped == ()
    assert [(t.name, t.row_count, t.file_count, t.files_added) for t in result.tables] == [
        ("astronauts", 20, 2, 2),
        ("missions", 1, 1, 1),
    ]
    assert result.tables[0].columns == (("id", "BIGINT"), ("name", "VARCHAR"))
    assert result.row_count == 21
    assert progress[-1] == (3, 3)
    author, message, info = query(
        lake,
        "SELECT author, commit_message, commit_extra_info FROM lake.snapshots() WHERE snapshot_id = ?",
        [result.snapshot_id],
    )[0]
    assert (author, message) == ("dagster run 1234", "space/catalog_snapshot (run 1234)")
    assert '"dagster_run_id": "1234"' in info
    assert query(lake, "SELECT count(*), max(name) FROM astronauts") == [(20, "name 9")]
    # registered by reference: the lake's data folder holds no copy
    assert not any(p.is_file() for p in (tmp_path / "lake" / "data").rglob("*"))


def fresh_summaries(settings: LakeSettings, result: RegistrationResult) -> tuple[TableSummary, ...]:
    """The lake's tables read afresh, after the registration, with the files it added per table."""
    added = {table.name: table.files_added for table in result.tables}
    with connect_lake(settings) as connection:
        return tuple(replace(t, files_added=added.get(t.name, 0)) for t in table_summaries(connection, settings))


def test_the_result_counts_every_table_as_a_fresh_read_does(tmp_path: Path, lake: LakeSettings) -> None:
    source = tmp_path / "space"
    crew(source / "astronauts.p1.parquet", 0)
    register(lake, FileSource(str(source)))
    with connect_lake(lake) as connection:  # the user's own tables: rows inlined in the catalog, a file, deletes
        connection.execute("CREATE TABLE notes AS SELECT range AS i FROM range(3)")
        connection.execute("DELETE FROM notes WHERE i = 0")
        connection.execute("CREATE TABLE logs AS SELECT range AS i FROM range(5000)")
        connection.execute("DELETE FROM logs WHERE i < 100")
    crew(source / "astronauts.p2.parquet", 10, count=7)
    parquet(source / "missions.p1.parquet", "SELECT 7 AS mission_id")

    result = register(lake, FileSource(str(source)))

    assert [(t.name, t.row_count, t.file_count, t.files_added) for t in result.tables] == [
        ("astronauts", 17, 2, 1),
        ("logs", 4900, 1, 0),
        ("missions", 1, 1, 1),
        ("notes", 2, 0, 0),
    ]
    assert result.tables == fresh_summaries(lake, result)


@pytest.mark.parametrize("catalog", ["duckdb", "postgres"])
def test_a_commit_by_another_writer_during_registration_is_in_the_result(
    tmp_path: Path, request: pytest.FixtureRequest, catalog: str
) -> None:
    if catalog == "postgres":
        database: PostgresDatabase = request.getfixturevalue("pg_database")
        lake = LakeSettings.from_strings(f"postgres:{database.dsn()}", str(tmp_path / "data"))
    else:
        lake = LakeSettings.from_strings(str(tmp_path / "catalog.ducklake"), str(tmp_path / "data"))
    source = tmp_path / "space"
    crew(source / "astronauts.p1.parquet", 0)
    register(lake, FileSource(str(source)))
    with connect_lake(lake) as connection:
        connection.execute("CREATE TABLE notes AS SELECT range AS i FROM range(3)")
    crew(source / "astronauts.p2.parquet", 10)

    with connect_lake(lake) as connection:

        def another_writer(done: int, total: int) -> None:  # commits while the registration's transaction is open
            if done == total:
                # A DuckDB-file catalog has one writing process: there, another connection of this one.
                with contextlib.closing(connection.cursor()) if catalog == "duckdb" else connect_lake(lake) as other:
                    other.execute("INSERT INTO lake.notes VALUES (42)")

        files = FileSource(str(source)).list_files(ObjectStore())
        result = register_files(connection, lake, files, progress=another_writer)

    assert [(t.name, t.row_count, t.file_count, t.files_added) for t in result.tables] == [
        ("astronauts", 20, 2, 1),
        ("notes", 4, 0, 0),
    ]
    assert result.tables == fresh_summaries(lake, result)


def test_running_again_adds_nothing_and_makes_no_snapshot(tmp_path: Path, lake: LakeSettings) -> None:
    source = tmp_path / "space"
    crew(source / "astronauts.p1.parquet", 0)
    register(lake, FileSource(str(source)))
    before = snapshot_count(lake)

    again = register(lake, FileSource(str(source)))

    assert again.files_added == () and not again.created_snapshot
    assert again.already_registered == (str(source / "astronauts.p1.parquet"),)
    assert snapshot_count(lake) == before
    assert query(lake, "SELECT count(*) FROM astronauts") == [(10,)]


def test_new_files_land_in_a_new_snapshot_of_their_own(tmp_path: Path, lake: LakeSettings) -> None:
    source = tmp_path / "space"
    for number in range(1, 11):
        crew(source / f"astronauts.{number:03d}.parquet", number * 100)
    register(lake, FileSource(str(source)))
    # new files on both sides of the registered ones: a glob over the folder would catch old files too
    crew(source / "astronauts.000.parquet", 0)
    crew(source / "astronauts.005b.parquet", 5000)
    crew(source / "astronauts.011.parquet", 1100)

    result = register(lake, FileSource(str(source)))

    assert sorted(Path(uri).name for uri in result.files_added) == [
        "astronauts.000.parquet",
        "astronauts.005b.parquet",
        "astronauts.011.parquet",
    ]
    assert len(result.already_registered) == 10
    assert query(lake, "SELECT count(*), count(DISTINCT id) FROM astronauts") == [(130, 130)]
    assert query(lake, "SELECT count(*) FROM ducklake_list_files('lake', 'astronauts')") == [(13,)]


def test_the_same_file_in_any_spelling_is_registered_once(tmp_path: Path, lake: LakeSettings, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    crew(tmp_path / "space" / "astronauts.p1.parquet", 0)
    spellings = [
        "space/astronauts.p1.parquet",
        "./space/astronauts.p1.parquet",
        "space//astronauts.p1.parquet",
        str(tmp_path / "space" / "astronauts.p1.parquet"),
    ]

    first = register(lake, [SourceFile(uri, "astronauts") for uri in spellings])
    assert first.files_added == (str(tmp_path / "space" / "astronauts.p1.parquet"),)
    for spelling in spellings:
        again = register(lake, [SourceFile(spelling, "astronauts")])
        assert again.files_added == ()
    assert query(lake, "SELECT count(*) FROM astronauts") == [(10,)]
    assert query(lake, "SELECT path FROM __ducklake_metadata_lake.ducklake_data_file") == [
        (str(tmp_path / "space" / "astronauts.p1.parquet"),)
    ]


def test_a_small_batch_into_a_large_catalog_still_knows_every_registered_file(
    tmp_path: Path, lake: LakeSettings, monkeypatch
) -> None:
    """A batch much smaller than the catalog compares only catalog files of the same names (partition
    runs into a big lake): a registered file in another spelling is still recognised."""
    monkeypatch.chdir(tmp_path)
    for number in range(12):
        crew(tmp_path / "space" / f"astronauts.p{number}.parquet", number * 10)
    register(lake, FileSource(str(tmp_path / "space")))
    crew(tmp_path / "space" / "astronauts.new.parquet", 500)

    again = register(
        lake,
        [
            SourceFile("./space//astronauts.p3.parquet", "astronauts"),
            SourceFile("space/astronauts.new.parquet", "astronauts"),
        ],
    )

    assert again.files_added == (str(tmp_path / "space" / "astronauts.new.parquet"),)
    assert again.already_registered == (str(tmp_path / "space" / "astronauts.p3.parquet"),)
    assert query(lake, "SELECT count(*), sum(id) FROM astronauts") == [(130, sum(range(120)) + sum(range(500, 510)))]


def test_a_file_registered_in_an_older_snapshot_is_not_added_again(tmp_path: Path, lake: LakeSettings) -> None:
    source = tmp_path / "space"
    crew(source / "astronauts.p1.parquet", 0)
    register(lake, FileSource(str(source)))
    with connect_lake(lake) as connection:
        connection.execute("DELETE FROM astronauts")
    assert query(lake, "SELECT count(*) FROM astronauts") == [(0,)]

    again = register(lake, FileSource(str(source)))

    assert again.files_added == () and len(again.already_registered) == 1
    assert query(lake, "SELECT count(*) FROM astronauts") == [(0,)]


def test_files_inside_the_data_path_are_recognised(tmp_path: Path, lake: LakeSettings) -> None:
    register(lake, [SourceFile(str(crew(tmp_path / "seed" / "t.p0.parquet", 0)), "t")])
    table_folder = Path(query(lake, "SELECT data_path FROM ducklake_settings('lake')")[0][0]) / "main" / "t"
    inside = crew(table_folder / "t.p1.parquet", 10)

    register(lake, [SourceFile(str(inside), "t")])
    stored = query(lake, "SELECT path, path_is_relative FROM __ducklake_metadata_lake.ducklake_data_file ORDER BY 1")
    assert ("t.p1.parquet", True) in stored
    again = register(lake, [SourceFile(str(inside), "t")])

    assert again.files_added == () and again.already_registered == (str(inside),)
    assert query(lake, "SELECT count(*) FROM t") == [(20,)]


def test_extra_columns_fail_by_default_naming_the_file_and_column(tmp_path: Path, lake: LakeSettings) -> None:
    source = tmp_path / "space"
    crew(source / "astronauts.p1.parquet", 0)
    register(lake, FileSource(str(source)))
    drifted = parquet(source / "astronauts.p2.parquet", "SELECT 99 AS id, 'x' AS name, 1.5 AS height")
    crew(source / "astronauts.p3.parquet", 50)
    before = snapshot_count(lake)

    with pytest.raises(SchemaDriftError) as raised:
        register(lake, FileSource(str(source)))

    assert str(drifted) in str(raised.value) and '"height"' in str(raised.value)
    assert "nothing was registered" in str(raised.value)
    assert snapshot_count(lake) == before
    assert query(lake, "SELECT count(*) FROM astronauts") == [(10,)]


def test_ignore_extra_columns_registers_the_table_columns_only(tmp_path: Path, lake: LakeSettings) -> None:
    source = tmp_path / "space"
    crew(source / "astronauts.p1.parquet", 0)
    parquet(source / "astronauts.p2.parquet", "SELECT 99 AS id, 'x' AS name, 1.5 AS height")

    result = register(lake, FileSource(str(source)), schema_drift="ignore_extra_columns")

    assert len(result.files_added) == 2
    assert result.tables[0].columns == (("id", "BIGINT"), ("name", "VARCHAR"))
    assert query(lake, "SELECT count(*), max(id) FROM astronauts") == [(11, 99)]


def test_evolve_adds_new_columns_and_older_files_read_them_as_null(tmp_path: Path, lake: LakeSettings) -> None:
    source = tmp_path / "space"
    crew(source / "astronauts.p1.parquet", 0)
    register(lake, FileSource(str(source)))
    # one older-shaped file and one newer-shaped file arrive in the same batch
    crew(source / "astronauts.p2.parquet", 10)
    parquet(
        source / "astronauts.p3.parquet",
        "SELECT 100 + range AS id, 'n' AS name, CASE WHEN range = 0 THEN NULL ELSE 1.5 END AS height FROM range(4)",
    )

    result = register(lake, FileSource(str(source)), schema_drift="evolve")

    assert result.columns_added == ("astronauts.height",)
    assert len(result.files_added) == 2
    assert_column_answers_as_the_files_do(lake, source, "height")
    assert query(lake, "SELECT count(*), count(height) FROM astronauts") == [(24, 3)]


def test_evolve_types_a_new_nested_column_but_never_runs_a_hostile_field_name(
    tmp_path: Path, lake: LakeSettings
) -> None:
    source = tmp_path / "space"
    crew(source / "astronauts.p1.parquet", 0)
    register(lake, FileSource(str(source)))
    parquet(source / "astronauts.p2.parquet", "SELECT 20 AS id, 'x' AS name, {'suit': 'A7L', 'sizes': [1, 2]} AS kit")
    register(lake, FileSource(str(source)), schema_drift="evolve")
    assert query(lake, "SELECT kit.suit FROM astronauts WHERE id = 20") == [("A7L",)]

    hostile = parquet(
        source / "astronauts.p3.parquet",
        """SELECT 30 AS id, 'y' AS name, {'suit': 'B', 'sizes': [3]} AS kit,
                  {'x INTEGER); DROP TABLE astronauts; --': 1} AS payload""",
    )
    before = snapshot_count(lake)
    with pytest.raises(SchemaDriftError) as raised:
        register(lake, FileSource(str(source)), schema_drift="evolve")

    assert str(hostile) in str(raised.value) and "need quoting" in str(raised.value)
    assert snapshot_count(lake) == before
    assert query(lake, "SELECT count(*) FROM astronauts") == [(11,)]
    assert [row[0] for row in query(lake, "DESCRIBE astronauts")] == ["id", "name", "kit"]


def test_a_file_missing_a_column_fails_unless_evolving(tmp_path: Path, lake: LakeSettings) -> None:
    source = tmp_path / "space"
    crew(source / "astronauts.p1.parquet", 0)
    register(lake, FileSource(str(source)))
    missing = parquet(source / "astronauts.p2.parquet", "SELECT 99 AS id")

    for policy in ("fail", "ignore_extra_columns"):
        with pytest.raises(SchemaDriftError, match=rf"{missing} lacks columns \"name\" of table astronauts"):
            register(lake, FileSource(str(source)), schema_drift=policy)
    assert query(lake, "SELECT count(*) FROM astronauts") == [(10,)]


def test_a_missing_column_is_refused_where_ducklake_would_answer_wrong(tmp_path: Path, lake: LakeSettings) -> None:
    """DuckLake's allow_missing reads the absent column as NULL, but answers count(name) and
    'name IS NULL' from table statistics that say name holds no NULLs. Such files are refused."""
    source = tmp_path / "space"
    crew(source / "astronauts.p1.parquet", 0)
    register(lake, FileSource(str(source)))
    missing = parquet(source / "astronauts.p2.parquet", "SELECT 99 AS id")
    before = snapshot_count(lake)

    with pytest.raises(SchemaDriftError) as raised:
        register(lake, FileSource(str(source)), schema_drift="evolve")

    assert str(missing) in str(raised.value)
    assert "count(column) and 'column IS NULL' wrong" in str(raised.value)
    assert snapshot_count(lake) == before
    assert query(lake, "SELECT count(*), count(name) FROM astronauts") == [(10, 10)]


def test_a_missing_column_is_accepted_where_queries_stay_right(tmp_path: Path, lake: LakeSettings) -> None:
    source = tmp_path / "space"
    parquet(
        source / "astronauts.p1.parquet",
        "SELECT range AS id, CASE WHEN range % 2 = 0 THEN NULL ELSE 'n' END AS name FROM range(10)",
    )
    register(lake, FileSource(str(source)))
    parquet(source / "astronauts.p2.parquet", "SELECT 100 + range AS id FROM range(5)")

    result = register(lake, FileSource(str(source)), schema_drift="evolve")

    assert len(result.files_added) == 1
    assert_column_answers_as_the_files_do(lake, source, "name")
    assert query(lake, "SELECT count(*), count(name) FROM astronauts") == [(15, 5)]


def test_a_new_table_whose_files_differ_is_refused_even_when_evolving(tmp_path: Path, lake: LakeSettings) -> None:
    source = tmp_path / "space"
    older = crew(source / "astronauts.p1.parquet", 0)
    parquet(source / "astronauts.p2.parquet", "SELECT 99 AS id, 'x' AS name, 1.5 AS height")
    before = snapshot_count(lake)

    with pytest.raises(SchemaDriftError) as raised:
        register(lake, FileSource(str(source)), schema_drift="evolve")

    assert f'{older} lacks columns "height" of table astronauts, which this registration would create' in str(
        raised.value
    )
    assert "Register the files with the fewest columns first" in str(raised.value)
    assert snapshot_count(lake) == before
    assert query(lake, "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake'") == [(0,)]

    register(lake, FileSource(str(source), pattern="*.p1.parquet"))
    register(lake, FileSource(str(source)), schema_drift="evolve")
    assert query(lake, "SELECT count(*), count(height) FROM astronauts") == [(11, 1)]


def test_a_column_of_another_type_fails_naming_the_file(tmp_path: Path, lake: LakeSettings) -> None:
    source = tmp_path / "space"
    crew(source / "astronauts.p1.parquet", 0)
    register(lake, FileSource(str(source)))
    wrong = parquet(source / "astronauts.p2.parquet", "SELECT 'ninety-nine' AS id, 'x' AS name")
    before = snapshot_count(lake)

    with pytest.raises(SchemaDriftError) as raised:
        register(lake, FileSource(str(source)))

    assert str(wrong) in str(raised.value) and '"id"' in str(raised.value)
    assert "table astronauts failed, so nothing was registered" in str(raised.value)
    assert snapshot_count(lake) == before


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    """A folder with good files and every kind of bad one; the gone file is listed, then deleted."""
    source = tmp_path / "space"
    good = crew(source / "astronauts.p1.parquet", 0)
    crew(source / "missions.p1.parquet", 0)
    not_parquet = source / "astronauts.p2.parquet"
    not_parquet.write_text("id,name\n1,x\n")
    empty = source / "astronauts.p3.parquet"
    empty.write_bytes(b"")
    corrupt = source / "astronauts.p4.parquet"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    gone = crew(source / "astronauts.p5.parquet", 50)
    return {"not_parquet": not_parquet, "empty": empty, "corrupt": corrupt, "gone": gone}


def test_bad_files_fail_the_run_naming_each_file(tmp_path: Path, lake: LakeSettings, bad_files) -> None:
    listed = FileSource(str(tmp_path / "space")).list_files(ObjectStore())
    bad_files["gone"].unlink()
    before = snapshot_count(lake)

    with pytest.raises(BadSourceFileError) as raised:
        register(lake, listed)

    message = str(raised.value)
    assert "4 source file(s) cannot be registered, so nothing was registered" in message
    for path in bad_files.values():
        assert str(path) in message
    assert "No files found" in message and "bad_files='skip'" in message
    assert snapshot_count(lake) == before
    assert query(lake, "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake'") == [(0,)]


def test_bad_files_can_be_skipped_and_are_listed(tmp_path: Path, lake: LakeSettings, bad_files) -> None:
    listed = FileSource(str(tmp_path / "space")).list_files(ObjectStore())
    bad_files["gone"].unlink()

    result = register(lake, listed, bad_files="skip")

    assert sorted(item.uri for item in result.skipped) == sorted(str(path) for path in bad_files.values())
    assert all(item.reason for item in result.skipped)
    assert [(t.name, t.row_count) for t in result.tables] == [("astronauts", 10), ("missions", 10)]
    # once fixed, a skipped file is registered by the next run
    crew(bad_files["empty"], 100)
    again = register(lake, FileSource(str(tmp_path / "space")), bad_files="skip")
    assert again.files_added == (str(bad_files["empty"]),)


def test_hostile_file_names_are_quoted_never_run(tmp_path: Path, lake: LakeSettings) -> None:
    source = tmp_path / "space"
    with connect_lake(lake) as connection:
        connection.execute("CREATE TABLE y AS SELECT 1 AS survivor")
    names = ['x"; DROP TABLE y; --', "with space", "名前", "select", "it's", "semi;colon"]
    for name in names:
        crew(source / f"{name}.p1.parquet", 0)

    result = register(lake, FileSource(str(source), naming=TableNaming(schema='we"ird schema')))

    assert sorted(result.tables_created) == sorted(f'we"ird schema.{name}' for name in names)
    assert {t.display_name: (t.row_count, t.columns) for t in result.tables if t.name != "y"} == {
        f'we"ird schema.{name}': (10, (("id", "BIGINT"), ("name", "VARCHAR"))) for name in names
    }
    for name in names:
        table = qualified_name("lake", 'we"ird schema', name)
        assert query(lake, f"SELECT count(*) FROM {table}") == [(10,)]
    assert query(lake, "SELECT survivor FROM y") == [(1,)]


def test_paths_duckdb_would_expand_as_globs_are_rejected(tmp_path: Path, lake: LakeSettings) -> None:
    source = tmp_path / "space"
    crew(source / "astronauts1.parquet", 0)
    bracket = crew(source / "astronauts[1].parquet", 100)

    with pytest.raises(BadSourceFileError, match=r"astronauts\[1\]\.parquet: its path contains \*, \? or \["):
        register(lake, FileSource(str(source)))

    result = register(lake, FileSource(str(source)), bad_files="skip")
    assert [item.uri for item in result.skipped] == [str(bracket)]
    assert query(lake, "SELECT min(id) FROM astronauts1") == [(0,)]


def test_an_s3_prefix_is_registered_by_reference(s3_bucket: S3Bucket, s3_settings: S3Settings, tmp_path: Path) -> None:
    client = s3_bucket.client()
    for number in range(3):
        client.upload_file(
            str(crew(tmp_path / f"c{number}.parquet", number * 10)),
            s3_bucket.name,
            f"space/astronauts.p{number}.parquet",
        )
    client.upload_file(
        str(parquet(tmp_path / "m.parquet", "SELECT 1 AS mission_id")), s3_bucket.name, "space/2024/missions.p1.parquet"
    )
    hostile = "space/it's; DROP TABLE x; -- 名前.p1.parquet"
    client.upload_file(str(crew(tmp_path / "h.parquet", 0)), s3_bucket.name, hostile)
    lake = LakeSettings.from_strings(str(tmp_path / "lake.ducklake"), str(tmp_path / "data"), s3=s3_settings)

    result = register(lake, FileSource(s3_bucket.uri("space")))

    assert [(t.name, t.row_count, t.file_count) for t in result.tables] == [
        ("astronauts", 30, 3),
        ("it's; DROP TABLE x; -- 名前", 10, 1),
        ("missions", 1, 1),
    ]
    assert s3_bucket.uri("space/astronauts.p0.parquet") in result.files_added
    assert s3_bucket.uri(hostile) in result.files_added
    again = register(lake, FileSource(f"s3a://{s3_bucket.name}/space/"))
    assert again.files_added == () and len(again.already_registered) == 5
    assert query(lake, "SELECT sum(id) FROM astronauts") == [(sum(range(30)),)]


def upload_crew(bucket: S3Bucket, tmp_path: Path, number: int) -> None:
    """``src/crew.<number>.parquet``: ten crew members with ids from ``number * 10``."""
    local = crew(tmp_path / f"c{number}.parquet", number * 10)
    bucket.client().upload_file(str(local), bucket.name, f"src/crew.{number}.parquet")


def listed_crew(
    bucket: S3Bucket, s3_settings: S3Settings, tmp_path: Path, count: int
) -> tuple[LakeSettings, list[SourceFile], Listings]:
    """A lake, and ``count`` crew files under ``src/`` listed as the snapshot asset lists them."""
    for number in range(count):
        upload_crew(bucket, tmp_path, number)
    lake = LakeSettings.from_strings(str(tmp_path / "lake.ducklake"), str(tmp_path / "data"), s3=s3_settings)
    listings = Listings()
    return lake, FileSource(bucket.uri("src")).list_files(ObjectStore(s3_settings), listings), listings


def crew_ids(*numbers: int) -> list[tuple[int]]:
    return [(sum(sum(range(number * 10, number * 10 + 10)) for number in numbers),)]


def test_an_s3_prefix_is_listed_once_not_again_to_check_the_globs(
    s3_bucket: S3Bucket, s3_settings: S3Settings, tmp_path: Path
) -> None:
    lake, files, listings = listed_crew(s3_bucket, s3_settings, tmp_path, 6)

    with connect_lake(lake) as connection:
        connection.execute("CALL enable_logging('HTTP')")
        result = register_files(connection, lake, files, listings=listings)
        urls = [url for (url,) in connection.execute("SELECT request.url FROM duckdb_logs_parsed('HTTP')").fetchall()]

    assert len(result.files_added) == 6
    assert query(lake, "SELECT sum(id) FROM crew") == crew_ids(*range(6))
    lists = [url for url in urls if "list-type=2" in url]
    # DuckDB lists only what the CALL's own glob names (src/crew.*), never the whole source again.
    assert lists and not [url for url in lists if url.endswith("prefix=src%2F")]


def test_files_stored_after_the_listing_are_never_registered_twice(
    s3_bucket: S3Bucket, s3_settings: S3Settings, tmp_path: Path
) -> None:
    lake, files, listings = listed_crew(s3_bucket, s3_settings, tmp_path, 4)
    upload_crew(s3_bucket, tmp_path, 7)  # stored after the listing, and registered by another writer first
    register(lake, [SourceFile(s3_bucket.uri("src/crew.7.parquet"), "crew")])
    upload_crew(s3_bucket, tmp_path, 8)  # stored after the listing, registered by nobody

    with connect_lake(lake) as connection:
        result = register_files(connection, lake, files, listings=listings)

    assert s3_bucket.uri("src/crew.7.parquet") not in result.files_added
    assert set(result.files_added) >= {s3_bucket.uri(f"src/crew.{number}.parquet") for number in range(4)}
    paths = query(lake, "SELECT data_file FROM ducklake_list_files('lake', 'crew')")
    assert sorted(path for (path,) in paths).count(s3_bucket.uri("src/crew.7.parquet")) == 1
    stored = [0, 1, 2, 3, 7] + ([8] if s3_bucket.uri("src/crew.8.parquet") in result.files_added else [])
    assert query(lake, "SELECT sum(id) FROM crew") == crew_ids(*stored)


def test_a_file_stored_or_deleted_after_the_listing_leaves_the_run_correct_and_reported(
    s3_bucket: S3Bucket, s3_settings: S3Settings, tmp_path: Path
) -> None:
    lake, files, listings = listed_crew(s3_bucket, s3_settings, tmp_path, 4)
    client = s3_bucket.client()
    client.delete_object(Bucket=s3_bucket.name, Key="src/crew.3.parquet")
    client.put_object(Bucket=s3_bucket.name, Key="src/crew.9.parquet", Body=b"stored after the listing, not Parquet")

    with connect_lake(lake) as connection:
        result = register_files(connection, lake, files, listings=listings, bad_files="skip")

    assert sorted(result.files_added) == [s3_bucket.uri(f"src/crew.{number}.parquet") for number in range(3)]
    assert s3_bucket.uri("src/crew.3.parquet") in [file.uri for file in result.skipped]
    assert query(lake, "SELECT sum(id) FROM crew") == crew_ids(0, 1, 2)


def test_a_file_deleted_after_the_listing_is_reported_as_skipped(
    s3_bucket: S3Bucket, s3_settings: S3Settings, tmp_path: Path
) -> None:
    lake, files, listings = listed_crew(s3_bucket, s3_settings, tmp_path, 3)
    s3_bucket.client().delete_object(Bucket=s3_bucket.name, Key="src/crew.2.parquet")

    with connect_lake(lake) as connection:
        result = register_files(connection, lake, files, listings=listings)

    assert sorted(result.files_added) == [s3_bucket.uri("src/crew.0.parquet"), s3_bucket.uri("src/crew.1.parquet")]
    [gone] = result.skipped
    assert gone.uri == s3_bucket.uri("src/crew.2.parquet") and "deleted after the listing" in gone.reason
    assert query(lake, "SELECT sum(id) FROM crew") == crew_ids(0, 1)


@pytest.fixture
def web_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1, as a web host serves published Parquet files."""
    folder = tmp_path / "web"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass


def test_a_manifest_mixes_local_s3_and_web_files(
    tmp_path: Path, s3_bucket: S3Bucket, s3_settings: S3Settings, web_folder: tuple[Path, str]
) -> None:
    folder, base_url = web_folder
    local = crew(tmp_path / "space" / "astronauts.p1.parquet", 0)
    s3_bucket.client().upload_file(str(crew(tmp_path / "up.parquet", 10)), s3_bucket.name, "astronauts.p2.parquet")
    crew(folder / "astronauts.p3.parquet", 20)
    manifest = tmp_path / "space" / "files.csv"
    manifest.write_text(
        "full_path\n"
        "astronauts.p1.parquet\n"
        f"s3a://{s3_bucket.name}/astronauts.p2.parquet\n"
        f"{base_url}/astronauts.p3.parquet\n"
        f"{local}\n"
    )
    lake = LakeSettings.from_strings(str(tmp_path / "lake.ducklake"), str(tmp_path / "data"), s3=s3_settings)

    result = register(lake, FileSource(str(manifest)))

    assert sorted(result.files_added) == sorted(
        [str(local), s3_bucket.uri("astronauts.p2.parquet"), f"{base_url}/astronauts.p3.parquet"]
    )
    assert query(lake, "SELECT count(*), count(DISTINCT id) FROM astronauts") == [(30, 30)]
    assert register(lake, FileSource(str(manifest))).files_added == ()


def test_unreadable_manifest_entries_are_named(tmp_path: Path, web_folder: tuple[Path, str]) -> None:
    _, base_url = web_folder
    good = crew(tmp_path / "space" / "astronauts.p1.parquet", 0)
    (tmp_path / "space" / "astronauts.p2.parquet").mkdir()
    manifest = tmp_path / "space" / "files.csv"
    manifest.write_text(
        f"full_path\n{good}\nastronauts.p2.parquet\nastronauts.p3.parquet\n{base_url}/astronauts.p4.parquet\n"
    )
    lake = LakeSettings.from_strings(str(tmp_path / "lake.ducklake"), str(tmp_path / "data"))
    unreadable = [
        str(tmp_path / "space" / "astronauts.p2.parquet"),
        str(tmp_path / "space" / "astronauts.p3.parquet"),
        f"{base_url}/astronauts.p4.parquet",
    ]

    with pytest.raises(BadSourceFileError) as raised:
        register(lake, FileSource(str(manifest)))
    assert all(uri in str(raised.value) for uri in unreadable)
    assert "404" in str(raised.value)

    result = register(lake, FileSource(str(manifest)), bad_files="skip")
    assert sorted(item.uri for item in result.skipped) == sorted(unreadable)
    assert result.files_added == (str(good),)


def test_a_postgres_catalog_registers_once(pg_database: PostgresDatabase, tmp_path: Path) -> None:
    source = tmp_path / "space"
    crew(source / "astronauts.p1.parquet", 0)
    crew(source / "astronauts.p2.parquet", 10)
    lake = LakeSettings.from_strings(f"postgres:{pg_database.dsn()}", str(tmp_path / "data"))

    first = register(lake, FileSource(str(source)))
    crew(source / "astronauts.p3.parquet", 20)
    second = register(lake, FileSource(str(source)))

    assert len(first.files_added) == 2 and second.files_added == (str(source / "astronauts.p3.parquet"),)
    assert query(lake, "SELECT count(*) FROM astronauts") == [(30,)]
    assert pg_database.password not in repr(second)


def test_a_sqlite_catalog_registers_once(tmp_path: Path) -> None:
    source = tmp_path / "space"
    crew(source / "astronauts.p1.parquet", 0)
    lake = LakeSettings.from_strings(f"sqlite:{tmp_path / 'catalog.sqlite'}", str(tmp_path / "data"))

    register(lake, FileSource(str(source)))
    crew(source / "astronauts.p2.parquet", 10)
    second = register(lake, FileSource(str(source)))
    third = register(lake, FileSource(str(source)))

    assert second.files_added == (str(source / "astronauts.p2.parquet"),) and third.files_added == ()
    assert query(lake, "SELECT count(*) FROM astronauts") == [(20,)]


def test_concurrent_registrations_into_postgres_add_each_file_once(
    pg_database: PostgresDatabase, tmp_path: Path
) -> None:
    source = tmp_path / "space"
    lake = LakeSettings.from_strings(f"postgres:{pg_database.dsn()}", str(tmp_path / "data"))
    crew(source / "astronauts.p0.parquet", 0)
    register(lake, FileSource(str(source)))
    for number in range(1, 7):
        crew(source / f"astronauts.p{number}.parquet", number * 10)
    start = threading.Barrier(3)
    results: list[RegistrationResult] = []

    def run() -> None:
        with connect_lake(lake) as connection:
            start.wait()
            files = FileSource(str(source)).list_files(ObjectStore())
            results.append(register_files(connection, lake, files, retry=RetryPolicy(max_attempts=20)))

    writers = [threading.Thread(target=run) for _ in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    assert len(results) == 3
    assert sorted(uri for result in results for uri in result.files_added) == sorted(
        str(source / f"astronauts.p{number}.parquet") for number in range(1, 7)
    )
    assert query(lake, "SELECT count(*), count(DISTINCT id) FROM astronauts") == [(70, 70)]


def test_unknown_policies_are_refused(lake: LakeSettings) -> None:
    with pytest.raises(ConfigurationError, match="schema_drift must be one of fail, ignore_extra_columns, evolve"):
        register(lake, [], schema_drift="merge")
    with pytest.raises(ConfigurationError, match="bad_files must be one of fail, skip"):
        register(lake, [], bad_files="ignore")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_partitioned_layout_registers_each_file_once_in_one_snapshot_per_run(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``src/day=N/<table>.K.parquet``: one glob across the day folders per table, each file exactly once,
    and a later run adds only the new days' files (no file twice, no hidden file)."""
    local = tmp_path / "src"
    for day in range(6):
        crew(local / f"day={day:05d}" / f"astronauts.{day}.parquet", day * 10)
        parquet(local / f"day={day:05d}" / f"missions.{day}.parquet", f"SELECT {day}::BIGINT AS mission_id")
    crew(local / "day=00002" / ".astronauts.tmp.parquet", 1000)
    if where == "s3":
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        s3: S3Settings = request.getfixturevalue("s3_settings")
        store = ObjectStore(s3)
        for path in sorted(local.rglob("*.parquet")):
            store.put_file(path, bucket.uri(f"src/{path.relative_to(local)}"))
        settings = LakeSettings.from_strings(str(tmp_path / "lake.ducklake"), str(tmp_path / "data"), s3=s3)
        source = FileSource(bucket.uri("src"))
    else:
        settings = LakeSettings.from_strings(str(tmp_path / "lake.ducklake"), str(tmp_path / "data"))
        source = FileSource(str(local))

    first = register(settings, source)
    crew(local / "day=00006" / "astronauts.6.parquet", 60)
    if where == "s3":
        store.put_file(local / "day=00006" / "astronauts.6.parquet", bucket.uri("src/day=00006/astronauts.6.parquet"))
    before = snapshot_count(settings)
    second = register(settings, source)

    assert len(first.files_added) == 12 and len(second.files_added) == 1
    assert snapshot_count(settings) == before + 1
    assert query(settings, "SELECT count(*), sum(id) FROM astronauts") == [(70, sum(range(70)))]
    assert query(settings, "SELECT sum(mission_id) FROM missions") == [(sum(range(6)),)]
    paths = query(settings, "SELECT data_file FROM ducklake_list_files('lake', 'astronauts')")
    assert len(paths) == len({path for (path,) in paths}) == 7


def test_many_paths_no_glob_fits_cost_no_pandas_import_per_file(tmp_path: Path) -> None:
    """Where pandas is not installed, a Python list bound as a DuckDB parameter makes DuckDB try to import
    it twice per element. Registration hands DuckDB its path lists as one value, so the attempts (a few
    per statement) do not grow with the files: 30 and 120 files, on the straight path and on the one that
    reads every footer to find a bad file."""

    def attempts(files: int) -> int:
        root = tmp_path / str(files)
        for number in range(files):
            crew(root / "src" / "astronauts" / f"{'abcdefghij'[number % 10]}{number}.parquet", number * 10)
        (root / "src" / "astronauts" / "zz-broken.parquet").write_bytes(b"not parquet")
        script = textwrap.dedent(
            f"""
            import builtins, sys
            sys.modules["pandas"] = None  # as where the pandas extra is not installed
            from ducklake_assets.core.lake import LakeSettings, connect_lake
            from ducklake_assets.core.registration import register_files
            from ducklake_assets.core.sources import FileSource, TableNaming
            from ducklake_assets.core.storage import Listings, ObjectStore

            attempts = []
            real_import = builtins.__import__
            def counting(name, *args, **kwargs):
                if name == "pandas":
                    attempts.append(name)
                return real_import(name, *args, **kwargs)

            lake = LakeSettings.from_strings({str(root / "lake.ducklake")!r}, {str(root / "data")!r})
            files = FileSource({str(root / "src")!r}, naming=TableNaming("parent_folder")).list_files(ObjectStore())
            with connect_lake(lake) as connection:
                builtins.__import__ = counting
                result = register_files(connection, lake, files, bad_files="skip")
                builtins.__import__ = real_import
                total = connection.execute("SELECT sum(id) FROM astronauts").fetchone()[0]
            print(len(result.files_added), len(result.skipped), total, len(attempts))
            """
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        added, skipped, total, count = (int(value) for value in done.stdout.split())
        assert (added, skipped, total) == (files, 1, sum(range(files * 10)))
        return count

    few, many = attempts(30), attempts(120)
    assert many - few <= 8, f"{few} pandas import attempts for 30 files, {many} for 120"
