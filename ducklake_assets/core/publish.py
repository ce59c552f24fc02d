"""Publishing a frozen DuckLake: a read-only catalog file that anyone can attach from S3, HTTP or a folder.

A frozen lake is a DuckDB-file DuckLake catalog copied to where readers are, whose data files are
referenced by absolute path or URL. Readers need no database server: ``ATTACH 'ducklake:<url>' AS x
(READ_ONLY)`` is enough. This module makes such a file from a catalog file without ever touching the
catalog or its data files:

1. the catalog (or its latest static backup) is copied to a private folder, its write-ahead log
   replayed and checkpointed, so the published file is one self-contained DuckDB file;
2. the copy is rewritten so every data file resolves for a stranger: a data path relative to the
   writer's working folder becomes absolute (or the URL readers use), files registered by relative path
   become absolute; with ``self_contained`` every data file is copied next to the published file (the
   file-copy engine full backups use) and the copy points at those copies; a remote publication that
   would reference paths on the writer's disk is refused;
3. a catalog older than the running ``ducklake`` extension is migrated (the copy, never the catalog),
   because a read-only file cannot migrate itself when a newer client opens it; the unmigrated copy can
   be kept for old clients under another name;
4. a revision number is claimed atomically (a create-only marker), the copy is stamped with it (table
   ``ducklake_assets_publication``) and created as ``<folder>/revisions/<name>-r<n>-s<snapshot>.ducklake``;
5. the revision is opened as a stranger would, and only then copied over ``publish_uri``, atomically and
   only if ``publish_uri`` still holds what was read a moment before (compare and swap) and is older:
   at every moment ``publish_uri`` is one complete revision, never a partial file or an older one;
6. old revisions are pruned, never the one ``publish_uri`` holds.

Before any of this, the source's latest snapshot is compared with the stamp of the revision
``publish_uri`` holds: when that revision was made from the same snapshot (id and commit time) with the
same settings and, if self-contained, every file it copied is still beside it with its size, nothing is
written, claimed or pruned (unless ``force``).
"""

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import duckdb

from .backup import (
    DATA_FOLDER,
    MANIFEST_TABLE,
    fetch_backup,
    latest_manifest,
    list_store_files,
    point_at_store_files,
    resolve_backup_file,
)
from .catalog import DuckDBCatalog
from .errors import (
    AlreadyExistsError,
    BackupError,
    ChangedError,
    ConfigurationError,
    PublishError,
    StorageError,
    redact,
)
from .files import catalog_files_sql
from .lake import LakeSettings, connect_lake, format_mismatch, metadata_database, metadata_prefix, new_connection
from .locations import absolute_local_path, is_remote, join_uri
from .s3 import S3Settings
from .scratch import scratch_folder
from .sql import qualified_name, quote_identifier, quote_literal
from .storage import ObjectStore, StoredObject
from .sync import Checkpoint, SyncReport, Transfer, list_many, sync_files

PUBLICATION_TABLE = "ducklake_assets_publication"
REVISIONS_FOLDER = "revisions"
CLAIM_SUFFIX = ".claim"
_REVISION_METADATA = "ducklake-revision"
_STATE_METADATA = "ducklake-state"
CHANGED_WHILE_READ = (
    "the file was replaced by a newer revision while it was being read (DuckDB's ETag check refused to mix "
    "two revisions); attach it again, or attach a pinned revision for long sessions"
)
_MAX_CLAIMS = 1000
_STRANGER_ALIAS = "frozen"


@dataclass(frozen=True)
class Revision:
    """One published revision: its number, the lake snapshot it holds, where it is and its size in bytes."""

    number: int
    snapshot_id: int
    uri: str
    size: int


@dataclass(frozen=True)
class LakeContents:
    """What a reader of a lake sees at one snapshot: its id, format version and tables with row counts.

    Tables are keyed ``schema.table``.
    """

    snapshot_id: int
    format_version: str
    tables: dict[str, int]


@dataclass(frozen=True)
class PublishResult:
    """The outcome of one publication, with everything a reader needs to attach it.

    ``up_to_date`` is true when nothing was published because ``publish_uri`` already held the source's
    snapshot with the same settings; ``revision`` and ``contents`` then describe that revision.
    """

    publish_uri: str
    reader_url: str
    revision: Revision
    contents: LakeContents
    source_format_version: str
    data_path: str | None
    legacy_uri: str | None = None
    pruned: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    report: "StrangerReport | None" = None
    superseded_by: int | None = None
    files: SyncReport | None = None
    up_to_date: bool = False

    @property
    def exposed(self) -> bool:
        """Whether ``publish_uri`` now holds this revision (``False`` when a newer one overtook it)."""
        return self.superseded_by is None

    @property
    def migrated(self) -> bool:
        """Whether the copy was migrated to a newer DuckLake format than its catalog's."""
        return self.source_format_version != self.contents.format_version

    def attach_sql(self, alias: str = _STRANGER_ALIAS) -> str:
        """The one line a reader runs to attach the published lake."""
        return attach_statement(self.reader_url, alias)


@dataclass(frozen=True)
class StrangerReport:
    """What a fresh DuckDB connection, sharing nothing with the writer, saw when it attached a frozen lake."""

    url: str
    error: str | None = None
    snapshot_id: int | None = None
    format_version: str | None = None
    revision: int | None = None
    tables: dict[str, int] = field(default_factory=dict)
    missing_tables: tuple[str, ...] = ()
    unreadable_files: tuple[str, ...] = ()

    @property
    def opened(self) -> bool:
        return self.error is None

    @property
    def ok(self) -> bool:
        """Attached, every expected table present and every probed data file readable."""
        return self.opened and not self.missing_tables and not self.unreadable_files

    def problems(self) -> list[str]:
        """Why the lake is not usable by a stranger, one sentence each (empty when ``ok``)."""
        found = []
        if self.error is not None:
            found.append(f"cannot attach {self.url}: {self.error}")
        if self.missing_tables:
            found.append(f"tables missing: {', '.join(self.missing_tables)}")
        if self.unreadable_files:
            found.append(f"data files a reader cannot open: {', '.join(self.unreadable_files)}")
        return found


