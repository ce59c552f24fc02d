"""What a user gets from the package itself: a core that runs without Dagster, and every export."""

import subprocess
import sys
import textwrap
from pathlib import Path

import ducklake_assets


def test_the_core_and_the_command_line_never_import_dagster() -> None:
    script = (
        "import sys\n"
        "import ducklake_assets, ducklake_assets.cli\n"
        "import ducklake_assets.core.backup, ducklake_assets.core.restore, ducklake_assets.core.publish\n"
        "import ducklake_assets.core.sync, ducklake_assets.core.serve, ducklake_assets.core.maintenance\n"
        "from ducklake_assets import create_backup, restore_backup, publish_frozen_lake, pin_backup\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0].startswith('dagster')}))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]", f"Dagster modules loaded by the core: {loaded.stdout}"


def test_the_io_manager_imports_without_pandas_or_polars() -> None:
    script = (
        "import sys\n"
        "import ducklake_assets.io_manager\n"
        "from ducklake_assets import DuckLakeIOManager\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pandas', 'polars', 'pyarrow', 'numpy'}))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]", f"DataFrame libraries loaded by importing the IO manager: {loaded.stdout}"


def test_every_public_name_loads_and_is_listed() -> None:
    for name in ducklake_assets.__all__:
        assert getattr(ducklake_assets, name) is not None, name
    assert sorted(dir(ducklake_assets)) == sorted(ducklake_assets.__all__)
    assert ducklake_assets.__version__.count(".") == 2


def test_the_code_is_lint_clean_and_formatted() -> None:
    root = Path(__file__).resolve().parent.parent
    folders = ["ducklake_assets", "ducklake_assets_tests", "benchmarks", "examples"]
    checked = subprocess.run(
        [sys.executable, "-m", "ruff", "check", *folders], cwd=root, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *folders], cwd=root, capture_output=True, text=True
    )
    assert formatted.returncode == 0, formatted.stdout


def test_a_local_lake_needs_neither_boto3_nor_psycopg_and_their_absence_is_explained(tmp_path) -> None:
    """The demo pipeline runs in a process where boto3, botocore and psycopg cannot be imported (as after
    a plain ``pip install ducklake-assets``); asking for a PostgreSQL catalog or S3 there names the extra."""
    script = textwrap.dedent(
        """
        import sys
        for name in ("boto3", "botocore", "psycopg"):
            sys.modules[name] = None
        import dagster as dg
        from ducklake_assets.demo import build_demo
        from ducklake_assets.core.catalog import parse_catalog
        from ducklake_assets.core.s3 import S3Settings

        from pathlib import Path
        defs = build_demo(Path(sys.argv[1]))
        result = dg.materialize(list(defs.assets), resources=defs.resources)
        print("demo", result.success)
        for attempt in (lambda: parse_catalog("postgres:dbname=lake"), lambda: S3Settings().boto3_client()):
            try:
                attempt()
            except Exception as error:
                print(type(error).__name__, error)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "demo")], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert "demo True" in lines
    missing = "which is not installed: pip install 'ducklake-assets"
    assert f"ConfigurationError A PostgreSQL catalog needs the Python package 'psycopg', {missing}[postgres]'" in lines
    assert f"ConfigurationError S3 needs the Python package 'boto3', {missing}[s3]'" in lines
