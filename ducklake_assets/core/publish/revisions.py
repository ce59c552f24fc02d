"""The revisions of a frozen lake: how they are named and listed, the stamp each file carries, claiming a
revision number atomically, making one current (compare and swap) and pruning old ones."""

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from ..errors import AlreadyExistsError, ChangedError, ConfigurationError, PublishError, StorageError
from ..lake import new_connection
from ..locations import is_remote, join_uri
from ..s3 import S3Settings
from ..sql import quote_identifier, quote_literal
from ..storage import ObjectStore, StoredObject
from ..sync import SyncReport
from .contents import local_or_url, stranger_connection

PUBLICATION_TABLE = "ducklake_assets_publication"
REVISIONS_FOLDER = "revisions"
CLAIM_SUFFIX = ".claim"
_REVISION_METADATA = "ducklake-revision"
STATE_METADATA = "ducklake-state"
_MAX_CLAIMS = 1000


@dataclass(frozen=True)
class Revision:
    """One published revision: its number, the lake snapshot it holds, where it is and its size in bytes."""

    number: int
    snapshot_id: int
    uri: str
    size: int


KEEP_REVISIONS = 5
"""Revisions of a frozen lake kept by default, besides the current one, for readers still using them."""


def revisions_prefix(publish_uri: str) -> str:
    """The folder holding the revisions of ``publish_uri``: ``<its folder>/revisions``."""
    folder, _ = _split_name(publish_uri)
    return join_uri(folder, REVISIONS_FOLDER)


def revision_uri(publish_uri: str, number: int, snapshot_id: int) -> str:
    """Where revision ``number`` (holding snapshot ``snapshot_id``) of ``publish_uri`` is stored."""
    _, stem = _split_name(publish_uri)
    return join_uri(revisions_prefix(publish_uri), f"{stem}-r{number:06d}-s{snapshot_id}.ducklake")


def list_revisions(publish_uri: str, store: ObjectStore) -> list[Revision]:
    """The revisions of ``publish_uri`` that exist, oldest first (none when the folder does not exist)."""
    prefix = revisions_prefix(publish_uri)
    _, stem = _split_name(publish_uri)
    pattern = re.compile(rf"{re.escape(stem)}-r(\d+)-s(\d+)\.ducklake")
    if not is_remote(prefix) and not Path(prefix).is_dir():
        return []
    found = []
    for stored in store.list_prefix(prefix):
        match = pattern.fullmatch(stored.uri.rsplit("/", 1)[-1])
        if match:
            found.append(Revision(int(match[1]), int(match[2]), stored.uri, stored.size))
    return sorted(found, key=lambda revision: revision.number)


@dataclass(frozen=True)
class PublicationStamp:
    """What a published file records about itself (table ``ducklake_assets_publication``).

    ``state`` fingerprints what the revision was made from: the source and its snapshot (id and commit
    time), the source's DuckLake format, the duckdb release and the publication settings. Files
    published before it was recorded have ``None`` there and in the fields after ``revision``.
    """

    revision: int
    snapshot_id: int | None = None
    state: str | None = None
    format_version: str | None = None
    source_format_version: str | None = None
    data_path: str | None = None
    tables: dict[str, int] | None = None


def read_stamp(catalog_uri: str, s3: S3Settings | None = None) -> PublicationStamp | None:
    """The stamp of a published file (a local path or ``s3://`` URI), read from the file itself without
    downloading it; ``None`` when it does not exist or holds none."""
    connection = stranger_connection(s3, ["httpfs"] if is_remote(catalog_uri) else [])
    try:
        connection.execute(f"ATTACH {quote_literal(local_or_url(catalog_uri))} AS published (READ_ONLY)")
        cursor = connection.execute(
            f"SELECT * FROM published.main.{quote_identifier(PUBLICATION_TABLE)} ORDER BY revision DESC LIMIT 1"
        )
        row = cursor.fetchone()
        if row is None:
            return None
        values = dict(zip([column[0] for column in cursor.description], row, strict=True))
    except (duckdb.Error, UnicodeDecodeError):
        return None
    finally:
        connection.close()
    tables = values.get("tables")
    return PublicationStamp(
        revision=values["revision"],
        snapshot_id=values.get("snapshot_id"),
        state=values.get("state"),
        format_version=values.get("format_version"),
        source_format_version=values.get("source_format_version"),
        data_path=values.get("data_path"),
        tables=json.loads(tables) if tables else None,
    )


