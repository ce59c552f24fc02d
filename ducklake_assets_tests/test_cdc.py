"""Change data capture from a real PostgreSQL database into DuckLake.

A shop database has customers and orders. Triggers capture every change, mini-batches move them into the
lake, and the mirrors in the lake must equal the source tables exactly after every batch, also when a
transfer dies between its steps.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from ducklake_assets.cdc_assets import build_cdc_definitions
from ducklake_assets.core.catalog import PostgresCatalog
from ducklake_assets.core.cdc import (
    CaptureSettings,
    MirrorResult,
    TransferResult,
    apply_to_mirrors,
    pending_changes,
    setup_capture,
    teardown_capture,
    transfer_batch,
)
from ducklake_assets.core.errors import CDCError
from ducklake_assets.core.lake import LakeSettings, connect_lake, new_connection
from ducklake_assets.resources import DuckLakeResource

SHOP_TABLES = """
CREATE TABLE customers (
    id integer PRIMARY KEY, name text NOT NULL, balance numeric(12, 2), joined_at timestamptz,
    vip boolean, tags text[], profile jsonb, avatar bytea, birthday date
);
CREATE TABLE orders (
    customer_id integer, order_no integer, amount numeric(10, 2), note text, "gift ""wrap""/~" boolean,
    PRIMARY KEY (customer_id, order_no)
);
CREATE TABLE ignored_log (id integer PRIMARY KEY, message text);
INSERT INTO customers VALUES
    (1, 'Ada', 100.50, '2026-01-01 09:00+00', true, '{early,vip}', '{"tier": "gold", "tags": [1, 2]}',
     '\\x01ff', '1990-01-01'),
    (2, 'Bo', 0, '2026-01-02 10:30+01', false, '{}', '"just text"', '\\x', NULL);
"""

ROUNDS = [
    [
        "INSERT INTO customers VALUES (3, 'Carla', 10, '2026-02-01 08:00+00', false, '{new}', "
        "'{\"tier\": \"bronze\"}', '\\x00', '1985-05-05'), (4, 'Dmitri', 7.25, NULL, NULL, NULL, NULL, NULL, NULL)",
        "INSERT INTO orders VALUES (1, 1, 9.99, 'first', true), (1, 2, 19.99, NULL, NULL), (3, 1, 5, 'a | b', false)",
        "INSERT INTO ignored_log VALUES (1, 'not captured')",
    ],
    [
        "UPDATE customers SET balance = balance + 5, tags = array_append(tags, 'paid') WHERE id IN (1, 3)",
        "UPDATE customers SET profile = NULL, avatar = NULL WHERE id = 2",
        "DELETE FROM customers WHERE id = 4",
        "UPDATE orders SET order_no = 3 WHERE customer_id = 1 AND order_no = 2",
        "DELETE FROM orders WHERE customer_id = 3",
    ],
    [
        "INSERT INTO customers (id, name) VALUES (5, 'Eve')",
        "UPDATE customers SET name = 'Eve B' WHERE id = 5",
        "DELETE FROM customers WHERE id = 5",
        "INSERT INTO customers (id, name, vip) VALUES (5, 'Eve C', true)",
        "UPDATE customers SET vip = NOT coalesce(vip, false)",
        "TRUNCATE orders",
        "INSERT INTO orders VALUES (2, 1, 1, 'after the truncate', true)",
    ],
]

CRASH_SCRIPT = """
import os, sys
from ducklake_assets.core.catalog import PostgresCatalog
from ducklake_assets.core.cdc import CaptureSettings, transfer_batch
from ducklake_assets.core.lake import LakeSettings, connect_lake, new_connection

step, catalog, data_path = sys.argv[1:]
settings = CaptureSettings(source=PostgresCatalog.from_dsn(os.environ["CDC_SOURCE_DSN"]), tables=("customers", "ord*"))


def crash(at, batch_id):
    if at == step:
        os._exit(17)


with connect_lake(LakeSettings.from_strings(catalog, data_path)) as connection:
    transfer_batch(settings, connection, checkpoint=crash)
