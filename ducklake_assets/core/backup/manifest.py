"""What a backup says about itself: :class:`BackupManifest` (in the JSON sidecar and inside the backup file),
the ``.files.json`` index of a full backup's data files, and finding, listing and fetching backups by them."""

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from ..errors import BackupError, StorageError
from ..lake import new_connection
from ..locations import absolute_local_path, is_remote, join_uri
from ..sql import quote_identifier, quote_literal
from ..storage import ObjectStore, StoredObject
from ..sync import SyncedFile
from .layout import (
    BACKUP_NAME,
    BACKUP_SUFFIX,
    LATEST_STEM,
    MANIFEST_SUFFIX,
    NAME_TIME_FORMAT,
    backup_folder,
    files_index_uri_for,
    latest_uri,
    manifest_uri_for,
    store_data_path,
)

MANIFEST_TABLE = "ducklake_assets_backup_manifest"
"""Table inside every backup file holding its manifest as ``(key, value)`` rows."""
MANIFEST_FORMAT = "ducklake-assets-backup/1"
FILES_FORMAT = "ducklake-assets-backup-files/1"


@dataclass(frozen=True)
class BackupManifest:
    """What a backup holds and where it came from; never contains a password.

    ``data_path`` is the lake's own data path; ``mode`` says whether the data files were copied
    (``full``: under ``store_uri``, which the backup's catalog references) or not (``metadata``).
    ``ducklake_version`` is the DuckLake format of the catalog the backup holds. ``sha256`` and
    ``size_bytes`` describe the backup file, so they are only in the JSON sidecar (the copy inside the
    file cannot contain its own checksum).
    """

    snapshot_id: int
    snapshot_time: datetime
    catalog_kind: str
    catalog: str
    ducklake_version: str
    data_path: str
    storage_version: str | None
    duckdb_version: str
    created_at: datetime
    file_name: str
    sha256: str | None = None
    size_bytes: int | None = None
    format: str = MANIFEST_FORMAT
    mode: str = "metadata"
    store_uri: str | None = None
    files: int | None = None
    files_bytes: int | None = None

    @property
    def backup_data_path(self) -> str:
        """The data path recorded inside the backup: the store's data folder for a full backup."""
        if self.mode == "full" and self.store_uri:
            return store_data_path(self.store_uri)
        return self.data_path

    def to_dict(self) -> dict[str, object]:
        values = dataclasses.asdict(self)
        values["snapshot_time"] = self.snapshot_time.isoformat()
        values["created_at"] = self.created_at.isoformat()
        return values

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> "BackupManifest":
        fields = {field.name for field in dataclasses.fields(cls)}
        # Values as JSON or the manifest table holds them, converted below; the constructor takes the rest as is.
        known: dict[str, Any] = {key: value for key, value in values.items() if key in fields}
        for key in ("snapshot_time", "created_at"):
            known[key] = datetime.fromisoformat(str(known[key]))
        for key in ("snapshot_id", "size_bytes", "files", "files_bytes"):
            if known.get(key) is not None:
                known[key] = int(known[key])
        return cls(**known)


@dataclass(frozen=True)
class BackupInfo:
    """One versioned backup under a backup folder, as listed from its name and size."""

    uri: str
    snapshot_id: int
    created_at: datetime
    size_bytes: int

    @property
    def manifest_uri(self) -> str:
        """The JSON sidecar beside the backup file."""
        return manifest_uri_for(self.uri)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_index_json(manifest: BackupManifest, files: list[SyncedFile]) -> bytes:
    root = (manifest.store_uri or "").rstrip("/") + "/"
    entries = [[item.uri.removeprefix(root), item.size, item.etag] for item in files]
    return json.dumps({"format": FILES_FORMAT, "snapshot_id": manifest.snapshot_id, "files": entries}).encode()


def read_files_index(backup_file_uri: str, store: ObjectStore) -> dict[str, tuple[int, str | None]] | None:
    """The data files a full backup references, as ``{URI: (size, ETag)}``; ``None`` for a metadata backup."""
    uri = files_index_uri_for(backup_file_uri)
    if not store.exists(uri):
        return None
    try:
        index = json.loads(store.get_bytes(uri))
        root = backup_file_uri.rsplit("/", 1)[0]
        return {join_uri(root, key): (int(size), etag) for key, size, etag in index["files"]}
    except (ValueError, KeyError, TypeError) as error:
        raise BackupError(f"Backup file index {uri} is not valid ({error}); the backup is damaged") from None


def _info_from_object(item: StoredObject) -> BackupInfo | None:
    match = BACKUP_NAME.match(item.uri.rsplit("/", 1)[-1])
    if match is None:
        return None
    created = datetime.strptime(match.group(1), NAME_TIME_FORMAT).replace(tzinfo=UTC)
    return BackupInfo(item.uri, int(match.group(2)), created, item.size)


