"""An IO manager that stores DataFrame outputs as DuckLake tables and loads inputs from them.

Built on dagster-duckdb's ``DuckDBIOManager`` and its pandas and polars type handlers, so the rules users
know from it (table = last part of the asset key, schema from ``schema`` metadata, ``partition_expr`` for
partitioned assets, ``columns`` on an input) hold here too. What the lake adds: each output is written in
one DuckLake transaction (schema, delete of the slice, insert) whose snapshot names the Dagster run and
asset, and that transaction runs again when another writer wins the commit.
"""

import contextlib
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence, Sized
from typing import Any, cast

import dagster as dg
import duckdb
from dagster._core.storage.db_io_manager import DbClient, DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb import DuckDBIOManager
from dagster_duckdb.io_manager import DUCKDB_DATETIME_FORMAT, DuckDbClient
from pydantic import Field, ValidationInfo, field_validator

from .core.errors import ConfigurationError, DuckLakeAssetsError, LakeIOError, redact
from .core.retry import run_in_transaction
from .core.sql import qualified_name, quote_identifier
from .core.sql_commands import table_summary
from .metadata import Metadata
from .resources import DuckLakeResource

_INSTALL_HINT = 'pip install "ducklake-assets[pandas]" (or "ducklake-assets[polars]")'


class DuckLakeIOManager(DuckDBIOManager):
    """Stores pandas and polars DataFrame outputs as DuckLake tables and loads inputs from them.

    Each output lands in one DuckLake snapshot: the schema is created, the asset's rows (or, for a
    partitioned asset, its partition's rows) are deleted and the DataFrame is inserted in one transaction,
    whose commit author and message name the Dagster run and asset. A commit that loses a race with another
    writer runs again under the lake's retry settings; a failed write changes nothing.

    Table and schema follow ``DuckDBIOManager``: the table is the last part of the asset key, the schema
    the asset's ``schema`` metadata, else the ``schema`` setting (``main``), else (with ``schema=None``)
    the asset key prefix. An input's own ``schema`` metadata (``dg.AssetIn(key, metadata={"schema": "raw"})``)
    wins over the upstream asset's, so any lake table, such as one the pipeline registered, is read by
    naming its asset key and schema. A partitioned asset needs ``partition_expr`` metadata naming its
    partition column (or a SQL expression over the table); an input reads only its partitions, and
    ``columns`` metadata on an input reads only those columns.

    pandas and polars support are extras: ``pip install "ducklake-assets[pandas]"`` and/or
    ``"ducklake-assets[polars]"``. With both installed, annotate inputs with the type to load.

    Examples:
        .. code-block:: python

            import dagster as dg
            import pandas as pd
            from ducklake_assets import DuckLakeIOManager, DuckLakeResource

            @dg.asset
            def astronauts() -> pd.DataFrame:  # becomes the lake table main.astronauts
                return pd.DataFrame({"id": [1, 2], "name": ["Ada", "Yuri"]})

            @dg.asset
            def crew_size(astronauts: pd.DataFrame) -> None:  # read back from the lake
                print(len(astronauts))

            defs = dg.Definitions(
                assets=[astronauts, crew_size],
                resources={
                    "io_manager": DuckLakeIOManager(
                        lake=DuckLakeResource(catalog="lake/catalog.ducklake", data_path="lake/data")
                    )
                },
            )
    """

    lake: DuckLakeResource = Field(description="The lake the tables live in, as the pipeline's DuckLakeResource.")
    database: str = Field(
        default=":memory:",
        description="Inherited from DuckDBIOManager and unused: the connection is configured on `lake`.",
    )
    schema_: str | None = Field(
        default="main",
        alias="schema",
        description=(
            "Schema of tables whose asset has no 'schema' metadata. None takes it from the asset key prefix, "
            "as DuckDBIOManager does."
        ),
    )

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        """The pandas and polars handlers whose packages are installed."""
        handlers: list[DbTypeHandler] = []
        with contextlib.suppress(ImportError):
            from dagster_duckdb_pandas import DuckDBPandasTypeHandler

            handlers.append(DuckDBPandasTypeHandler())
        with contextlib.suppress(ImportError):
            from dagster_duckdb_polars import DuckDBPolarsTypeHandler

            handlers.append(DuckDBPolarsTypeHandler())
        return handlers

    @field_validator("database", "connection_config")
    @classmethod
    def _set_on_the_lake(cls, value: Any, info: ValidationInfo) -> Any:
        if value not in (":memory:", {}):
            raise ValueError(
                f"DuckLakeIOManager connects through its `lake` resource: set {info.field_name} on "
                "lake=DuckLakeResource(...), not on the IO manager"
            )
        return value

    def create_io_manager(self, context: dg.InitResourceContext) -> DbIOManager:
        return _LakeDbIOManager(
            lake=self.lake,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
        )


