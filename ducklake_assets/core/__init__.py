"""The plain core: DuckLake, DuckDB, PostgreSQL and object-storage work, with no Dagster imports."""
