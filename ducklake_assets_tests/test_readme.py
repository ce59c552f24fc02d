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
    assert demo.endswith("pip install -e . && dg launch -m ducklake_assets.demo --job space_demo"), demo
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


def test_the_readme_demo_command_runs_the_pipeline_without_warnings_and_anyone_can_read_the_result(tmp_path):
    import os
    import subprocess
    import sys

    import duckdb

    from ducklake_assets.core.extensions import load_extension

    dg = Path(sys.executable).with_name("dg")
    command = [str(dg), "launch", "-m", "ducklake_assets.demo", "--job", "space_demo"]
    env = {key: value for key, value in os.environ.items() if key not in ("DAGSTER_HOME", "DUCKLAKE_DEMO_DIR")}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stderr
    warnings = [line for line in (done.stdout + done.stderr).splitlines() if "Warning:" in line]
    assert not warnings, warnings
    assert done.stderr.count(" - ASSET_CHECK_EVALUATION - ") == 5
    with duckdb.connect() as reader:
        load_extension(reader, "ducklake")
        published = tmp_path / "demo_data" / "public" / "space.ducklake"
        reader.execute(f"ATTACH 'ducklake:{published}' AS space (READ_ONLY)")
        assert reader.execute("SELECT count(*) FROM space.astronauts").fetchone() == (1500,)
        assert reader.execute("SELECT count(*) FROM space.missions").fetchone() == (1500,)


def python_block(containing: str) -> str:
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL) if containing in b]
    return textwrap.dedent(block)


def run_block(containing: str, folder: Path, monkeypatch) -> dict:
    """Run the README's Python example that contains ``containing`` in ``folder``, as a user pasting it."""
    monkeypatch.chdir(folder)
    namespace: dict = {}
    exec(compile(python_block(containing), f"README.md example ({containing})", "exec"), namespace)
    return namespace


def sample_source(folder: Path) -> None:
    from ducklake_assets_tests.parquet_files import parquet

    parquet(
        folder / "data" / "space" / "astronauts.p1.parquet",
        "SELECT range AS id, 'name ' || range AS name, ['USA', 'ESA'][1 + range % 2] AS nationality FROM range(20)",
    )


def test_the_io_manager_example_runs_as_pasted(tmp_path, monkeypatch):
    import dagster as dg

    sample_source(tmp_path)
    defs = run_block("crew_by_nationality", tmp_path, monkeypatch)["defs"]

    result = dg.materialize(list(defs.assets), resources=defs.resources)

    assert result.success
    lake = defs.resources["space_ducklake"]
    with lake.get_connection() as connection:
        rows = connection.execute("SELECT nationality, size FROM crew_by_nationality ORDER BY 1").fetchall()
    assert rows == [("ESA", 10), ("USA", 10)]
    backed_up = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "static_backup"]
    assert backed_up and backed_up[0].materialization.metadata["tables"].value.count("crew_by_nationality") == 1


def test_the_translator_and_producer_examples_run_as_pasted(tmp_path, monkeypatch):
    import dagster as dg

    sample_source(tmp_path)
    translated = run_block("class CrewTranslator", tmp_path, monkeypatch)["defs"]
    assert dg.AssetKey(["crew", "astronauts"]) in translated.resolve_asset_graph().get_all_asset_keys()

    produced = run_block("def astronauts_export", tmp_path, monkeypatch)["defs"]
    result = dg.materialize(list(produced.assets), resources=produced.resources)

    assert result.success
    tables = {e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert tables[dg.AssetKey(["space", "astronauts"])]["dagster/row_count"].value == 21


def test_the_scaffolded_component_and_a_downstream_asset_work_in_a_new_project(tmp_path):
    import os
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    project = tmp_path / "my_project"
    (project / "src" / "my_project" / "defs").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "my-project"\nversion = "0.1.0"\n\n'
        '[tool.dg]\ndirectory_type = "project"\n\n[tool.dg.project]\nroot_module = "my_project"\n'
    )
    (project / "src" / "my_project" / "__init__.py").write_text("")
    (project / "src" / "my_project" / "definitions.py").write_text(
        "from pathlib import Path\n\nimport dagster as dg\n\n\n"
        "@dg.definitions\ndef defs():\n    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)\n"
    )
    scaffold = ["dg", "scaffold", "defs", "ducklake_assets.DuckLakePipelineComponent", "lake"]
    done = subprocess.run(scaffold, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    sample_source(project)
    (project / "data" / "space").rename(project / "data" / "lake")
    (project / "src" / "my_project" / "defs" / "reports.py").write_text(
        "import dagster as dg\nimport pandas as pd\n\n\n"
        '@dg.asset(ins={"astronauts": dg.AssetIn(key=["lake", "astronauts"])}, io_manager_key="lake_io_manager")\n'
        "def crew_size(astronauts: pd.DataFrame) -> pd.DataFrame:\n"
        '    return pd.DataFrame({"crew": [len(astronauts)]})\n'
    )

    launch = ["dg", "launch", "--assets", "key:lake/astronauts+"]
    done = subprocess.run(
        launch,
        cwd=project,
        env={**env, "PYTHONPATH": str(project / "src")},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stderr
    assert "crew_size" in done.stderr


def test_the_scale_out_example_runs_one_partition_as_pasted(tmp_path, monkeypatch):
    import dagster as dg

    from ducklake_assets_tests.parquet_files import crew

    crew(tmp_path / "data" / "events" / "day=2026-11-01" / "clicks.0001.parquet", 0)
    crew(tmp_path / "data" / "events" / "day=2026-11-02" / "clicks.0001.parquet", 100)
    defs = run_block('folder="day={partition_key}"', tmp_path, monkeypatch)["defs"]
    clicks = dg.AssetKey(["events", "clicks"])

    result = dg.materialize(
        list(defs.assets),
        resources=defs.resources,
        partition_key="2026-11-02",
        selection=[dg.AssetKey(["events", "catalog_snapshot"]), clicks],
    )

    assert result.success
    with defs.resources["events_ducklake"].get_connection() as connection:
        assert connection.execute("SELECT count(*), sum(id) FROM clicks").fetchone() == (10, sum(range(100, 110)))