class _LakeClient(DbClient):
    """DbClient over a DuckLake: connections from the resource, names quoted, values bound.

    It takes DbIOManager's slices (plain names, ``database`` the lake alias); the type handlers get
    :func:`_sql_slice` slices instead, so their own SQL (``{schema}.{table}``) is quoted and qualified too.
    """

    def __init__(self, lake: DuckLakeResource):
        self._lake = lake

    @contextlib.contextmanager
    def connect(  # type: ignore[override]  # dagster declares it static, yet DbIOManager calls it on the client
        self, context: dg.OutputContext | dg.InputContext, table_slice: TableSlice
    ) -> Iterator[Any]:
        with self._lake.get_connection(context.log) as connection:
            yield connection

    @staticmethod
    def ensure_schema_exists(context: dg.OutputContext, table_slice: TableSlice, connection: Any) -> None:
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_sql_slice(table_slice).schema}")

    @staticmethod
    def delete_table_slice(context: dg.OutputContext, table_slice: TableSlice, connection: Any) -> None:
        _delete_slice(connection, table_slice)

    @staticmethod
    def get_select_statement(table_slice: TableSlice) -> str:
        return DuckDbClient.get_select_statement(_sql_slice(table_slice))


class _MetadataCollector:
    """The output context as a type handler sees it: metadata it adds is kept, not reported yet.

    An attempt that conflicts runs the handler again, and Dagster refuses a metadata key added twice;
    only what the committed attempt's handler added is reported, beside the IO manager's own.
    """

    def __init__(self, context: dg.OutputContext):
        self._context = context
        self.metadata: dict[str, Any] = {}

    def add_output_metadata(self, metadata: Mapping[str, Any]) -> None:
        self.metadata.update(metadata)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class _LakeDbIOManager(DbIOManager):
    def __init__(
        self,
        *,
        lake: DuckLakeResource,
        schema: str | None,
        type_handlers: Sequence[DbTypeHandler],
        default_load_type: type | None,
    ):
        super().__init__(
            type_handlers=type_handlers,
            db_client=_LakeClient(lake),
            database=lake.alias,
            schema=schema,
            io_manager_name="DuckLakeIOManager",
            default_load_type=default_load_type,
        )
        self._lake = lake

    def _check_supported_type(self, obj_type: object) -> None:
        if not self._handlers_by_type:
            raise ConfigurationError(
                f"DuckLakeIOManager needs pandas or polars support, and neither is installed: {_INSTALL_HINT}"
            )
        super()._check_supported_type(obj_type)

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        if obj is None:
            raise dg.DagsterInvariantViolationError(
                "Unexpected 'None' output value. If a 'None' value is intentional, set the output"
                " type to None by adding return type annotation '-> None'."
            )
        self._check_supported_type(type(obj))
        assert isinstance(obj, Sized), "the pandas and polars DataFrames the handlers take have a length"
        handler = self._resolve_handler(type(obj))
        table_slice = self._get_table_slice(context, context)
        name = self._db_client.get_table_name(table_slice)
        settings = self._lake.lake_settings()
        what = _output_name(context)
        run_id = context.run_id
        info = json.dumps(
            {"dagster_run_id": run_id, "dagster_asset": what, "write": uuid.uuid4().hex}
            | ({"dagster_partitions": _partitions(context)} if context.has_asset_partitions else {}),
            sort_keys=True,
        )
        message = f"{what}: write {len(obj)} rows to {name}{_partition_note(context)} (run {run_id})"

        def write(connection: duckdb.DuckDBPyConnection) -> tuple[int, dict[str, Any]]:
            collector = _MetadataCollector(context)
            self._db_client.ensure_schema_exists(context, table_slice, connection)
            deleted = _delete_slice(connection, table_slice)
            handler.handle_output(collector, _sql_slice(table_slice), obj, connection)  # type: ignore[arg-type]
            connection.execute(
                f"CALL {quote_identifier(settings.alias)}.set_commit_message(?, ?, extra_info => ?)",
                [f"dagster run {run_id}", message, info],
            )
            return deleted, collector.metadata

        with self._db_client.connect(context, table_slice) as connection:
            try:
                deleted, handler_metadata = run_in_transaction(
                    connection,
                    write,
                    policy=self._lake.retry_policy(),
                    log=context.log,
                    what=f"Writing {what} to lake table {name}",
                    secrets=settings.secrets(),
                )
            except DuckLakeAssetsError:
                raise
            except Exception as error:
                reason = redact(str(error), settings.secrets())
                hint = (
                    ": convert that column to a type DuckLake stores (a pandas category column with .astype(str))"
                    if "to DuckLake - unsupported type" in reason
                    else ""
                )
                raise LakeIOError(
                    f"Writing {what} to lake table {name} failed, so the lake is unchanged{hint}. Cause: {reason}"
                ) from (None if isinstance(error, duckdb.Error) else error)
            metadata = self._written_metadata(connection, table_slice, info)
        context.add_output_metadata(
            {
                "dataframe_columns": handler_metadata.get("dataframe_columns"),
                **metadata,
                "rows_written": len(obj),
                "rows_deleted": deleted,
                **({"dagster/partition_row_count": len(obj)} if context.has_asset_partitions else {}),
                "dagster/table_name": name,
                "dagster/storage_kind": "ducklake",
                "commit_message": message,
                "Query": self._db_client.get_select_statement(table_slice),
            }
        )

    def _written_metadata(self, connection: duckdb.DuckDBPyConnection, table_slice: TableSlice, info: str) -> Metadata:
        """The snapshot the write made (the latest one when it changed nothing) and the table as it is now."""
        alias = self._lake.alias
        [(snapshot_id,)] = connection.execute(
            "SELECT max(snapshot_id) FROM ducklake_snapshots(?) WHERE commit_extra_info = ?", [alias, info]
        ).fetchall()
        metadata: Metadata = {"new_snapshot": snapshot_id is not None}
        if snapshot_id is None:
            [(snapshot_id,)] = connection.execute(
                "SELECT max(snapshot_id) FROM ducklake_snapshots(?)", [alias]
            ).fetchall()
        metadata["snapshot_id"] = snapshot_id
        row = _existing_table(connection, table_slice)
        if row is None:
            return {**metadata, "dagster/row_count": 0}
        row_count, columns = table_summary(connection, alias, *row)
        return {
            **metadata,
            "dagster/row_count": row_count,
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(column, column_type) for column, column_type in columns]
            ),
        }

    def load_input(self, context: dg.InputContext) -> object:
        obj_type = context.dagster_type.typing_type
        load_type = self._default_load_type if obj_type is Any and self._default_load_type is not None else obj_type
        self._check_supported_type(load_type)
        upstream = cast(dg.OutputContext, context.upstream_output)
        # A pipeline table asset names its table: a translator may have given it any key.
        table_name = (upstream.definition_metadata or {}).get("dagster/table_name")
        metadata = upstream.definition_metadata or {}
        if isinstance(table_name, str) and context.has_asset_partitions and "partition_expr" not in metadata:
            # Registered by reference, one source folder per partition: the files hold no partition
            # column, so the whole table is read (a downstream asset sees every partition registered).
            schema, _, table = table_name.rpartition(".")
            table_slice = TableSlice(
                table=table, schema=schema or "main", database=self._database, partition_dimensions=[]
            )
        else:
            table_slice = self._get_table_slice(context, upstream)
        if isinstance(table_name, str) and table_name.count(".") == 1:
            schema, table = table_name.split(".")
            table_slice = table_slice._replace(schema=schema, table=table)
        if input_schema := (context.definition_metadata or {}).get("schema"):
            table_slice = table_slice._replace(schema=input_schema)
        name = self._db_client.get_table_name(table_slice)
        settings = self._lake.lake_settings()
        with self._db_client.connect(context, table_slice) as connection:
            try:
                return self._resolve_handler(load_type).load_input(context, _sql_slice(table_slice), connection)
            except duckdb.Error as error:
                reason = redact(str(error), settings.secrets())
                hint = (
                    ": materialize the upstream asset first, or give the input 'schema' metadata naming the "
                    "table's schema"
                    if isinstance(error, duckdb.CatalogException)
                    else ""
                )
                raise LakeIOError(
                    f"Loading input {context.name!r} from lake table {name} failed{hint}. Cause: {reason}"
                ) from None


