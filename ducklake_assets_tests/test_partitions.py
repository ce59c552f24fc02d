"""Scale-out by partition: one run per source folder, runs of different partitions side by side, no file
ever registered twice (issue 12)."""

import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from ducklake_assets import SourceOptions, SourcePartitions, build_ducklake_pipeline
from ducklake_assets.core.claims import claimed
from ducklake_assets.core.errors import ConfigurationError
from ducklake_assets.core.lake import LakeSettings, connect_lake
from ducklake_assets.core.registration import RegistrationResult, register_files
from ducklake_assets.core.sources import FileSource, PartitionFolders
from ducklake_assets.core.storage import ObjectStore
from ducklake_assets.resources import DuckLakeResource
from ducklake_assets_tests.parquet_files import crew
from ducklake_assets_tests.services import PostgresDatabase

ASTRONAUTS = dg.AssetKey(["space", "astronauts"])
SNAPSHOT = dg.AssetKey(["space", "catalog_snapshot"])
BY_DAY = SourcePartitions(folder="day={partition_key}")


def days(source: Path, numbers: range) -> None:
    for day in numbers:
        crew(source / f"day={day}" / f"astronauts.{day}.a.parquet", day * 100)
        crew(source / f"day={day}" / f"astronauts.{day}.b.parquet", day * 100 + 10)


def pipeline(
    source: Path, tmp_path: Path, catalog: str | None = None, partitions: SourcePartitions = BY_DAY, **options
) -> dg.Definitions:
    return build_ducklake_pipeline(
        "space",
        SourceOptions(uri=str(source), partitions=partitions, **options),
        catalog or str(tmp_path / "space.ducklake"),
        str(tmp_path / "data"),
        tables=["astronauts"],
    )


def lake_rows(defs: dg.Definitions, sql: str) -> list[tuple]:
    lake: DuckLakeResource = defs.resources["space_ducklake"]
    with lake.get_connection() as connection:
        return connection.execute(sql).fetchall()


def run_partition(defs: dg.Definitions, instance: dg.DagsterInstance, key: str) -> dict:
    result = dg.materialize(
        list(defs.assets),
        resources=defs.resources,
        instance=instance,
        partition_key=key,
        selection=[SNAPSHOT, ASTRONAUTS],
    )
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == SNAPSHOT]
    return {name: getattr(value, "value", value) for name, value in event.materialization.metadata.items()}


def test_a_partition_run_registers_its_folder_only_and_a_rerun_adds_nothing(tmp_path: Path) -> None:
    source = tmp_path / "src"
    days(source, range(1, 4))
    defs = pipeline(source, tmp_path)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("space_partitions", ["1", "2", "3"])
        first = run_partition(defs, instance, "2")
        again = run_partition(defs, instance, "2")
        other = run_partition(defs, instance, "3")

    assert (first["files_added"], again["files_added"], other["files_added"]) == (2, 0, 2)
    ids = [*range(200, 220), *range(300, 320)]
    assert lake_rows(defs, "SELECT count(*), sum(id) FROM astronauts") == [(40, sum(ids))]
    paths = lake_rows(defs, "SELECT data_file FROM ducklake_list_files('lake', 'astronauts')")
    assert len(paths) == len(set(paths)) == 4 and all("/day=1/" not in path for (path,) in paths)


def test_the_sensor_adds_new_folders_as_partitions_and_asks_for_one_run_each(tmp_path: Path) -> None:
    source = tmp_path / "src"
    days(source, range(1, 3))
    crew(source / "loose.parquet", 900)  # in no day folder: reported, never registered
    defs = pipeline(source, tmp_path)
    sensor = defs.resolve_sensor_def("space_new_files")
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, definitions=defs) as context:
            first = sensor(context)
        assert [request.partition_key for request in first.run_requests] == ["1", "2"]
        assert [request.tags["ducklake_assets/new_files"] for request in first.run_requests] == ["2", "2"]
        [added] = first.dynamic_partitions_requests
        assert added.partitions_def_name == "space_partitions" and list(added.partition_keys) == ["1", "2"]
        instance.add_dynamic_partitions("space_partitions", ["1", "2"])

        days(source, range(3, 4))
        with dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs) as context:
            second = sensor(context)
    assert [request.partition_key for request in second.run_requests] == ["3"]
    assert [list(request.partition_keys) for request in second.dynamic_partitions_requests] == [["3"]]


