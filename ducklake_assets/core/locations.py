"""Locations: local paths and remote URIs, told apart, joined and spelled one way.

Every module asks here whether a location is remote (an object store or a web URL, which DuckDB reads
through httpfs) and whether it is on S3 (which the library also reaches through boto3), joins names onto
it, and turns it into the one spelling used to compare two listings.
"""

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigurationError, StorageError

S3_SCHEMES = ("s3://", "s3a://", "s3n://")
"""The spellings of an S3 location (``s3a://`` and ``s3n://`` are Hadoop's); :func:`normalize_uri` makes them ``s3://``."""
WEB_SCHEMES = ("http://", "https://")
REMOTE_SCHEMES = (*S3_SCHEMES, *WEB_SCHEMES, "gs://", "gcs://", "r2://", "az://")


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names an object store or web location rather than a local path."""
    return uri.lower().startswith(REMOTE_SCHEMES)


def is_s3(uri: str) -> bool:
    """Whether ``uri`` is an S3 location (``s3://``, ``s3a://`` or ``s3n://``, in any case)."""
    return uri.lower().startswith(S3_SCHEMES)


def is_web(uri: str) -> bool:
    """Whether ``uri`` is an ``http://`` or ``https://`` URL."""
    return uri.lower().startswith(WEB_SCHEMES)


def absolute_local_path(path: str) -> str:
    """A local path made absolute; a remote URI returned unchanged."""
    if is_remote(path):
        return path
    trailing = "/" if path.endswith(("/", "\\")) else ""
    return str(Path(path).expanduser().resolve()) + trailing


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``('bucket', 'a/b')``."""
    parts = urlsplit(uri)
    if not is_s3(uri) or not parts.netloc:
        raise StorageError(f"{uri!r} is not an s3://bucket/key URI")
    return parts.netloc, parts.path.lstrip("/")


def join_uri(base: str, *names: str) -> str:
    """Join path segments onto a local path or URI with ``/``."""
    result = base
    for name in names:
        result = result.rstrip("/") + "/" + name.lstrip("/")
    return result


def is_within(path: str, folder: str) -> bool:
    """Whether ``path`` lies inside ``folder`` (symlinks resolved for local paths)."""
    if is_remote(folder) or is_remote(path):
        relative = path.removeprefix(folder)
        return path.startswith(folder) and "/../" not in "/" + relative and relative != ""
    real_folder = os.path.realpath(folder)
    return os.path.realpath(path).startswith(real_folder.rstrip(os.sep) + os.sep)


def normalize_uri(path: str, base: str | None = None) -> str:
    """The one spelling of a file location used to tell whether two listings name the same file.

    Local paths become absolute (relative ones are taken from ``base``, else the working folder), with
    ``./``, ``..`` and doubled slashes collapsed; symbolic links are kept as written. ``s3a://`` and
    ``s3n://`` become ``s3://``. Object keys and URL paths are kept exactly: an object store treats
    ``a//b`` and ``a/b`` as two different objects.
    """
    text = path if isinstance(path, str) else ""
    if _already_normal(text):
        return text
    if not text.strip():
        raise ConfigurationError("a source file path is empty")
    if is_s3(text):
        bucket, key = split_s3_uri(text)
        return f"s3://{bucket}/{key}"
    if is_web(text):
        parts = urlsplit(text)
        return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, ""))
    if is_remote(text):
        raise ConfigurationError(f"source file {text!r}: only local paths, s3:// and http(s):// URLs are supported")
    if text.lower().startswith("file://"):
        text = urlsplit(text).path
    local = os.path.expanduser(text)
    if not os.path.isabs(local):
        local = os.path.join(base if base is not None else os.getcwd(), local)
    normalized = os.path.normpath(local)
    return "/" + normalized.lstrip("/") if normalized.startswith("//") else normalized


def _already_normal(text: str) -> bool:
    """Whether ``text`` is already in :func:`normalize_uri`'s spelling (the common case, checked without
    parsing: listings and the catalog hand over tens of thousands of such paths)."""
    if text.startswith("s3://"):
        return (
            len(text) > 5
            and text[5] != "/"
            and "/" in text[5:]
            and not any(c in text for c in "?#")
            and ("//" not in text[5:])
        )
    return (
        text.startswith("/")
        and not text.startswith("//")
        and "//" not in text
        and "/./" not in text
        and "/../" not in text
        and not text.endswith(("/", "/.", "/.."))
    )
