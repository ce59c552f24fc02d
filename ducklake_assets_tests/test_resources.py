"""The foundation, as a user meets it: attach a lake on every catalog backend, write, read, reopen."""

import logging
import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg
import duckdb
import pytest

from ducklake_assets import (
    CatalogConnectionError,
    ConfigurationError,
    DuckLakeResource,
    PostgresCatalogConfig,
    ReadOnlyLakeError,
    S3Resource,
    SQLiteCatalogConfig,
    StorageError,
)
from ducklake_assets.core.lake import LakeSettings, connect_lake, new_connection, prepare_connection
from ducklake_assets.core.storage import ObjectStore


def catalog_for(kind: str, tmp_path, pg_database=None):
    if kind == "duckdb":
        return str(tmp_path / "catalog.ducklake")
    if kind == "sqlite":
        return SQLiteCatalogConfig(path=str(tmp_path / "catalog.sqlite"))
    return PostgresCatalogConfig(
        host=pg_database.host,
        port=pg_database.port,
        dbname=pg_database.dbname,
        user=pg_database.user,
        password=pg_database.password,
    )


def write_read_reopen(resource: DuckLakeResource) -> None:
    with resource.get_connection() as connection:
        connection.execute("CREATE TABLE trips AS SELECT range AS id, 'trip ' || range AS name FROM range(1000)")
        connection.execute("INSERT INTO trips VALUES (1000, 'late trip')")
        assert connection.execute("SELECT count(*) FROM trips").fetchone() == (1001,)
    with resource.get_connection() as connection:
        assert connection.execute("SELECT count(*), max(id) FROM lake.trips").fetchone() == (1001, 1000)
        snapshots = connection.execute("SELECT count(*) FROM lake.snapshots()").fetchone()[0]
        assert snapshots >= 3


@pytest.mark.parametrize("kind", ["duckdb", "sqlite", "postgres"])
def test_every_catalog_backend_with_a_local_data_path(kind, tmp_path, request):
    pg_database = request.getfixturevalue("pg_database") if kind == "postgres" else None
    resource = DuckLakeResource(catalog=catalog_for(kind, tmp_path, pg_database), data_path=str(tmp_path / "data"))
    write_read_reopen(resource)
    assert list((tmp_path / "data").rglob("*.parquet")), "data files land under the local data path"


@pytest.mark.parametrize("kind", ["duckdb", "sqlite", "postgres"])
def test_every_catalog_backend_with_an_s3_data_path(kind, tmp_path, request, s3_bucket, s3_settings, s3_resource):
    pg_database = request.getfixturevalue("pg_database") if kind == "postgres" else None
    resource = DuckLakeResource(
        catalog=catalog_for(kind, tmp_path, pg_database),
        data_path=s3_bucket.uri("lake/"),
        s3=s3_resource,
    )
    write_read_reopen(resource)
    keys = [item.uri for item in ObjectStore(s3_settings).list_prefix(s3_bucket.uri("lake/"))]
    assert any(key.endswith(".parquet") for key in keys), keys


def test_duckdb_catalog_strings_in_ducklake_form(tmp_path, pg_database):
    sqlite = DuckLakeResource(catalog=f"sqlite:{tmp_path / 'c.sqlite'}", data_path=str(tmp_path / "d1"))
    write_read_reopen(sqlite)
    postgres = DuckLakeResource(catalog=f"postgres:{pg_database.dsn()}", data_path=str(tmp_path / "d2"))
    write_read_reopen(postgres)
    url = DuckLakeResource(catalog=pg_database.url())
    with url.get_connection() as connection:
        assert connection.execute("SELECT count(*) FROM trips").fetchone() == (1001,)


def test_unqualified_create_table_lands_in_the_lake(tmp_path):
    resource = DuckLakeResource(catalog=str(tmp_path / "c.ducklake"), data_path=str(tmp_path / "data"))
    with resource.get_connection() as connection:
        connection.execute("CREATE TABLE t AS SELECT 42 AS answer")
        where = connection.execute("SELECT database_name FROM duckdb_tables() WHERE table_name = 't'").fetchall()
        assert where == [("lake",)]
    with duckdb.connect() as stranger:
        from ducklake_assets.core.extensions import load_extension

        load_extension(stranger, "ducklake")
        stranger.execute(f"ATTACH 'ducklake:{tmp_path / 'c.ducklake'}' AS other (READ_ONLY)")
        assert stranger.execute("SELECT answer FROM other.t").fetchone() == (42,)


