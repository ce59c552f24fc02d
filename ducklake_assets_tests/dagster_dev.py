"""Run ``dg dev`` (Dagster's dev server) for a test, drive it through GraphQL and look at its UI with headless Chromium.

``dagster_dev(...)`` starts the webserver, the daemon and the code server the way a user does, on a free
port with a throwaway ``DAGSTER_HOME``, and stops every one of them afterwards, also when the test fails:
first politely (SIGTERM to its process group), then by killing the group, then any process still carrying
the throwaway ``DAGSTER_HOME`` in its environment (a run worker started in another session would
otherwise survive the test).
"""

import contextlib
import html.parser
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

INSTANCE_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"

WORKSPACE_QUERY = """
query Workspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation {
            name
            repositories {
              name
              jobs { name }
              assetNodes {
                assetKey { path }
                isMaterializable
                assetChecksOrError {
                  __typename
                  ... on AssetChecks { checks { name } }
                }
              }
            }
          }
          ... on PythonError { message causes { message } }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""

LAUNCH_RUN_MUTATION = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}
"""

RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      status
      startTime
      endTime
      eventConnection {
        events {
          __typename
          ... on ExecutionStepFailureEvent { stepKey message error { message causes { message } } }
          ... on RunFailureEvent { message error { message causes { message } } }
        }
      }
    }
    ... on Error { message }
  }
}
"""

CHECK_RESULTS_QUERY = """
query CheckResults {
  assetNodes {
    assetKey { path }
    assetChecksOrError {
      __typename
      ... on AssetChecks {
        checks {
          name
          executionForLatestMaterialization {
            runId
            status
            evaluation { success description }
          }
        }
      }
    }
  }
}
"""

FINISHED_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class DagsterDevError(AssertionError):
    """``dagster dev`` did not start, a GraphQL call failed, or a run did not finish in time."""


@dataclass(frozen=True)
class Repository:
    """What the code location offers: its address, the implicit asset job, assets and their checks."""

    location: str
    name: str
    asset_job: str
    materializable: list[tuple[str, ...]]
    unmaterializable: list[tuple[str, ...]]
    checks: list[tuple[tuple[str, ...], str]]


@dataclass(frozen=True)
class FinishedRun:
    run_id: str
    status: str
    seconds: float
    failures: list[str]
    run_seconds: float | None = None


@dataclass(frozen=True)
class CheckResult:
    asset_key: tuple[str, ...]
    name: str
    status: str | None
    success: bool | None
    description: str | None
    run_id: str | None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def processes_with_environment(variable: str, value: str) -> list[int]:
    """Ids of the live processes whose environment holds ``variable=value`` (readable ones only)."""
    wanted = f"{variable}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environment = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if wanted in environment and state != "Z":
            found.append(int(entry.name))
    return found


def processes_with_argument(argument: str) -> list[int]:
    """Ids of the live processes whose command line holds ``argument``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argument.encode() in arguments:
            found.append(int(entry.name))
    return found


