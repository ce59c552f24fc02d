"""The README and the docs are contracts: every example in them runs, as a user pasting it.

Each page's examples run one after another in a fresh folder, the Python ones in one namespace (one Python
session), so a later example may use what an earlier one made, as a reader following the page would:

- ``python``: executed; the ``defs`` it leaves in the namespace (Dagster's name for a module's definitions)
  must load. A block whose first
  line is a comment naming a file (``# definitions.py``) is also saved as that file, as the page says.
- ``yaml``: a component (``type: ducklake_assets.DuckLakePipelineComponent``) is resolved and built by the
  component machinery; run config (``ops:``) is validated against the page's jobs; a ``dagster.yaml``
  (``concurrency:``) loads a Dagster instance.
- ``sql``: executed by DuckDB (``ducklake`` and ``httpfs`` loaded) in the page's folder, one connection
  per page. A ``CREATE SECRET (TYPE s3, ...)`` statement, whose keys are placeholders, is replaced by the
  secret of the test's S3 endpoint, and the placeholder bucket ``my-bucket`` by the page's bucket.
- ``bash``: run, unless it installs packages, starts a server that runs until stopped, runs the test suite
  or a benchmark (``NOT_RUN``). ``python3 -m venv .venv && . .venv/bin/activate && pip install ... && CMD``
  runs ``CMD``: the tests run in an installed environment already.

A page that names ``DUCKLAKE_BUCKET`` gets a fresh bucket on the session's S3 endpoint and the variables
``DUCKLAKE_BUCKET``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``;
one that names ``DUCKLAKE_CATALOG_DSN`` a fresh PostgreSQL database as ``DUCKLAKE_CATALOG_DSN`` (without the
password) and ``DUCKLAKE_CATALOG_PASSWORD``; one that names ``CDC_SOURCE_DSN`` another database as
``CDC_SOURCE_DSN`` and ``CDC_SOURCE_PASSWORD``.
"""

import ast
import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
import yaml

from ducklake_assets.core.extensions import load_extensions
from ducklake_assets.core.s3 import S3Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
BIN = Path(sys.executable).parent

FENCE = re.compile(
    r"^(?P<indent>[ ]*)```(?P<language>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ ]*$", re.MULTILINE | re.DOTALL
)
VENV_AND_INSTALL = re.compile(r"^python3 -m venv \.venv && \. \.venv/bin/activate && pip install [^&]+&& (?P<run>.+)$")
NOT_RUN = {
    "pip install": "installs packages",
    "apt-get": "installs system packages",
    "dg dev": "starts a server that runs until stopped",
    "ducklake-assets serve": "starts a server that runs until stopped",
    "python -m pytest": "runs the test suite",
    "python benchmarks/": "runs a benchmark (minutes)",
}
CODE_LANGUAGES = {"python", "yaml", "sql", "bash", "shell"}
S3_SECRET = re.compile(r"CREATE SECRET \(TYPE s3,[^)]*\);?", re.IGNORECASE)


@dataclass(frozen=True)
class Example:
    page: str
    line: int
    language: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def shell_command(self) -> str:
        """The command a bash block runs here (``CMD`` of ``venv && activate && pip install ... && CMD``)."""
        lines = [line for line in self.code.strip().splitlines() if line.strip()]
        if len(lines) == 1 and (match := VENV_AND_INSTALL.match(lines[0])):
            return match["run"]
        return self.code

    def why_not_run(self) -> str | None:
        if self.language not in ("bash", "shell"):
            return None
        command = self.shell_command()
        return next((why for needle, why in NOT_RUN.items() if needle in command), None)


def page_name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def examples(page: Path) -> list[Example]:
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        language = match["language"].lower()
        if language in CODE_LANGUAGES:
            line = text.count("\n", 0, match.start()) + 1
            found.append(Example(page_name(page), line, language, textwrap.dedent(match["body"])))
    return found


ALL_EXAMPLES = [example for page in PAGES for example in examples(page)]
RUN = [example for example in ALL_EXAMPLES if example.why_not_run() is None]


def services(page: str) -> set[str]:
    text = (ROOT / page).read_text()
    needed = set()
    if "DUCKLAKE_BUCKET" in text:
        needed.add("s3")
    if "DUCKLAKE_CATALOG_DSN" in text:
        needed.add("catalog")
    if "CDC_SOURCE_DSN" in text:
        needed.add("cdc_source")
    return needed