def list_backups(backup_uri: str, store: ObjectStore) -> list[BackupInfo]:
    """The versioned backups directly under ``backup_uri``, newest first (an empty list if there are none).

    ``latest.ducklake`` is a copy, not listed; sub-folders (such as restore safety backups) are skipped.
    """
    backup_uri = backup_folder(backup_uri)
    if not is_remote(backup_uri) and not Path(backup_uri).is_dir():
        return []
    base = backup_uri.rstrip("/") + "/"
    found = []
    for item in store.list_prefix(backup_uri, pattern="backup-*" + BACKUP_SUFFIX):
        if "/" in item.uri.removeprefix(base):
            continue
        info = _info_from_object(item)
        if info is not None:
            found.append(info)
    return sorted(found, key=lambda info: (info.created_at, info.snapshot_id), reverse=True)


def read_manifest(backup_file_uri: str, store: ObjectStore) -> BackupManifest:
    """The JSON manifest beside a backup file (``latest.ducklake`` or a versioned one)."""
    uri = manifest_uri_for(backup_file_uri)
    try:
        return BackupManifest.from_dict(json.loads(store.get_bytes(uri)))
    except (ValueError, KeyError, TypeError) as error:
        raise BackupError(f"Backup manifest {uri} is not a valid manifest ({error}); the backup is unusable") from None


def read_manifest_from_file(path: str | Path, described: str | None = None) -> BackupManifest:
    """The manifest stored inside a local backup file (table ``ducklake_assets_backup_manifest``).

    ``described`` names the backup in errors when ``path`` is a private copy of it.
    """
    connection = new_connection()
    try:
        connection.execute(f"ATTACH {quote_literal(str(path))} AS backup_file (READ_ONLY)")
        rows = connection.execute(f"SELECT key, value FROM backup_file.main.{quote_identifier(MANIFEST_TABLE)}")
        return BackupManifest.from_dict(dict(rows.fetchall()))
    except (duckdb.Error, ValueError, KeyError, TypeError) as error:
        cause = str(error).replace(str(path), described) if described else str(error)
        raise BackupError(
            f"{described or path} is not a ducklake-assets backup with a manifest (damaged or truncated?): {cause}"
        ) from None
    finally:
        connection.close()


def latest_manifest(backup_uri: str, store: ObjectStore) -> BackupManifest | None:
    """The manifest of the backup ``latest.json`` points to under ``backup_uri`` (``None`` when there is none
    yet): one small read that says which snapshot the newest backup holds."""
    backup_uri = backup_folder(backup_uri)
    pointer = manifest_uri_for(latest_uri(backup_uri))
    if not store.exists(pointer):
        return None
    return read_manifest(latest_uri(backup_uri), store)


def info_from_manifest(backup_uri: str, manifest: BackupManifest) -> BackupInfo:
    return BackupInfo(
        join_uri(backup_uri, manifest.file_name), manifest.snapshot_id, manifest.created_at, manifest.size_bytes or 0
    )


def latest_backup(backup_uri: str, store: ObjectStore) -> BackupInfo | None:
    """The backup ``latest.json`` points to under ``backup_uri``, or ``None`` when there is none yet."""
    backup_uri = backup_folder(backup_uri)
    manifest = latest_manifest(backup_uri, store)
    return info_from_manifest(backup_uri, manifest) if manifest else None


def resolve_backup_file(backup: str, store: ObjectStore) -> str:
    """A backup file URI from either a backup file or a backup folder (whose latest backup is used)."""
    if backup.endswith(BACKUP_SUFFIX):
        return absolute_local_path(backup)
    latest = latest_backup(backup, store)
    if latest is None:
        raise BackupError(f"No backup found under {backup} (no {LATEST_STEM}{MANIFEST_SUFFIX} there)")
    return latest.uri


def fetch_backup(backup_file_uri: str, store: ObjectStore, folder: str | Path) -> tuple[Path, BackupManifest]:
    """Download a backup file into ``folder`` and check it against its manifest's checksum.

    ``latest.ducklake`` is checked against the manifest of the versioned backup it is a copy of (named
    inside it), so it is never judged by a ``latest.json`` that a killed run left one backup behind. A
    backup without a sidecar (copied around by hand) is accepted with the manifest stored inside it.
    """
    local = Path(folder) / ("fetched" + BACKUP_SUFFIX)
    try:
        store.get_file(backup_file_uri, local)
    except StorageError as error:
        raise BackupError(f"Cannot read backup {backup_file_uri}: {error}") from None
    checked_against = backup_file_uri
    if backup_file_uri.rsplit("/", 1)[-1] == LATEST_STEM + BACKUP_SUFFIX:
        inside = read_manifest_from_file(local, backup_file_uri)
        checked_against = join_uri(backup_file_uri.rsplit("/", 1)[0], inside.file_name)
    if not store.exists(manifest_uri_for(checked_against)):
        return local, read_manifest_from_file(local, backup_file_uri)
    manifest = read_manifest(checked_against, store)
    if manifest.sha256 and manifest.sha256 != file_sha256(local):
        which = "its manifest" if checked_against == backup_file_uri else f"the manifest of {checked_against}"
        raise BackupError(
            f"Backup {backup_file_uri} does not match the checksum in {which}: it is damaged or was replaced; "
            "pick another backup"
        )
    return local, manifest
