"""Readers of a frozen lake while it is republished: on S3 and over HTTP (the library's own server), in
fresh sessions and in one long session, through the stable URL and through pinned revisions.

DuckDB reads a remote lake lazily, so a session that spans a replacement of the stable file would read
pages of two revisions. What a reader must never get is a wrong answer: either the numbers of one whole
revision, or an error. Pinned revisions never change, so their readers never even see an error.
"""

import threading
from collections.abc import Callable
from pathlib import Path

import duckdb

from ducklake_assets.core.extensions import load_extensions
from ducklake_assets.core.lake import LakeSettings, connect_lake
from ducklake_assets.core.publish import attach_statement, publish_frozen_lake, revision_uri
from ducklake_assets.core.s3 import S3Settings
from ducklake_assets.core.serve import serving
from ducklake_assets.core.storage import ObjectStore

PUBLICATIONS = 25
QUERY = "SELECT (SELECT id FROM lake.current_snapshot()), count(*), sum(mission_id), max(mission_id) FROM lake.missions"


def stranger(s3: S3Settings | None) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    load_extensions(connection, ["ducklake", "httpfs"])
    if s3 is not None:
        s3.create_duckdb_secret(connection, "reader")
    return connection


class Reader:
    """Queries a frozen lake in a loop and sorts every answer into right, wrong or an error."""

    def __init__(self, name: str, attach: Callable[[duckdb.DuckDBPyConnection], None], s3, *, one_session: bool):
        self.name, self.attach, self.s3, self.one_session = name, attach, s3, one_session
        self.answers: list[tuple[int, int, int, int]] = []
        self.errors: list[str] = []

    def run(self, stop: threading.Event) -> None:
        connection = None
        while not stop.is_set():
            try:
                if connection is None:
                    connection = stranger(self.s3)
                    self.attach(connection)
                self.answers.append(connection.execute(QUERY).fetchone())
            except (duckdb.Error, UnicodeDecodeError) as error:
                self.errors.append(type(error).__name__)
                connection.close()
                connection = None
            if not self.one_session and connection is not None:
                connection.close()
                connection = None
            stop.wait(0.02)
        if connection is not None:
            connection.close()

    def wrong(self, rows_at: dict[int, int]) -> list[tuple]:
        """Answers that are not exactly one revision's: its snapshot's row count, sum and maximum."""
        return [
            answer
            for answer in self.answers
            if answer[0] not in rows_at
            or answer[1:] != (rows_at[answer[0]], sum(range(rows_at[answer[0]])), rows_at[answer[0]] - 1)
        ]


def test_readers_on_s3_and_over_http_get_whole_revisions_or_an_error_never_a_mix(
    tmp_path: Path, s3_bucket, s3_settings: S3Settings
) -> None:
    lake = LakeSettings.from_strings(
        str(tmp_path / "lake" / "catalog.ducklake"),
        str(tmp_path / "lake" / "data"),
        attach_options={"DATA_INLINING_ROW_LIMIT": 0},
    )
    rows_at: dict[int, int] = {}

    def add(count: int) -> None:
        with connect_lake(lake) as connection:
            connection.execute("CREATE TABLE IF NOT EXISTS missions (mission_id BIGINT, name VARCHAR)")
            (rows,) = connection.execute("SELECT count(*) FROM missions").fetchone()
            connection.execute(
                "INSERT INTO missions SELECT range, 'mission ' || range FROM range(?, ?)", [rows, rows + count]
            )
            rows_at[connection.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0]] = rows + count

    s3_uri = s3_bucket.uri("lakes/space.ducklake")
    site = tmp_path / "site"
    site.mkdir()
    with serving(site) as base_url:
        http_url = f"{base_url}/space.ducklake"

        def publish(round_number: int | None = None) -> list:
            """Both frozen lakes at first; then the S3 one on even rounds and the served one on odd rounds."""
            results = []
            if round_number is None or round_number % 2 == 0:
                store = ObjectStore(s3_settings)
                results.append(publish_frozen_lake(lake, s3_uri, store=store, self_contained=True, keep_revisions=50))
            if round_number is None or round_number % 2 == 1:
                results.append(
                    publish_frozen_lake(
                        lake, str(site / "space.ducklake"), reader_url=http_url, self_contained=True, keep_revisions=50
                    )
                )
            return results

        add(2000)
        first = publish()
        pinned = {
            "s3": revision_uri(s3_uri, first[0].revision.number, first[0].contents.snapshot_id),
            "http": revision_uri(http_url, first[1].revision.number, first[1].contents.snapshot_id),
        }
        readers = [
            Reader(
                "s3 stable, fresh sessions",
                lambda c: c.execute(attach_statement(s3_uri, "lake")),
                s3_settings,
                one_session=False,
            ),
            Reader(
                "http stable, fresh sessions",
                lambda c: c.execute(attach_statement(http_url, "lake")),
                None,
                one_session=False,
            ),
            Reader(
                "s3 stable, one long session",
                lambda c: c.execute(attach_statement(s3_uri, "lake")),
                s3_settings,
                one_session=True,
            ),
            Reader(
                "http stable, one long session",
                lambda c: c.execute(attach_statement(http_url, "lake")),
                None,
                one_session=True,
            ),
            Reader(
                "s3 pinned", lambda c: c.execute(attach_statement(pinned["s3"], "lake")), s3_settings, one_session=True
            ),
            Reader(
                "http pinned", lambda c: c.execute(attach_statement(pinned["http"], "lake")), None, one_session=True
            ),
        ]
        stop = threading.Event()
        threads = [threading.Thread(target=reader.run, args=(stop,)) for reader in readers]
        for thread in threads:
            thread.start()
        try:
            for round_number in range(PUBLICATIONS):
                add(500)
                publish(round_number)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=120)

    report = {reader.name: (len(reader.answers), len(reader.errors), len(reader.wrong(rows_at))) for reader in readers}
    print("reader: (answers, errors, wrong answers)", report)
    for reader in readers:
        assert reader.answers, f"{reader.name} never got an answer"
        assert reader.wrong(rows_at) == [], f"{reader.name} got answers of no single revision"
    for reader in readers[4:]:
        assert reader.errors == [], f"{reader.name} reads an immutable revision and must never fail"
    seen = {answer[0] for reader in readers[:2] for answer in reader.answers}
    assert len(seen) > 5, "the fresh-session readers overlapped many publications"