@dataclass
class PageRun:
    """What one page's examples share: a folder, a Python namespace, environment variables, a DuckDB session."""

    folder: Path
    environment: dict[str, str]
    namespace: dict[str, Any] = field(default_factory=dict)
    definitions: list[dg.Definitions] = field(default_factory=list)
    failed: str | None = None
    sql: duckdb.DuckDBPyConnection | None = None
    s3: S3Settings | None = None
    commands_run: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """The page's folder as working folder and its variables in ``os.environ``, as a user's shell has them."""
        saved_environment, saved_folder = dict(os.environ), Path.cwd()
        os.environ.update(self.environment)
        os.chdir(self.folder)
        try:
            yield
        finally:
            os.chdir(saved_folder)
            os.environ.clear()
            os.environ.update(saved_environment)

    def loaded(self, defs: dg.Definitions) -> None:
        if not any(defs is known for known in self.definitions):
            dg.Definitions.validate_loadable(defs)
            self.definitions.append(defs)


def page_environment(page: str, request: pytest.FixtureRequest, stack: contextlib.ExitStack) -> dict[str, str]:
    from ducklake_assets_tests.services import create_bucket, postgres_database

    environment: dict[str, str] = {}
    needed = services(page)
    if "s3" in needed:
        bucket = create_bucket(request.getfixturevalue("s3_server"))
        endpoint = bucket.endpoint
        environment |= {
            "DUCKLAKE_BUCKET": bucket.name,
            "AWS_ENDPOINT_URL": endpoint.endpoint_url,
            "AWS_REGION": endpoint.region_name,
            "AWS_ACCESS_KEY_ID": endpoint.aws_access_key_id,
            "AWS_SECRET_ACCESS_KEY": endpoint.aws_secret_access_key,
        }
    for service, prefix in (("catalog", "DUCKLAKE_CATALOG"), ("cdc_source", "CDC_SOURCE")):
        if service in needed:
            database = stack.enter_context(postgres_database(request.getfixturevalue("postgres_server")))
            dsn = f"host={database.host} port={database.port} dbname={database.dbname} user={database.user}"
            environment |= {f"{prefix}_DSN": dsn, f"{prefix}_PASSWORD": database.password}
    return environment


@pytest.fixture(scope="module")
def page_runs() -> Iterator[dict[str, tuple[PageRun, contextlib.ExitStack]]]:
    runs: dict[str, tuple[PageRun, contextlib.ExitStack]] = {}
    yield runs
    for run, stack in runs.values():
        if run.sql is not None:
            run.sql.close()
        stack.close()