KEEP_REVISIONS = 5
"""Revisions of a frozen lake kept by default, besides the current one, for readers still using them."""


def report_to_json(report: StrangerReport) -> dict[str, object]:
    """A stranger's report as plain JSON (kept in the asset's metadata so its checks can reuse it)."""
    return {
        "url": report.url,
        "error": report.error,
        "snapshot_id": report.snapshot_id,
        "format_version": report.format_version,
        "revision": report.revision,
        "tables": report.tables,
        "missing_tables": list(report.missing_tables),
        "unreadable_files": list(report.unreadable_files),
    }


def report_from_json(values: dict) -> StrangerReport:
    """The inverse of :func:`report_to_json`."""
    return StrangerReport(
        url=values["url"],
        error=values.get("error"),
        snapshot_id=values.get("snapshot_id"),
        format_version=values.get("format_version"),
        revision=values.get("revision"),
        tables=dict(values.get("tables") or {}),
        missing_tables=tuple(values.get("missing_tables") or ()),
        unreadable_files=tuple(values.get("unreadable_files") or ()),
    )


def attach_statement(url: str, alias: str = _STRANGER_ALIAS) -> str:
    """``ATTACH 'ducklake:<url>' AS <alias> (READ_ONLY)``, quoted."""
    return f"ATTACH {quote_literal('ducklake:' + url)} AS {quote_identifier(alias)} (READ_ONLY)"


def table_key(name: str) -> str:
    """``t`` -> ``main.t``; ``s.t`` unchanged: how tables are named in reports."""
    return name if "." in name else f"main.{name}"


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
    connection = _stranger_connection(s3, ["httpfs"] if is_remote(catalog_uri) else [])
    try:
        connection.execute(f"ATTACH {quote_literal(_local_or_url(catalog_uri))} AS published (READ_ONLY)")
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


def _next_number(publish_uri: str, store: ObjectStore) -> int:
    """One more than the highest revision number claimed or published so far."""
    prefix = revisions_prefix(publish_uri)
    if not is_remote(prefix) and not Path(prefix).is_dir():
        return 1
    _, stem = _split_name(publish_uri)
    pattern = re.compile(rf"{re.escape(stem)}-r(\d+)(?:-s\d+\.ducklake|{re.escape(CLAIM_SUFFIX)})")
    numbers = [int(m[1]) for item in store.list_prefix(prefix) if (m := pattern.fullmatch(item.uri.rsplit("/", 1)[-1]))]
    return max(numbers, default=0) + 1


def _claim_number(publish_uri: str, store: ObjectStore, first: int, marker: Path) -> int:
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