def test_a_fixed_partitions_definition_ignores_folders_it_does_not_name(tmp_path: Path) -> None:
    source = tmp_path / "src"
    days(source, range(1, 4))
    partitions = SourcePartitions(folder="day={partition_key}", definition=dg.StaticPartitionsDefinition(["1", "2"]))
    defs = pipeline(source, tmp_path, partitions=partitions)
    sensor = defs.resolve_sensor_def("space_new_files")
    with dg.instance_for_test() as instance, dg.build_sensor_context(instance=instance, definitions=defs) as context:
        result = sensor(context)
    assert [request.partition_key for request in result.run_requests] == ["1", "2"]
    assert result.dynamic_partitions_requests == []


def test_a_partition_folder_template_must_name_the_key_once() -> None:
    with pytest.raises(ConfigurationError, match="must hold '\\{partition_key\\}' exactly once"):
        SourcePartitions(folder="day=*")
    with pytest.raises(ConfigurationError, match="cannot name a folder"):
        PartitionFolders().folder("a/b")


def _register(lake: LakeSettings, source: FileSource, claims: list[str]) -> RegistrationResult:
    with connect_lake(lake) as connection:
        return register_files(connection, lake, source.list_files(ObjectStore()), claims=claims)


def test_runs_of_one_partition_take_turns_while_other_partitions_go_ahead(
    pg_database: PostgresDatabase, tmp_path: Path
) -> None:
    """Two registrations of day=1 never both add its files: the second waits for the first's claim and
    then finds them registered; a registration of day=2 does not wait for day=1's claim."""
    source = tmp_path / "src"
    days(source, range(1, 3))
    lake = LakeSettings.from_strings(f"postgres:{pg_database.dsn()}", str(tmp_path / "data"))
    _register(lake, FileSource(str(source / "day=2")), [])  # creates the table: no run below creates it
    folders = PartitionFolders("day={partition_key}")
    day1 = folders.source(FileSource(str(source)), "1")
    results: list[RegistrationResult] = []

    with claimed(lake, ["day=1"]) as held:
        assert held
        waiting = threading.Thread(target=lambda: results.append(_register(lake, day1, ["day=1"])))
        waiting.start()
        crew(source / "day=2" / "astronauts.2.c.parquet", 220)
        other = _register(lake, folders.source(FileSource(str(source)), "2"), ["day=2"])
        time.sleep(0.5)
        assert waiting.is_alive() and results == []  # still waiting for the claim held here
    waiting.join(timeout=60)
    again = _register(lake, day1, ["day=1"])

    assert len(other.files_added) == 1 and len(results[0].files_added) == 2 and again.files_added == ()
    with connect_lake(lake) as connection:
        rows = connection.execute("SELECT count(*), count(DISTINCT id) FROM astronauts").fetchall()
        files = connection.execute("SELECT data_file FROM ducklake_list_files('lake', 'astronauts')").fetchall()
    assert rows == [(50, 50)] and len(files) == len(set(files)) == 5


