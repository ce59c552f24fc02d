"""The publish flow (:func:`publish_frozen_lake`): skip when up to date, claim a number, stage, store, verify
as a stranger, expose, prune."""

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import duckdb

from ..backup.manifest import latest_manifest
from ..catalog import DuckDBCatalog
from ..errors import BackupError, ConfigurationError, PublishError, StorageError, redact
from ..lake import LakeSettings
from ..locations import absolute_local_path, is_remote, join_uri
from ..scratch import scratch_folder
from ..sql import quote_literal
from ..storage import ObjectStore
from ..sync import Checkpoint, SyncReport, list_many
from .contents import STRANGER_ALIAS, LakeContents, attach_statement, local_or_url, stranger_connection
from .revisions import (
    KEEP_REVISIONS,
    STATE_METADATA,
    PublicationStamp,
    Revision,
    claim_number,
    claim_uri,
    expose_revision,
    files_folder,
    files_index_json,
    files_index_uri,
    next_number,
    prune_revisions,
    read_stamp,
    revision_uri,
    revisions_prefix,
    write_stamp,
)
from .staging import (
    SourceSnapshot,
    catalog_snapshot,
    copy_files_beside,
    fetch_source,
    iso_utc,
    make_references_absolute,
    migrate_if_older,
    refuse_unreachable_files,
)
from .stranger import StrangerReport, verify_as_stranger


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

    def attach_sql(self, alias: str = STRANGER_ALIAS) -> str:
        """The one line a reader runs to attach the published lake."""
        return attach_statement(self.reader_url, alias)


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
            first_free = next_number(publish_uri, store)
            step("listed", publish_uri)
            number = claim_number(publish_uri, store, first_free, marker)
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
                store.put_bytes(files_index_json(files, publish_uri), files_index_uri(revision_location))
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
            superseded_by = expose_revision(copy, publish_uri, store, number, state)
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
        described, settings_data_path = fetch_source(source, store, copy)
        data_path = data_path or settings_data_path
        resolved_data_path, snapshot = make_references_absolute(copy, described, data_path, reader_data_path)
        files = None
        if self_contained:
            resolved_data_path, files = copy_files_beside(
                copy, described, publish_uri, reader_url, resolved_data_path, data_store, store, checkpoint
            )
        else:
            refuse_unreachable_files(copy, described, reader_url, reader_data_path)
        legacy_copy = folder / "legacy.ducklake" if legacy_uri else None
        remote_data = bool(resolved_data_path and is_remote(resolved_data_path))
        source_version, contents = migrate_if_older(copy, described, legacy_copy, remote_data)
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
                write_stamp(path, stamp)
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
        "source": local_or_url(where),
        "data_path": absolute_local_path(data_path) if data_path else None,
        "reader_url": reader_url,
        "reader_data_path": reader_data_path,
        "legacy_uri": absolute_local_path(legacy_uri) if legacy_uri else None,
        "self_contained": self_contained,
        "probe_files": probe_files,
        "duckdb": duckdb.__version__,
    }


def publication_state(settings: dict[str, object], snapshot: SourceSnapshot) -> str:
    """The fingerprint a revision is stamped with: equal fingerprints mean publishing again changes nothing."""
    snapshot_id, snapshot_time, format_version = snapshot
    values = {**settings, "snapshot_id": snapshot_id, "snapshot_time": snapshot_time, "format": format_version}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


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
            return manifest.snapshot_id, iso_utc(manifest.snapshot_time), manifest.ducklake_version
    except (BackupError, StorageError):
        return None
    if not is_remote(source) and not Path(source).expanduser().is_file():
        return None
    connection = stranger_connection(store.s3, ["httpfs"] if is_remote(source) else [])
    try:
        connection.execute(f"ATTACH {quote_literal(local_or_url(source))} AS source (READ_ONLY)")
        return catalog_snapshot(connection, "source")
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
    recorded = (current.metadata or {}).get(STATE_METADATA)
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
