"""The catalog_snapshot asset built by build_ducklake_pipeline, materialized through Dagster."""

from pathlib import Path

import dagster as dg
import pytest

from ducklake_assets import SourceOptions
from ducklake_assets.core.errors import ConfigurationError
from ducklake_assets.pipeline import build_ducklake_pipeline
from ducklake_assets.resources import DuckLakeResource, S3Resource
from ducklake_assets_tests.parquet_files import crew, parquet
from ducklake_assets_tests.services import S3Bucket

SNAPSHOT = dg.AssetKey(["space", "catalog_snapshot"])


def materialize(defs: dg.Definitions, instance: dg.DagsterInstance, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        list(defs.assets), resources=defs.resources, instance=instance, selection=[SNAPSHOT], **kwargs
    )


def snapshot_metadata(result: dg.ExecuteInProcessResult) -> dict:
    (materialization,) = result.asset_materializations_for_node("space__catalog_snapshot")
    return {key: getattr(value, "value", value) for key, value in materialization.metadata.items()}


def snapshots(defs: dg.Definitions) -> list[tuple]:
    lake: DuckLakeResource = defs.resources["space_ducklake"]
    with lake.get_connection() as connection:
        return connection.execute("SELECT snapshot_id, author, commit_message FROM lake.snapshots()").fetchall()


def test_each_materialization_is_one_snapshot_naming_its_run(tmp_path: Path, space: Path) -> None:
    defs = build_ducklake_pipeline(
        name="space",
        source=str(space),
        catalog=str(tmp_path / "lake" / "space.ducklake"),
        data_path=str(tmp_path / "lake" / "data"),
    )
    instance = dg.DagsterInstance.ephemeral()
    before = len(snapshots(defs))

    first = materialize(defs, instance)

    metadata = snapshot_metadata(first)
    after_first = snapshots(defs)
    assert len(after_first) == before + 1
    snapshot_id, author, message = after_first[-1]
    assert author == f"dagster run {first.run_id}" and first.run_id in message
    assert metadata["snapshot_id"] == snapshot_id
    assert metadata["files_added"] == 3 and metadata["files_already_registered"] == 0
    assert metadata["tables_created"] == "astronauts, missions"
    assert metadata["dagster/row_count"] == 24
    assert "| astronauts | 20 | 2 | 2 |" in metadata["tables"] and "| missions | 4 | 1 | 1 |" in metadata["tables"]
    columns = [(column.name, column.type) for column in metadata["dagster/column_schema"].columns]
    assert columns == [
        ("astronauts.id", "BIGINT"),
        ("astronauts.name", "VARCHAR"),
        ("missions.mission_id", "BIGINT"),
        ("missions.name", "VARCHAR"),
    ]

    second = materialize(defs, instance)

    metadata = snapshot_metadata(second)
    assert metadata["files_added"] == 0 and metadata["files_already_registered"] == 3
    assert metadata["snapshot_id"] == snapshot_id and metadata["new_snapshot"] is False
    assert snapshots(defs) == after_first

    crew(space / "astronauts.p3.parquet", 20)
    third = materialize(defs, instance)

    metadata = snapshot_metadata(third)
    assert metadata["files_added"] == 1 and metadata["files_already_registered"] == 3
    assert metadata["tables_created"] == "none" and metadata["dagster/row_count"] == 34
    assert snapshots(defs)[-1][1] == f"dagster run {third.run_id}"
    assert len(snapshots(defs)) == before + 2


def test_progress_is_logged(tmp_path: Path, space: Path) -> None:
    defs = build_ducklake_pipeline("space", str(space), str(tmp_path / "space.ducklake"), str(tmp_path / "data"))
    instance = dg.DagsterInstance.ephemeral()

    result = materialize(defs, instance)

    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert f"Listed 3 source files in {space}" in messages
    assert any(message.startswith("Registered 3 of 3 new files (") and "new files/s" in message for message in messages)
    assert any(message.startswith("Snapshot ") and "3 files added" in message for message in messages)


def test_skipped_bad_files_are_listed_in_the_metadata(tmp_path: Path, space: Path) -> None:
    broken = space / "astronauts.p9.parquet"
    broken.write_text("not parquet")
    defs = build_ducklake_pipeline(
        "space",
        SourceOptions(uri=str(space), bad_files="skip"),
        str(tmp_path / "space.ducklake"),
        str(tmp_path / "data"),
    )

    metadata = snapshot_metadata(materialize(defs, dg.DagsterInstance.ephemeral()))

    assert metadata["files_added"] == 3 and metadata["files_skipped"] == 1
    assert f"`{broken}`" in metadata["skipped_files"] and "too small to be a Parquet file" in metadata["skipped_files"]


