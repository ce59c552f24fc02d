"""Publishers racing on one location: every publisher that succeeds keeps a whole revision of its own lake
under a number nobody else got, and only the newest revision becomes the stable file.

The racers are separate processes lined up by a barrier right after each has listed the revisions, so
all of them compute the same next number and then race for it, every trial.
"""

import multiprocessing
import queue
import threading
from dataclasses import asdict
from pathlib import Path

import duckdb
import pytest

from ducklake_assets.core.extensions import load_extensions
from ducklake_assets.core.lake import LakeSettings, connect_lake
from ducklake_assets.core.publish import (
    PUBLICATION_TABLE,
    current_revision,
    list_revisions,
    publish_frozen_lake,
)
from ducklake_assets.core.s3 import S3Settings
from ducklake_assets.core.sql import quote_identifier, quote_literal
from ducklake_assets.core.storage import ObjectStore

RACERS = 3


def racer_lake(folder: Path, racer: int) -> str:
    """A lake whose table ``racer`` says who published it: ``racer + 1`` rows, all ``id = racer``."""
    settings = LakeSettings.from_strings(
        str(folder / "catalog.ducklake"), str(folder / "data"), attach_options={"DATA_INLINING_ROW_LIMIT": 0}
    )
    with connect_lake(settings) as connection:
        connection.execute(f"CREATE TABLE racer AS SELECT {racer} AS id FROM range({racer + 1})")
    return settings.catalog.path


def publish_after_barrier(barrier, results, racer: int, catalog: str, publish_uri: str, s3: dict | None) -> None:
    """One racer: list, wait for the others, then claim, verify and expose (run in its own process)."""

    def line_up(step: str, detail: str) -> None:
        if step == "listed":
            barrier.wait(timeout=120)

    try:
        result = publish_frozen_lake(
            catalog,
            publish_uri,
            store=ObjectStore(S3Settings(**s3) if s3 else None),
            keep_revisions=100,
            self_contained=s3 is not None,
            checkpoint=line_up,
        )
        results.put((racer, "ok", result.revision.number, result.revision.uri, result.superseded_by))
    except Exception as error:  # noqa: BLE001 - the parent reports what went wrong
        results.put((racer, "error", repr(error), None, None))


def read_revision(uri: str, s3: S3Settings | None) -> tuple[int, int, int]:
    """(stamped revision number, racer id, rows) of one published file, read by a stranger."""
    with duckdb.connect() as connection:
        load_extensions(connection, ["ducklake", "httpfs"])
        if s3 is not None:
            s3.create_duckdb_secret(connection, "reader")
        connection.execute(f"ATTACH {quote_literal('ducklake:' + uri)} AS lake (READ_ONLY)")
        (stamped,) = connection.execute(
            f"SELECT max(revision) FROM __ducklake_metadata_lake.main.{quote_identifier(PUBLICATION_TABLE)}"
        ).fetchone()
        racer, rows = connection.execute("SELECT max(id), count(*) FROM lake.racer").fetchone()
        assert connection.execute("SELECT sum(id) FROM lake.racer").fetchone()[0] == racer * rows
    return stamped, racer, rows


@pytest.mark.parametrize("trial", range(3))
@pytest.mark.parametrize("where", ["local", "s3"])
def test_racing_publishers_each_keep_a_whole_revision_under_a_number_of_their_own(
    where: str, trial: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    s3 = request.getfixturevalue("s3_settings") if where == "s3" else None
    publish_uri = (
        request.getfixturevalue("s3_bucket").uri("lakes/race.ducklake")
        if s3
        else str(tmp_path / "site" / "race.ducklake")
    )
    catalogs = [racer_lake(tmp_path / f"lake-{racer}", racer) for racer in range(RACERS)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(RACERS)
    results = context.Queue()
    processes = [
        context.Process(
            target=publish_after_barrier,
            args=(barrier, results, racer, catalogs[racer], publish_uri, asdict(s3) if s3 else None),
        )
        for racer in range(RACERS)
    ]
    for process in processes:
        process.start()
    outcomes = []
    try:
        for _ in processes:
            outcomes.append(results.get(timeout=180))
    except queue.Empty:
        pytest.fail(f"a publisher did not finish; got {outcomes}")
    finally:
        for process in processes:
            process.join(timeout=60)

    assert [outcome[1] for outcome in outcomes] == ["ok"] * RACERS, outcomes
    numbers = sorted(outcome[2] for outcome in outcomes)
    assert numbers == [1, 2, 3], "every publisher got its own number, none was skipped or shared"
    for racer, _, number, uri, superseded_by in outcomes:
        assert read_revision(uri, s3) == (number, racer, racer + 1), "each revision holds its own lake"
        assert superseded_by is None or superseded_by > number
    store = ObjectStore(s3)
    assert [revision.number for revision in list_revisions(publish_uri, store)] == [1, 2, 3]
    assert current_revision(publish_uri, s3) == 3, "the newest revision is the stable file"
    winner = next(outcome for outcome in outcomes if outcome[2] == 3)
    assert read_revision(publish_uri, s3) == (3, winner[0], winner[0] + 1)

    unchanged = publish_frozen_lake(catalogs[winner[0]], publish_uri, store=store, self_contained=s3 is not None)
    loser = next(outcome[0] for outcome in outcomes if outcome[2] != 3)
    later = publish_frozen_lake(catalogs[loser], publish_uri, store=store, self_contained=s3 is not None)

    assert unchanged.up_to_date and unchanged.revision.number == 3, "the winner's lake is already published"
    assert later.revision.number == 4 and later.exposed
    assert read_revision(publish_uri, s3) == (4, loser, loser + 1)


def test_a_slow_publisher_never_puts_an_older_snapshot_over_a_newer_one(tmp_path: Path) -> None:
    """A publisher that claimed its number, then stalled while another published a newer snapshot, reads
    its source only after the claim: it can never bring readers back to an older snapshot."""
    settings = LakeSettings.from_strings(
        str(tmp_path / "lake" / "catalog.ducklake"),
        str(tmp_path / "data"),
        attach_options={"DATA_INLINING_ROW_LIMIT": 0},
    )
    with connect_lake(settings) as connection:
        connection.execute("CREATE TABLE racer AS SELECT 2 AS id")
    publish_uri = str(tmp_path / "site" / "race.ducklake")
    claimed, release = threading.Event(), threading.Event()
    outcome: list = []

    def stall(step: str, detail: str) -> None:
        if step == "claimed":
            claimed.set()
            release.wait(timeout=120)

    slow = threading.Thread(
        target=lambda: outcome.append(publish_frozen_lake(settings.catalog.path, publish_uri, checkpoint=stall))
    )
    slow.start()
    assert claimed.wait(timeout=120)
    with connect_lake(settings) as connection:
        connection.execute("INSERT INTO racer VALUES (2)")
        (newest,) = connection.execute("SELECT id FROM lake.current_snapshot()").fetchone()
    fast = publish_frozen_lake(settings.catalog.path, publish_uri)
    release.set()
    slow.join(timeout=120)

    (slow_result,) = outcome
    assert (slow_result.revision.number, fast.revision.number) == (1, 2)
    assert slow_result.contents.snapshot_id == newest, "the slow publisher read its source after its claim"
    assert not slow_result.exposed and slow_result.superseded_by == 2
    assert read_revision(publish_uri, None) == (2, 2, 2)