"""


class SimulatedCrash(Exception):
    """Raised by a checkpoint to stop a transfer between two of its steps."""


@pytest.fixture
def shop(pg_database) -> psycopg.Connection:
    """The source database with its tables and two customers, one long-lived session writing to it."""
    with psycopg.connect(pg_database.dsn(), autocommit=True) as connection:
        connection.execute(SHOP_TABLES)
        yield connection


@pytest.fixture
def settings(pg_database, shop) -> CaptureSettings:
    return CaptureSettings(source=PostgresCatalog.from_dsn(pg_database.dsn()), tables=("customers", "ord*"))


@pytest.fixture
def lake(tmp_path: Path) -> LakeSettings:
    return LakeSettings.from_strings(str(tmp_path / "lake.ducklake"), str(tmp_path / "data"))


def run_batch(settings: CaptureSettings, lake: LakeSettings) -> tuple[TransferResult, MirrorResult]:
    with connect_lake(lake) as connection:
        transfer = transfer_batch(settings, connection, lake_alias=lake.alias)
        mirrors = apply_to_mirrors(settings, connection, lake_alias=lake.alias)
    return transfer, mirrors


def normalized(columns: list[str], rows: list[tuple], *, json_as_text: bool) -> list[tuple]:
    """Rows comparable across drivers: the JSON column (parsed by psycopg, text from DuckDB) in one form, sorted."""
    position = columns.index("profile") if "profile" in columns else None
    result = []
    for row in rows:
        values = list(row)
        if position is not None:
            value = json.loads(values[position]) if json_as_text and values[position] is not None else values[position]
            values[position] = json.dumps(value, sort_keys=True)
        result.append(tuple(values))
    return sorted(result, key=repr)


def source_table(shop: psycopg.Connection, table: str) -> tuple[list[str], list[tuple]]:
    cursor = shop.execute(f"SELECT * FROM public.{table}")
    columns = [column.name for column in cursor.description]
    return columns, normalized(columns, cursor.fetchall(), json_as_text=False)


def mirror_table(lake: LakeSettings, table: str) -> tuple[list[str], list[tuple]]:
    with connect_lake(lake) as connection:
        cursor = connection.execute(f"SELECT * FROM {lake.alias}.public.{table}")
        columns = [column[0] for column in cursor.description]
        return columns, normalized(columns, cursor.fetchall(), json_as_text=True)


def assert_mirrors_equal_source(shop: psycopg.Connection, lake: LakeSettings) -> None:
    for table in ("customers", "orders"):
        assert mirror_table(lake, table) == source_table(shop, table), f"mirror of {table} differs"


def lake_log(lake: LakeSettings) -> tuple[int, int]:
    """(changes in the lake's log, distinct change ids among them)."""
    with connect_lake(lake) as connection:
        return connection.execute("SELECT count(*), count(DISTINCT change_id) FROM lake.cdc.changes").fetchone()


def batch_tables(shop: psycopg.Connection) -> list[str]:
    rows = shop.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'audit' AND tablename LIKE 'batch%' ORDER BY 1"
    ).fetchall()
    return [name for (name,) in rows]


def lake_batches(lake: LakeSettings) -> list[str]:
    with connect_lake(lake) as connection:
        if not connection.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'batches'").fetchone()[0]:
            return []
        return [batch for (batch,) in connection.execute("SELECT batch_id FROM cdc.batches ORDER BY 1").fetchall()]


