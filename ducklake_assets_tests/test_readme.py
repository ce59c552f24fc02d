"""The README is a contract: its two commands are what CI runs, and its Python examples are valid."""

import ast
import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)


def test_ci_runs_the_readme_test_command_after_installing_as_the_readme_says():
    commands = [block.strip() for block in bash_blocks()[:2]]
    demo, tests = commands
    assert "dagster asset materialize -m ducklake_assets.demo" in demo
    assert tests.endswith("python -m pytest -ra")
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci, "CI must run exactly the README's test command"


def test_every_python_example_in_the_readme_parses():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
    assert len(blocks) >= 10
    for block in blocks:
        ast.parse(textwrap.dedent(block))


def test_every_name_the_readme_imports_from_the_package_is_exported():
    import ducklake_assets

    imported = set()
    for block in re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL):
        for node in ast.walk(ast.parse(textwrap.dedent(block))):
            if isinstance(node, ast.ImportFrom) and node.module == "ducklake_assets":
                imported |= {alias.name for alias in node.names}
    assert len(imported) >= 5
    assert imported <= set(ducklake_assets.__all__), imported - set(ducklake_assets.__all__)


def test_the_readme_demo_command_materializes_the_pipeline_and_anyone_can_read_the_result(tmp_path):
    import os
    import subprocess
    import sys

    import duckdb

    from ducklake_assets.core.extensions import load_extension

    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "asset", "materialize", "-m", "ducklake_assets.demo", "--select", "*"]
    env = {key: value for key, value in os.environ.items() if key not in ("DAGSTER_HOME", "DUCKLAKE_DEMO_DIR")}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stderr
    with duckdb.connect() as reader:
        load_extension(reader, "ducklake")
        published = tmp_path / "demo_data" / "public" / "space.ducklake"
        reader.execute(f"ATTACH 'ducklake:{published}' AS space (READ_ONLY)")
        assert reader.execute("SELECT count(*) FROM space.astronauts").fetchone() == (1500,)
        assert reader.execute("SELECT count(*) FROM space.missions").fetchone() == (1500,)
