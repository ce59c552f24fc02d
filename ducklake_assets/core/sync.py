"""Copying files between local folders and S3: incremental, parallel and verified.

This is the engine under full backups, restores from them and self-contained publications. A caller
says which files go where (:class:`Transfer`) and hands over what it already knows of the target (one
listing); :func:`sync_files` then

1. skips every file the target already holds with the expected size (nothing is copied twice), and
   refuses to overwrite a file of the same name and another size (it belongs to something else);
2. checks every source is there with the size the catalog recorded, before anything is copied;
3. copies the rest in parallel: local to local through a temporary name, local to S3 and S3 to local
   with boto3's managed transfer (multipart, parallel), S3 to S3 as a server-side copy;
4. verifies each copy: its size, and its content against an ETag-style MD5 (S3's own, computed the same
   way for local files), so a torn or altered copy is found before anything refers to it. A local copy is
   checksummed from the very bytes it is written from and its size checked; all local copies are flushed
   to disk (one ``sync``) before the call returns, so nothing refers to a copy a power cut could lose; a
   download is checked against the source's ETag; an upload against the ETag S3 reports.

Sizes and ETags of remote files come from one listing per prefix (or, for a handful of copies, one
request each), never from one request per file of a large listing.
"""

import hashlib
import math
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import StorageError
from .locations import is_remote, split_s3_uri
from .optional import require
from .scratch import temp_name
from .storage import ObjectStore, StoredObject

PART_SIZE = 16 * 1024 * 1024
"""Multipart threshold and part size of every upload, so a file's ETag can be computed locally."""

_CHUNK = 1024 * 1024
_LOCAL_WORKERS = max(2, os.cpu_count() or 2)
_REMOTE_WORKERS = 16

Checkpoint = Callable[[str, str], None]
"""Called as ``checkpoint(step, detail)`` after each step; tests use it to kill the process there."""


@dataclass(frozen=True)
class Transfer:
    """Copy ``source`` to ``target`` (both URIs); ``size`` is the size the catalog recorded, if known."""

    source: str
    target: str
    size: int | None = None


@dataclass(frozen=True)
class SyncedFile:
    """A file at the target: where, how big, and its ETag-style checksum (``None`` when not known)."""

    uri: str
    size: int
    etag: str | None


@dataclass(frozen=True)
class SyncReport:
    """What :func:`sync_files` copied and what the target already held."""

    copied: list[SyncedFile] = field(default_factory=list)
    reused: list[SyncedFile] = field(default_factory=list)

    @property
    def bytes_copied(self) -> int:
        return sum(item.size for item in self.copied)

    @property
    def bytes_reused(self) -> int:
        return sum(item.size for item in self.reused)

    def files(self) -> list[SyncedFile]:
        """Every file of the sync at the target, sorted by URI."""
        return sorted([*self.copied, *self.reused], key=lambda item: item.uri)


def part_size_for(size: int) -> int:
    """The part size boto3 uses for a file of ``size`` bytes with :data:`PART_SIZE` (it grows past 10,000 parts)."""
    part = PART_SIZE
    while math.ceil(size / part) > 10_000:
        part *= 2
    return part


def transfer_config() -> Any:  # a boto3.s3.transfer.TransferConfig; boto3 has no type information
    """boto3's managed transfer settings for every copy, matching :func:`file_etag`."""
    TransferConfig = require("boto3.s3.transfer", "S3").TransferConfig  # noqa: N806
    return TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE, max_concurrency=4)