def _sql_slice(table_slice: TableSlice) -> TableSlice:
    """The slice with its names quoted, ``schema`` qualified by the lake alias (``"lake"."main"``)."""
    return table_slice._replace(
        schema=qualified_name(table_slice.database or "", table_slice.schema),
        table=quote_identifier(table_slice.table),
    )


def _existing_table(connection: duckdb.DuckDBPyConnection, table_slice: TableSlice) -> tuple[str, str] | None:
    """``(schema, table)`` as the lake spells them (names match case-insensitively), or None when missing."""
    return connection.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ? "
        "AND lower(schema_name) = lower(?) AND lower(table_name) = lower(?)",
        [table_slice.database, table_slice.schema, table_slice.table],
    ).fetchone()


def _delete_slice(connection: duckdb.DuckDBPyConnection, table_slice: TableSlice) -> int:
    """Delete the slice's rows (all rows when unpartitioned); the number deleted.

    Looks the table up instead of catching the error of a missing one, which would abort the transaction.
    """
    if _existing_table(connection, table_slice) is None:
        return 0
    where, parameters = _partition_filter(table_slice)
    quoted = _sql_slice(table_slice)
    connection.execute(f"DELETE FROM {quoted.schema}.{quoted.table}{where}", parameters)
    (deleted,) = connection.fetchone() or (0,)
    return deleted