def current_revision(publish_uri: str, s3: S3Settings | None = None) -> int | None:
    """The revision number ``publish_uri`` holds, read from the file itself; ``None`` if there is none."""
    stamp = read_stamp(publish_uri, s3)
    return stamp.revision if stamp else None


def claim_uri(publish_uri: str, number: int) -> str:
    """The marker that claims revision ``number`` of ``publish_uri`` for one publisher (created only once)."""
    _, stem = _split_name(publish_uri)
    return join_uri(revisions_prefix(publish_uri), f"{stem}-r{number:06d}{CLAIM_SUFFIX}")


def next_number(publish_uri: str, store: ObjectStore) -> int:
    """One more than the highest revision number claimed or published so far."""
    prefix = revisions_prefix(publish_uri)
    if not is_remote(prefix) and not Path(prefix).is_dir():
        return 1
    _, stem = _split_name(publish_uri)
    pattern = re.compile(rf"{re.escape(stem)}-r(\d+)(?:-s\d+\.ducklake|{re.escape(CLAIM_SUFFIX)})")
    numbers = [int(m[1]) for item in store.list_prefix(prefix) if (m := pattern.fullmatch(item.uri.rsplit("/", 1)[-1]))]
    return max(numbers, default=0) + 1


def claim_number(publish_uri: str, store: ObjectStore, first: int, marker: Path) -> int:
    """Claim the lowest free revision number from ``first`` on, atomically; a claim lost to another
    publisher moves on to the next number."""
    number = first
    for _ in range(_MAX_CLAIMS):
        try:
            store.create_file(marker, claim_uri(publish_uri, number))
            return number
        except AlreadyExistsError:
            number += 1
    raise PublishError(
        f"Could not claim a revision number for {publish_uri} after {_MAX_CLAIMS} attempts: too many publishers "
        "at once. Limit the frozen_lake asset's concurrency pool, then publish again."
    )


def expose_revision(copy: Path, publish_uri: str, store: ObjectStore, number: int, state: str) -> int | None:
    """Make revision ``number`` the one ``publish_uri`` holds, unless a newer one got there first.

    Returns the newer revision's number when it did. The stable file is read, then replaced only if it
    is still what was read (compare and swap), so of two racing publishers the higher number wins. On
    S3 the revision number travels in the object's metadata, read with its ETag in one request: the
    stable object is never opened while another publisher may be replacing it.
    """
    for _ in range(_MAX_CLAIMS):
        current = store.stat_if_exists(publish_uri)
        held = _held_revision(publish_uri, store, current)
        if held is not None and held > number:
            return held
        try:
            metadata = {_REVISION_METADATA: str(number), STATE_METADATA: state}
            store.replace_file(copy, publish_uri, current, metadata=metadata)
            return None
        except ChangedError:
            continue
    raise PublishError(f"{publish_uri} kept changing while revision {number} was being made current")


def _held_revision(publish_uri: str, store: ObjectStore, current: StoredObject | None) -> int | None:
    """The revision number the stable file holds: from its S3 metadata, else read from the file."""
    if current is None:
        return None
    recorded = (current.metadata or {}).get(_REVISION_METADATA)
    if recorded is not None and recorded.isdigit():
        return int(recorded)
    return current_revision(publish_uri, store.s3)


def files_index_uri(revision_location: str) -> str:
    """The list of data files a self-contained revision references, beside it."""
    return revision_location.removesuffix(".ducklake") + ".files.json"


def files_folder(publish_uri: str) -> str:
    """Where a self-contained lake keeps its data files: ``<folder>/<name>/`` beside ``publish_uri``."""
    folder, stem = _split_name(publish_uri)
    return join_uri(folder, stem)


