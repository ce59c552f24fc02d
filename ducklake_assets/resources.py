"""Dagster resources: a DuckLake connection (built on ``DuckDBResource``) and an S3 client."""

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import Field, field_validator

from .core.catalog import Catalog, DuckDBCatalog, PostgresCatalog, SQLiteCatalog, parse_catalog
from .core.errors import ConfigurationError
from .core.lake import LakeSettings, connect_lake
from .core.retry import RetryLogger, RetryPolicy, execute_with_retry, run_in_transaction
from .core.s3 import S3Settings
from .core.storage import ObjectStore

_T = TypeVar("_T")


class S3Resource(dg.ConfigurableResource):
    """An S3 (or S3-compatible) store, reachable by boto3 and by DuckDB with the same settings.

    Field names follow ``dagster_aws.s3.S3Resource``. Pass secrets with ``dg.EnvVar``.

    .. code-block:: python

        import dagster as dg
        from ducklake_assets import S3Resource

        s3 = S3Resource(
            endpoint_url="http://127.0.0.1:9000",
            region_name="us-east-1",
            aws_access_key_id=dg.EnvVar("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=dg.EnvVar("AWS_SECRET_ACCESS_KEY"),
            addressing_style="path",
        )
        s3.get_client().list_buckets()
    """

    endpoint_url: str | None = Field(
        default=None, description="Endpoint URL for S3-compatible stores, e.g. http://127.0.0.1:9000."
    )
    region_name: str | None = Field(default=None, description="AWS region, e.g. us-east-1.")
    aws_access_key_id: str | None = Field(default=None, description="Access key id.")
    aws_secret_access_key: str | None = Field(
        default=None, description="Secret access key. Pass it as dg.EnvVar('AWS_SECRET_ACCESS_KEY')."
    )
    aws_session_token: str | None = Field(default=None, description="Session token for temporary credentials.")
    use_ssl: bool | None = Field(
        default=None, description="Use TLS. Default: follow endpoint_url's scheme (http:// means no TLS), else TLS."
    )
    addressing_style: Literal["auto", "virtual", "path"] = Field(
        default="auto",
        description="Bucket addressing: 'path' for most S3-compatible stores (MinIO, moto), 'virtual' for AWS.",
    )

    def settings(self) -> S3Settings:
        """The plain settings the core uses (boto3 client and DuckDB secret come from these)."""
        return S3Settings(
            endpoint_url=self.endpoint_url,
            region_name=self.region_name,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            use_ssl=self.use_ssl,
            path_style=self.addressing_style == "path",
            virtual_style=self.addressing_style == "virtual",
        )

    def get_client(self) -> Any:
        """A boto3 S3 client (boto3 makes its client classes at run time, so they have no static type)."""
        return self.settings().boto3_client()


class DuckDBCatalogConfig(dg.Config):
    """A catalog in a DuckDB database file: the embedded default, one writing process."""

    kind: Literal["duckdb"] = "duckdb"
    path: str = Field(description="Path of the catalog file, e.g. lake/catalog.ducklake.")


class SQLiteCatalogConfig(dg.Config):
    """A catalog in a SQLite database file: several processes may write, one at a time."""

    kind: Literal["sqlite"] = "sqlite"
    path: str = Field(description="Path of the SQLite catalog file.")


class PostgresCatalogConfig(dg.Config):
    """A catalog in PostgreSQL: many concurrent writers.

    Either ``dsn`` (libpq keywords or a ``postgresql://`` URL) or the separate fields; ``password``
    overrides a password inside ``dsn``. Pass it with ``dg.EnvVar``.
    """

    kind: Literal["postgres"] = "postgres"
    dsn: str | None = Field(default=None, description="libpq DSN ('dbname=lake host=db') or postgresql:// URL.")
    host: str | None = Field(default=None, description="Server host.")
    port: int | None = Field(default=None, description="Server port.")
    dbname: str | None = Field(default=None, description="Database holding the catalog.")
    user: str | None = Field(default=None, description="Database user.")
    password: str | None = Field(default=None, description="Password; pass it as dg.EnvVar('PGPASSWORD').")


CatalogConfig = Annotated[
    DuckDBCatalogConfig | SQLiteCatalogConfig | PostgresCatalogConfig, Field(discriminator="kind")
]


def catalog_config_from_string(text: str) -> DuckDBCatalogConfig | SQLiteCatalogConfig | PostgresCatalogConfig:
    """The config for DuckLake's own catalog string ('lake.ducklake', 'sqlite:x', 'postgres:dbname=x')."""
    catalog = parse_catalog(text)
    if isinstance(catalog, DuckDBCatalog):
        return DuckDBCatalogConfig(path=catalog.path)
    if isinstance(catalog, SQLiteCatalog):
        return SQLiteCatalogConfig(path=catalog.path)
    return PostgresCatalogConfig(dsn=catalog.conninfo(), password=catalog.password)


def catalog_from_config(config: DuckDBCatalogConfig | SQLiteCatalogConfig | PostgresCatalogConfig) -> Catalog:
    """Turn a catalog config into the core's catalog description."""
    if isinstance(config, DuckDBCatalogConfig):
        return DuckDBCatalog(config.path)
    if isinstance(config, SQLiteCatalogConfig):
        return SQLiteCatalog(config.path)
    parts = [config.dsn or ""]
    for key in ("host", "port", "dbname", "user"):
        value = getattr(config, key)
        if value is not None:
            parts.append(f"{key}={PostgresCatalog.quote_value(str(value))}")
    dsn = " ".join(part for part in parts if part)
    if config.dsn and "://" in config.dsn and len(parts) > 1 and any(parts[1:]):
        raise ConfigurationError("PostgreSQL catalog: give either a postgresql:// URL in dsn or separate fields")
    return PostgresCatalog.from_dsn(dsn, config.password)


