"""Temporary files and folders that a killed run can leave behind, named so that the next run removes them.

Every temporary name carries the writer's host (a short hash) and process id. A later run on the same
host removes the ones whose process is gone; leftovers from other hosts are removed once they are a day
old, since their process cannot be asked.
"""

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

STALE_AFTER_SECONDS = 24 * 3600
"""A temporary file or folder of another host is considered abandoned after this long."""

_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_TEMP_FILE = re.compile(r"\.tmp-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-z]+(\.[0-9A-Za-z]{8})?$")
"""A temporary name from :func:`temp_name`, or the one boto3 downloads it under first (8 more characters)."""
_SCRATCH = re.compile(r"^ducklake-assets-[a-z]+-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-")
_LEGACY_SCRATCH = ("ducklake-backup-", "ducklake-restore-", "ducklake-publish-")


def temp_name(name: str) -> str:
    """A hidden temporary name beside ``name`` that :func:`is_abandoned` can later judge."""
    return f".{name}.tmp-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _abandoned(host: str, pid: int, modified: float, now: float) -> bool:
    if host == _HOST:
        return pid != os.getpid() and not _process_alive(pid)
    return now - modified > STALE_AFTER_SECONDS


def is_abandoned(path: str, modified: float, now: float | None = None) -> bool:
    """Whether ``path`` is a temporary file written by :func:`temp_name` whose writer is gone."""
    match = _TEMP_FILE.search(path.rsplit("/", 1)[-1])
    if match is None:
        return False
    return _abandoned(match["host"], int(match["pid"]), modified, time.time() if now is None else now)


@contextlib.contextmanager
def scratch_folder(purpose: str) -> Iterator[Path]:
    """A private local folder for one operation, removed afterwards (or by a later run if this one is killed)."""
    sweep_scratch_folders()
    folder = Path(tempfile.mkdtemp(prefix=f"ducklake-assets-{purpose}-{_HOST}-{os.getpid()}-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sweep_scratch_folders() -> list[Path]:
    """Remove scratch folders of killed runs from the temporary directory; returns what was removed."""
    removed: list[Path] = []
    now = time.time()
    root = Path(tempfile.gettempdir())
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            modified = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        match = _SCRATCH.match(entry.name)
        if match:
            stale = _abandoned(match["host"], int(match["pid"]), modified, now)
        else:
            stale = entry.name.startswith(_LEGACY_SCRATCH) and now - modified > STALE_AFTER_SECONDS
        if stale:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed
