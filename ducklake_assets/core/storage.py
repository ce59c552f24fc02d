"""Local folders and S3 behind one small interface, addressed by URI (``s3://bucket/key`` or a path).

Writes are atomic for readers: a local file is written under a temporary name beside its target (see
:mod:`.scratch`, so a killed writer's leftovers are recognised) and renamed over it; an S3 object is
uploaded in one PUT or one multipart upload, which S3 exposes only once complete. A reader sees the old
object or the complete new one.
"""

import contextlib
import fcntl
import fnmatch
import functools
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from .errors import AlreadyExistsError, ChangedError, NotFoundError, StorageError
from .locations import is_remote, normalize_uri, split_s3_uri
from .locations import join_uri as join_uri  # the Dagster layer imports it from here
from .optional import require
from .s3 import S3Settings
from .scratch import is_abandoned, temp_name

T = TypeVar("T")


@dataclass(frozen=True)
class StoredObject:
    """One file or object: its URI, size in bytes, last-modified time (UTC) and, on S3, its ETag.

    ``version`` (from :meth:`ObjectStore.stat`) changes whenever the object is replaced: the ETag on S3,
    inode, size and modification time locally. :meth:`ObjectStore.replace_file` compares it.
    """

    uri: str
    size: int
    modified: datetime
    etag: str | None = None
    version: str | None = None
    metadata: "dict[str, str] | None" = None


Entry = tuple[str, int, int, "str | None"]
"""One listed file as a plain tuple: URI, size in bytes, last modified (microseconds since the epoch,
UTC) and, on S3, its ETag (see :meth:`ObjectStore.scan`)."""


@dataclass
class Listings:
    """Every object whole S3 listings found below their prefixes, hidden and unmatched ones included, as of
    the listing: lets registration check that a glob names exactly its files without listing the prefix a
    second time (:meth:`ObjectStore.scan` fills it)."""

    prefixes: dict[str, frozenset[str]] = field(default_factory=dict)
    _folders: dict[str, dict[str, list[str]]] = field(default_factory=dict, init=False, repr=False)

    def add(self, prefix: str, uris: Iterable[str]) -> None:
        prefix = normalize_uri(prefix).rstrip("/")
        self.prefixes[prefix] = frozenset(uris)
        self._folders.pop(prefix, None)

    def below(self, folder: str, depth: int) -> set[str] | None:
        """The objects exactly ``depth`` folders below ``folder`` (``None`` if no listing covers it)."""
        for prefix, uris in self.prefixes.items():
            if folder == prefix or folder.startswith(prefix + "/"):
                if prefix not in self._folders:
                    by_folder: dict[str, list[str]] = {}
                    for uri in uris:
                        by_folder.setdefault(uri.rsplit("/", 1)[0], []).append(uri)
                    self._folders[prefix] = by_folder
                start, slashes = folder + "/", folder.count("/") + depth
                return {
                    uri
                    for name, found in self._folders[prefix].items()
                    if (name == folder if depth == 0 else name.startswith(start) and name.count("/") == slashes)
                    for uri in found
                }
        return None