def test_the_resource_fits_where_duckdbresource_fits(tmp_path):
    @dg.asset
    def trips(ducklake: DuckLakeResource) -> dg.MaterializeResult:
        with ducklake.get_connection() as connection:
            connection.execute("CREATE TABLE trips AS SELECT range AS id FROM range(7)")
            (count,) = connection.execute("SELECT count(*) FROM trips").fetchone()
        return dg.MaterializeResult(metadata={"dagster/row_count": count})

    resource = DuckLakeResource(catalog=str(tmp_path / "c.ducklake"), data_path=str(tmp_path / "data"))
    result = dg.materialize([trips], resources={"ducklake": resource})
    assert result.success
    materialization = result.asset_materializations_for_node("trips")[0]
    assert materialization.metadata["dagster/row_count"].value == 7


def test_read_only_lake_refuses_writes_with_a_clear_error(tmp_path):
    catalog = str(tmp_path / "c.ducklake")
    write_read_reopen(DuckLakeResource(catalog=catalog, data_path=str(tmp_path / "data")))
    reader = DuckLakeResource(catalog=catalog, read_only=True)
    with pytest.raises(ReadOnlyLakeError, match="read-only") as error, reader.get_connection() as connection:
        connection.execute("INSERT INTO trips VALUES (5000, 'sneaky')")
    assert "c.ducklake" in str(error.value)
    with reader.get_connection() as connection:
        assert connection.execute("SELECT count(*) FROM trips").fetchone() == (1001,)


def test_typed_attach_options(tmp_path):
    resource = DuckLakeResource(
        catalog=str(tmp_path / "c.ducklake"),
        data_path=str(tmp_path / "data"),
        attach_options={"DATA_INLINING_ROW_LIMIT": 0, "ENCRYPTED": False},
        threads=2,
        memory_limit="1GB",
    )
    with resource.get_connection() as connection:
        connection.execute("CREATE TABLE small AS SELECT 1 AS one")
        assert connection.execute("SELECT current_setting('threads')").fetchone() == (2,)
    assert list((tmp_path / "data").rglob("*.parquet")), "inlining off: even one row is written as Parquet"
    with pytest.raises(ValueError, match="attach option 'BAD' must be a string, number or boolean"):
        DuckLakeResource(catalog="c.ducklake", attach_options={"BAD": [1, 2]})


def test_secrets_with_quotes_semicolons_and_dashes_work_and_never_leak(
    tmp_path, pg_database, s3_bucket, s3_settings, s3_resource, caplog
):
    password, s3_secret = pg_database.password, s3_settings.aws_secret_access_key
    assert all(c in password for c in "';") and "--" in password and "'" in s3_secret

    @dg.asset
    def lake_tables(context: dg.AssetExecutionContext, ducklake: DuckLakeResource) -> dg.MaterializeResult:
        with ducklake.get_connection() as connection:
            connection.execute("CREATE TABLE t AS SELECT range AS i FROM range(3)")
            context.log.info(f"wrote to {ducklake.lake_settings().describe()}")
        return dg.MaterializeResult(metadata={"catalog": ducklake.lake_settings().describe()})

    resource = DuckLakeResource(
        catalog=catalog_for("postgres", tmp_path, pg_database),
        data_path=s3_bucket.uri("lake/"),
        s3=s3_resource,
    )
    with caplog.at_level(logging.DEBUG):
        result = dg.materialize([lake_tables], resources={"ducklake": resource})
    assert result.success
    shown = [str(v.value) for v in result.asset_materializations_for_node("lake_tables")[0].metadata.values()]
    shown += [record.getMessage() for record in caplog.records]
    shown += [str(event) for event in result.all_events]
    assert shown and not any(password in text or s3_secret in text for text in shown)

    wrong = DuckLakeResource(
        catalog=PostgresCatalogConfig(
            host=pg_database.host,
            port=pg_database.port,
            dbname=pg_database.dbname,
            user=pg_database.user,
            password=password + "x",
        )
    )
    with pytest.raises(CatalogConnectionError) as error, wrong.get_connection():
        pass
    message = str(error.value)
    assert "password" in message and pg_database.dbname in message
    assert password not in message and password.replace("'", "''") not in message


