"""Write ``ducklake_0_3_catalog.sql``: a DuckLake catalog in format 0.3, as duckdb 1.4 made it, as SQL text.

The format-version tests need a catalog older than the running ``ducklake`` extension. DuckDB 1.5 can
no longer create one, so this script was run once with the old release and its output is kept as text
(the catalog's tables and rows), which the tests load into a fresh DuckDB file. To regenerate::

    python -m venv /tmp/duckdb14
    /tmp/duckdb14/bin/pip install duckdb==1.4.4 duckdb-extension-ducklake==1.4.4
    /tmp/duckdb14/bin/python ducklake_assets_tests/data/make_ducklake_0_3_catalog.py

The rows stay inlined in the catalog, so the lake needs no data files.
"""

import tempfile
from pathlib import Path

import duckdb
import duckdb_extension_ducklake

OUTPUT = Path(__file__).with_name("ducklake_0_3_catalog.sql")
EXTENSION = next(Path(duckdb_extension_ducklake.__file__).parent.glob("extensions/*/ducklake.duckdb_extension"))


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        catalog = Path(folder) / "legacy.ducklake"
        connection = duckdb.connect()
        connection.execute(f"LOAD {sql_string(str(EXTENSION))}")
        connection.execute(
            f"ATTACH {sql_string('ducklake:' + str(catalog))} AS lake "
            "(DATA_PATH '/srv/legacy-lake/data/', DATA_INLINING_ROW_LIMIT 1000)"
        )
        connection.execute(
            "CREATE TABLE lake.missions AS SELECT range AS mission_id, 'mission ' || range AS name FROM range(3)"
        )
        connection.execute("INSERT INTO lake.missions VALUES (3, 'mission 3')")
        connection.execute("CREATE TABLE lake.crew AS SELECT range AS crew_id FROM range(5)")
        connection.execute("DETACH lake")
        connection.execute(f"ATTACH {sql_string(str(catalog))} AS catalog (READ_ONLY)")
        tables = connection.execute(
            "SELECT table_name, sql FROM duckdb_tables() WHERE database_name = 'catalog' ORDER BY table_name"
        ).fetchall()
        lines = [f"-- DuckLake catalog written by duckdb {duckdb.__version__}; made by {Path(__file__).name}"]
        for name, create in tables:
            lines.append(create.rstrip(";") + ";")
            table = f"catalog.{sql_identifier(name)}"
            columns = [row[0] for row in connection.execute(f"DESCRIBE {table}").fetchall()]
            casts = ", ".join(f"CAST({sql_identifier(column)} AS VARCHAR)" for column in columns)
            for row in connection.execute(f"SELECT {casts} FROM {table}").fetchall():
                values = ", ".join("NULL" if value is None else sql_string(value) for value in row)
                lines.append(f"INSERT INTO {sql_identifier(name)} VALUES ({values});")
        OUTPUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
