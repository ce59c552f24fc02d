"""Listing source files and naming their tables: folders, S3 prefixes and manifests."""

import os
from pathlib import Path

import pytest

from ducklake_assets.core.errors import ConfigurationError, StorageError
from ducklake_assets.core.locations import normalize_uri
from ducklake_assets.core.s3 import S3Settings
from ducklake_assets.core.sources import FileSource, TableNaming
from ducklake_assets.core.storage import ObjectStore
from ducklake_assets_tests.services import S3Bucket


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PAR1")
    return path


def test_one_file_has_one_spelling_whatever_form_it_is_listed_in(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    absolute = str(tmp_path / "space" / "astronauts.p1.parquet")
    for form in (
        "space/astronauts.p1.parquet",
        "./space/astronauts.p1.parquet",
        "space//astronauts.p1.parquet",
        "space/./x/../astronauts.p1.parquet",
        "/" + absolute,
        absolute,
        "file://" + absolute,
    ):
        assert normalize_uri(form) == absolute, form
    assert normalize_uri("astronauts.p1.parquet", base=str(tmp_path / "space")) == absolute

    assert normalize_uri("s3a://bucket/space/a.parquet") == "s3://bucket/space/a.parquet"
    assert normalize_uri("s3n://bucket/space/a.parquet") == "s3://bucket/space/a.parquet"
    assert normalize_uri("S3://bucket/space/a.parquet") == "s3://bucket/space/a.parquet"
    assert normalize_uri("HTTPS://Example.ORG/Space/a.parquet") == "https://example.org/Space/a.parquet"
    # object keys are compared exactly: a store treats these as two objects
    assert normalize_uri("s3://bucket/space//a.parquet") == "s3://bucket/space//a.parquet"


def test_table_names_come_from_the_file_name_the_folder_or_a_regex() -> None:
    uri = "/data/space/2024/astronauts.p1.parquet"
    assert TableNaming().table_for(uri, "2024/astronauts.p1.parquet") == "astronauts"
    assert TableNaming(source="parent_folder").table_for(uri, "2024/astronauts.p1.parquet") == "2024"
    naming = TableNaming(source="regex", regex=r"^(?P<table>[a-z]+)_\d+/")
    assert naming.table_for("/data/crew_2024/x.parquet", "crew_2024/x.parquet") == "crew"

    with pytest.raises(ConfigurationError, match=r"/data/other/x\.parquet does not match table_name_regex"):
        naming.table_for("/data/other/x.parquet", "other/x.parquet")
    empty = TableNaming(source="regex", regex=r"^(?P<table>[a-z]*)\d+/")
    with pytest.raises(ConfigurationError, match=r"matches source file /data/2024/x\.parquet, but its group 'table'"):
        empty.table_for("/data/2024/x.parquet", "2024/x.parquet")
    with pytest.raises(ConfigurationError, match="named group 'table'"):
        TableNaming(source="regex", regex=r"(\w+)")
    with pytest.raises(ConfigurationError, match="exactly when table_name_from='regex'"):
        TableNaming(regex=r"(?P<table>\w+)")
    with pytest.raises(ConfigurationError, match="table_name_from must be"):
        TableNaming(source="folder")


def test_names_that_cannot_be_tables_are_rejected_naming_the_file() -> None:
    with pytest.raises(ConfigurationError, match=r"from source file /data/\.parquet: it is empty"):
        TableNaming().table_for("/data/.parquet", ".parquet")
    with pytest.raises(ConfigurationError, match=r"/data/bad\nname\.parquet.*control characters"):
        TableNaming().table_for("/data/bad\nname.parquet", "bad\nname.parquet")


def test_hostile_file_names_become_table_names_verbatim() -> None:
    naming = TableNaming()
    for name in ('x"; DROP TABLE y; --', "with space", "名前", "select", "it's"):
        assert naming.table_for(f"/data/{name}.parquet", f"{name}.parquet") == name


def test_a_folder_is_listed_recursively_with_its_pattern(tmp_path: Path) -> None:
    root = tmp_path / "space"
    touch(root / "astronauts.p1.parquet")
    touch(root / "2024" / "missions.p1.parquet")
    touch(root / "notes.csv")
    touch(root / ".partial.parquet")
    touch(root / "_temporary" / "0" / "missions.p9.parquet")

    files = FileSource(str(root)).list_files(ObjectStore())
    assert [(Path(f.uri).relative_to(root).as_posix(), f.table) for f in files] == [
        ("2024/missions.p1.parquet", "missions"),
        ("astronauts.p1.parquet", "astronauts"),
    ]
    assert all(f.size == 4 and f.modified is not None for f in files)

    only_top = FileSource(str(root), pattern="astronauts.*.parquet").list_files(ObjectStore())
    assert [f.table for f in only_top] == ["astronauts"]

    by_folder = FileSource(str(root), naming=TableNaming(source="parent_folder", schema="raw")).list_files(
        ObjectStore()
    )
    assert [(f.schema, f.table) for f in by_folder] == [("raw", "2024"), ("raw", "space")]


def test_a_missing_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=rf"Cannot list {tmp_path / 'nowhere'}: no such folder"):
        FileSource(str(tmp_path / "nowhere")).list_files(ObjectStore())