def test_unreachable_postgres_names_the_catalog_and_what_to_do(tmp_path):
    resource = DuckLakeResource(catalog="postgres:host=127.0.0.1 port=1 dbname=lake user=me password=s3cr3t'x")
    with pytest.raises(CatalogConnectionError) as error, resource.get_connection():
        pass
    message = str(error.value)
    assert "dbname=lake" in message and "running and reachable" in message
    assert "s3cr3t" not in message


def test_missing_data_path_of_an_existing_lake_is_refused(tmp_path):
    data = tmp_path / "data"
    resource = DuckLakeResource(
        catalog=str(tmp_path / "c.ducklake"), data_path=str(data), attach_options={"DATA_INLINING_ROW_LIMIT": 0}
    )
    write_read_reopen(resource)
    data.rename(tmp_path / "moved")
    with pytest.raises(CatalogConnectionError, match="does not exist") as error, resource.get_connection():
        pass
    assert str(data) in str(error.value) and "c.ducklake" in str(error.value)
    assert not data.exists(), "nothing was created in place of the missing folder"


def test_missing_bucket_is_named(tmp_path, s3_settings, s3_resource):
    resource = DuckLakeResource(
        catalog=str(tmp_path / "c.ducklake"), data_path="s3://no-such-bucket-here/lake/", s3=s3_resource
    )
    with pytest.raises(Exception) as error, resource.get_connection() as connection:
        connection.execute("CREATE TABLE t AS SELECT range AS i FROM range(100000)")
    assert "no-such-bucket-here" in str(error.value)
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        ObjectStore(s3_settings).list_prefix("s3://no-such-bucket-here/lake/")