def test_concurrent_partition_runs_on_postgres_register_every_file_exactly_once(
    pg_database: PostgresDatabase, tmp_path: Path
) -> None:
    """Eight Dagster runs at once, two per partition, into one PostgreSQL catalog. Each run has an instance
    of its own, as runs launched in their own processes (or on their own machines) do."""
    source = tmp_path / "src"
    days(source, range(1, 5))
    defs = pipeline(source, tmp_path, catalog=f"postgres:{pg_database.dsn()}")
    added: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def run(key: str) -> None:
        with dg.DagsterInstance.ephemeral() as instance:
            instance.add_dynamic_partitions("space_partitions", ["1", "2", "3", "4"])
            start.wait()
            try:
                added.append(run_partition(defs, instance, key)["files_added"])
            except BaseException as error:  # reported below, with the others' results
                errors.append(error)

    threads = [threading.Thread(target=run, args=(key,)) for key in ["1", "2", "3", "4"] * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == [] and sorted(added) == [0, 0, 0, 0, 2, 2, 2, 2]
    ids = [i for day in range(1, 5) for i in range(day * 100, day * 100 + 20)]
    assert lake_rows(defs, "SELECT count(*), sum(id), count(DISTINCT id) FROM astronauts") == [(80, sum(ids), 80)]
    files = lake_rows(defs, "SELECT data_file FROM ducklake_list_files('lake', 'astronauts')")
    assert len(files) == len(set(files)) == 8


def test_files_of_a_day_without_its_partition_yet_are_asked_for_once_it_exists(tmp_path: Path) -> None:
    """A static definition that gains its key later stands for a daily one at midnight: the cursor does not
    move past files in a folder without a partition, so the tick after the key exists asks for them."""
    source = tmp_path / "src"
    days(source, range(1, 3))
    partitions = SourcePartitions(folder="day={partition_key}", definition=dg.StaticPartitionsDefinition(["1"]))
    defs = pipeline(source, tmp_path, partitions=partitions)
    sensor = defs.resolve_sensor_def("space_new_files")
    with dg.instance_for_test() as instance, dg.build_sensor_context(instance=instance, definitions=defs) as context:
        first = sensor(context)
    assert [request.partition_key for request in first.run_requests] == ["1"]
    assert first.cursor == ""  # day=2 waits: nothing is marked seen

    later = SourcePartitions(folder="day={partition_key}", definition=dg.StaticPartitionsDefinition(["1", "2"]))
    defs = pipeline(source, tmp_path, partitions=later)
    sensor = defs.resolve_sensor_def("space_new_files")
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs) as context,
    ):
        second = sensor(context)
    assert [request.partition_key for request in second.run_requests] == ["1", "2"]
    assert second.cursor


def test_a_partition_run_reads_the_pattern_and_table_names_from_the_source_root(tmp_path: Path) -> None:
    source = tmp_path / "src"
    days(source, range(1, 3))
    defs = pipeline(source, tmp_path, pattern="day=*/astronauts.*.parquet")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("space_partitions", ["1", "2"])
        assert run_partition(defs, instance, "2")["files_added"] == 2


def test_a_downstream_asset_reads_a_partitioned_table_whole(tmp_path: Path) -> None:
    import pandas as pd

    source = tmp_path / "src"
    days(source, range(1, 3))
    seen: dict[str, int] = {}

    @dg.asset(ins={"astronauts": dg.AssetIn(ASTRONAUTS)})
    def crew_size(astronauts: pd.DataFrame) -> None:
        seen["rows"], seen["ids"] = len(astronauts), int(astronauts["id"].sum())

    base = pipeline(source, tmp_path)
    defs = dg.Definitions.merge(base, dg.Definitions(assets=[crew_size]))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("space_partitions", ["1", "2"])
        run_partition(defs, instance, "1")
        run_partition(defs, instance, "2")
        result = dg.materialize(list(defs.assets), resources=defs.resources, instance=instance, selection=[crew_size])
    assert result.success
    assert seen == {"rows": 40, "ids": sum(range(100, 120)) + sum(range(200, 220))}


def test_a_run_gives_up_on_a_partition_another_run_holds_too_long(
    pg_database: PostgresDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ducklake_assets.core import claims
    from ducklake_assets.core.errors import RegistrationError

    source = tmp_path / "src"
    days(source, range(1, 2))
    lake = LakeSettings.from_strings(f"postgres:{pg_database.dsn()}", str(tmp_path / "data"))
    day1 = PartitionFolders("day={partition_key}").source(FileSource(str(source)), "1")
    monkeypatch.setattr(claims, "CLAIM_WAIT_SECONDS", 1)
    with claimed(lake, ["day=1"]), pytest.raises(RegistrationError, match="registering 'day=1'") as refused:
        _register(lake, day1, ["day=1"])
    assert "nothing was registered" in str(refused.value)
    assert _register(lake, day1, ["day=1"]).files_added != ()