def run_command(command: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """``command`` in ``folder`` with this Python environment's scripts first on the PATH, without the
    variables that would point the demo at another home or folder."""
    environment = {key: value for key, value in os.environ.items() if key not in ("DAGSTER_HOME", "DUCKLAKE_DEMO_DIR")}
    environment["PATH"] = f"{BIN}{os.pathsep}{environment.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


DEMO = "dg launch -m ducklake_assets.demo --job space_demo"
DEMO_PAGES = ("README.md", "docs/tutorial.md")
"""Pages that start with the demo run; they share one run of it, in one folder (their files do not clash)."""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    folder = tmp_path_factory.mktemp("demo")
    return folder, run_command(DEMO, folder)


def page_run(example: Example, runs: dict, request: pytest.FixtureRequest, tmp_path_factory) -> PageRun:
    if example.page not in runs:
        stack = contextlib.ExitStack()
        if example.page in DEMO_PAGES:
            folder, done = request.getfixturevalue("demo")
            run = PageRun(folder, page_environment(example.page, request, stack), commands_run={DEMO: done})
        else:
            folder = tmp_path_factory.mktemp(re.sub(r"\W+", "_", example.page))
            run = PageRun(folder, page_environment(example.page, request, stack))
        if "AWS_ENDPOINT_URL" in run.environment:
            env = run.environment
            run.s3 = S3Settings(
                endpoint_url=env["AWS_ENDPOINT_URL"],
                region_name=env["AWS_REGION"],
                aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                path_style=True,
            )
        runs[example.page] = (run, stack)
    return runs[example.page][0]


def run_python(example: Example, run: PageRun) -> None:
    if saved_as := re.match(r"# ([\w/.-]+\.py)\n", example.code):
        (run.folder / saved_as[1]).write_text(example.code)
    exec(compile(example.code, example.where, "exec"), run.namespace)
    if isinstance(defs := run.namespace.get("defs"), dg.Definitions):
        run.loaded(defs)


def run_yaml(example: Example, run: PageRun) -> None:
    from ducklake_assets.component import DuckLakePipelineComponent

    document = yaml.safe_load(example.code)
    if isinstance(document, dict) and str(document.get("type", "")).endswith("DuckLakePipelineComponent"):
        component = DuckLakePipelineComponent.resolve_from_dict(document["attributes"])
        run.loaded(dg.build_defs_for_component(component))
    elif isinstance(document, dict) and set(document) == {"ops"}:
        ops = set(document["ops"])
        jobs = [job for defs in run.definitions for job in defs.resolve_all_job_defs()]
        matching = [job for job in jobs if ops <= set(job.graph.node_dict)]
        assert matching, f"no job of the page's definitions runs the ops {sorted(ops)}"
        for job in matching:
            dg.validate_run_config(job, document)
    elif isinstance(document, dict) and "concurrency" in document:
        home = run.folder / ".dagster_home"
        home.mkdir(exist_ok=True)
        (home / "dagster.yaml").write_text(example.code)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            limit = document["concurrency"]["pools"]["default_limit"]
            assert instance.get_concurrency_config().pool_config.default_pool_limit == limit
    else:
        raise AssertionError("a YAML block that is neither a component, run config nor a dagster.yaml")


def run_sql(example: Example, run: PageRun) -> None:
    if run.sql is None:
        run.sql = duckdb.connect()
        load_extensions(run.sql, ["ducklake", "httpfs"])
    statements = example.code
    if S3_SECRET.search(statements):
        assert run.s3 is not None, "an S3 secret on a page without an S3 endpoint"
        run.s3.create_duckdb_secret(run.sql, "docs_reader")
        statements = S3_SECRET.sub("", statements)
    if "my-bucket" in statements:
        statements = statements.replace("my-bucket", run.environment["DUCKLAKE_BUCKET"])
    run.sql.execute(statements)


def run_bash(example: Example, run: PageRun) -> None:
    command = example.shell_command()
    done = run.commands_run.get(command) or run_command(command, run.folder)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


RUNNERS = {"python": run_python, "yaml": run_yaml, "sql": run_sql, "bash": run_bash, "shell": run_bash}


@pytest.mark.parametrize(
    "example",
    [
        pytest.param(example, id=example.where, marks=[pytest.mark.integration] if services(example.page) else [])
        for example in RUN
    ],
)
def test_the_example_runs_as_pasted(example: Example, page_runs, request, tmp_path_factory) -> None:
    run = page_run(example, page_runs, request, tmp_path_factory)
    if run.failed:
        pytest.fail(f"{example.where} follows {run.failed}, which failed", pytrace=False)
    try:
        with run.inside():
            RUNNERS[example.language](example, run)
    except BaseException as error:
        run.failed = example.where
        if isinstance(error, pytest.fail.Exception | KeyboardInterrupt):
            raise
        details = "".join(traceback.format_exception(error)[-12:])
        pytest.fail(f"{example.where} ({example.language}) failed:\n{example.code}\n{details}", pytrace=False)


def test_every_code_block_runs_unless_it_cannot_here() -> None:
    not_run = {example.where: example.why_not_run() for example in ALL_EXAMPLES if example.why_not_run()}
    assert len(RUN) >= 70, len(RUN)
    assert len(not_run) <= 12, not_run
    contract = [example for example in ALL_EXAMPLES if example.page == "README.md" and example.language == "bash"]
    assert contract[1].where in not_run, "the README's test command is run by CI, not by itself"


def test_ci_runs_the_readme_test_command_after_installing_as_the_readme_says() -> None:
    demo, tests = [example.code.strip() for example in examples(README) if example.language == "bash"][:2]
    assert demo.endswith("pip install -e . && dg launch -m ducklake_assets.demo --job space_demo"), demo
    assert tests.endswith("python -m pytest -ra")
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci, "CI must run exactly the README's test command"
    assert "mkdocs build --strict" in ci, "CI builds the docs in strict mode"


def test_the_readme_demo_command_runs_the_pipeline_without_warnings_and_anyone_can_read_the_result(demo) -> None:
    folder, done = demo
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stderr
    warnings = [line for line in (done.stdout + done.stderr).splitlines() if "Warning:" in line]
    assert not warnings, warnings
    assert done.stderr.count(" - ASSET_CHECK_EVALUATION - ") == 5
    with duckdb.connect() as reader:
        load_extensions(reader, ["ducklake"])
        published = folder / "demo_data" / "public" / "space.ducklake"
        reader.execute(f"ATTACH 'ducklake:{published}' AS space (READ_ONLY)")
        assert reader.execute("SELECT count(*) FROM space.astronauts").fetchone() == (1500,)
        assert reader.execute("SELECT count(*) FROM space.missions").fetchone() == (1500,)


def test_the_readme_is_a_front_door_to_the_docs() -> None:
    readme = README.read_text()
    assert len(readme.encode()) <= 25_000
    linked = set(re.findall(r"\]\((docs/[\w/.-]+\.md)\)", readme))
    pages = {page_name(page) for page in PAGES[1:]}
    assert linked <= pages, linked - pages
    nav = (ROOT / "mkdocs.yml").read_text()
    assert all(page.removeprefix("docs/") in nav for page in pages), "every page is in the site's navigation"


def test_every_name_the_docs_import_from_the_package_is_exported() -> None:
    import ducklake_assets

    imported = set()
    for example in ALL_EXAMPLES:
        if example.language == "python":
            for node in ast.walk(ast.parse(example.code)):
                if isinstance(node, ast.ImportFrom) and node.module == "ducklake_assets":
                    imported |= {alias.name for alias in node.names}
    assert len(imported) >= 20
    assert imported <= set(ducklake_assets.__all__), imported - set(ducklake_assets.__all__)


def test_the_reference_documents_every_public_name() -> None:
    import ducklake_assets

    reference = "\n".join(page.read_text() for page in (ROOT / "docs" / "reference").rglob("*.md"))
    documented = {name.rsplit(".", 1)[-1] for name in re.findall(r"^::: (ducklake_assets[\w.]*)$", reference, re.M)}
    public = set(ducklake_assets.__all__) - {"__version__"}
    assert public <= documented, sorted(public - documented)


def keys_and_defaults(schema: dict, definitions: dict, prefix: str = "") -> dict[str, str]:
    """Every YAML key of a component schema, dotted, with its default as JSON ("required" when it has none)."""
    found = {}
    for key, spec in schema["properties"].items():
        found[prefix + key] = "required" if key in schema.get("required", []) else json.dumps(spec.get("default"))
        for choice in spec.get("anyOf", []):
            if "$ref" in choice:
                nested = definitions[choice["$ref"].rsplit("/", 1)[-1]]
                found |= keys_and_defaults(nested, definitions, f"{prefix}{key}.")
    return found


def test_the_settings_reference_lists_every_yaml_key_with_its_default() -> None:
    from ducklake_assets.component import DuckLakePipelineComponent

    reference = (ROOT / "docs" / "reference" / "settings.md").read_text()
    schema = DuckLakePipelineComponent.model().model_json_schema()

    documented = dict(re.findall(r"^\| `([\w.]+)` \| `([^`]*)` \|", reference, flags=re.MULTILINE))

    assert documented == keys_and_defaults(schema, schema["$defs"])


def test_the_production_yaml_in_the_docs_is_the_file_in_the_example_project() -> None:
    page = ROOT / "docs" / "how-to" / "production.md"
    blocks = [example.code for example in examples(page) if example.language == "yaml"]
    assert (ROOT / "examples" / "ducklake_project" / "production.yaml").read_text() in blocks


def test_the_scaffolded_component_and_a_downstream_asset_work_in_a_new_project(tmp_path: Path) -> None:
    """What "Adding it to an existing Dagster project" says: ``dg scaffold defs``, then an asset of your own
    reading a table through the pipeline's IO manager."""
    from ducklake_assets_tests.parquet_files import parquet

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
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
    parquet(
        project / "data" / "lake" / "astronauts.p1.parquet",
        "SELECT range AS id, 'name ' || range AS name, ['USA', 'ESA'][1 + range % 2] AS nationality FROM range(20)",
    )
    (project / "src" / "my_project" / "defs" / "reports.py").write_text(
        "import dagster as dg\nimport pandas as pd\n\n\n"
        '@dg.asset(ins={"astronauts": dg.AssetIn(key=["lake", "astronauts"])}, io_manager_key="lake_io_manager")\n'
        "def crew_size(astronauts: pd.DataFrame) -> pd.DataFrame:\n"
        '    return pd.DataFrame({"crew": [len(astronauts)]})\n'
    )

    launch = ["dg", "launch", "--assets", "key:lake/astronauts+"]
    environment = {**env, "PYTHONPATH": str(project / "src")}
    done = subprocess.run(launch, cwd=project, env=environment, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stderr
    assert "crew_size" in done.stderr