def test_mirrors_equal_the_source_after_every_batch(shop, settings, lake):
    setup = setup_capture(settings)
    assert [table.name for table in setup.added] == ["customers", "orders"]
    assert [table.key_columns for table in setup.added] == [("id",), ("customer_id", "order_no")]
    assert setup.snapshot_rows == 2

    captured = 0
    for number, statements in enumerate(ROUNDS, start=1):
        for statement in statements:
            shop.execute(statement)
        captured += pending_changes(settings).changes
        transfer, mirrors = run_batch(settings, lake)
        assert len(transfer.batches) == 1
        assert transfer.pending.changes == 0
        assert {m.table for m in mirrors.mirrors} == {"customers", "orders"}
        assert_mirrors_equal_source(shop, lake)
        if number == 2:
            assert transfer.counts() == {  # an order's key change is recorded as a delete and an insert
                ("public", "customers", "U"): 3,
                ("public", "customers", "D"): 1,
                ("public", "orders", "D"): 2,
                ("public", "orders", "I"): 1,
            }
        if number == 3:
            orders = next(m for m in mirrors.mirrors if m.table == "orders")
            assert orders.truncated and orders.rows == 1

    assert lake_log(lake) == (captured, captured)
    nothing_new, no_mirror_work = run_batch(settings, lake)
    assert nothing_new.batches == () and no_mirror_work.batches == ()
    with connect_lake(lake) as connection:
        messages = [row[0] for row in connection.execute("SELECT commit_message FROM lake.snapshots()").fetchall()]
    assert sum(1 for message in messages if message and message.startswith("CDC batch")) == 3


@pytest.mark.parametrize("step", ["swapped", "before_commit", "copied", "dropped"])
def test_a_transfer_stopped_between_steps_neither_loses_nor_duplicates_a_change(shop, settings, lake, step):
    setup_capture(settings)
    for statement in ROUNDS[0]:
        shop.execute(statement)
    first_batch = pending_changes(settings).changes

    def crash(at: str, batch_id: str) -> None:
        if at == step:
            raise SimulatedCrash(at)

    with connect_lake(lake) as connection, pytest.raises(SimulatedCrash):
        transfer_batch(settings, connection, checkpoint=crash)

    in_postgres, in_lake = batch_tables(shop), lake_batches(lake)
    assert len(in_postgres) == (0 if step == "dropped" else 1)
    assert len(in_lake) == (1 if step in ("copied", "dropped") else 0)

    left_in_postgres = pending_changes(settings).changes
    assert left_in_postgres == (0 if step == "dropped" else first_batch)
    for statement in ROUNDS[1]:
        shop.execute(statement)
    second_batch = pending_changes(settings).changes - left_in_postgres

    transfer, _ = run_batch(settings, lake)
    resumed = [batch for batch in transfer.batches if batch.resumed]
    assert len(resumed) == (0 if step == "dropped" else 1)
    assert [batch.copied_before for batch in resumed] == ([True] if step == "copied" else [False] * len(resumed))
    assert lake_log(lake) == (first_batch + second_batch, first_batch + second_batch)
    assert batch_tables(shop) == []
    assert_mirrors_equal_source(shop, lake)


