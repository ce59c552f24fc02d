"""Which backups a store keeps: retention by count and age, pruning the data files no kept backup needs, and
pins that keep a backup forever."""

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..errors import BackupError, ConfigurationError
from ..locations import absolute_local_path, join_uri
from ..storage import ObjectStore
from ..sync import list_many
from .layout import (
    BACKUP_NAME,
    DATA_FOLDER,
    EXTERNAL_FOLDER,
    MANIFEST_SUFFIX,
    PINS_FOLDER,
    backup_folder,
    files_index_uri_for,
)
from .manifest import BackupInfo, latest_backup, list_backups, read_files_index, read_manifest

ORPHAN_GRACE = timedelta(hours=24)
"""Files in the store that no backup lists are removed by retention only once they are this old (an
unfinished backup that is still copying has not listed its files yet)."""
_PIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_retention(keep: int | None, keep_within: timedelta | None) -> None:
    """Refuse retention settings that would make no sense, before anything is written."""
    if keep is not None and (not isinstance(keep, int) or keep < 1):
        raise ConfigurationError(f"keep must be at least 1 (got {keep!r}); leave it unset to keep all")
    if keep_within is not None and keep_within <= timedelta(0):
        raise ConfigurationError(f"keep_within must be a positive duration (got {keep_within})")


@dataclass(frozen=True)
class PruneResult:
    """What :func:`prune_backups` deleted: backups, and data files no retained backup references."""

    backups: list[BackupInfo]
    files: list[str]


def apply_retention(
    backup_uri: str,
    store: ObjectStore,
    *,
    keep: int | None = None,
    keep_within: timedelta | None = None,
    now: datetime | None = None,
) -> list[BackupInfo]:
    """Delete versioned backups that no rule keeps; return what was deleted (see :func:`prune_backups`)."""
    return prune_backups(backup_uri, store, keep=keep, keep_within=keep_within, now=now).backups


def prune_backups(
    backup_uri: str,
    store: ObjectStore,
    *,
    keep: int | None = None,
    keep_within: timedelta | None = None,
    now: datetime | None = None,
) -> PruneResult:
    """Delete the backups no rule keeps, and the data files only they referenced.

    A backup is kept when it is among the newest ``keep``, younger than ``keep_within`` (when both
    are given either rule keeps it; with neither, everything is kept) or pinned (:func:`pin_backup`). The
    newest backup and the one ``latest`` points to are never deleted. A data file in the store is deleted
    only when no kept backup's file index lists it; a file no backup lists (left by a failed run) goes
    once it is older than :data:`ORPHAN_GRACE`.
    """
    check_retention(keep, keep_within)
    if keep is None and keep_within is None:
        return PruneResult([], [])
    backup_uri = backup_folder(backup_uri)
    backups = list_backups(backup_uri, store)
    latest = latest_backup(backup_uri, store)
    pinned = {pin.backup_uri for pin in list_pins(backup_uri, store)}
    now = now or datetime.now(UTC)
    removed: list[BackupInfo] = []
    kept: list[BackupInfo] = []
    for position, info in enumerate(backups):
        protected = position == 0 or (latest is not None and info.uri == latest.uri) or info.uri in pinned
        kept_by_count = keep is not None and position < keep
        kept_by_age = keep_within is not None and now - info.created_at <= keep_within
        (kept if protected or kept_by_count or kept_by_age else removed).append(info)
    if not removed:
        return PruneResult([], [])
    needed: set[str] = set()
    for info in kept:
        needed |= set(read_files_index(info.uri, store) or {})
    released: set[str] = set()
    for info in removed:
        released |= set(read_files_index(info.uri, store) or {})
    for info in removed:
        store.delete_many([info.uri, info.manifest_uri, files_index_uri_for(info.uri)])
    held = list_many(store, [join_uri(backup_uri, DATA_FOLDER), join_uri(backup_uri, EXTERNAL_FOLDER)])
    inside = backup_uri.rstrip("/") + "/"
    unneeded = sorted(
        item.uri
        for item in held.values()
        if item.uri.startswith(inside)
        and item.uri not in needed
        and (item.uri in released or now - item.modified >= ORPHAN_GRACE)
    )
    store.delete_many(unneeded)
    return PruneResult(removed, unneeded)


@dataclass(frozen=True)
class BackupPin:
    """A backup kept forever under a name, like a tag: retention never deletes it or its files."""

    name: str
    backup_uri: str
    snapshot_id: int
    pinned_at: datetime


def _pin_uri(backup_uri: str, name: str) -> str:
    if not isinstance(name, str) or not _PIN_NAME.match(name):
        raise ConfigurationError(
            f"pin name {name!r} must start with a letter or digit and hold only letters, digits, '.', '_' and '-'"
        )
    return join_uri(backup_uri, PINS_FOLDER, name + MANIFEST_SUFFIX)


def pin_backup(backup_uri: str, name: str, store: ObjectStore, backup: str = "latest") -> BackupPin:
    """Keep ``backup`` (``"latest"``, or a versioned backup's file name or URI) forever as ``name``.

    Pinning a name again moves it to the given backup.
    """
    backup_uri = backup_folder(backup_uri)
    uri = _pin_uri(backup_uri, name)
    if backup == "latest":
        info = latest_backup(backup_uri, store)
        if info is None:
            raise BackupError(f"No backup under {backup_uri} to pin yet")
        file_uri = info.uri
    else:
        file_uri = absolute_local_path(backup if "/" in backup else join_uri(backup_uri, backup))
    if not BACKUP_NAME.match(file_uri.rsplit("/", 1)[-1]) or not store.exists(file_uri):
        raise BackupError(f"Cannot pin {file_uri}: there is no such versioned backup under {backup_uri}")
    manifest = read_manifest(file_uri, store)
    pin = BackupPin(name, file_uri, manifest.snapshot_id, datetime.now(UTC))
    record = {
        "name": name,
        "file_name": file_uri.rsplit("/", 1)[-1],
        "snapshot_id": pin.snapshot_id,
        "pinned_at": pin.pinned_at.isoformat(),
    }
    store.put_bytes(json.dumps(record, indent=2).encode(), uri)
    return pin


def unpin_backup(backup_uri: str, name: str, store: ObjectStore) -> None:
    """Remove pin ``name``; its backup is then pruned like any other."""
    uri = _pin_uri(backup_folder(backup_uri), name)
    if not store.exists(uri):
        raise BackupError(f"There is no pin {name!r} under {backup_uri}")
    store.delete(uri)


def list_pins(backup_uri: str, store: ObjectStore) -> list[BackupPin]:
    """The pinned backups of a store, by name."""
    backup_uri = backup_folder(backup_uri)
    pins = []
    for item in list_many(store, [join_uri(backup_uri, PINS_FOLDER)]).values():
        if not item.uri.endswith(MANIFEST_SUFFIX):
            continue
        try:
            record = json.loads(store.get_bytes(item.uri))
            pins.append(
                BackupPin(
                    record["name"],
                    join_uri(backup_uri, record["file_name"]),
                    int(record["snapshot_id"]),
                    datetime.fromisoformat(record["pinned_at"]),
                )
            )
        except (ValueError, KeyError, TypeError) as error:
            raise BackupError(f"Pin {item.uri} is not valid ({error}); fix or delete it") from None
    return sorted(pins, key=lambda pin: pin.name)