class _EtagHasher:
    """S3's ETag of content fed in order: the MD5, or for multipart uploads the MD5 of the parts' MD5s."""

    def __init__(self, size: int, part_size: int | None = None):
        self.multipart = size >= PART_SIZE if part_size is None else True
        self.part_size = part_size or part_size_for(size)
        self.parts: list[bytes] = []
        self.current = hashlib.md5(usedforsecurity=False)
        self.filled = 0

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            room = self.part_size - self.filled
            piece, view = view[:room], view[room:]
            self.current.update(piece)
            self.filled += len(piece)
            if self.filled == self.part_size:
                self.parts.append(self.current.digest())
                self.current, self.filled = hashlib.md5(usedforsecurity=False), 0

    def hexdigest(self) -> str:
        parts = self.parts + ([self.current.digest()] if self.filled or not self.parts else [])
        if not self.multipart:
            return parts[0].hex()
        return hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest() + f"-{len(parts)}"


def file_etag(path: str | Path, part_size: int | None = None) -> str:
    """The ETag S3 gives ``path`` when uploaded with :func:`transfer_config` (or with ``part_size`` parts)."""
    size = os.path.getsize(path)
    hasher = _EtagHasher(size, part_size)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            hasher.update(block)
    return hasher.hexdigest()


def etag_matches(path: str | Path, etag: str | None) -> bool | None:
    """Whether a local file has S3 ETag ``etag``; ``None`` when that cannot be told (no ETag, or a
    multipart ETag whose part size cannot be inferred)."""
    if not etag:
        return None
    if "-" not in etag:
        return _md5(path) == etag
    parts = int(etag.rsplit("-", 1)[1])
    size = os.path.getsize(path)
    mib = 1024 * 1024
    candidates = [p for p in (PART_SIZE, 8 * mib, 5 * mib, 64 * mib, 100 * mib) if math.ceil(size / p) == parts]
    if not candidates:
        return None
    return any(file_etag(path, candidate) == etag for candidate in candidates)