@pytest.mark.parametrize("step", ["swapped", "before_commit", "copied", "dropped"])
def test_a_transfer_process_killed_between_steps_is_finished_by_the_next_run(shop, settings, lake, pg_database, step):
    setup_capture(settings)
    for statement in ROUNDS[0]:
        shop.execute(statement)
    changes = pending_changes(settings).changes

    killed = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, step, lake.catalog.path, lake.data_path],
        env={**os.environ, "CDC_SOURCE_DSN": pg_database.dsn()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == 17, killed.stderr

    run_batch(settings, lake)
    assert lake_log(lake) == (changes, changes)
    assert batch_tables(shop) == []
    assert_mirrors_equal_source(shop, lake)


def test_only_one_transfer_runs_at_a_time(shop, settings, lake):
    setup_capture(settings)
    refusals = []

    def second_transfer(at: str, batch_id: str) -> None:
        if at == "swapped":
            with new_connection() as other, pytest.raises(CDCError) as refused:
                transfer_batch(settings, other)
            refusals.append(str(refused.value))

    with connect_lake(lake) as connection:
        transfer = transfer_batch(settings, connection, checkpoint=second_transfer)
    assert transfer.changes == 2
    assert refusals and "Another CDC transfer for audit schema 'audit'" in refusals[0]


def test_a_long_writing_transaction_makes_the_swap_give_up_and_change_nothing(shop, settings, lake, pg_database):
    setup_capture(settings)
    with psycopg.connect(pg_database.dsn()) as writer:
        writer.execute("INSERT INTO customers (id, name) VALUES (10, 'still writing')")
        with connect_lake(lake) as connection, pytest.raises(CDCError) as refused:
            transfer_batch(settings, connection, lock_timeout="200ms")
        assert "within lock_timeout 200ms" in str(refused.value)
        assert "Nothing was changed" in str(refused.value)
        assert batch_tables(shop) == [] and lake_batches(lake) == []
        assert pending_changes(settings).changes == 2
        writer.commit()

    transfer, _ = run_batch(settings, lake)
    assert transfer.changes == 3
    assert_mirrors_equal_source(shop, lake)


def test_a_column_added_to_the_source_mid_stream_appears_in_the_mirror(shop, settings, lake):
    setup_capture(settings)
    for statement in ROUNDS[0]:
        shop.execute(statement)
    run_batch(settings, lake)

    shop.execute("ALTER TABLE customers ADD COLUMN email text")
    shop.execute("UPDATE customers SET email = name || '@example.com' WHERE id IN (1, 3)")
    shop.execute("INSERT INTO customers (id, name, email) VALUES (6, 'Femi', 'femi@example.com')")
    transfer, mirrors = run_batch(settings, lake)

    customers = next(m for m in mirrors.mirrors if m.table == "customers")
    assert customers.added_columns == ("email",)
    columns, rows = mirror_table(lake, "customers")
    assert columns[-1] == "email"
    assert_mirrors_equal_source(shop, lake)


def test_setup_again_leaves_captured_tables_alone_and_adds_new_ones(shop, settings):
    setup_capture(settings)
    again = setup_capture(settings)
    assert again.added == () and again.snapshot_rows == 0
    assert [table.name for table in again.already_captured] == ["customers", "orders"]
    (triggers,) = shop.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'customers'::regclass AND NOT tgisinternal"
    ).fetchone()
    assert triggers == 4  # inserts and deletes, updates, updates of the key, truncates

    before = pending_changes(settings).changes
    shop.execute("UPDATE customers SET vip = true WHERE id = 1")
    assert pending_changes(settings).changes == before + 1

    shop.execute("CREATE TABLE order_lines (order_no integer PRIMARY KEY, item text)")
    shop.execute("INSERT INTO order_lines VALUES (1, 'tea')")
    third = setup_capture(settings)
    assert [table.name for table in third.added] == ["order_lines"]
    assert third.snapshot_rows == 1


def test_setup_refuses_a_table_without_primary_key_and_installs_nothing(shop, settings):
    shop.execute("CREATE TABLE order_notes (note text)")
    with pytest.raises(CDCError) as refused:
        setup_capture(settings)
    message = str(refused.value)
    assert "['order_notes']" in message and "no primary key" in message and "Nothing was installed" in message
    assert shop.execute("SELECT to_regnamespace('audit')").fetchone() == (None,)
    assert shop.execute("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal").fetchone() == (0,)

    nothing = CaptureSettings(source=settings.source, tables=("no_such_table*",))
    with pytest.raises(CDCError, match=r"No table in schema 'public' .* matches \['no_such_table\*'\]"):
        setup_capture(nothing)


def test_teardown_keeps_untransferred_changes_unless_told_to_discard_them(shop, settings):
    setup_capture(settings)
    with pytest.raises(CDCError) as refused:
        teardown_capture(settings)
    assert "2 captured changes" in str(refused.value) and "Nothing was removed" in str(refused.value)
    shop.execute("INSERT INTO customers (id, name) VALUES (7, 'still captured')")
    assert pending_changes(settings).changes == 3

    removed = teardown_capture(settings, discard_pending=True)
    assert removed.released_tables == ("public.customers", "public.orders")
    assert removed.discarded_changes == 3
    assert shop.execute("SELECT to_regnamespace('audit')").fetchone() == (None,)
    shop.execute("INSERT INTO customers (id, name) VALUES (8, 'not captured')")
    assert teardown_capture(settings).released_tables == ()


