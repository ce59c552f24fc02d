"""The README's demo, run the way a user runs it: ``dg dev``, the whole pipeline, the UI in a browser.

Screenshots and the ``dagster dev`` log land in ``test-artifacts/ui_end_to_end/`` at the repository root.
"""

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dagster as dg

from ducklake_assets.demo import build_demo
from ducklake_assets_tests.dagster_dev import (
    asset_page_url,
    chromium_executable,
    dagster_dev,
    processes_with_environment,
    render_page,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "test-artifacts" / "ui_end_to_end"

PIPELINE_ASSETS = {
    ("space", "source_files"),
    ("space", "sample_files"),
    ("space", "catalog_snapshot"),
    ("space", "astronauts"),
    ("space", "missions"),
    ("space", "static_backup"),
    ("space", "frozen_lake"),
}
PIPELINE_CHECKS = {
    (("space", "static_backup"), "backup_is_fresh"),
    (("space", "static_backup"), "backup_is_restorable"),
    (("space", "static_backup"), "backup_files_exist"),
    (("space", "frozen_lake"), "frozen_lake_opens_read_only"),
    (("space", "frozen_lake"), "frozen_lake_matches_catalog"),
}


def test_the_demo_pipeline_runs_from_dagster_dev_and_the_ui_shows_its_assets_and_checks(tmp_path: Path) -> None:
    chromium_executable()
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    timings: dict[str, float] = {}
    started = time.monotonic()
    demo_env = {"DUCKLAKE_DEMO_DIR": str(tmp_path / "demo")}

    in_process = build_demo(tmp_path / "in_process")
    in_process_started = time.monotonic()
    assert dg.materialize(list(in_process.assets), resources=in_process.resources).success
    timings["pipeline in process"] = time.monotonic() - in_process_started
    fresh = (
        "import sys, dagster as dg\n"
        "from pathlib import Path\n"
        "from ducklake_assets.demo import build_demo\n"
        "defs = build_demo(Path(sys.argv[1]))\n"
        "assert dg.materialize(list(defs.assets), resources=defs.resources).success\n"
    )
    fresh_started = time.monotonic()
    subprocess.run([sys.executable, "-c", fresh, str(tmp_path / "fresh_process")], check=True, capture_output=True)
    timings["pipeline in a fresh process"] = time.monotonic() - fresh_started

    with dagster_dev(REPO_ROOT / "workspace.yaml", tmp_path, ARTIFACTS / "dagster_dev.log", env=demo_env) as (
        dev,
        repository,
    ):
        timings["dagster dev ready"] = time.monotonic() - started
        assets = set(repository.materializable) | set(repository.unmaterializable)
        checks = set(repository.checks)

        run_id = dev.materialize_all(repository)
        run = dev.wait_for_run(run_id, timeout=150)
        timings["pipeline run"] = run.seconds
        timings["pipeline run, start to end"] = run.run_seconds or 0.0
        assert run.status == "SUCCESS", f"run {run_id} ended {run.status}:\n" + "\n".join(run.failures)

        results = dev.check_results()
        assert {(result.asset_key, result.name) for result in results} == checks
        failed = [result for result in results if result.status != "SUCCEEDED" or result.success is not True]
        assert not failed, f"checks that did not pass: {failed}"
        unexplained = [result.name for result in results if not result.description]
        assert not unexplained, f"checks whose result says nothing in words: {unexplained}"

        browser_started = time.monotonic()
        checked_assets = sorted({key for key, _ in checks})
        passed_badges = Counter(f"{n} / {n} Passed" for n in Counter(key for key, _ in checks).values())
        graph_shows = [key[-1] for key in sorted(assets)] + list(passed_badges)
        graph_text = render_page(f"{dev.url}/asset-groups", ARTIFACTS / "asset_graph.png", graph_shows)
        assert "Global asset lineage" in graph_text
        missing_in_graph = [shown for shown in graph_shows if shown not in graph_text]
        missing_in_graph += [badge for badge, times in passed_badges.items() if graph_text.count(badge) < times]
        assert not missing_in_graph, f"the asset graph does not show {missing_in_graph}; it shows: {graph_text}"

        for asset_key in checked_assets:
            check_shows = [f"{name} Succeeded" for key, name in sorted(checks) if key == asset_key]
            url = asset_page_url(dev.url, asset_key, view="checks")
            checks_text = render_page(url, ARTIFACTS / f"checks_{'_'.join(asset_key)}.png", check_shows)
            assert f"Checks ({len(check_shows)})" in checks_text
            assert "No description provided" not in checks_text, checks_text
            missing_checks = [shown for shown in check_shows if shown not in checks_text]
            assert not missing_checks, f"checks page of {asset_key} lacks {missing_checks}; it shows: {checks_text}"
            explanations = [result.description for result in results if result.asset_key == asset_key]
            assert any(explanation in checks_text for explanation in explanations), checks_text
        attach = "ATTACH 'ducklake:latest.ducklake' AS backup (READ_ONLY)"
        overview = render_page(
            asset_page_url(dev.url, ("space", "static_backup")), ARTIFACTS / "static_backup.png", [attach]
        )
        assert attach in overview, f"the static_backup description lost its attach line: {overview}"
        timings["browser"] = time.monotonic() - browser_started

    assert dev.process.returncode is not None
    assert processes_with_environment("DAGSTER_HOME", str(dev.dagster_home)) == []
    timings["total"] = time.monotonic() - started
    timings["dg dev / in process"] = timings["pipeline run"] / timings["pipeline in process"]
    timings["dg dev / fresh process"] = timings["pipeline run"] / timings["pipeline in a fresh process"]
    timings["dg dev run start to end / in process"] = (
        timings["pipeline run, start to end"] / timings["pipeline in process"]
    )
    (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=2))
    print(f"timings: {json.dumps(timings)}")
    log = (ARTIFACTS / "dagster_dev.log").read_text()
    warnings = [line for line in log.splitlines() if "Warning:" in line]
    assert not warnings, f"dg dev printed warnings: {warnings}"

    assert PIPELINE_ASSETS <= assets, f"the demo lacks assets {sorted(PIPELINE_ASSETS - assets)}"
    assert PIPELINE_CHECKS <= checks, f"the demo lacks checks {sorted(PIPELINE_CHECKS - checks)}"