def test_a_drifted_file_fails_the_run_and_leaves_the_catalog_as_it_was(tmp_path: Path, space: Path) -> None:
    defs = build_ducklake_pipeline("space", str(space), str(tmp_path / "space.ducklake"), str(tmp_path / "data"))
    instance = dg.DagsterInstance.ephemeral()
    materialize(defs, instance)
    before = snapshots(defs)
    drifted = parquet(space / "astronauts.p3.parquet", "SELECT 1 AS id, 'x' AS name, 2.5 AS height")

    result = materialize(defs, instance, raise_on_error=False)

    assert not result.success
    (failure,) = [event for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_FAILURE]
    error = failure.step_failure_data.error.cause.message
    assert "SchemaDriftError" in error and str(drifted) in error and '"height"' in error
    assert snapshots(defs) == before


def test_an_s3_source_lists_with_the_pipeline_s3_resource(
    tmp_path: Path, s3_bucket: S3Bucket, s3_resource: S3Resource
) -> None:
    s3_bucket.client().upload_file(str(crew(tmp_path / "a.parquet", 0)), s3_bucket.name, "space/astronauts.p1.parquet")
    defs = build_ducklake_pipeline(
        "space", s3_bucket.uri("space"), str(tmp_path / "space.ducklake"), str(tmp_path / "data"), s3=s3_resource
    )

    metadata = snapshot_metadata(materialize(defs, dg.DagsterInstance.ephemeral()))

    assert set(defs.resources) == {"space_ducklake", "space_s3", "space_io_manager"}
    assert metadata["files_added"] == 1 and metadata["dagster/row_count"] == 10
    assert s3_resource.aws_secret_access_key not in str(metadata)


def test_the_pipeline_shows_its_source_upstream_of_the_snapshot(tmp_path: Path, space: Path) -> None:
    defs = build_ducklake_pipeline(
        "space", str(space), str(tmp_path / "space.ducklake"), str(tmp_path / "data"), backup=str(tmp_path / "b")
    )

    graph = defs.resolve_asset_graph()
    assert graph.get(SNAPSHOT).parent_keys == {dg.AssetKey(["space", "source_files"])}
    assert defs.resolve_sensor_def("space_new_files").asset_selection is not None
    assert set(defs.resources) == {"space_ducklake", "space_io_manager"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "space missions"}, "pipeline name 'space missions' must start with a letter"),
        ({"source": "s3://bucket/space"}, r"source is on S3: pass s3=S3Resource\(...\)"),
        ({"backup": "s3://bucket/backups"}, r"backup is on S3: pass s3=S3Resource"),
        ({"publish": "https://example.org/space.ducklake"}, "publish location .* must be a local path or an s3:// URI"),
        ({"source": {"schema_drift": "merge"}}, "SourceOptions.schema_drift: Input should be 'fail', 'ignore_extra"),
        (
            {"source": {"bad_files": "ignore"}},
            "SourceOptions.bad_files: Input should be 'fail' or 'skip', got 'ignore'",
        ),
        ({"source": {"table_name_from": "regex"}}, "give table_name_regex exactly when table_name_from='regex'"),
        ({"source": {"table_name_from": "regex", "table_name_regex": "(.*)"}}, "needs a named group 'table'"),
        ({"source": {"sensor": {"order": "random"}}}, "SensorOptions.order: Input should be 'modified' or 'key'"),
        ({"data_path": ""}, "data_path must be a non-empty path or URI"),
    ],
)
def test_the_pipeline_refuses_bad_settings_when_defined(tmp_path: Path, options: dict, message: str) -> None:
    settings = {
        "name": "space",
        "source": str(tmp_path),
        "catalog": str(tmp_path / "space.ducklake"),
        "data_path": str(tmp_path / "data"),
    }
    given = settings | options
    with pytest.raises(ConfigurationError, match=message):
        if isinstance(given["source"], dict):  # the source's settings: SourceOptions refuses them when made
            given["source"] = SourceOptions(uri=str(tmp_path), **given["source"])
        build_ducklake_pipeline(**given)
