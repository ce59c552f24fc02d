"""The README is a contract: its two commands are what CI runs, and its Python examples are valid."""

import ast
import re
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
        ast.parse(block)


def test_the_readme_names_every_public_export_it_uses():
    import ducklake_assets

    imported = set()
    for names in re.findall(r"from ducklake_assets import \(?([^)\n]+(?:\n[^)\n]+)*)\)?", README):
        imported |= {name.strip() for name in names.replace("\n", ",").split(",") if name.strip()}
    assert imported, "the README imports from ducklake_assets"
    assert imported <= set(ducklake_assets.__all__), imported - set(ducklake_assets.__all__)
