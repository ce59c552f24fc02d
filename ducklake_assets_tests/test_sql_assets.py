"""SQL command assets, as a user meets them: commands with bound values, results in the UI, failures named."""

import dagster as dg
import pytest

from ducklake_assets.core.errors import SQLCommandError
from ducklake_assets.core.sql_commands import SQLCommand, display_sql, run_sql_commands
from ducklake_assets.resources import DuckLakeResource
from ducklake_assets.sql_assets import ducklake_sql_asset
from ducklake_assets_tests.dagster_results import materialization, step_failure

HOSTILE_NAME = "O'Brien'); DROP TABLE people; --"


def lake_state(ducklake: DuckLakeResource) -> tuple:
    """Latest snapshot id and every table with its rows: what "nothing changed" compares."""
    with ducklake.get_connection() as connection:
        snapshot = connection.execute("SELECT max(snapshot_id) FROM lake.snapshots()").fetchone()[0]
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake' ORDER BY 1"
            ).fetchall()
        ]
        contents = {table: sorted(connection.execute(f'SELECT * FROM lake."{table}"').fetchall()) for table in tables}
    return snapshot, contents


def test_commands_run_with_bound_values_and_report_each_result(pg_database, postgres_lake):
    people = ducklake_sql_asset(
        "people",
        [
            "CREATE TABLE people (name VARCHAR, city VARCHAR, age INTEGER)",
            SQLCommand("INSERT INTO people VALUES (?, ?, ?)", [HOSTILE_NAME, "Cork", 41]),
            "INSERT INTO people SELECT 'person ' || range, $city, 20 + range % 50 FROM range(25)",
            "UPDATE people SET age = age + 1 WHERE city = $city",
            "SELECT name, age FROM people WHERE age > $min_age ORDER BY age DESC, name",
        ],
        parameters={"city": "Galway", "min_age": 41},
        table="people",
    )

    result = dg.materialize([people], resources={"ducklake": postgres_lake})

    assert result.success
    metadata = materialization(result, "people")
    assert metadata["command_count"] == 5
    commands = metadata["commands"]
    assert "| 1 | `INSERT INTO people VALUES (?, ?, ?)` | INSERT |  | 1 |" in commands
    assert (
        "| 2 | `INSERT INTO people SELECT 'person ' \\|\\| range, $city, 20 + range % 50 FROM range(25)` |" in commands
    )
    assert "| 3 | `UPDATE people SET age = age + 1 WHERE city = $city` | UPDATE |  | 25 |" in commands
    assert (
        "| 4 | `SELECT name, age FROM people WHERE age > $min_age ORDER BY age DESC, name` | SELECT | 4 |" in commands
    )
    assert "**Command 4** (all rows)" in metadata["first_rows"]
    assert "| name | age |\n|---|---|\n| person 24 | 45 |\n| person 23 | 44 |" in metadata["first_rows"]
    assert metadata["dagster/row_count"] == 26
    assert [(c.name, c.type) for c in metadata["dagster/column_schema"].columns] == [
        ("name", "VARCHAR"),
        ("city", "VARCHAR"),
        ("age", "INTEGER"),
    ]
    assert metadata["dagster/table_name"] == "lake.main.people"
    assert metadata["snapshot_count"] == 5, "schema creation plus one snapshot per write command"
    assert metadata["snapshot_id"] == 4
    assert metadata["table_count"] == 1
    assert "| main | people |" in metadata["tables"]
    assert pg_database.password not in str(metadata)
    assert "password=***" in metadata["catalog"]

    value = result.output_for_node("people")
    assert [command["changed_rows"] for command in value["commands"]] == [0, 1, 25, 25, None]
    assert value["commands"][4]["row_count"] == 4
    assert value["commands"][4]["rows"][0] == {"name": "person 24", "age": 45}
    assert value["catalog"]["latest_snapshot"]["snapshot_id"] == 4
    assert [(table["schema"], table["name"]) for table in value["catalog"]["tables"]] == [("main", "people")]
    with postgres_lake.get_connection() as connection:
        assert connection.execute("SELECT age FROM people WHERE name = ?", [HOSTILE_NAME]).fetchall() == [(41,)]


def test_run_config_overrides_a_parameter_and_queries_show_their_first_rows(tmp_path):
    numbers = ducklake_sql_asset(
        "numbers",
        [
            "CREATE OR REPLACE TABLE numbers AS SELECT range AS n FROM range($count)",
            "SELECT n FROM numbers ORDER BY n",
        ],
        parameters={"count": 5},
        max_rows=3,
    )
    ducklake = DuckLakeResource(catalog=str(tmp_path / "catalog.ducklake"), data_path=str(tmp_path / "data"))

    result = dg.materialize(
        [numbers],
        resources={"ducklake": ducklake},
        run_config={"ops": {"numbers": {"config": {"parameters": {"count": 40}}}}},
    )

    metadata = materialization(result, "numbers")
    assert "**Command 1** (first 3 of 40 rows)" in metadata["first_rows"]
    assert "| n |\n|---|\n| 0 |\n| 1 |\n| 2 |" in metadata["first_rows"]
    assert result.output_for_node("numbers")["commands"][0]["changed_rows"] == 40


