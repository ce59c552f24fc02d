"""An asset factory for SQL commands run against the lake, reported command by command."""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from pydantic import Field

from .core.sql_commands import (
    CatalogInfo,
    CommandResult,
    SQLCommand,
    as_commands,
    catalog_info,
    run_sql_commands,
    table_summary,
)
from .metadata import Metadata, markdown_table
from .resources import DuckLakeResource


class SQLCommandsConfig(dg.Config):
    """Run-time values for the ``$name`` placeholders, overriding the factory's ``parameters``."""

    parameters: dict[str, Any] = Field(
        default={}, description="Named values bound to $name placeholders, e.g. {'day': '2026-11-21'}."
    )


def ducklake_sql_asset(
    name: str,
    commands: Sequence[str | SQLCommand],
    *,
    parameters: Mapping[str, Any] | None = None,
    table: str | None = None,
    table_schema: str = "main",
    in_transaction: bool = False,
    max_rows: int = 10,
    lake_resource_key: str = "ducklake",
    key_prefix: str | Sequence[str] | None = None,
    deps: Sequence[Any] | None = None,
    group_name: str | None = None,
    description: str | None = None,
    pool: str | None = None,
    op_tags: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
) -> dg.AssetsDefinition:
    """An asset that runs ``commands`` in order against the lake of the ``DuckLakeResource`` at ``lake_resource_key``.

    ``commands`` are SQL strings or :class:`SQLCommand` (SQL plus its own ``?`` list or ``$name``
    mapping); ``parameters`` are named values shared by every command and can be overridden per run
    (config ``parameters``). Values are always bound, never pasted into the SQL. Each statement commits on
    its own and is retried when it conflicts with another writer; ``in_transaction=True`` commits all
    commands together (and retries them together). The first failing command fails the step with its index
    and text; nothing after it runs.

    The materialization shows each command's result (rows returned or changed, columns, the first
    ``max_rows`` rows) and the lake afterwards (snapshot count, latest snapshot, tables). With ``table``
    (a table in ``table_schema``) it also reports that table's row count and column schema. The asset's
    value is ``{"commands": [...], "catalog": {...}}``.

    ``pool`` puts the asset in a Dagster concurrency pool, so a limit on the pool caps how many of these
    steps write at once; ``op_tags`` serve the executor's ``tag_concurrency_limits``.

    .. code-block:: python

        from ducklake_assets import DuckLakeResource, ducklake_sql_asset

        daily_totals = ducklake_sql_asset(
            "daily_totals",
            [
                "CREATE TABLE IF NOT EXISTS daily_totals (day DATE, total BIGINT)",
                "DELETE FROM daily_totals WHERE day = $day",
                "INSERT INTO daily_totals SELECT $day, count(*) FROM trips WHERE pickup_date = $day",
                "SELECT * FROM daily_totals ORDER BY day DESC",
            ],
            parameters={"day": "2026-11-20"},
            table="daily_totals",
            pool="ducklake_writers",
        )
    """
    planned = as_commands(commands)
    shared = dict(parameters or {})

    @dg.asset(
        name=name,
        key_prefix=key_prefix,
        deps=deps,
        group_name=group_name,
        description=description or f"Runs {len(planned)} SQL command(s) against the lake.",
        required_resource_keys={lake_resource_key},
        pool=pool,
        op_tags=op_tags,
        tags=tags,
        kinds={"duckdb", "sql"},
    )
    def _sql_asset(context: dg.AssetExecutionContext, config: SQLCommandsConfig) -> dg.MaterializeResult:
        ducklake: DuckLakeResource = getattr(context.resources, lake_resource_key)
        settings = ducklake.lake_settings()
        secrets = settings.secrets()
        with ducklake.get_connection(context.log) as connection:
            results = run_sql_commands(
                connection,
                planned,
                parameters={**shared, **config.parameters},
                max_rows=max_rows,
                in_transaction=in_transaction,
                policy=ducklake.retry_policy(),
                log=context.log,
                secrets=secrets,
            )
            info = catalog_info(connection, settings.alias, settings.describe(), settings.catalog_schema)
            summary = table_summary(connection, settings.alias, table_schema, table) if table else None
        metadata = sql_commands_metadata(results, info)
        if summary is not None:
            row_count, columns = summary
            metadata["dagster/row_count"] = row_count
            metadata["dagster/column_schema"] = dg.TableSchema(
                columns=[dg.TableColumn(column, column_type) for column, column_type in columns]
            )
            metadata["dagster/table_name"] = f"{settings.alias}.{table_schema}.{table}"
        return dg.MaterializeResult(
            metadata=metadata,
            value={"commands": [result.as_dict() for result in results], "catalog": info.as_dict()},
        )

    return _sql_asset


def sql_commands_metadata(results: Sequence[CommandResult], info: CatalogInfo) -> Metadata:
    """Materialization metadata: a command table, the first rows of each query, and the catalog after."""
    metadata: Metadata = {
        "command_count": len(results),
        "commands": dg.MetadataValue.md(
            markdown_table(
                ["#", "command", "type", "rows returned", "rows changed", "columns", "seconds"],
                [
                    [
                        result.index,
                        f"`{result.sql}`",
                        result.statement_type,
                        result.row_count if result.columns else "",
                        result.changed_rows,
                        ", ".join(result.columns),
                        f"{result.duration_seconds:.3f}",
                    ]
                    for result in results
                ],
            )
        ),
        "snapshot_count": info.snapshot_count,
        "table_count": len(info.tables),
        "tables": dg.MetadataValue.md(
            markdown_table(
                ["schema", "table", "data files", "bytes"],
                [[t.schema, t.name, t.file_count, t.file_size_bytes] for t in info.tables],
            )
        ),
        "catalog": info.catalog,
    }
    queries = [result for result in results if result.columns]
    if queries:
        sections = []
        for result in queries:
            shown = f"first {len(result.rows)} of {result.row_count}" if result.row_count > len(result.rows) else "all"
            rows = [["NULL" if value is None else value for value in row] for row in result.rows]
            sections.append(
                f"**Command {result.index}** ({shown} rows): `{result.sql}`\n\n" + markdown_table(result.columns, rows)
            )
        metadata["first_rows"] = dg.MetadataValue.md("\n\n".join(sections))
    if info.latest_snapshot is not None:
        latest = info.latest_snapshot
        metadata["snapshot_id"] = latest.snapshot_id
        metadata["snapshot_time"] = latest.snapshot_time.isoformat()
        metadata["snapshot_changes"] = ", ".join(
            f"{change}: {', '.join(values)}" for change, values in sorted(latest.changes.items())
        )
    return metadata