def publish_frozen_lake(
    source: str | Path | LakeSettings,
    publish_uri: str,
    *,
    store: ObjectStore | None = None,
    keep_revisions: int = KEEP_REVISIONS,
    reader_url: str | None = None,
    data_path: str | None = None,
    reader_data_path: str | None = None,
    legacy_uri: str | None = None,
    probe_files: bool = True,
    self_contained: bool = False,
    data_store: ObjectStore | None = None,
    checkpoint: Checkpoint | None = None,
    force: bool = False,
) -> PublishResult:
    """Publish a read-only copy of a DuckDB-file DuckLake catalog to ``publish_uri``.

    Args:
        source: a catalog file (a local path or ``s3://`` URI), a backup folder (its latest static backup
            is published, checked against its checksum) or the ``LakeSettings`` of a lake whose catalog
            is a DuckDB file.
        publish_uri: a local path or an ``s3://bucket/key``; ``store`` reaches it (and a remote source).
        keep_revisions: revisions kept, besides the one ``publish_uri`` holds.
        reader_url: where readers find the file when it is not ``publish_uri`` itself (e.g. the
            ``https://`` URL of a served folder).
        data_path: the lake's data folder when the catalog's own entry should not be trusted (taken from
            ``LakeSettings`` when given).
        reader_data_path: replaces it in the published copy, e.g. the ``https://`` or ``s3://``
            location where readers find the data folder.
        legacy_uri: receives the unmigrated copy for old clients when the catalog's format is older
            than the running extension.
        probe_files: ``False`` skips opening every data file when the revision is verified (for lakes
            whose files this machine cannot read).
        self_contained: copy every data file the lake references next to it (``<folder>/<name>/``),
            incrementally with the engine full backups use, so the frozen lake is complete on its own
            wherever it is published. ``data_store`` reaches the data files (default: ``store``).
        checkpoint: called as ``checkpoint(step, detail)`` after each step (tests line publishers up).
        force: publish a new revision even when ``publish_uri`` is up to date.

    When ``publish_uri`` already holds the source's latest snapshot (the same id committed at the same
    time, in the same DuckLake format, made by the same duckdb release with the same source, data path,
    reader, ``self_contained`` and ``probe_files`` settings), nothing is written, claimed or pruned: the
    result has ``up_to_date=True`` and describes the revision it holds (``report`` is ``None``: verifying
    it again is the caller's choice). Finding that out reads the source's latest snapshot (a backup's
    ``latest.json``, or the catalog file's snapshot table) and the published file's own stamp; for a
    self-contained lake also the revision's file index and one listing of the copied files, so a lake
    with a copied file missing or of another size is published again (copying only what is missing).

    Revision numbers are claimed atomically (a create-only marker per number: an exclusive create
    locally, ``If-None-Match: *`` on S3), so two publishers never share one; the stable file is replaced
    only if it still holds what was read before (a lock locally, ``If-Match`` on its ETag on S3) and
    only by a newer revision. A publication overtaken by a newer one keeps its revision (its pinned URL
    works) and leaves the stable file to the newer one. A remote publication whose data files are local
    paths is refused: no reader elsewhere could read them.

    Raises ``PublishError`` when the catalog cannot be copied, migrated or verified, or the destination
    cannot be written; then the revision ``publish_uri`` holds is left exactly as it was.
    """
    if keep_revisions < 1:
        raise ConfigurationError(f"keep_revisions must be at least 1, not {keep_revisions}")
    store = store or ObjectStore()
    data_store = data_store or store
    secrets = store.s3.secrets() if store.s3 else []
    publish_uri = absolute_local_path(publish_uri)
    reader_url = reader_url or publish_uri
    unchanged = f"{publish_uri} is left as it was."
    step = checkpoint or (lambda step, detail: None)
    settings = _publication_settings(
        source, data_path, reader_url, reader_data_path, legacy_uri, self_contained, probe_files
    )
    if not force:
        held = _published_if_current(source, publish_uri, reader_url, store, settings)
        if held is not None:
            return held
    with scratch_folder("publish") as folder:
        marker = folder / "claim.json"
        marker.write_text(json.dumps({"claimed_at": datetime.now(UTC).isoformat()}))
        missing_folders = _missing_local_folders(revisions_prefix(publish_uri))
        try:
            first_free = _next_number(publish_uri, store)
            step("listed", publish_uri)
            number = _claim_number(publish_uri, store, first_free, marker)
        except StorageError as error:
            raise PublishError(f"Cannot publish the frozen lake to {publish_uri}: {error}. {unchanged}") from None
        step("claimed", str(number))
        try:
            staged = _stage_revision(
                source,
                folder,
                store,
                data_store,
                publish_uri,
                reader_url,
                data_path,
                reader_data_path,
                legacy_uri,
                self_contained,
                number,
                checkpoint,
                settings,
            )
        except BaseException:
            _delete_quietly(store, claim_uri(publish_uri, number))
            _remove_if_empty(missing_folders)
            raise
        copy, legacy_copy, described, resolved_data_path, files, source_version, contents, notes, state = staged
        revision_location = revision_uri(publish_uri, number, contents.snapshot_id)
        try:
            if files is not None:
                store.put_bytes(_files_index_json(files, publish_uri), files_index_uri(revision_location))
            stored = store.create_file(copy, revision_location)
        except StorageError as error:
            _delete_quietly(store, files_index_uri(revision_location))
            _delete_quietly(store, claim_uri(publish_uri, number))
            _remove_if_empty(missing_folders)
            raise PublishError(f"Cannot publish the frozen lake to {publish_uri}: {error}. {unchanged}") from None
        report = verify_as_stranger(revision_location, store.s3, contents.tables, probe_files=probe_files)
        problems = report.problems()
        if report.opened and report.snapshot_id != contents.snapshot_id:
            problems.append(f"it holds snapshot {report.snapshot_id}, not {contents.snapshot_id}")
        if problems:
            _delete_quietly(store, revision_location)
            raise PublishError(
                f"The new revision of {publish_uri} (from {described}) is not readable as published: "
                + redact("; ".join(problems), secrets)
                + f". {unchanged}"
            )
        step("verified", revision_location)
        try:
            superseded_by = _expose(copy, publish_uri, store, number, state)
        except StorageError as error:
            raise PublishError(f"Cannot publish the frozen lake to {publish_uri}: {error}. {unchanged}") from None
        if superseded_by is not None:
            notes.append(
                f"Revision {number} was not made current: revision {superseded_by}, published meanwhile, is "
                f"newer. Revision {number} stays readable at {revision_location}."
            )
        if legacy_copy is not None and legacy_uri and superseded_by is None:
            try:
                store.put_file(legacy_copy, absolute_local_path(legacy_uri))
            except StorageError as error:
                raise PublishError(
                    f"Published revision {number} to {publish_uri}, but the copy for old clients could not be "
                    f"written to {legacy_uri}: {error}"
                ) from None
    try:
        pruned = prune_revisions(publish_uri, store, keep_revisions)
    except PublishError as error:
        pruned, notes = [], [*notes, str(error)]
    return PublishResult(
        publish_uri=publish_uri,
        reader_url=reader_url,
        revision=Revision(number, contents.snapshot_id, revision_location, stored.size),
        contents=contents,
        source_format_version=source_version,
        data_path=resolved_data_path,
        legacy_uri=absolute_local_path(legacy_uri)
        if legacy_copy is not None and legacy_uri and superseded_by is None
        else None,
        pruned=tuple(pruned),
        notes=tuple(notes),
        report=report,
        superseded_by=superseded_by,
        files=files,
    )


class _StagedRevision(NamedTuple):
    """A revision prepared in the scratch folder by :func:`_stage_revision`, not stored yet."""

    copy: Path
    legacy_copy: Path | None
    described: str
    resolved_data_path: str | None
    files: SyncReport | None
    source_version: str
    contents: LakeContents
    notes: list[str]
    state: str