def test_an_s3_prefix_is_listed_with_boto3(s3_bucket: S3Bucket, s3_settings: S3Settings) -> None:
    client = s3_bucket.client()
    for key in ("space/astronauts.p1.parquet", "space/2024/missions.p1.parquet", "space/readme.txt", "other/x.parquet"):
        client.put_object(Bucket=s3_bucket.name, Key=key, Body=b"PAR1")

    files = FileSource(s3_bucket.uri("space")).list_files(ObjectStore(s3_settings))
    assert [(f.uri, f.table) for f in files] == [
        (s3_bucket.uri("space/2024/missions.p1.parquet"), "missions"),
        (s3_bucket.uri("space/astronauts.p1.parquet"), "astronauts"),
    ]
    s3a = FileSource(f"s3a://{s3_bucket.name}/space/").list_files(ObjectStore(s3_settings))
    assert [f.uri for f in s3a] == [f.uri for f in files]


def test_a_manifest_mixes_local_paths_and_urls(tmp_path: Path) -> None:
    touch(tmp_path / "space" / "astronauts.p1.parquet")
    manifest = tmp_path / "space" / "files.csv"
    manifest.write_text(
        "full_path,comment\n"
        "astronauts.p1.parquet,relative to the manifest\n"
        f"{tmp_path}/space/./missions.p1.parquet,absolute\n"
        "s3a://bucket/space/crew.p1.parquet,s3\n"
        "https://example.org/space/spacecraft.p1.parquet,web\n"
        "\n"
    )
    files = FileSource(str(manifest)).list_files(ObjectStore())
    assert [(f.uri, f.table) for f in files] == [
        (str(tmp_path / "space" / "astronauts.p1.parquet"), "astronauts"),
        (str(tmp_path / "space" / "missions.p1.parquet"), "missions"),
        ("s3://bucket/space/crew.p1.parquet", "crew"),
        ("https://example.org/space/spacecraft.p1.parquet", "spacecraft"),
    ]


def test_a_manifest_on_s3_resolves_relative_entries_beside_it(s3_bucket: S3Bucket, s3_settings: S3Settings) -> None:
    body = "full_path\nastronauts.p1.parquet\ns3://elsewhere/missions.p1.parquet\n"
    s3_bucket.client().put_object(Bucket=s3_bucket.name, Key="space/files.csv", Body=body.encode())
    files = FileSource(s3_bucket.uri("space/files.csv")).list_files(ObjectStore(s3_settings))
    assert [f.uri for f in files] == [
        s3_bucket.uri("space/astronauts.p1.parquet"),
        "s3://elsewhere/missions.p1.parquet",
    ]


def test_a_manifest_without_full_path_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "files.csv"
    manifest.write_text("path\nx.parquet\n")
    with pytest.raises(ConfigurationError, match=rf"Manifest {manifest} has no full_path column"):
        FileSource(str(manifest)).list_files(ObjectStore())


def test_sources_that_cannot_be_listed_are_refused_up_front() -> None:
    with pytest.raises(ConfigurationError, match="put its URLs in a manifest"):
        FileSource("https://example.org/space/")
    with pytest.raises(ConfigurationError, match="source must be"):
        FileSource("  ")
    assert FileSource("data/files.CSV").kind == "manifest"
    assert FileSource("s3://b/p").kind == "s3"
    assert FileSource(os.sep + "data").kind == "folder"