def _partition_filter(table_slice: TableSlice) -> tuple[str, list[str]]:
    """``WHERE`` clause and values selecting the slice's partitions, the same rows the handlers load.

    ``partition_expr`` is the user's SQL expression (a column, or any expression over the table) and so is
    used as written; the partition bounds and keys are bound, formatted as dagster-duckdb formats them.
    """
    if not table_slice.partition_dimensions:
        return "", []
    clauses, parameters = [], []
    for dimension in table_slice.partition_dimensions:
        if isinstance(dimension.partitions, dg.TimeWindow):
            clauses.append(f"{dimension.partition_expr} >= ? AND {dimension.partition_expr} < ?")
            parameters += [moment.strftime(DUCKDB_DATETIME_FORMAT) for moment in dimension.partitions]
        else:
            keys = list(dimension.partitions)
            clauses.append(f"{dimension.partition_expr} IN ({', '.join('?' * len(keys))})" if keys else "false")
            parameters += keys
    return " WHERE " + " AND ".join(f"({clause})" for clause in clauses), parameters


def _output_name(context: dg.OutputContext) -> str:
    return context.asset_key.to_user_string() if context.has_asset_key else f"{context.step_key}.{context.name}"


def _partitions(context: dg.OutputContext) -> list[str]:
    return [str(key) for key in context.asset_partition_keys]


def _partition_note(context: dg.OutputContext) -> str:
    if not context.has_asset_partitions:
        return ""
    keys = _partitions(context)
    return f" partition {keys[0]}" if len(keys) == 1 else f" partitions {keys[0]}..{keys[-1]}"
