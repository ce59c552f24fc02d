"""Fixtures that give tests real PostgreSQL and S3 services.

A fixture whose service cannot be started or reached fails the test with the
reason; it never skips, because a skipped integration test looks green while
proving nothing.
"""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from ducklake_assets.core.lake import OFFLINE_CONFIG
from ducklake_assets.core.s3 import S3Settings
from ducklake_assets.resources import DuckLakeResource, PostgresCatalogConfig, S3Resource
from ducklake_assets_tests.backup_lakes import MATRIX, Backend, backend
from ducklake_assets_tests.parquet_files import crew, parquet
from ducklake_assets_tests.services import (
    PG_DSN_ENV,
    PostgresDatabase,
    PostgresServer,
    S3Bucket,
    S3Endpoint,
    ServiceError,
    create_bucket,
    external_postgres,
    moto_s3,
    postgres_database,
    throwaway_postgres,
)

_duckdb_connect = duckdb.connect


def _offline_connect(database: str = ":memory:", read_only: bool = False, config: dict | None = None, **kwargs):
    """``duckdb.connect`` with extension auto-install and auto-load forced off (``OFFLINE_CONFIG``)."""
    return _duckdb_connect(database, read_only=read_only, config={**(config or {}), **OFFLINE_CONFIG}, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    """No test may pass by letting DuckDB download an extension: a networked laptop would hide what fails
    offline (and here). Every DuckDB connection in the test process, the library's, dagster-duckdb's and
    the tests' own, has ``autoinstall_known_extensions`` and ``autoload_known_extensions`` off; the
    library sets the same on its own connections in every process (``new_connection``)."""
    duckdb.connect = _offline_connect


_SERVICE_FIXTURES = {
    "postgres_server",
    "pg_database",
    "postgres_lake",
    "s3_server",
    "s3_bucket",
    "s3_settings",
    "s3_resource",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test gets one marker: ``ui`` (drives Chromium), ``integration`` (uses PostgreSQL or S3 through a
    fixture, or starts them itself) or ``fast``; ``pytest -m fast`` runs in a few minutes without services."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        parameters = getattr(getattr(item, "callspec", None), "params", {})
        # A test parametrized over the production matrix fetches its service with request.getfixturevalue.
        values = [part for value in parameters.values() for part in (value if isinstance(value, tuple) else (value,))]
        if any(str(value).lower() in ("s3", "postgres", "pg") for value in values):
            fixtures.add("s3_server")
        if item.path.name == "test_ui_end_to_end.py":
            item.add_marker(pytest.mark.ui)
        elif fixtures & _SERVICE_FIXTURES or item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.integration)
        else:
            item.add_marker(pytest.mark.fast)


@contextlib.contextmanager
def _fail_if_unavailable(what: str) -> Iterator[None]:
    """Turn a `ServiceError` into a test failure showing just the reason.

    `from None` keeps pytest from printing the internal traceback chain,
    which would bury the one line that says what is wrong.
    """
    try:
        yield
    except ServiceError as exc:
        raise pytest.fail.Exception(f"{what} unavailable: {exc}", pytrace=False) from None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server, as a superuser.

    `DUCKLAKE_TEST_PG_DSN` selects an existing server; otherwise a private
    throwaway cluster is started, so the tests never touch a system instance.
    """
    with _fail_if_unavailable("PostgreSQL test service"):
        if dsn := os.environ.get(PG_DSN_ENV):
            yield external_postgres(dsn)
        else:
            with throwaway_postgres() as server:
                yield server


@pytest.fixture
def pg_database(postgres_server: PostgresServer) -> Iterator[PostgresDatabase]:
    """A fresh database owned by a fresh non-superuser role with a hostile password."""
    with _fail_if_unavailable("PostgreSQL test database"), postgres_database(postgres_server) as database:
        yield database


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Endpoint]:
    """An in-process moto S3 server on a free loopback port."""
    with _fail_if_unavailable("S3 test service"), moto_s3() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_server: S3Endpoint) -> S3Bucket:
    """A fresh, empty bucket, so tests never see each other's objects."""
    with _fail_if_unavailable("S3 test bucket"):
        return create_bucket(s3_server)


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point HOME at an empty directory.

    Proves the code under test relies on nothing in `~/.duckdb` (installed
    extensions, secrets) that a fresh CI machine would not have.
    """
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def s3_settings(s3_bucket: S3Bucket) -> S3Settings:
    """Library S3 settings for the test bucket's endpoint (path-style, no TLS)."""
    endpoint = s3_bucket.endpoint
    return S3Settings(
        endpoint_url=endpoint.endpoint_url,
        region_name=endpoint.region_name,
        aws_access_key_id=endpoint.aws_access_key_id,
        aws_secret_access_key=endpoint.aws_secret_access_key,
        path_style=True,
    )


@pytest.fixture
def s3_resource(s3_settings: S3Settings) -> S3Resource:
    """The Dagster `S3Resource` for the same endpoint and keys as `s3_settings`."""
    return S3Resource(
        endpoint_url=s3_settings.endpoint_url,
        region_name=s3_settings.region_name,
        aws_access_key_id=s3_settings.aws_access_key_id,
        aws_secret_access_key=s3_settings.aws_secret_access_key,
        addressing_style="path",
    )


@pytest.fixture
def space(tmp_path: Path) -> Path:
    """The space-missions source folder of the frozen-lake demo, in miniature: 20 astronauts in two files,
    4 missions in one."""
    source = tmp_path / "data" / "space"
    crew(source / "astronauts.p1.parquet", 0)
    crew(source / "astronauts.p2.parquet", 10)
    parquet(source / "missions.p1.parquet", "SELECT range AS mission_id, 'mission ' || range AS name FROM range(4)")
    return source


@pytest.fixture
def postgres_lake(pg_database: PostgresDatabase, tmp_path: Path) -> DuckLakeResource:
    """A `DuckLakeResource` with its catalog in the test's PostgreSQL database and its data in `tmp_path/data`."""
    return DuckLakeResource(
        catalog=PostgresCatalogConfig(
            host=pg_database.host,
            port=pg_database.port,
            dbname=pg_database.dbname,
            user=pg_database.user,
            password=pg_database.password,
        ),
        data_path=str(tmp_path / "data"),
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """In CI a skipped test counts as failed: a skip there would hide a service we promised to test."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") == "true" and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {report.longrepr}"


@pytest.fixture(params=MATRIX, ids=["-".join(cell) for cell in MATRIX])
def lake_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Runs the test once per cell of the production matrix: catalog kind x data x backups, each on disk or S3."""
    return backend(request.param, tmp_path, request)