class ObjectStore:
    """Read, write, list and delete files by URI, on local disk or S3 (through boto3)."""

    def __init__(self, s3: S3Settings | None = None):
        self.s3 = s3
        self._client: Any = None

    def client(self) -> Any:  # a boto3 S3 client; boto3 makes its client classes at run time
        if self._client is None:
            self._client = (self.s3 or S3Settings()).boto3_client()
        return self._client

    def _s3_call(self, uri: str, action: str, call: Callable[[], T]) -> T:
        boto3_errors = require("boto3.exceptions", "S3")
        botocore_errors = require("botocore.exceptions", "S3")
        RetriesExceededError, S3UploadFailedError = boto3_errors.RetriesExceededError, boto3_errors.S3UploadFailedError  # noqa: N806
        BotoCoreError, ClientError = botocore_errors.BotoCoreError, botocore_errors.ClientError  # noqa: N806

        try:
            return call()
        except S3UploadFailedError as error:
            denied = "AccessDenied" in str(error) or "Forbidden" in str(error)
            hint = "access denied; check the S3 credentials" if denied else "the upload failed"
            raise StorageError(f"Cannot {action} {uri}: {hint} ({type(error).__name__})") from None
        except RetriesExceededError:
            raise StorageError(f"Cannot {action} {uri}: the transfer kept failing; check the S3 endpoint") from None
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            bucket, _ = split_s3_uri(uri)
            if code in ("NoSuchBucket",):
                raise StorageError(
                    f"Cannot {action} {uri}: bucket {bucket!r} does not exist; create it first"
                ) from None
            if code in ("404", "NoSuchKey", "NotFound"):
                raise StorageError(f"Cannot {action} {uri}: no such object") from None
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise StorageError(f"Cannot {action} {uri}: access denied ({code}); check the S3 credentials") from None
            raise StorageError(f"Cannot {action} {uri}: S3 error {code or error}") from None
        except BotoCoreError as error:
            endpoint = (self.s3.endpoint_url if self.s3 else None) or "the default AWS endpoint"
            raise StorageError(
                f"Cannot {action} {uri}: S3 endpoint {endpoint} is unreachable ({type(error).__name__})"
            ) from None

    def list_prefix(
        self, prefix: str, pattern: str | None = None, start_after: str | None = None
    ) -> list[StoredObject]:
        """Files below ``prefix`` (recursive), sorted by URI; ``pattern`` is a glob on the relative path.

        ``start_after`` (an URI) skips everything up to and including it (S3 lists from there).
        """
        return [
            StoredObject(uri, size, from_micros(modified), etag)
            for uri, size, modified, etag in self.scan(prefix, pattern, start_after=start_after)
        ]

    def scan(
        self,
        prefix: str,
        pattern: str | None = None,
        *,
        start_after: str | None = None,
        skip_hidden: bool = False,
        sort: bool = True,
        modified_since: int | None = None,
        listings: Listings | None = None,
    ) -> list[Entry]:
        """Like :meth:`list_prefix`, as plain :data:`Entry` tuples: the listing with as little Python per
        file as it allows (a sensor tick over 100,000 files is mostly this).

        ``skip_hidden`` leaves out files and folders below ``prefix`` whose name starts with ``.`` or
        ``_``; locally such folders are not even read. Locally a folder whose every path sorts at or
        before ``start_after`` is not read either, and no file at or before it is stat-ed.
        ``modified_since`` (microseconds since the epoch) leaves out files modified before it.
        ``listings`` receives everything a whole S3 listing found (none from ``start_after``).
        """
        match = glob_matcher(pattern) if pattern else None
        if is_remote(prefix):
            entries = self._scan_s3(prefix, start_after)
            if listings is not None and not start_after:
                listings.add(prefix, (entry[0] for entry in entries))
            cut = len(prefix.rstrip("/")) + 1
            if skip_hidden:
                entries = [entry for entry in entries if not is_hidden(entry[0][cut:])]
            if match is not None:
                entries = [entry for entry in entries if match(entry[0][cut:])]
            if modified_since is not None:
                entries = [entry for entry in entries if entry[2] >= modified_since]
        else:
            entries = self._scan_local(prefix, start_after, skip_hidden, pattern, modified_since)
        if sort:
            entries.sort()
        return entries

    def _scan_local(
        self,
        prefix: str,
        start_after: str | None,
        skip_hidden: bool,
        pattern: str | None,
        modified_since: int | None,
    ) -> list[Entry]:
        match = glob_matcher(pattern) if pattern else None
        # ``*.parquet``-like patterns are a suffix test on the whole path: no slicing per file.
        suffix = glob_suffix(pattern) if pattern else None
        since_ns = -1 if modified_since is None else modified_since * 1000
        root = str(Path(prefix).expanduser().resolve())
        if not os.path.exists(root):
            raise NotFoundError(f"Cannot list {prefix}: no such folder")
        if os.path.isfile(root):
            if (start_after and root <= start_after) or (match is not None and not match(root)):
                return []
            stat = os.stat(root)
            return [(root, stat.st_size, stat.st_mtime_ns // 1000, None)] if stat.st_mtime_ns >= since_ns else []
        cut = len(root.rstrip("/")) + 1
        found: list[Entry] = []
        folders = [root]
        while folders:
            folder = folders.pop()
            try:
                listing = os.scandir(folder)
            except OSError:  # gone, or unreadable: skipped, as os.walk does
                continue
            with listing:
                for entry in listing:
                    if skip_hidden and entry.name[0] in "._":
                        continue
                    path = entry.path
                    # Like os.walk: a link to a folder is neither read nor listed; other links are followed.
                    if entry.is_dir():
                        if not entry.is_symlink() and not (start_after and _sorts_before(path + "/", start_after)):
                            folders.append(path)
                        continue
                    if start_after and path <= start_after:
                        continue
                    if suffix is not None:
                        if not path.endswith(suffix):
                            continue
                    elif match is not None and not match(path[cut:]):
                        continue
                    try:
                        stat = entry.stat()
                    except FileNotFoundError:
                        continue
                    if stat.st_mtime_ns >= since_ns:
                        found.append((path, stat.st_size, stat.st_mtime_ns // 1000, None))
        return found

    def _scan_s3(self, prefix: str, start_after: str | None) -> list[Entry]:
        bucket, key_prefix = split_s3_uri(prefix)
        if key_prefix and not key_prefix.endswith("/"):
            key_prefix += "/"
        kwargs = {"Bucket": bucket, "Prefix": key_prefix}
        if start_after:
            kwargs["StartAfter"] = split_s3_uri(start_after)[1]
        head = f"s3://{bucket}/"

        def collect() -> list[Entry]:
            found: list[Entry] = []
            for page in self.client().get_paginator("list_objects_v2").paginate(**kwargs):
                for item in page.get("Contents", ()):
                    found.append(
                        (
                            head + item["Key"],
                            item["Size"],
                            micros(item["LastModified"]),
                            item.get("ETag", "").strip('"') or None,
                        )
                    )
            return found

        return self._s3_call(prefix, "list", collect)

    def exists(self, uri: str) -> bool:
        if not is_remote(uri):
            return Path(uri).expanduser().is_file()
        try:
            self.stat(uri)
        except StorageError as error:
            if "no such object" in str(error):
                return False
            raise
        return True

    def stat(self, uri: str) -> StoredObject:
        if not is_remote(uri):
            try:
                stat = Path(uri).expanduser().stat()
            except OSError as error:
                raise StorageError(f"Cannot read {uri}: {error.strerror}") from None
            version = f"{stat.st_ino:x}-{stat.st_size:x}-{stat.st_mtime_ns:x}"
            return StoredObject(uri, stat.st_size, _utc(stat.st_mtime), None, version)
        bucket, key = split_s3_uri(uri)
        head = self._s3_call(uri, "read", lambda: self.client().head_object(Bucket=bucket, Key=key))
        etag = head.get("ETag", "").strip('"') or None
        return StoredObject(
            uri, head["ContentLength"], head["LastModified"], etag, head.get("ETag"), dict(head.get("Metadata") or {})
        )

    def stat_if_exists(self, uri: str) -> StoredObject | None:
        """Like :meth:`stat`, ``None`` when there is nothing at ``uri``."""
        if not is_remote(uri) and not Path(uri).expanduser().is_file():
            return None
        try:
            return self.stat(uri)
        except StorageError as error:
            if "no such object" in str(error) or not is_remote(uri):
                return None
            raise

    def create_file(self, source: str | Path, uri: str) -> StoredObject:
        """Write local file ``source`` to ``uri`` only if nothing is there yet, atomically.

        Raises :class:`AlreadyExistsError` when another writer got there first. Locally the file is
        written under a temporary name and hard-linked to ``uri`` (which fails if ``uri`` exists); on S3
        it is one PUT with ``If-None-Match: *``.
        """
        source = Path(source)
        if not is_remote(uri):
            target = Path(uri).expanduser()
            temp = target.with_name(temp_name(target.name))
            try:
                _stage_local(source, temp)
                os.link(temp, target)
            except FileExistsError:
                raise AlreadyExistsError(f"Cannot create {uri}: it already exists") from None
            except OSError as error:
                raise StorageError(f"Cannot write {uri}: {error.strerror or error}") from None
            finally:
                temp.unlink(missing_ok=True)
            return self.stat(str(target))
        bucket, key = split_s3_uri(uri)
        with open(source, "rb") as body:
            self._conditional_put(
                uri, lambda: self.client().put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
            )
        return self.stat(uri)

    def replace_file(
        self, source: str | Path, uri: str, expected: StoredObject | None, metadata: dict[str, str] | None = None
    ) -> StoredObject:
        """Replace ``uri`` with local file ``source`` only if it is still ``expected`` (``None``: still absent).

        ``metadata`` is stored with an S3 object (``x-amz-meta-*``) and read back by :meth:`stat`, so a
        reader learns what the object holds from the same request that gives its ETag.

        Raises :class:`ChangedError` when another writer replaced (or created) it since ``expected`` was
        read. Locally the check and the rename happen under an exclusive lock on a lock file beside
        ``uri``; on S3 it is one PUT with ``If-Match`` on the expected ETag (``If-None-Match: *``).
        """
        source = Path(source)
        if not is_remote(uri):
            target = Path(uri).expanduser()
            target.parent.mkdir(parents=True, exist_ok=True)
            with self._locked(target):
                current = self.stat_if_exists(str(target))
                if (current.version if current else None) != (expected.version if expected else None):
                    raise ChangedError(f"Cannot replace {uri}: another writer replaced it meanwhile")
                return self.put_file(source, str(target))
        bucket, key = split_s3_uri(uri)
        condition: dict[str, object] = {"IfMatch": expected.version} if expected else {"IfNoneMatch": "*"}
        if metadata:
            condition["Metadata"] = metadata
        with open(source, "rb") as body:
            self._conditional_put(
                uri, lambda: self.client().put_object(Bucket=bucket, Key=key, Body=body, **condition), replace=True
            )
        return self.stat(uri)

    def _conditional_put(self, uri: str, call: Callable[[], object], replace: bool = False) -> None:
        try:
            self._s3_call(uri, "write", lambda: _raise_precondition(call))
        except _PreconditionFailed:
            if replace:
                raise ChangedError(f"Cannot replace {uri}: another writer replaced it meanwhile") from None
            raise AlreadyExistsError(f"Cannot create {uri}: it already exists") from None

    @contextlib.contextmanager
    def _locked(self, target: Path) -> Iterator[None]:
        lock = target.with_name(f".{target.name}.lock")
        with open(lock, "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def put_file(self, source: str | Path, uri: str) -> StoredObject:
        """Copy local file ``source`` to ``uri`` atomically; returns what was written."""
        source = Path(source)
        size = source.stat().st_size
        if not is_remote(uri):
            target = Path(uri).expanduser()
            temp = target.with_name(temp_name(target.name))
            try:
                _stage_local(source, temp)
                os.replace(temp, target)
            except OSError as error:
                temp.unlink(missing_ok=True)
                raise StorageError(f"Cannot write {uri}: {error.strerror or error}") from None
            return self.stat(str(target))
        bucket, key = split_s3_uri(uri)
        client = self.client()
        self._s3_call(uri, "write", lambda: client.upload_file(str(source), bucket, key))
        written = self.stat(uri)
        if written.size != size:
            raise StorageError(f"Upload to {uri} is incomplete: {written.size} of {size} bytes arrived")
        return written

    def copy_within(self, source_uri: str, uri: str) -> StoredObject:
        """Copy one stored file to another place of the same store, atomically; on S3 server-side, so the
        bytes never travel through this machine. The copy is independent of its source (no hard link)."""
        if not is_remote(uri):
            return self.put_file(Path(source_uri).expanduser(), uri)
        bucket, key = split_s3_uri(uri)
        source_bucket, source_key = split_s3_uri(source_uri)
        self._s3_call(
            uri,
            "write",
            lambda: self.client().copy_object(
                Bucket=bucket, Key=key, CopySource={"Bucket": source_bucket, "Key": source_key}
            ),
        )
        return self.stat(uri)

    def put_bytes(self, data: bytes, uri: str) -> StoredObject:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "object"
            path.write_bytes(data)
            return self.put_file(path, uri)

    def get_file(self, uri: str, target: str | Path) -> Path:
        target = Path(target)
        if not is_remote(uri):
            try:
                shutil.copyfile(Path(uri).expanduser(), target)
            except OSError as error:
                raise StorageError(f"Cannot read {uri}: {error.strerror or error}") from None
            return target
        bucket, key = split_s3_uri(uri)
        self._s3_call(uri, "read", lambda: self.client().download_file(bucket, key, str(target)))
        return target

    def get_bytes(self, uri: str) -> bytes:
        if not is_remote(uri):
            try:
                return Path(uri).expanduser().read_bytes()
            except OSError as error:
                raise StorageError(f"Cannot read {uri}: {error.strerror or error}") from None
        bucket, key = split_s3_uri(uri)
        body = self._s3_call(uri, "read", lambda: self.client().get_object(Bucket=bucket, Key=key)["Body"])
        return body.read()

    def delete(self, uri: str) -> None:
        if not is_remote(uri):
            Path(uri).expanduser().unlink(missing_ok=True)
            return
        bucket, key = split_s3_uri(uri)
        self._s3_call(uri, "delete", lambda: self.client().delete_object(Bucket=bucket, Key=key))

    def delete_many(self, uris: Iterable[str]) -> None:
        """Delete many files; on S3 a thousand keys per request."""
        uris = list(uris)
        local = [uri for uri in uris if not is_remote(uri)]
        for uri in local:
            self.delete(uri)
        by_bucket: dict[str, list[str]] = {}
        for uri in uris:
            if is_remote(uri):
                bucket, key = split_s3_uri(uri)
                by_bucket.setdefault(bucket, []).append(key)
        for bucket, keys in by_bucket.items():
            for start in range(0, len(keys), 1000):
                batch = [{"Key": key} for key in keys[start : start + 1000]]
                response = self._s3_call(
                    f"s3://{bucket}/{batch[0]['Key']}", "delete", functools.partial(self._delete_batch, bucket, batch)
                )
                if response.get("Errors"):
                    failed = response["Errors"][0]
                    raise StorageError(
                        f"Cannot delete s3://{bucket}/{failed.get('Key')}: S3 error {failed.get('Code')}"
                    )

    def _delete_batch(self, bucket: str, batch: list[dict[str, str]]) -> Any:
        return self.client().delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})

    def remove_abandoned(self, listing: Iterable[StoredObject]) -> list[str]:
        """Delete the temporary files of killed writers found in ``listing`` (local folders only: an S3
        upload is invisible until complete). Returns the removed URIs."""
        now = time.time()
        stale = [o.uri for o in listing if not is_remote(o.uri) and is_abandoned(o.uri, o.modified.timestamp(), now)]
        for uri in stale:
            self.delete(uri)
        return stale


def _stage_local(source: Path, temp: Path) -> None:
    """Copy ``source`` to the temporary file ``temp`` (creating its folder), readable by all, synced to disk."""
    temp.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, temp)
    os.chmod(temp, 0o644)
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())


class _PreconditionFailed(Exception):
    pass


def _raise_precondition(call: Callable[[], object]) -> object:
    """Run an S3 call, turning a failed condition (412, or 409 for a concurrent conditional write) into
    :class:`_PreconditionFailed`."""
    ClientError = require("botocore.exceptions", "S3").ClientError  # noqa: N806

    try:
        return call()
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            raise _PreconditionFailed() from None
        raise


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime, exactly (no float rounding)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def _sorts_before(folder: str, start_after: str) -> bool:
    """Whether every path below ``folder`` (ending in ``/``) sorts at or before ``start_after``."""
    return folder < start_after and not start_after.startswith(folder)


def is_hidden(relative: str) -> bool:
    """Whether a path below a source root passes through a file or folder named ``.*`` or ``_*``."""
    return any(part.startswith((".", "_")) for part in relative.split("/"))


@functools.lru_cache(maxsize=64)
def glob_suffix(pattern: str) -> str | None:
    """The suffix a pattern amounts to, if it is one: ``*`` matches across ``/`` (as in fnmatch), so
    ``**/*.parquet`` and ``*.parquet`` both mean "ends with ``.parquet``"."""
    for lead in ("**/*", "*"):
        rest = pattern.removeprefix(lead)
        if pattern.startswith(lead) and rest and not any(character in rest for character in "*?[]"):
            return rest
    return None


@functools.lru_cache(maxsize=64)
def glob_matcher(pattern: str) -> Callable[[str], bool]:
    """:func:`glob_match` for one pattern, compiled once (a suffix test where :func:`glob_suffix` finds one)."""
    rest = glob_suffix(pattern)
    if rest is not None:
        return lambda relative: relative.endswith(rest)
    whole = re.compile(fnmatch.translate(pattern)).match
    if not pattern.startswith("**/"):
        return lambda relative: whole(relative) is not None
    shallow = re.compile(fnmatch.translate(pattern[3:])).match
    return lambda relative: whole(relative) is not None or shallow(relative) is not None


def glob_match(relative: str, pattern: str) -> bool:
    """Glob match where ``**/`` also matches zero folders (``**/*.parquet`` matches ``a.parquet``)."""
    return glob_matcher(pattern)(relative)