def _stage_revision(
    source: str | Path | LakeSettings,
    folder: Path,
    store: ObjectStore,
    data_store: ObjectStore,
    publish_uri: str,
    reader_url: str,
    data_path: str | None,
    reader_data_path: str | None,
    legacy_uri: str | None,
    self_contained: bool,
    number: int,
    checkpoint: Checkpoint | None,
    settings: dict[str, object],
) -> _StagedRevision:
    """Read the source into a private copy, make it readable from anywhere, migrate and stamp it.

    Runs after the revision number is claimed, so a higher number always holds a source read later.
    ``settings`` (from :func:`_publication_settings`) and the copy's snapshot make the stamp's state.
    """
    copy = folder / "frozen.ducklake"
    try:
        described, settings_data_path = _fetch_source(source, store, copy)
        data_path = data_path or settings_data_path
        resolved_data_path, snapshot = _make_references_absolute(copy, described, data_path, reader_data_path)
        files = None
        if self_contained:
            resolved_data_path, files = _copy_files_beside(
                copy, described, publish_uri, reader_url, resolved_data_path, data_store, store, checkpoint
            )
        else:
            _refuse_unreachable_files(copy, described, reader_url, reader_data_path)
        legacy_copy = folder / "legacy.ducklake" if legacy_uri else None
        remote_data = bool(resolved_data_path and is_remote(resolved_data_path))
        source_version, contents = _migrate_if_older(copy, described, legacy_copy, remote_data)
        notes = []
        if legacy_uri and source_version == contents.format_version:
            notes.append(
                f"No legacy copy written to {legacy_uri}: the catalog is already at format {source_version}, "
                "the format of the running ducklake extension."
            )
            legacy_copy = None
        state = publication_state(settings, snapshot)
        stamp = PublicationStamp(
            revision=number,
            snapshot_id=contents.snapshot_id,
            state=state,
            format_version=contents.format_version,
            source_format_version=source_version,
            data_path=resolved_data_path,
            tables=contents.tables,
        )
        for path in (copy, legacy_copy):
            if path is not None:
                _stamp(path, stamp)
    except duckdb.Error as error:
        raise PublishError(
            f"Cannot prepare the frozen lake for {publish_uri}: {error}. {publish_uri} is left as it was."
        ) from None
    return _StagedRevision(
        copy, legacy_copy, described, resolved_data_path, files, source_version, contents, notes, state
    )


def _publication_settings(
    source: str | Path | LakeSettings,
    data_path: str | None,
    reader_url: str,
    reader_data_path: str | None,
    legacy_uri: str | None,
    self_contained: bool,
    probe_files: bool,
) -> dict[str, object]:
    """Everything besides the source's snapshot that decides what a revision holds and how it was verified
    (a revision verified without opening its data files is not up to date for a publisher that probes them)."""
    if isinstance(source, LakeSettings):
        data_path = data_path or source.data_path
        where = source.catalog.metadata_path() if isinstance(source.catalog, DuckDBCatalog) else source.describe()
    else:
        where = str(source)
    return {
        "source": _local_or_url(where),
        "data_path": absolute_local_path(data_path) if data_path else None,
        "reader_url": reader_url,
        "reader_data_path": reader_data_path,
        "legacy_uri": absolute_local_path(legacy_uri) if legacy_uri else None,
        "self_contained": self_contained,
        "probe_files": probe_files,
        "duckdb": duckdb.__version__,
    }


SourceSnapshot = tuple[int, str, str | None]
"""A source's latest snapshot id, its commit time (ISO, UTC) and the source's DuckLake format version."""