class DuckLakeResource(DuckDBResource):
    """A DuckDB connection with a DuckLake attached and in use; fits wherever ``DuckDBResource`` fits.

    ``database`` and ``connection_config`` keep their ``DuckDBResource`` meaning (the connection's own
    DuckDB database, ``:memory:`` by default, and DuckDB settings).

    .. code-block:: python

        import dagster as dg
        from ducklake_assets import DuckLakeResource

        @dg.asset
        def trips(ducklake: DuckLakeResource) -> None:
            with ducklake.get_connection() as connection:
                connection.execute("CREATE TABLE IF NOT EXISTS trips AS SELECT 1 AS id")  # lands in the lake

        defs = dg.Definitions(
            assets=[trips],
            resources={"ducklake": DuckLakeResource(catalog="lake/catalog.ducklake", data_path="lake/data")},
        )
    """

    database: str = Field(default=":memory:", description="The connection's own DuckDB database (not the lake).")
    catalog: CatalogConfig = Field(
        description=(
            "The catalog: a DuckLake catalog string ('lake.ducklake', 'sqlite:lake.sqlite', "
            "'postgres:dbname=lake host=db') or a config with kind duckdb, sqlite or postgres."
        )
    )
    data_path: str | None = Field(
        default=None,
        description="Where data files live: a folder or s3://bucket/prefix/. Needed when the lake is created.",
    )
    alias: str = Field(default="lake", description="Name the lake is attached as (and USEd).")
    read_only: bool = Field(default=False, description="Attach read-only: every write is refused.")
    metadata_schema: str | None = Field(default=None, description="Schema of the catalog tables in the catalog DB.")
    attach_options: dict[str, Any] = Field(
        default={},
        description="Extra DuckLake ATTACH options (strings, numbers, booleans), e.g. {'DATA_INLINING_ROW_LIMIT': 0}.",
    )
    memory_limit: str | None = Field(default=None, description="DuckDB memory_limit, e.g. '4GB'.")
    threads: int | None = Field(default=None, description="DuckDB threads.")
    s3: S3Resource | None = Field(default=None, description="S3 settings, needed when any path is s3://.")
    retry_max_attempts: int = Field(
        default=10,
        ge=1,
        description="Attempts for a write that conflicts with another writer (1 = no retry).",
    )
    retry_base_delay_seconds: float = Field(
        default=0.05, ge=0, description="First backoff after a conflict; doubles per attempt, with jitter."
    )
    retry_max_delay_seconds: float = Field(default=2.0, ge=0, description="Longest backoff between two attempts.")

    def __init__(self, **data: Any):
        if isinstance(data.get("catalog"), str):
            data["catalog"] = catalog_config_from_string(data["catalog"])
        super().__init__(**data)

    @field_validator("attach_options")
    @classmethod
    def _typed_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, option in value.items():
            if not isinstance(option, str | int | float | bool):
                raise ValueError(f"attach option {name!r} must be a string, number or boolean")
        return value

    def lake_settings(self) -> LakeSettings:
        """The plain settings the core works with."""
        return LakeSettings(
            catalog=catalog_from_config(self.catalog),
            data_path=self.data_path,
            alias=self.alias,
            read_only=self.read_only,
            metadata_schema=self.metadata_schema,
            attach_options=dict(self.attach_options),
            memory_limit=self.memory_limit,
            threads=self.threads,
            s3=self.s3.settings() if self.s3 else None,
        )

    @contextlib.contextmanager
    def get_connection(self, log: RetryLogger | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection with extensions loaded, S3 secret created, the lake attached and ``USE``d.

        While another process holds a DuckDB-file catalog, the attach is tried again under the retry
        settings; pass ``log=context.log`` to see the waits in the run's logs.
        """
        with connect_lake(
            self.lake_settings(),
            database=self.database,
            config=self.connection_config,
            retry=self.retry_policy(),
            log=log or dg.get_dagster_logger(),
        ) as connection:
            yield connection

    def retry_policy(self) -> RetryPolicy:
        """The retry settings as the core takes them."""
        return RetryPolicy(
            max_attempts=self.retry_max_attempts,
            base_delay_seconds=self.retry_base_delay_seconds,
            max_delay_seconds=self.retry_max_delay_seconds,
        )

    def run_in_transaction(
        self,
        work: Callable[[duckdb.DuckDBPyConnection], _T],
        *,
        connection: duckdb.DuckDBPyConnection | None = None,
        log: RetryLogger | None = None,
    ) -> _T:
        """Run ``work(connection)`` in one lake transaction, all of it again when another writer wins the commit.

        ``work`` may run more than once, so it reads what it needs through the connection it is given.
        Pass a ``connection`` from ``get_connection()`` to reuse it for many transactions (else
        each call attaches the lake anew), and ``log=context.log`` to see retries in the run's logs.

        .. code-block:: python

            @dg.asset
            def counters(ducklake: DuckLakeResource) -> None:
                ducklake.run_in_transaction(
                    lambda connection: connection.execute("UPDATE counters SET n = n + 1 WHERE name = ?", ["runs"])
                )
        """
        log = log or dg.get_dagster_logger()
        with contextlib.ExitStack() as stack:
            if connection is None:
                connection = stack.enter_context(self.get_connection(log))
            return run_in_transaction(
                connection, work, policy=self.retry_policy(), log=log, secrets=self.lake_settings().secrets()
            )

    def execute_with_retry(
        self,
        sql: str,
        parameters: Sequence[Any] | Mapping[str, Any] | None = None,
        *,
        connection: duckdb.DuckDBPyConnection | None = None,
        log: RetryLogger | None = None,
    ) -> list[tuple[Any, ...]]:
        """Execute one statement (values bound as ``?`` or ``$name``), again on a conflict; returns its rows.

        ``connection`` as in :meth:`run_in_transaction`.
        """
        log = log or dg.get_dagster_logger()
        with contextlib.ExitStack() as stack:
            if connection is None:
                connection = stack.enter_context(self.get_connection(log))
            return execute_with_retry(
                connection, sql, parameters, policy=self.retry_policy(), log=log, secrets=self.lake_settings().secrets()
            ).fetchall()


def lake_and_store(
    resources: Any, lake_resource_key: str, s3_resource_key: str | None = None
) -> tuple[LakeSettings, ObjectStore]:
    """The lake behind ``lake_resource_key`` and the store for the files kept beside it (backups, frozen lakes).

    The store reaches S3 through the ``S3Resource`` at ``s3_resource_key`` when one is named, else with the
    lake's own S3 settings. ``resources`` is a Dagster context's ``resources``.
    """
    settings = getattr(resources, lake_resource_key).lake_settings()
    s3 = getattr(resources, s3_resource_key).settings() if s3_resource_key else settings.s3
    return settings, ObjectStore(s3)