def test_errors_name_the_source_and_never_show_the_password(shop, settings, lake, pg_database):
    with connect_lake(lake) as connection, pytest.raises(CDCError) as not_installed:
        transfer_batch(settings, connection)
    assert "install the capture first" in str(not_installed.value)

    wrong = CaptureSettings(source=PostgresCatalog.from_dsn(pg_database.dsn(), password="wr0ng'; DROP--pw"))
    with pytest.raises(CDCError) as refused:
        setup_capture(wrong)
    message = str(refused.value)
    assert "password authentication failed" in message and pg_database.dbname in message
    assert "wr0ng" not in message and pg_database.password not in message


def test_a_lake_whose_catalog_lives_in_the_source_database(shop, settings, pg_database, tmp_path):
    lake = LakeSettings(catalog=PostgresCatalog.from_dsn(pg_database.dsn()), data_path=str(tmp_path / "data"))
    setup_capture(settings)
    captured = 0
    for statements in ROUNDS:
        for statement in statements:
            shop.execute(statement)
        captured += pending_changes(settings).changes
        run_batch(settings, lake)
        assert_mirrors_equal_source(shop, lake)
    assert lake_log(lake) == (captured, captured)


def test_dagster_assets_move_changes_and_the_sensor_runs_them_when_changes_wait(
    shop, pg_database, tmp_path, monkeypatch
):
    monkeypatch.setenv("SHOP_PASSWORD", pg_database.password)
    dsn = f"host={pg_database.host} port={pg_database.port} dbname={pg_database.dbname} user={pg_database.user}"
    lake = LakeSettings.from_strings(str(tmp_path / "lake.ducklake"), str(tmp_path / "data"))
    defs = dg.Definitions.merge(
        build_cdc_definitions(
            "shop", source=dsn, source_password=dg.EnvVar("SHOP_PASSWORD"), tables=["customers", "ord*"]
        ),
        dg.Definitions(
            resources={
                "ducklake": DuckLakeResource(catalog=str(tmp_path / "lake.ducklake"), data_path=str(tmp_path / "data"))
            }
        ),
    )
    sensor = defs.resolve_sensor_def("shop_cdc_sensor")

    with dg.instance_for_test() as instance:

        def tick():
            with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
                return sensor.evaluate_tick(context)

        assert "install the capture first" in tick().skip_message

        result = dg.materialize(list(defs.assets), resources=defs.resources, instance=instance)
        assert result.success
        assert tick().skip_message == "No captured changes wait in PostgreSQL."
        for statement in ROUNDS[0]:
            shop.execute(statement)
        requested = tick().run_requests
        assert len(requested) == 1 and requested[0].tags["cdc/pending_changes"] == "5"

        running = dg.DagsterRun(job_name="shop_cdc_job", status=dg.DagsterRunStatus.STARTED)
        instance.add_run(running)
        assert tick().skip_message == "A run of shop_cdc_job is still in progress."
        instance.delete_run(running.run_id)

        run = defs.resolve_job_def("shop_cdc_job").execute_in_process(instance=instance)
        assert run.success
        assert tick().skip_message == "No captured changes wait in PostgreSQL."

    capture = result.asset_materializations_for_node("shop__cdc_capture")[0].metadata
    assert capture["tables_added"].value == 2 and capture["snapshot_rows"].value == 2
    changes = run.asset_materializations_for_node("shop__cdc_changes")[0].metadata
    table = changes["changes"].value
    assert "| table | inserts | updates | deletes | truncates | total |" in table
    assert "| public.customers | 2 | 0 | 0 | 0 | 2 |" in table
    assert "| public.orders | 3 | 0 | 0 | 0 | 3 |" in table
    assert changes["changes_moved"].value == 5 and changes["dagster/row_count"].value == 7
    assert changes["pending_lag_seconds"].value == 0.0
    assert changes["first_captured_at"].value <= changes["last_captured_at"].value
    mirrors = run.asset_materializations_for_node("shop__cdc_mirrors")[0].metadata
    assert "| public.orders | 3 | 3 | 0 | 3 |" in mirrors["mirrors"].value
    assert_mirrors_equal_source(shop, lake)

    shown = " ".join(str(event) for event in [*result.all_events, *run.all_events])
    assert pg_database.password not in shown