def test_a_failing_command_fails_the_step_naming_it_and_nothing_after_it_runs(pg_database, postgres_lake):
    with postgres_lake.get_connection() as connection:
        connection.execute("CREATE TABLE orders (id INTEGER, amount DECIMAL(10, 2))")
    orders = ducklake_sql_asset(
        "orders",
        [
            "INSERT INTO orders VALUES (1, 9.50)",
            "INSERT INTO order_lines VALUES (1, 1)",
            "INSERT INTO orders VALUES (2, 20.00)",
        ],
    )

    result = dg.materialize([orders], resources={"ducklake": postgres_lake}, raise_on_error=False)

    assert not result.success
    assert result.asset_materializations_for_node("orders") == [], "no materialization reports success"
    message = step_failure(result)
    assert "SQL command 1 failed" in message
    assert "order_lines does not exist" in message
    assert "Command 1: INSERT INTO order_lines VALUES (1, 1)" in message
    assert "Command 0 was committed before it" in message
    assert pg_database.password not in message
    with postgres_lake.get_connection() as connection:
        assert connection.execute("SELECT id FROM orders").fetchall() == [(1,)], "command 2 never ran"


def test_in_transaction_a_failing_command_leaves_the_lake_as_it_was(postgres_lake):
    with postgres_lake.get_connection() as connection:
        connection.execute("CREATE TABLE orders (id INTEGER, amount DECIMAL(10, 2))")
        connection.execute("INSERT INTO orders VALUES (1, 9.50)")
    before = lake_state(postgres_lake)
    orders = ducklake_sql_asset(
        "orders",
        [
            "DELETE FROM orders",
            "INSERT INTO orders VALUES (2, 20.00)",
            "SELECT 1 / 0 = 'not a number'::INTEGER",
        ],
        in_transaction=True,
    )

    result = dg.materialize([orders], resources={"ducklake": postgres_lake}, raise_on_error=False)

    assert not result.success
    assert result.asset_materializations_for_node("orders") == []
    message = step_failure(result)
    assert "SQL command 2 failed" in message
    assert "Nothing was committed" in message
    assert lake_state(postgres_lake) == before


def test_a_missing_parameter_or_bad_sql_is_named_before_anything_changes(tmp_path):
    ducklake = DuckLakeResource(catalog=str(tmp_path / "catalog.ducklake"), data_path=str(tmp_path / "data"))
    with ducklake.get_connection() as connection:
        connection.execute("CREATE TABLE trips (day DATE)")
    before = lake_state(ducklake)

    with ducklake.get_connection() as connection:
        with pytest.raises(SQLCommandError) as missing:
            run_sql_commands(connection, ["INSERT INTO trips VALUES ($day)"], parameters={"date": "2026-11-21"})
        with pytest.raises(SQLCommandError) as typo:
            run_sql_commands(connection, ["SELECT 1", "INSRT INTO trips VALUES ('2026-11-21')"])
    with pytest.raises(SQLCommandError, match="non-empty list"):
        ducklake_sql_asset("nothing", [])
    with pytest.raises(SQLCommandError, match="SQL command 1 is empty"):
        ducklake_sql_asset("blank", ["SELECT 1", "  "])

    assert "SQL command 0 failed: no value given for parameter(s) $day" in str(missing.value)
    assert 'SQL command 1 failed: Parser Error: syntax error at or near "INSRT"' in str(typo.value)
    assert "Command 1: INSRT INTO trips VALUES ('2026-11-21')" in str(typo.value)
    assert lake_state(ducklake) == before


def test_secrets_in_commands_never_reach_metadata_or_errors(pg_database, postgres_lake):
    key = "key'; DROP--secret"
    quoted = key.replace("'", "''")
    setup = ducklake_sql_asset(
        "setup",
        [
            f"CREATE OR REPLACE TEMPORARY SECRET demo (TYPE postgres, USER 'demo', PASSWORD '{quoted}')",
            f"SELECT '{pg_database.password.replace(chr(39), chr(39) * 2)}' AS leaked FROM missing_table",
        ],
    )

    result = dg.materialize([setup], resources={"ducklake": postgres_lake}, raise_on_error=False)

    message = step_failure(result)
    assert "SQL command 1 failed" in message
    assert "missing_table does not exist" in message
    assert pg_database.password not in message
    assert pg_database.password.replace("'", "''") not in message
    assert "***" in message
    shown = display_sql(f"CREATE SECRET s (TYPE postgres, PASSWORD '{quoted}')")
    assert shown == "CREATE SECRET s (TYPE postgres, PASSWORD '***')"
    logs = " ".join(event.message or "" for event in result.all_events)
    assert key not in logs and quoted not in logs