def files_index_json(files: SyncReport, publish_uri: str) -> bytes:
    root = files_folder(publish_uri) + "/"
    entries = [[item.uri.removeprefix(root), item.size, item.etag] for item in files.files()]
    return json.dumps({"format": "ducklake-assets-publication-files/1", "files": entries}).encode()


def _split_name(uri: str) -> tuple[str, str]:
    folder, _, name = uri.rstrip("/").rpartition("/")
    stem = name[: -len(".ducklake")] if name.endswith(".ducklake") else name.rsplit(".", 1)[0] or name
    return folder or ".", stem


def write_stamp(copy: Path, stamp: PublicationStamp) -> None:
    """Record in the copy which revision it is and what it was made from, so the published file says what it
    holds and the next publication can tell it is still current."""
    connection = new_connection(database=str(copy))
    try:
        table = quote_identifier(PUBLICATION_TABLE)
        connection.execute(
            f"CREATE OR REPLACE TABLE {table} (revision BIGINT, snapshot_id BIGINT, published_at TIMESTAMPTZ, "
            "published_by VARCHAR, state VARCHAR, format_version VARCHAR, source_format_version VARCHAR, "
            "data_path VARCHAR, tables VARCHAR)"
        )
        connection.execute(
            f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                stamp.revision,
                stamp.snapshot_id,
                datetime.now(UTC),
                f"ducklake-assets with duckdb {duckdb.__version__}",
                stamp.state,
                stamp.format_version,
                stamp.source_format_version,
                stamp.data_path,
                json.dumps(stamp.tables, sort_keys=True),
            ],
        )
        connection.execute("CHECKPOINT")
    finally:
        connection.close()


def prune_revisions(publish_uri: str, store: ObjectStore, keep_revisions: int) -> list[str]:
    """Delete revisions beyond the newest ``keep_revisions``, never the one ``publish_uri`` holds.

    A self-contained lake's data files go with the last kept revision that lists them. Returns the
    deleted revision URIs. Raises ``PublishError`` (having deleted nothing more) when the revision
    ``publish_uri`` holds cannot be read, or a revision cannot be deleted.
    """
    if keep_revisions < 1:
        raise ConfigurationError(f"keep_revisions must be at least 1, not {keep_revisions}")
    try:
        current = _held_revision(publish_uri, store, store.stat_if_exists(publish_uri))
    except StorageError:
        current = None
    if current is None:
        raise PublishError(f"Old revisions were not pruned: cannot read which revision {publish_uri} holds.")
    pruned: list[str] = []
    try:
        revisions = list_revisions(publish_uri, store)
        kept_numbers = {revision.number for revision in revisions[-keep_revisions:]} | {current}
        kept = [revision for revision in revisions if revision.number in kept_numbers]
        removed = [revision for revision in revisions if revision.number not in kept_numbers]
        if not removed:
            return []
        needed = set().union(*(_revision_files(revision.uri, publish_uri, store) for revision in kept))
        released = set().union(*(_revision_files(revision.uri, publish_uri, store) for revision in removed))
        for revision in removed:
            store.delete_many([revision.uri, files_index_uri(revision.uri), claim_uri(publish_uri, revision.number)])
            pruned.append(revision.uri)
        store.delete_many(sorted(released - needed))
    except StorageError as error:
        raise PublishError(f"Old revisions were not all pruned (deleted {len(pruned)}): {error}") from None
    return pruned


def _revision_files(revision_location: str, publish_uri: str, store: ObjectStore) -> set[str]:
    """The data files of a self-contained revision, from the index beside it (none for other revisions)."""
    uri = files_index_uri(revision_location)
    if not store.exists(uri):
        return set()
    try:
        index = json.loads(store.get_bytes(uri))
        root = files_folder(publish_uri)
        return {join_uri(root, key) for key, _, _ in index["files"]}
    except (ValueError, KeyError, TypeError) as error:
        raise StorageError(f"the file index {uri} is not valid ({error})") from None