def _md5(path: str | Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def list_many(store: ObjectStore, prefixes: Iterable[str]) -> dict[str, StoredObject]:
    """One listing per prefix (prefixes inside another one are not listed again), keyed by URI.

    A local prefix that does not exist contributes nothing.
    """
    found: dict[str, StoredObject] = {}
    listed: list[str] = []
    for prefix in sorted({p.rstrip("/") + "/" for p in prefixes}):
        if any(prefix.startswith(done) for done in listed):
            continue
        listed.append(prefix)
        if not is_remote(prefix) and not Path(prefix).is_dir():
            continue
        for item in store.list_prefix(prefix):
            found[item.uri] = item
    return found


def sync_files(
    transfers: Iterable[Transfer],
    *,
    source: ObjectStore,
    target: ObjectStore,
    source_prefixes: Iterable[str] = (),
    existing: Mapping[str, StoredObject] | None = None,
    target_prefixes: Iterable[str] = (),
    checkpoint: Checkpoint | None = None,
) -> SyncReport:
    """Copy every transfer whose target is not there yet; verify every copy.

    ``existing`` is what the target holds (a listing the caller already made); without it the
    ``target_prefixes`` are listed. ``source_prefixes`` are listed once to learn the sizes and ETags of
    remote sources; a remote source outside them is looked up on its own. Raises :class:`StorageError`
    naming the files when a source is missing or has another size than recorded, a target of the same
    name holds other content, or a copy cannot be verified; files copied before the failure stay at the
    target (unreferenced) and are reused by the next run.
    """
    transfers = list({t.target: t for t in transfers}.values())
    if existing is None:
        existing = list_many(target, target_prefixes)
    removed = set(target.remove_abandoned(existing.values()))
    existing = {uri: item for uri, item in existing.items() if uri not in removed}
    report = SyncReport()
    pending: list[Transfer] = []
    conflicts = []
    for transfer in transfers:
        held = existing.get(transfer.target)
        if held is None:
            pending.append(transfer)
        elif transfer.size is None or held.size == transfer.size:
            report.reused.append(SyncedFile(held.uri, held.size, held.etag))
        else:
            conflicts.append(f"{transfer.target} ({held.size} bytes there, {transfer.size} expected)")
    if conflicts:
        raise StorageError(
            f"{len(conflicts)} file(s) already exist at the destination with another size, so they belong to "
            f"something else and are not overwritten: {_first(conflicts)}. If they are damaged copies (a "
            "backup store or published lake whose file was cut short), delete them and run again; otherwise "
            "use an empty destination."
        )
    if not pending:
        return report
    sources = _source_objects(source, pending, source_prefixes)
    problems = []
    for transfer in pending:
        found = sources.get(transfer.source)
        if found is None:
            problems.append(f"{transfer.source} is missing")
        elif transfer.size is not None and found.size != transfer.size:
            problems.append(f"{transfer.source} has {found.size} bytes, the catalog recorded {transfer.size}")
    if problems:
        raise StorageError(f"{len(problems)} source file(s) cannot be copied: {_first(problems)}; nothing was copied")
    if any(is_remote(t.source) for t in pending):
        source.client()
    if any(is_remote(t.target) for t in pending):
        target.client()
    workers = _REMOTE_WORKERS if any(is_remote(t.source) or is_remote(t.target) for t in pending) else _LOCAL_WORKERS

    def copy(transfer: Transfer) -> SyncedFile | str:
        try:
            done = _copy_one(transfer, sources[transfer.source], source, target)
        except (OSError, StorageError) as error:
            return f"{transfer.source} -> {transfer.target}: {getattr(error, 'strerror', None) or error}"
        if checkpoint is not None:
            checkpoint("copied", transfer.target)
        return done

    with ThreadPoolExecutor(max_workers=min(workers, len(pending))) as pool:
        outcomes = list(pool.map(copy, pending))
    if any(not is_remote(t.target) for t in pending):
        os.sync()
    failed = [outcome for outcome in outcomes if isinstance(outcome, str)]
    if failed:
        raise StorageError(f"{len(failed)} file(s) could not be copied: {_first(failed)}")
    copied = [outcome for outcome in outcomes if isinstance(outcome, SyncedFile)]
    remote_copies = [item for item in copied if is_remote(item.uri)]
    if remote_copies:
        _verify_remote(target, remote_copies, target_prefixes)
    report.copied.extend(copied)
    return report


def _first(items: list[str], limit: int = 5) -> str:
    shown = "; ".join(items[:limit])
    return shown + (f"; and {len(items) - limit} more" if len(items) > limit else "")


def _source_objects(store: ObjectStore, pending: list[Transfer], prefixes: Iterable[str]) -> dict[str, StoredObject]:
    remote = [t.source for t in pending if is_remote(t.source)]
    found: dict[str, StoredObject] = {}
    if remote:
        prefixes = [p for p in prefixes if is_remote(p)]
        listed = list_many(store, prefixes)
        for uri in remote:
            if uri in listed:
                found[uri] = listed[uri]
            elif not any(uri.startswith(p.rstrip("/") + "/") for p in prefixes):
                try:
                    found[uri] = store.stat(uri)
                except StorageError:
                    continue
    for transfer in pending:
        if not is_remote(transfer.source):
            try:
                found[transfer.source] = store.stat(transfer.source)
            except StorageError:
                continue
    return found


def _copy_one(transfer: Transfer, source_object: StoredObject, source: ObjectStore, target: ObjectStore) -> SyncedFile:
    """Copy one file and check what arrived; returns the copy with its ETag-style checksum."""
    if not is_remote(transfer.target):
        destination = Path(transfer.target)
        destination.parent.mkdir(parents=True, exist_ok=True)
        temp = destination.with_name(temp_name(destination.name))
        try:
            if is_remote(transfer.source):
                bucket, key = split_s3_uri(transfer.source)
                source._s3_call(
                    transfer.source,
                    "read",
                    lambda: source.client().download_file(bucket, key, str(temp), Config=transfer_config()),
                )
                if etag_matches(temp, source_object.etag) is False and _etag_is_md5(source, transfer.source):
                    raise StorageError(f"the copy of {transfer.source} does not match its ETag {source_object.etag}")
                etag, size = file_etag(temp), temp.stat().st_size
            else:
                etag, size = _copy_local(Path(transfer.source), temp, source_object.size)
            if size != source_object.size:
                raise StorageError(f"{size} of {source_object.size} bytes arrived")
            os.replace(temp, destination)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return SyncedFile(str(destination), size, etag)
    bucket, key = split_s3_uri(transfer.target)
    client = target.client()
    if not is_remote(transfer.source):
        etag = file_etag(transfer.source)
        target._s3_call(
            transfer.target, "write", lambda: client.upload_file(transfer.source, bucket, key, Config=transfer_config())
        )
        return SyncedFile(transfer.target, source_object.size, etag)
    source_bucket, source_key = split_s3_uri(transfer.source)
    if source.s3 == target.s3:
        target._s3_call(
            transfer.target,
            "copy",
            lambda: client.copy({"Bucket": source_bucket, "Key": source_key}, bucket, key, Config=transfer_config()),
        )
        single_part = source_object.size < PART_SIZE and source_object.etag and "-" not in source_object.etag
        same_etag = source_object.etag if single_part else None
        return SyncedFile(transfer.target, source_object.size, same_etag)
    body = source._s3_call(
        transfer.source, "read", lambda: source.client().get_object(Bucket=source_bucket, Key=source_key)["Body"]
    )
    target._s3_call(
        transfer.target, "write", lambda: client.upload_fileobj(body, bucket, key, Config=transfer_config())
    )
    return SyncedFile(transfer.target, source_object.size, None)


def _copy_local(source: Path, temp: Path, size: int) -> tuple[str, int]:
    """Copy ``source`` to ``temp`` in one pass; returns the ETag and the size of what was written."""
    hasher = _EtagHasher(size) if size >= PART_SIZE else hashlib.md5(usedforsecurity=False)
    written = 0
    with open(source, "rb") as reader, open(temp, "wb") as writer:
        for block in iter(lambda: reader.read(_CHUNK), b""):
            hasher.update(block)
            written += writer.write(block)
    return hasher.hexdigest(), written


_FEW = 50
"""Up to this many copies are verified with one request each rather than by listing their prefixes."""


def _verify_remote(target: ObjectStore, copied: list[SyncedFile], prefixes: Iterable[str]) -> None:
    """Check the S3 copies: each is there with its size and, where known, ETag (one listing per prefix)."""
    prefixes = [p for p in prefixes if is_remote(p)] or sorted({item.uri.rsplit("/", 1)[0] for item in copied})
    listed = list_many(target, prefixes) if len(copied) > _FEW else {}
    problems = []
    for item in copied:
        found = listed.get(item.uri) or _stat_quietly(target, item.uri)
        if found is None:
            problems.append(f"{item.uri} is not there after the copy")
        elif found.size != item.size:
            problems.append(f"{item.uri} has {found.size} bytes, {item.size} were sent")
        elif item.etag and found.etag and found.etag != item.etag and _etag_is_md5(target, item.uri):
            problems.append(f"{item.uri} has ETag {found.etag}, the content sent has {item.etag}")
    if problems:
        raise StorageError(f"{len(problems)} copied file(s) failed verification: {_first(problems)}")


def _etag_is_md5(store: ObjectStore, uri: str) -> bool:
    """Whether an S3 object's ETag is an MD5 of its content: not so under SSE-KMS, DSSE-KMS or SSE-C
    encryption, where only the size can be compared."""
    bucket, key = split_s3_uri(uri)
    head = store._s3_call(uri, "read", lambda: store.client().head_object(Bucket=bucket, Key=key))
    encryption = str(head.get("ServerSideEncryption", ""))
    return not encryption.startswith("aws:kms") and not head.get("SSECustomerAlgorithm")


def _stat_quietly(store: ObjectStore, uri: str) -> StoredObject | None:
    try:
        return store.stat(uri)
    except StorageError:
        return None