def publication_state(settings: dict[str, object], snapshot: SourceSnapshot) -> str:
    """The fingerprint a revision is stamped with: equal fingerprints mean publishing again changes nothing."""
    snapshot_id, snapshot_time, format_version = snapshot
    values = {**settings, "snapshot_id": snapshot_id, "snapshot_time": snapshot_time, "format": format_version}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def _iso_utc(value: datetime) -> str:
    return (value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _catalog_snapshot(connection: duckdb.DuckDBPyConnection, database: str) -> SourceSnapshot | None:
    """The latest snapshot of the DuckLake catalog tables in ``database`` (attached as a plain database);
    ``None`` when it holds no snapshot."""
    prefix = f"{quote_identifier(database)}.main"
    latest = connection.execute(
        f"SELECT snapshot_id, CAST(snapshot_time AS TIMESTAMPTZ) FROM {prefix}.ducklake_snapshot "
        "ORDER BY snapshot_id DESC LIMIT 1"
    ).fetchone()
    if latest is None:
        return None
    snapshot_id, snapshot_time = latest
    version = connection.execute(
        f"SELECT value FROM {prefix}.ducklake_metadata WHERE scope IS NULL AND key = 'version'"
    ).fetchone()
    return snapshot_id, _iso_utc(snapshot_time), version[0] if version else None


def _source_snapshot(source: str | Path | LakeSettings, store: ObjectStore) -> SourceSnapshot | None:
    """The source's latest snapshot, by a small read: a backup folder's ``latest.json``, or the catalog
    file's snapshot table. ``None`` when it cannot be read so cheaply (the publication then says why)."""
    if isinstance(source, LakeSettings):
        if not isinstance(source.catalog, DuckDBCatalog):
            return None
        source = source.catalog.metadata_path()
    source = str(source)
    try:
        if Path(source).is_dir() if not is_remote(source) else not store.exists(source):
            manifest = latest_manifest(source, store)
            if manifest is None:
                return None
            return manifest.snapshot_id, _iso_utc(manifest.snapshot_time), manifest.ducklake_version
    except (BackupError, StorageError):
        return None
    if not is_remote(source) and not Path(source).expanduser().is_file():
        return None
    connection = _stranger_connection(store.s3, ["httpfs"] if is_remote(source) else [])
    try:
        connection.execute(f"ATTACH {quote_literal(_local_or_url(source))} AS source (READ_ONLY)")
        return _catalog_snapshot(connection, "source")
    except (duckdb.Error, TypeError):
        return None
    finally:
        connection.close()


def _published_if_current(
    source: str | Path | LakeSettings,
    publish_uri: str,
    reader_url: str,
    store: ObjectStore,
    settings: dict[str, object],
) -> PublishResult | None:
    """The revision ``publish_uri`` holds when publishing ``source`` again would change nothing, else ``None``.

    Reads the source's latest snapshot and the published file's stamp (on S3 its metadata first, which
    says in one request when the stamp cannot match) and, for a self-contained lake, its file index and one
    listing of its files; writes nothing.
    """
    snapshot = _source_snapshot(source, store)
    if snapshot is None:
        return None
    state = publication_state(settings, snapshot)
    try:
        current = store.stat_if_exists(publish_uri)
    except StorageError:
        return None
    if current is None:
        return None
    recorded = (current.metadata or {}).get(_STATE_METADATA)
    if recorded is not None and recorded != state:
        return None
    stamp = read_stamp(publish_uri, store.s3)
    if stamp is None or stamp.state != state or stamp.snapshot_id is None:
        return None
    revision = Revision(
        stamp.revision, stamp.snapshot_id, revision_uri(publish_uri, stamp.revision, stamp.snapshot_id), current.size
    )
    if settings["self_contained"] and not _copied_files_present(revision.uri, publish_uri, store):
        return None
    return PublishResult(
        publish_uri=publish_uri,
        reader_url=reader_url,
        revision=revision,
        contents=LakeContents(stamp.snapshot_id, stamp.format_version or "unknown", dict(stamp.tables or {})),
        source_format_version=stamp.source_format_version or stamp.format_version or "unknown",
        data_path=stamp.data_path,
        up_to_date=True,
    )


def _copied_files_present(revision_location: str, publish_uri: str, store: ObjectStore) -> bool:
    """Whether every data file a self-contained revision's index lists is beside it with its size (one listing
    of the lake's file folder); ``False`` when the index is missing or unreadable."""
    uri = files_index_uri(revision_location)
    try:
        if not store.exists(uri):
            return False
        entries = json.loads(store.get_bytes(uri))["files"]
        root = files_folder(publish_uri)
        present = list_many(store, [root])
        return all(
            (held := present.get(join_uri(root, key))) is not None and held.size == int(size)
            for key, size, _ in entries
        )
    except (StorageError, ValueError, KeyError, TypeError):
        return False


def _expose(copy: Path, publish_uri: str, store: ObjectStore, number: int, state: str) -> int | None:
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
            metadata = {_REVISION_METADATA: str(number), _STATE_METADATA: state}
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


def _files_index_json(files: SyncReport, publish_uri: str) -> bytes:
    root = files_folder(publish_uri) + "/"
    entries = [[item.uri.removeprefix(root), item.size, item.etag] for item in files.files()]
    return json.dumps({"format": "ducklake-assets-publication-files/1", "files": entries}).encode()


def _copy_files_beside(
    copy: Path,
    described: str,
    publish_uri: str,
    reader_url: str,
    data_path: str | None,
    data_store: ObjectStore,
    store: ObjectStore,
    checkpoint: Checkpoint | None,
) -> tuple[str, SyncReport]:
    """Copy every data file of the lake next to the published file and point the copy at those copies.

    Files under the data path go to ``<name>/data/`` (the copy's new data path, as readers reach it),
    the others to ``<name>/external/``. Files already there with the same size are not copied again.
    """
    target_root = files_folder(publish_uri)
    reader_root = files_folder(reader_url)
    if not data_path:
        raise PublishError(f"{described} records no data path, so its files cannot be copied; pass data_path")
    connection = new_connection(database=str(copy))
    try:
        [(database,)] = connection.execute("SELECT current_database()").fetchall()
        rows = list_store_files(connection, database, data_path)
        transfers = [Transfer(path, join_uri(target_root, key), size) for path, key, size in rows]
        externals = {t.source.rsplit("/", 1)[0] for t in transfers if not t.source.startswith(data_path)}
        try:
            report = sync_files(
                transfers,
                source=data_store,
                target=store,
                source_prefixes=[data_path, *externals],
                target_prefixes=[target_root],
                checkpoint=checkpoint,
            )
        except StorageError as error:
            raise PublishError(
                f"Could not copy the data files of {described} next to {publish_uri}: {error}. "
                f"{publish_uri} is left as it was."
            ) from None
        point_at_store_files(connection, database, reader_root)
        new_data_path = join_uri(reader_root, DATA_FOLDER) + "/"
        connection.execute(
            "UPDATE ducklake_metadata SET value = ? WHERE scope IS NULL AND key = 'data_path'", [new_data_path]
        )
        connection.execute("CHECKPOINT")
    finally:
        connection.close()
    return new_data_path, report


def _refuse_unreachable_files(copy: Path, described: str, reader_url: str, reader_data_path: str | None) -> None:
    """A lake read from elsewhere (S3, HTTP) cannot reference files by a path on the writer's disk."""
    if not is_remote(reader_url):
        return
    connection = new_connection(database=str(copy))
    try:
        [(database,)] = connection.execute("SELECT current_database()").fetchall()
        rows = connection.execute(f"SELECT DISTINCT path FROM ({catalog_files_sql(database)}) ORDER BY 1").fetchall()
    finally:
        connection.close()
    local = [path for (path,) in rows if not is_remote(path)]
    if local:
        shown = ", ".join(local[:5]) + (f" and {len(local) - 5} more" if len(local) > 5 else "")
        raise PublishError(
            f"{described} would be published to {reader_url}, but {len(local)} of its data files are paths on this "
            f"machine that no reader there can open: {shown}. Publish with self_contained=True (the files are "
            "copied next to the frozen lake), or put the data files where readers reach them and pass "
            f"reader_data_path{'' if reader_data_path else ''}. {reader_url} is left as it was."
        )


def verify_as_stranger(
    url: str,
    s3: S3Settings | None = None,
    expected_tables: Iterable[str] = (),
    *,
    probe_files: bool = True,
) -> StrangerReport:
    """Attach ``ducklake:<url>`` read-only in a fresh DuckDB that shares nothing with the writer.

    ``url`` is a local path, ``s3://`` URI (read through httpfs with ``s3``) or ``http(s)://`` URL.
    Reports the snapshot id, format version, revision and tables with row counts, which of
    ``expected_tables`` (``schema.table`` or ``table``) are missing and, with ``probe_files``, which
    data files of the current snapshot cannot be opened from here. Never raises for a broken lake:
    the report says what is wrong.
    """
    secrets = s3.secrets() if s3 else []
    connection = _stranger_connection(s3, ["ducklake", "httpfs"])
    try:
        try:
            connection.execute(attach_statement(_local_or_url(url), _STRANGER_ALIAS))
        except duckdb.Error as error:
            return StrangerReport(url=url, error=redact(str(error), secrets))
        except UnicodeDecodeError:
            return StrangerReport(url=url, error=CHANGED_WHILE_READ)
        contents = lake_contents(connection, _STRANGER_ALIAS)
        revision = _read_revision(connection)
        expected = sorted({table_key(name) for name in expected_tables})
        missing = tuple(name for name in expected if name not in contents.tables)
        unreadable = _unreadable_files(connection, contents.tables, ObjectStore(s3)) if probe_files else ()
        return StrangerReport(
            url=url,
            snapshot_id=contents.snapshot_id,
            format_version=contents.format_version,
            revision=revision,
            tables=contents.tables,
            missing_tables=missing,
            unreadable_files=tuple(redact(path, secrets) for path in unreadable),
        )
    except duckdb.Error as error:
        return StrangerReport(url=url, error=redact(str(error), secrets))
    except UnicodeDecodeError:
        return StrangerReport(url=url, error=CHANGED_WHILE_READ)
    finally:
        connection.close()


def lake_contents(
    connection: duckdb.DuckDBPyConnection,
    alias: str,
    snapshot_id: int | None = None,
    *,
    metadata_schema: str | None = None,
) -> LakeContents:
    """Tables and row counts of the lake attached as ``alias`` at ``snapshot_id`` (default: its latest).

    ``metadata_schema`` is the schema of the catalog tables when the lake was attached with one.
    """
    if snapshot_id is None:
        [(snapshot_id,)] = connection.execute(f"SELECT id FROM {quote_identifier(alias)}.current_snapshot()").fetchall()
    version_row = connection.execute(
        f"SELECT value FROM {quote_identifier(alias)}.options() WHERE option_name = 'version'"
    ).fetchone()
    if version_row is None:
        raise PublishError(f"DuckLake {alias!r} reports no format version: it is not a complete DuckLake catalog")
    (version,) = version_row
    metadata = metadata_prefix(alias, metadata_schema)
    names = connection.execute(
        f"""
        SELECT s.schema_name, t.table_name
        FROM {metadata}.ducklake_table AS t JOIN {metadata}.ducklake_schema AS s USING (schema_id)
        WHERE t.begin_snapshot <= $1 AND (t.end_snapshot IS NULL OR t.end_snapshot > $1)
          AND s.begin_snapshot <= $1 AND (s.end_snapshot IS NULL OR s.end_snapshot > $1)
        ORDER BY 1, 2
        """,
        [snapshot_id],
    ).fetchall()
    tables = {}
    for schema, table in names:
        [(rows,)] = connection.execute(
            f"SELECT count(*) FROM {qualified_name(alias, schema, table)} AT (VERSION => ?)", [snapshot_id]
        ).fetchall()
        tables[f"{schema}.{table}"] = rows
    return LakeContents(snapshot_id=snapshot_id, format_version=version, tables=tables)


def catalog_contents(settings: LakeSettings, snapshot_id: int | None = None) -> tuple[LakeContents, int]:
    """The live catalog's contents at ``snapshot_id`` (default: its latest) and its latest snapshot id.

    Opens the lake read-only; raises ``PublishError`` when that snapshot is not in the catalog.
    """
    with connect_lake(replace(settings, read_only=True)) as connection:
        alias = settings.alias
        [(latest,)] = connection.execute(f"SELECT id FROM {quote_identifier(alias)}.current_snapshot()").fetchall()
        if snapshot_id is not None:
            [(known,)] = connection.execute(
                f"SELECT count(*) FROM {quote_identifier(alias)}.snapshots() WHERE snapshot_id = ?", [snapshot_id]
            ).fetchall()
            if not known:
                raise PublishError(
                    f"Snapshot {snapshot_id} is not in catalog {settings.describe()} (latest is {latest}): the "
                    "frozen lake was not published from this catalog, or was changed after publication."
                )
        return lake_contents(connection, alias, snapshot_id, metadata_schema=settings.metadata_schema), latest


def _split_name(uri: str) -> tuple[str, str]:
    folder, _, name = uri.rstrip("/").rpartition("/")
    stem = name[: -len(".ducklake")] if name.endswith(".ducklake") else name.rsplit(".", 1)[0] or name
    return folder or ".", stem


def _local_or_url(uri: str) -> str:
    return uri if is_remote(uri) else absolute_local_path(uri)


def _stranger_connection(s3: S3Settings | None, extensions: list[str]) -> duckdb.DuckDBPyConnection:
    """A new DuckDB with no persistent secrets, ``extensions`` loaded and ``s3``'s secret."""
    connection = new_connection(config={"allow_persistent_secrets": False}, extensions=extensions)
    if s3 is not None and "httpfs" in extensions:
        s3.create_duckdb_secret(connection, "__ducklake_assets_stranger_s3")
    return connection


def _fetch_source(source: str | Path | LakeSettings, store: ObjectStore, copy: Path) -> tuple[str, str | None]:
    """Copy the source catalog (and its write-ahead log) to ``copy``; returns its name and data path.

    A folder (or an S3 prefix that is no object) is a backup folder: its latest static backup is fetched
    and checked against its manifest's checksum.
    """
    data_path = None
    if isinstance(source, LakeSettings):
        if not isinstance(source.catalog, DuckDBCatalog):
            raise PublishError(
                f"Catalog {source.describe()} is not a DuckDB file, so it cannot be published as is: publish "
                "its latest static backup instead (configure backup_uri)."
            )
        data_path = source.data_path
        source = source.catalog.metadata_path()
    source = str(source)
    try:
        is_backup_folder = Path(source).is_dir() if not is_remote(source) else not store.exists(source)
    except StorageError as error:
        raise PublishError(f"Cannot read the catalog to publish: {error}") from None
    if is_backup_folder:
        try:
            backup_file = resolve_backup_file(source, store)
            fetched, _ = fetch_backup(backup_file, store, copy.parent)
        except (BackupError, StorageError) as error:
            raise PublishError(f"Cannot read the latest static backup under {source}: {error}") from None
        fetched.rename(copy)
        return f"static backup {backup_file}", data_path
    if is_remote(source):
        try:
            store.get_file(source, copy)
        except StorageError as error:
            raise PublishError(f"Cannot read the catalog to publish: {error}") from None
        return source, data_path
    path = Path(source).expanduser().resolve()
    if not path.is_file():
        raise PublishError(f"Catalog file {path} does not exist: check the catalog path or the backup location.")
    guard = new_connection()
    try:
        try:
            guard.execute(f"ATTACH {quote_literal(str(path))} AS source (READ_ONLY)")
        except duckdb.Error as error:
            raise PublishError(
                f"Cannot open catalog file {path} to copy it: {error}. If another process has the lake open "
                "for writing, publish its static backup instead or stop that writer."
            ) from None
        shutil.copyfile(path, copy)
        wal = path.with_name(path.name + ".wal")
        if wal.is_file():
            shutil.copyfile(wal, copy.with_name(copy.name + ".wal"))
    finally:
        guard.close()
    return str(path), data_path


def _is_absolute(path: str) -> bool:
    return "://" in path or os.path.isabs(path)


def _make_references_absolute(
    copy: Path, described: str, data_path: str | None, reader_data_path: str | None
) -> tuple[str | None, SourceSnapshot]:
    """Rewrite the copy so no reference depends on the writer's working folder; checkpoint it.

    A backup's manifest table is dropped: it names the internal catalog, which readers need not see.
    Returns the data path the published copy records and the snapshot the copy holds.
    """
    connection = new_connection(database=str(copy))
    not_ducklake = f"{described} is not a DuckLake catalog (it has no ducklake_metadata table)."
    try:
        try:
            rows = connection.execute(
                "SELECT key, value FROM ducklake_metadata WHERE scope IS NULL AND key IN ('data_path', 'version')"
            ).fetchall()
            [(database,)] = connection.execute("SELECT current_database()").fetchall()
            snapshot = _catalog_snapshot(connection, database)
        except (duckdb.Error, TypeError):
            raise PublishError(not_ducklake) from None
        if snapshot is None:
            raise PublishError(not_ducklake)
        recorded = dict(rows).get("data_path")
        new_data_path: str | None
        if reader_data_path:
            new_data_path = reader_data_path
        elif data_path:
            new_data_path = absolute_local_path(data_path)
        elif recorded and not _is_absolute(recorded):
            new_data_path = absolute_local_path(recorded)
        else:
            new_data_path = recorded
        if new_data_path and not new_data_path.endswith("/"):
            new_data_path += "/"
        if new_data_path != recorded:
            connection.execute(
                "UPDATE ducklake_metadata SET value = ? WHERE scope IS NULL AND key = 'data_path'", [new_data_path]
            )
        for table, key in (("ducklake_data_file", "data_file_id"), ("ducklake_delete_file", "delete_file_id")):
            _absolutize_files(connection, described, table, key)
        connection.execute(f"DROP TABLE IF EXISTS {quote_identifier(MANIFEST_TABLE)}")
        connection.execute("CHECKPOINT")
    finally:
        connection.close()
    if copy.with_name(copy.name + ".wal").exists():
        raise PublishError(f"The private copy of {described} still has a write-ahead log after CHECKPOINT.")
    return new_data_path, snapshot


def _absolutize_files(connection: duckdb.DuckDBPyConnection, described: str, table: str, key: str) -> None:
    """Files registered by a path relative to the writer's working folder get their absolute path."""
    rows = connection.execute(
        f"SELECT {quote_identifier(key)}, path FROM {quote_identifier(table)} WHERE NOT path_is_relative"
    ).fetchall()
    missing = []
    for file_id, path in rows:
        if _is_absolute(path):
            continue
        absolute = Path(path).resolve()
        if not absolute.exists():
            missing.append(path)
            continue
        connection.execute(
            f"UPDATE {quote_identifier(table)} SET path = ? WHERE {quote_identifier(key)} = ?", [str(absolute), file_id]
        )
    if missing:
        raise PublishError(
            f"{described} references {len(missing)} file(s) by a path relative to the folder they were registered "
            f"from, and they are not under the current folder {Path.cwd()}: {', '.join(missing[:5])}. Register "
            "files by absolute path or URL, or publish from the folder they were registered in."
        )


def _migrate_if_older(
    copy: Path, described: str, legacy_copy: Path | None, remote_data: bool
) -> tuple[str, LakeContents]:
    """Migrate the copy when its format is older than the running extension's; returns the old format.

    When ``legacy_copy`` is given and a migration is needed, the unmigrated copy is kept there.
    ``remote_data`` loads httpfs, which DuckLake wants when the data path is a URL.
    """
    connection = new_connection(extensions=["ducklake", "httpfs"] if remote_data else ["ducklake"])
    try:
        attach = f"ATTACH {quote_literal('ducklake:' + str(copy))} AS {quote_identifier(_STRANGER_ALIAS)}"
        try:
            connection.execute(f"{attach} (READ_ONLY)")
        except duckdb.Error as error:
            mismatch = format_mismatch(str(error))
            if not mismatch:
                raise PublishError(f"Cannot open {described} as a DuckLake: {error}") from None
            source_version, wanted = mismatch
            if legacy_copy is not None:
                shutil.copyfile(copy, legacy_copy)
            try:
                connection.execute(f"{attach} (AUTOMATIC_MIGRATION true)")
            except duckdb.Error as migration_error:
                raise PublishError(
                    f"{described} is in DuckLake format {source_version}, which the ducklake extension of duckdb "
                    f"{duckdb.__version__} (format {wanted}) cannot migrate: {migration_error}. Publish with a "
                    "duckdb release that reads this format."
                ) from None
            connection.execute(f"DETACH {quote_identifier(_STRANGER_ALIAS)}")
            connection.execute(f"{attach} (READ_ONLY)")
            return source_version, lake_contents(connection, _STRANGER_ALIAS)
        contents = lake_contents(connection, _STRANGER_ALIAS)
        return contents.format_version, contents
    finally:
        connection.close()


def _stamp(copy: Path, stamp: PublicationStamp) -> None:
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


def _read_revision(connection: duckdb.DuckDBPyConnection) -> int | None:
    metadata = quote_identifier(metadata_database(_STRANGER_ALIAS))
    try:
        [(revision,)] = connection.execute(
            f"SELECT max(revision) FROM {metadata}.main.{quote_identifier(PUBLICATION_TABLE)}"
        ).fetchall()
        return revision
    except duckdb.CatalogException:
        return None


def _unreadable_files(
    connection: duckdb.DuckDBPyConnection, tables: dict[str, int], store: ObjectStore | None = None
) -> list[str]:
    """Data and delete files of the current snapshot that cannot be opened from this connection.

    One pass opens every footer. Only when that fails are the culprits looked for: missing files with one
    listing per folder (``store``; not for web URLs), then the rest in halves, never one request per file.
    """
    files: list[str] = []
    for name in tables:
        schema, table = name.split(".", 1)
        rows = connection.execute(
            "SELECT data_file, delete_file FROM ducklake_list_files(?, ?, schema => ?)",
            [_STRANGER_ALIAS, table, schema],
        ).fetchall()
        files.extend(path for row in rows for path in row if path)
    if not files:
        return []
    if _opens(connection, files):
        return []
    missing: list[str] = []
    listable = [path for path in files if not path.lower().startswith(("http://", "https://"))]
    if store is not None and listable:
        try:
            present = list_many(store, {path.rsplit("/", 1)[0] for path in listable})
        except StorageError:
            present = None
        if present is not None:  # a local listing resolves symbolic links; compare resolved paths
            missing = [
                path for path in listable if (path if is_remote(path) else os.path.realpath(path)) not in present
            ]
    gone = set(missing)
    return missing + _unopenable(connection, [path for path in files if path not in gone])


def _opens(connection: duckdb.DuckDBPyConnection, files: list[str]) -> bool:
    try:
        connection.execute(f"SELECT count(*) FROM parquet_file_metadata({_list_literal(files)})").fetchone()
        return True
    except duckdb.Error:
        return False


def _unopenable(connection: duckdb.DuckDBPyConnection, files: list[str]) -> list[str]:
    """The files among ``files`` whose footer cannot be read, found by halving (a few passes for a few bad files)."""
    if not files or _opens(connection, files):
        return []
    if len(files) == 1:
        return files
    middle = len(files) // 2
    return _unopenable(connection, files[:middle]) + _unopenable(connection, files[middle:])


def _list_literal(values: list[str]) -> str:
    """``['a', 'b']`` as one SQL list literal, each value quoted by the one quoting helper.

    A table function's list argument cannot be bound as one parameter without DuckDB converting every
    Python element on its own (and trying to import pandas for each); one literal is read in one pass.
    """
    return "[" + ", ".join(quote_literal(value) for value in values) + "]"


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


def _missing_local_folders(folder: str) -> list[Path]:
    """The local folders a publication would create for ``folder``, deepest first (none on S3)."""
    if is_remote(folder):
        return []
    missing = []
    for candidate in [Path(folder), *Path(folder).parents]:
        if candidate.exists():
            break
        missing.append(candidate)
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a failed publication created, so the destination is left as it was."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _delete_quietly(store: ObjectStore, uri: str) -> None:
    try:
        store.delete(uri)
    except StorageError:
        pass
