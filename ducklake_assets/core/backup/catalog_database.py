"""The database that stores a DuckLake catalog, read directly rather than as a DuckLake: attaching it, its
``ducklake_*`` tables and its latest snapshot (backups copy from it, a restore writes into it)."""

from datetime import UTC, datetime
from pathlib import Path

import duckdb

from ..catalog import Catalog, DuckDBCatalog, PostgresCatalog, SQLiteCatalog
from ..errors import BackupError, CatalogConnectionError, redact
from ..lake import LakeSettings, new_connection
from ..retry import retry_on_conflict
from ..sql import qualified_name, quote_identifier, quote_literal
from .manifest import MANIFEST_TABLE

SOURCE_ALIAS = "ducklake_assets_source"


def metadata_schema_of(settings: LakeSettings) -> str:
    """Schema holding the DuckLake tables inside the catalog database."""
    if settings.metadata_schema:
        return settings.metadata_schema
    return "public" if isinstance(settings.catalog, PostgresCatalog) else "main"


def catalog_extensions(catalog: Catalog) -> list[str]:
    """Extensions needed to attach ``catalog``'s database directly (not as a DuckLake)."""
    if isinstance(catalog, PostgresCatalog):
        return ["postgres_scanner"]
    if isinstance(catalog, SQLiteCatalog):
        return ["sqlite_scanner"]
    return []


def catalog_file_exists(catalog: Catalog) -> bool:
    """Whether a DuckDB or SQLite catalog file exists (always true for PostgreSQL, which is no file)."""
    if isinstance(catalog, DuckDBCatalog | SQLiteCatalog):
        return Path(catalog.path).expanduser().is_file()
    return True


def attach_catalog_database(
    connection: duckdb.DuckDBPyConnection, catalog: Catalog, name: str, *, read_only: bool
) -> None:
    """Attach the database that stores a DuckLake catalog as a plain database called ``name``.

    Reading the catalog tables this way (rather than through DuckLake) lets one DuckDB transaction see
    all of them at one point in time: DuckDB's MVCC for a DuckDB file, one SQLite read transaction, one
    ``REPEATABLE READ`` PostgreSQL transaction for a read-only PostgreSQL attach. A DuckDB file that
    another process is writing is waited for (bounded, :class:`~.retry.RetryPolicy`).
    """
    options = ["READ_ONLY"] if read_only else []
    if isinstance(catalog, PostgresCatalog):
        options.insert(0, "TYPE postgres")
        secret = f"{name}_secret"
        if catalog.create_duckdb_secret(connection, secret):
            options.append(f"SECRET {quote_identifier(secret)}")
        path = catalog.conninfo()
    elif isinstance(catalog, SQLiteCatalog):
        options.insert(0, "TYPE sqlite")
        path = str(Path(catalog.path).expanduser().resolve())
    else:
        path = catalog.metadata_path()
    clause = f" ({', '.join(options)})" if options else ""
    retry_on_conflict(
        lambda: connection.execute(f"ATTACH {quote_literal(path)} AS {quote_identifier(name)}{clause}"),
        what=f"Opening DuckLake catalog {catalog.describe()}",
        secrets=[catalog.password] if isinstance(catalog, PostgresCatalog) and catalog.password else [],
    )


def ducklake_tables(connection: duckdb.DuckDBPyConnection, database: str, schema: str) -> list[str]:
    """Names of the DuckLake catalog tables (``ducklake_*``) in ``database.schema``, without our manifest."""
    rows = connection.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = ? "
        "AND starts_with(table_name, 'ducklake_') AND table_name <> ? ORDER BY table_name",
        [database, schema, MANIFEST_TABLE],
    ).fetchall()
    return [row[0] for row in rows]


def as_utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def latest_catalog_snapshot(settings: LakeSettings) -> tuple[int, datetime] | None:
    """The id and commit time of the catalog's latest snapshot, read from its catalog tables (read-only).

    ``None`` when the catalog database holds no DuckLake catalog yet. This is the small read that tells
    whether the newest backup is still current; a snapshot id alone is not enough, since a restore that
    dropped snapshots lets the catalog reuse their ids.
    """
    state = catalog_state(settings)
    return None if state is None else state[:2]


def catalog_state(settings: LakeSettings) -> tuple[int, datetime, str | None] | None:
    """The catalog's latest snapshot (id, commit time) and the data path it records, in one read-only query."""
    if not catalog_file_exists(settings.catalog):
        raise BackupError(f"Catalog file of {settings.describe()} does not exist: nothing to back up")
    schema = metadata_schema_of(settings)
    connection = new_connection(
        memory_limit=settings.memory_limit, threads=settings.threads, extensions=catalog_extensions(settings.catalog)
    )
    try:
        attach_catalog_database(connection, settings.catalog, SOURCE_ALIAS, read_only=True)
        tables = ducklake_tables(connection, SOURCE_ALIAS, schema)
        if "ducklake_snapshot" not in tables or "ducklake_metadata" not in tables:
            return None
        row = connection.execute(
            f"SELECT snapshot_id, CAST(snapshot_time AS TIMESTAMPTZ), (SELECT value FROM "
            f"{qualified_name(SOURCE_ALIAS, schema, 'ducklake_metadata')} WHERE scope IS NULL AND key = 'data_path') "
            f"FROM {qualified_name(SOURCE_ALIAS, schema, 'ducklake_snapshot')} ORDER BY snapshot_id DESC LIMIT 1"
        ).fetchone()
    except (duckdb.Error, CatalogConnectionError) as error:
        raise BackupError(
            f"Could not read the latest snapshot of DuckLake catalog {settings.describe()}; nothing was written: "
            f"{redact(str(error), settings.secrets())}"
        ) from None
    finally:
        connection.close()
    return None if row is None else (row[0], as_utc(row[1]), row[2])