class DagsterDev:
    """A running ``dagster dev``: its address, its log and a GraphQL client."""

    def __init__(self, process: subprocess.Popen, url: str, dagster_home: Path, log_path: Path) -> None:
        self.process = process
        self.url = url
        self.dagster_home = dagster_home
        self.log_path = log_path

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def graphql(self, query: str, variables: Mapping[str, object] | None = None, timeout: float = 30) -> dict:
        """POST ``query`` to ``/graphql`` and return its ``data``; GraphQL errors raise with their messages."""
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.load(response)
        if answer.get("errors"):
            messages = "; ".join(error.get("message", str(error)) for error in answer["errors"])
            raise DagsterDevError(f"GraphQL error from {self.url}: {messages}")
        return answer["data"]

    def processes(self) -> list[int]:
        """Every live process started for this ``dagster dev`` (they all carry its ``DAGSTER_HOME``)."""
        return processes_with_environment("DAGSTER_HOME", str(self.dagster_home))

    def wait_until_loaded(self, timeout: float) -> Repository:
        """Wait for the webserver to answer and the code location to load; a load error fails at once."""
        deadline = time.monotonic() + timeout
        last_problem = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DagsterDevError(
                    f"dagster dev exited with code {self.process.returncode} while starting:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=5) as response:
                    response.read()
                repository = self._loaded_repository()
                if repository is not None:
                    return repository
                last_problem = "code location still loading"
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                last_problem = str(error)
            time.sleep(0.5)
        raise DagsterDevError(f"dagster dev not ready after {timeout:.0f}s ({last_problem}):\n{self.log_tail()}")

    def _loaded_repository(self) -> Repository | None:
        workspace = self.graphql(WORKSPACE_QUERY)["workspaceOrError"]
        if workspace["__typename"] != "Workspace":
            raise DagsterDevError(f"workspace failed to load: {workspace.get('message')}")
        entries = workspace["locationEntries"]
        if not entries or any(entry["loadStatus"] != "LOADED" for entry in entries):
            return None
        if len(entries) != 1:
            raise DagsterDevError(f"expected one code location, got {[entry['name'] for entry in entries]}")
        location = entries[0]["locationOrLoadError"]
        if location["__typename"] != "RepositoryLocation":
            causes = [cause["message"].strip() for cause in location.get("causes") or []]
            raise DagsterDevError(
                f"code location {entries[0]['name']!r} failed to load: {' <- '.join(causes) or location.get('message')}"
            )
        (repository,) = location["repositories"]
        asset_jobs = [job["name"] for job in repository["jobs"] if job["name"].startswith("__ASSET_JOB")]
        if len(asset_jobs) != 1:
            raise DagsterDevError(f"expected one implicit asset job, found {asset_jobs}")
        nodes = repository["assetNodes"]
        checks = []
        for node in nodes:
            found = node["assetChecksOrError"]
            if found["__typename"] != "AssetChecks":
                raise DagsterDevError(f"checks of {node['assetKey']['path']} unavailable: {found['__typename']}")
            checks += [(tuple(node["assetKey"]["path"]), check["name"]) for check in found["checks"]]
        return Repository(
            location=location["name"],
            name=repository["name"],
            asset_job=asset_jobs[0],
            materializable=[tuple(node["assetKey"]["path"]) for node in nodes if node["isMaterializable"]],
            unmaterializable=[tuple(node["assetKey"]["path"]) for node in nodes if not node["isMaterializable"]],
            checks=checks,
        )

    def materialize_all(self, repository: Repository) -> str:
        """Launch one run of the implicit asset job for every materializable asset and every check."""
        selector = {
            "repositoryLocationName": repository.location,
            "repositoryName": repository.name,
            "jobName": repository.asset_job,
            "assetSelection": [{"path": list(key)} for key in repository.materializable],
            "assetCheckSelection": [{"assetKey": {"path": list(key)}, "name": name} for key, name in repository.checks],
        }
        launched = self.graphql(LAUNCH_RUN_MUTATION, {"executionParams": {"selector": selector}})["launchRun"]
        if launched["__typename"] != "LaunchRunSuccess":
            raise DagsterDevError(f"launchRun answered {launched['__typename']}: {launched}")
        return launched["run"]["runId"]

    def wait_for_run(self, run_id: str, timeout: float) -> FinishedRun:
        """Poll ``runOrError`` until the run finishes; step and run failures are collected as text."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            run = self.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]
            if run["__typename"] != "Run":
                raise DagsterDevError(f"run {run_id}: {run['__typename']}: {run.get('message')}")
            if run["status"] in FINISHED_RUN_STATUSES:
                failures = [
                    _failure_text(event)
                    for event in run["eventConnection"]["events"]
                    if event["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent")
                ]
                own = run["endTime"] - run["startTime"] if run.get("startTime") and run.get("endTime") else None
                return FinishedRun(run_id, run["status"], time.monotonic() - started, failures, own)
            time.sleep(1)
        raise DagsterDevError(f"run {run_id} not finished after {timeout:.0f}s:\n{self.log_tail()}")

    def check_results(self) -> list[CheckResult]:
        """Every check's execution for its asset's latest materialization."""
        results = []
        for node in self.graphql(CHECK_RESULTS_QUERY)["assetNodes"]:
            for check in node["assetChecksOrError"].get("checks", []):
                execution = check["executionForLatestMaterialization"] or {}
                evaluation = execution.get("evaluation") or {}
                results.append(
                    CheckResult(
                        asset_key=tuple(node["assetKey"]["path"]),
                        name=check["name"],
                        status=execution.get("status"),
                        success=evaluation.get("success"),
                        description=evaluation.get("description"),
                        run_id=execution.get("runId"),
                    )
                )
        return results

    def stop(self, grace_seconds: float = 30) -> None:
        """Stop ``dagster dev`` and everything it started; return once none of it is alive.

        SIGTERM goes to the whole process group, so the code server shuts down with the webserver and
        the daemon instead of waiting for its heartbeat to time out; whatever is still alive after
        ``grace_seconds`` is killed.
        """
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while (self.process.poll() is None or self.processes()) and time.monotonic() < deadline:
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        deadline = time.monotonic() + 10
        while (left := self.processes()) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)


def _failure_text(event: Mapping) -> str:
    """A failure event as one line per error, the user's exception (the innermost cause) included."""
    error = event.get("error") or {}
    messages = [error.get("message") or event["message"]] + [cause["message"] for cause in error.get("causes", [])]
    return f"{event.get('stepKey') or 'run'}: " + " <- ".join(message.strip() for message in messages)


@contextlib.contextmanager
def dagster_dev(
    workspace: Path,
    work_dir: Path,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 120,
) -> Iterator[tuple[DagsterDev, Repository]]:
    """Start ``dagster dev -w workspace`` from the workspace's folder and yield it once its code is loaded.

    ``work_dir`` receives the throwaway ``DAGSTER_HOME``; ``log_path`` the combined output; ``env`` is
    added to the test's environment (for example ``DUCKLAKE_DEMO_DIR``).
    """
    dagster_home = work_dir / "dagster_home"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(INSTANCE_YAML)
    bin_dir = Path(sys.executable).parent
    environment = {
        **os.environ,
        **(env or {}),
        "DAGSTER_HOME": str(dagster_home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(bin_dir / "dg"), "dev", "-w", str(workspace), "-p", str(port), "-h", "127.0.0.1"],
            cwd=workspace.parent,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    dev = DagsterDev(process, f"http://127.0.0.1:{port}", dagster_home, log_path)
    try:
        yield dev, dev.wait_until_loaded(startup_timeout)
    finally:
        dev.stop()


def chromium_executable() -> str:
    """Debian's ``chromium``; its absence fails the test with the command that installs it."""
    executable = shutil.which("chromium")
    if executable is None:
        raise AssertionError(
            "the UI test needs headless Chromium: install Debian's chromium package "
            "(sudo apt-get update && sudo apt-get install -y chromium)"
        )
    return executable


class _VisibleText(html.parser.HTMLParser):
    """The text a reader sees in a DOM dump: everything outside ``script``, ``style``, ``noscript``, ``template``."""

    hidden = {"script", "style", "noscript", "template"}

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.depth_hidden = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.hidden:
            self.depth_hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.hidden and self.depth_hidden:
            self.depth_hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self.depth_hidden and data.strip():
            self.parts.append(data.strip())


def visible_text(dom: str) -> str:
    parser = _VisibleText()
    parser.feed(dom)
    return " ".join(parser.parts)


def render_page(
    url: str, screenshot: Path, expected: Iterable[str], timeout: float = 60, window: str = "1600,1000"
) -> str:
    """Load ``url`` in headless Chromium until its text shows every ``expected`` string; save a screenshot.

    The Dagster UI renders in JavaScript after several GraphQL round trips, so the page is loaded again
    with more virtual time until the expected text is there or ``timeout`` passes. Returns the page's
    visible text (the caller asserts on it); every Chromium process is gone when this returns.
    """
    executable = chromium_executable()
    wanted = list(expected)
    deadline = time.monotonic() + timeout
    budget_ms = 10_000
    text = ""
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            command = [
                executable,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={window}",
                f"--virtual-time-budget={budget_ms}",
                f"--screenshot={screenshot}",
                "--dump-dom",
                url,
            ]
            dom = _run_in_own_session(command, max(5.0, deadline - time.monotonic()))
            killed_by = time.monotonic() + 5
            while (left := processes_with_argument(f"--user-data-dir={profile}")) and time.monotonic() < killed_by:
                time.sleep(0.1)
            if left:
                raise AssertionError(f"Chromium processes {left} outlived their process group")
        text = visible_text(dom)
        if all(name in text for name in wanted) or time.monotonic() >= deadline:
            return text
        budget_ms = min(budget_ms * 2, 60_000)


def _run_in_own_session(command: list[str], timeout: float) -> str:
    """Run ``command`` in a new process group and kill the whole group afterwards (Chromium forks helpers)."""
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        output = b""
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return output.decode(errors="replace")


def asset_page_url(base_url: str, asset_key: Iterable[str], view: str | None = None) -> str:
    """The UI's page of one asset, optionally opened on a tab (``checks``, ``events``, ...)."""
    path = "/".join(urllib.parse.quote(part, safe="") for part in asset_key)
    return f"{base_url}/assets/{path}" + (f"?view={view}" if view else "")