def test_extensions_load_offline_from_the_wheels_with_an_empty_home(tmp_path, empty_home):
    script = f"""
import duckdb
from ducklake_assets.core.lake import LakeSettings, connect_lake, new_connection, prepare_connection
from ducklake_assets.core.catalog import parse_catalog
from ducklake_assets.core.s3 import S3Settings
settings = LakeSettings(catalog=parse_catalog({str(tmp_path / "c.ducklake")!r}), data_path={str(tmp_path / "d")!r},
                        s3=S3Settings(endpoint_url='http://127.0.0.1:1'))
with connect_lake(settings) as connection:
    connection.execute("SET autoinstall_known_extensions = false")
    connection.execute("CREATE TABLE t AS SELECT 1 AS i")
    loaded = dict(connection.execute(
        "SELECT extension_name, install_path FROM duckdb_extensions() WHERE loaded").fetchall())
print(sorted(loaded))
"""
    env = {"HOME": str(empty_home), "PATH": "/usr/bin:/bin", "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "'ducklake'" in done.stdout and "'httpfs'" in done.stdout
    assert not (empty_home / ".duckdb").exists(), "nothing was installed into ~/.duckdb"


def test_object_store_local_and_s3_alike(tmp_path, s3_bucket, s3_settings):
    store = ObjectStore(s3_settings)
    source = tmp_path / "payload.bin"
    source.write_bytes(b"x" * 1234)
    for target in (str(tmp_path / "out" / "a" / "payload.bin"), s3_bucket.uri("out/a/payload.bin")):
        written = store.put_file(source, target)
        assert written.size == 1234 and store.exists(target)
        prefix = target.rsplit("/", 2)[0]
        assert [o.uri.rsplit("/", 1)[1] for o in store.list_prefix(prefix, pattern="**/*.bin")] == ["payload.bin"]
        assert store.get_bytes(target) == b"x" * 1234
        store.delete(target)
        assert not store.exists(target)
    assert [k["Key"] for k in s3_bucket.client().list_objects_v2(Bucket=s3_bucket.name).get("Contents", [])] == []


def test_an_s3_listing_and_a_head_request_tell_the_same_modified_time(tmp_path, s3_bucket, s3_settings):
    store = ObjectStore(s3_settings)
    source = tmp_path / "payload.bin"
    source.write_bytes(b"x")
    before = datetime.now(UTC).replace(microsecond=0)
    store.put_file(source, s3_bucket.uri("in/payload.bin"))

    [listed] = store.list_prefix(s3_bucket.uri("in"))  # ISO 8601 in the listing's XML
    headed = store.stat(s3_bucket.uri("in/payload.bin"))  # an HTTP date in the Last-Modified header

    assert listed.modified.tzinfo is not None and headed.modified.tzinfo is not None
    assert listed.modified.replace(microsecond=0) == headed.modified
    assert before <= headed.modified <= datetime.now(UTC)


def test_settings_describe_never_shows_the_password():
    settings = LakeSettings.from_strings("postgres:dbname=lake host=db user=me password='p;w--x'")
    assert "p;w--x" not in settings.describe() and "***" in settings.describe()
    assert "p;w--x" not in repr(settings)
    with pytest.raises(CatalogConnectionError), connect_lake(LakeSettings.from_strings("/proc/nope/x.ducklake")):
        pass


def test_duckdb_gets_the_s3_secret_exactly_as_boto3_does(tmp_path, s3_bucket, s3_settings):
    settings = LakeSettings.from_strings(str(tmp_path / "c.ducklake"), s3_bucket.uri("lake/"), s3=s3_settings)
    connection = new_connection(config={"allow_unredacted_secrets": True})
    prepare_connection(connection, settings)
    (secret,) = connection.execute(
        "SELECT secret_string FROM duckdb_secrets(redact := false) WHERE type = 's3'"
    ).fetchone()
    assert f"secret={s3_settings.aws_secret_access_key}" in secret
    assert f"endpoint={s3_bucket.endpoint.host}:{s3_bucket.endpoint.port}" in secret
    assert "url_style=path" in secret and "use_ssl=false" in secret


def test_object_store_lists_a_relative_folder_with_a_pattern(tmp_path, monkeypatch):
    (tmp_path / "out" / "deep").mkdir(parents=True)
    (tmp_path / "out" / "deep" / "a.json").write_text("{}")
    (tmp_path / "out" / "b.txt").write_text("")
    monkeypatch.chdir(tmp_path)
    found = ObjectStore().list_prefix("out", pattern="**/*.json")
    assert [item.uri for item in found] == [str(tmp_path / "out" / "deep" / "a.json")]
    written = ObjectStore().put_file(tmp_path / "out" / "b.txt", "published/b.txt")
    assert (tmp_path / "published" / "b.txt").stat().st_mode & 0o777 == 0o644, written


def test_a_missing_extension_wheel_names_the_package_to_install(tmp_path, empty_home):
    stub = tmp_path / "site" / "duckdb_extension_httpfs"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("")
    script = """
import duckdb
from ducklake_assets.core.extensions import load_extension
try:
    load_extension(duckdb.connect(), "httpfs")
except Exception as error:
    print(type(error).__name__, error)
"""
    env = {"HOME": str(empty_home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("ExtensionNotAvailableError"), done.stdout + done.stderr
    assert f"pip install duckdb-extension-httpfs=={duckdb.__version__}" in done.stdout


@pytest.mark.parametrize("style", ["auto", "virtual", "path"])
def test_the_s3_addressing_style_reaches_boto3_as_given(style):
    client = S3Resource(region_name="us-east-1", addressing_style=style).get_client()

    assert client.meta.config.s3["addressing_style"] == style


@pytest.mark.parametrize("kind", ["duckdb", "sqlite"])
def test_a_data_path_that_cannot_be_created_leaves_no_catalog_behind_and_the_fix_works(kind, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should go")
    catalog = str(tmp_path / "lake.ducklake") if kind == "duckdb" else f"sqlite:{tmp_path / 'lake.sqlite'}"
    wrong = DuckLakeResource(catalog=catalog, data_path=str(blocker / "data"))

    with pytest.raises(ConfigurationError, match=r"data_path .*not-a-folder/data.* cannot be created: .* not a folder"):
        with wrong.get_connection():
            pass

    assert sorted(path.name for path in tmp_path.iterdir()) == ["not-a-folder"]
    fixed = DuckLakeResource(catalog=catalog, data_path=str(tmp_path / "data"))
    with fixed.get_connection() as connection:
        connection.execute("CREATE TABLE t AS SELECT 42 AS x")
        assert connection.execute("SELECT sum(x) FROM t").fetchone() == (42,)
