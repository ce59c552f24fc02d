"""What a user gets from the package itself: a core that runs without Dagster, and every export."""

import subprocess
import sys
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
