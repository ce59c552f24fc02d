"""Where source Parquet files come from, how their paths are compared, and which table each one feeds.

A source is a local folder, an ``s3://bucket/prefix`` or a manifest CSV with a ``full_path`` column (the
format the frozen-lake tooling writes) that may mix local paths, ``s3://`` and ``https://`` URLs. Listing
a source yields :class:`SourceFile` objects whose ``uri`` is normalised by :func:`normalize_uri`, so the
same file always has the same spelling, whatever form it was listed or registered under.
"""

import contextlib
import csv
import dataclasses
import functools
import io
import json
import os
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Literal

from .errors import ConfigurationError
from .locations import is_remote, is_s3, is_web, normalize_uri
from .storage import (
    Entry,
    Listings,
    ObjectStore,
    StoredObject,
    from_micros,
    glob_match,
    glob_matcher,
    is_hidden,
    micros,
)

DEFAULT_PATTERN = "**/*.parquet"
TableNameFrom = Literal["file_name", "parent_folder", "regex"]
SourceKind = Literal["folder", "s3", "manifest"]
NewFileOrder = Literal["modified", "key"]

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class SourceFile:
    """One Parquet file to register: its normalised location and the table it belongs to."""

    uri: str
    table: str
    schema: str = "main"
    size: int | None = None
    modified: datetime | None = None


@dataclass(frozen=True)
class TableNaming:
    """How a file's path decides its table.

    ``file_name`` (default): the file name up to its first dot (``astronauts.p1.parquet`` ->
    ``astronauts``). ``parent_folder``: the name of the folder holding the file. ``regex``: the named
    group ``table`` of ``regex``, searched in the path relative to the source root (the whole path for
    a manifest). ``schema`` is the DuckLake schema the tables go to.
    """

    source: TableNameFrom = "file_name"
    regex: str | None = None
    schema: str = "main"

    def __post_init__(self) -> None:
        if self.source not in ("file_name", "parent_folder", "regex"):
            raise ConfigurationError(
                f"table_name_from must be 'file_name', 'parent_folder' or 'regex', got {self.source!r}"
            )
        if (self.source == "regex") != (self.regex is not None):
            raise ConfigurationError("give table_name_regex exactly when table_name_from='regex'")
        if self.regex is not None:
            try:
                compiled = re.compile(self.regex)
            except re.error as error:
                raise ConfigurationError(f"table_name_regex {self.regex!r} is not a valid regex: {error}") from None
            if "table" not in compiled.groupindex:
                raise ConfigurationError(
                    f"table_name_regex {self.regex!r} needs a named group 'table', e.g. r'(?P<table>[^/]+)/[^/]+$'"
                )
        _check_name(self.schema, "schema", f"schema setting {self.schema!r}")

    def table_for(self, uri: str, relative: str) -> str:
        """The table ``uri`` belongs to; ``relative`` is its path below the source root."""
        if self.source == "file_name":
            name = uri.rsplit("/", 1)[-1].split(".", 1)[0]
        elif self.source == "parent_folder":
            name = PurePosixPath(uri).parent.name
        else:
            match = re.search(self.regex or "", relative or uri)
            if match is None:
                raise ConfigurationError(
                    f"Source file {uri} does not match table_name_regex {self.regex!r}: adjust the regex, or "
                    "narrow the pattern so the file is not listed"
                )
            if not match.group("table"):
                raise ConfigurationError(
                    f"table_name_regex {self.regex!r} matches source file {uri}, but its group 'table' captures "
                    f"nothing (matched {match.group(0)!r}): make the group match at least one character"
                )
            name = match.group("table")
        _check_name(name, "table", f"source file {uri}")
        return name


def _check_name(name: str, what: str, origin: str) -> None:
    if not name:
        raise ConfigurationError(
            f"Cannot derive a {what} name from {origin}: it is empty. Rename it or choose another table_name_from"
        )
    if _CONTROL_CHARACTERS.search(name):
        raise ConfigurationError(
            f"Cannot use {name!r} from {origin} as a {what} name: it contains control characters. Rename it"
        )


@dataclass(frozen=True)
class FileSource:
    """A place that holds source Parquet files: a folder, an ``s3://`` prefix or a manifest ``.csv``.

    ``pattern`` is a glob on the path below the root (``**/`` also matches no folder); files and folders
    whose name starts with ``.`` or ``_`` (temporary and hidden files of Spark, Hive, rsync) are ignored.
    A manifest lists its files itself, so ``pattern`` does not apply to it; relative paths in a manifest
    are taken from the manifest's own folder.
    """

    location: str
    pattern: str = DEFAULT_PATTERN
    naming: TableNaming = field(default_factory=TableNaming)
    within: str = ""
    """A folder below the root to list alone (a partition); ``pattern`` and naming still read paths from the root."""

    def __post_init__(self) -> None:
        if not isinstance(self.location, str) or not self.location.strip():
            raise ConfigurationError("source must be a folder, an s3://bucket/prefix or a manifest .csv")
        if is_web(self.location):
            raise ConfigurationError(
                f"source {self.location!r}: a web location cannot be listed; put its URLs in a manifest CSV "
                "with a full_path column and use the manifest as the source"
            )
        if not self.pattern:
            raise ConfigurationError("pattern must not be empty; the default is '**/*.parquet'")

    @property
    def kind(self) -> SourceKind:
        if self.location.lower().endswith(".csv"):
            return "manifest"
        return "s3" if is_s3(self.location) else "folder"

    @functools.cached_property
    def root(self) -> str:
        """The normalised location, without a trailing slash."""
        normalized = normalize_uri(self.location)
        return normalized if self.kind == "manifest" else normalized.rstrip("/")

    @property
    def needs_s3(self) -> bool:
        """Whether listing the source (or reading its manifest) needs S3 credentials."""
        return is_s3(self.root)

    def list_files(self, store: ObjectStore, listings: Listings | None = None) -> list[SourceFile]:
        """Every source file, each with its table, sorted by location. ``listings`` receives what an S3
        listing found: handed to :func:`~.registration.register_files`, it spares listing the prefix again
        to check the globs naming the new files."""
        if self.kind == "manifest":
            return self.read_manifest(store)
        return [self.source_file(item) for item in self.list_objects(store, listings=listings)]

    def list_named_files(
        self, store: ObjectStore, listings: Listings | None = None
    ) -> tuple[list[SourceFile], dict[str, str]]:
        """Like :meth:`list_files`, but a file whose path names no valid table is returned with the reason
        instead of failing the whole listing (for ``bad_files='skip'``)."""
        if self.kind == "manifest":
            return self.read_manifest(store), {}
        files: list[SourceFile] = []
        unnamed: dict[str, str] = {}
        for item in self.list_objects(store, listings=listings):
            try:
                files.append(self.source_file(item))
            except ConfigurationError as error:
                unnamed[item.uri] = str(error)
        return files, unnamed

    def list_objects(
        self, store: ObjectStore, start_after: str | None = None, listings: Listings | None = None
    ) -> list[StoredObject]:
        """The files below a folder or prefix that match the pattern, sorted by location.

        ``start_after`` (a location) lists only what sorts after it: on S3 the listing itself starts
        there, so its cost follows the number of newer keys.
        """
        if self.kind == "manifest":
            raise ConfigurationError("a manifest source is read with read_manifest, not listed")
        return [
            StoredObject(uri, size, from_micros(modified), etag)
            for uri, size, modified, etag in self.scan(store, start_after=start_after, listings=listings)
        ]

    def scan(
        self,
        store: ObjectStore,
        start_after: str | None = None,
        sort: bool = True,
        modified_since: int | None = None,
        listings: Listings | None = None,
    ) -> list[Entry]:
        """:meth:`list_objects` as plain tuples (see :meth:`.ObjectStore.scan`)."""
        options = {
            "start_after": start_after,
            "skip_hidden": True,
            "sort": sort,
            "modified_since": modified_since,
            "listings": listings,
        }
        if not self.within:
            return store.scan(self.root, self.pattern, **options)  # type: ignore[arg-type]
        entries = store.scan(self.root + "/" + self.within, None, **options)  # type: ignore[arg-type]
        match = glob_matcher(self.pattern)
        return [entry for entry in entries if match(self.relative_path(entry[0]))]

    def relative_path(self, uri: str) -> str:
        """``uri`` below the root; a local listing resolves symbolic links, so the resolved root counts too."""
        if self.kind == "manifest":
            return ""
        for root in (self.root, self._resolved_root):
            if uri.startswith(root + "/"):
                return uri[len(root) + 1 :]
        return uri

    @functools.cached_property
    def _resolved_root(self) -> str:
        return self.root if is_remote(self.root) else os.path.realpath(self.root)

    def source_file(self, item: StoredObject) -> SourceFile:
        uri = normalize_uri(item.uri)
        return SourceFile(
            uri=uri,
            table=self.naming.table_for(uri, self.relative_path(uri)),
            schema=self.naming.schema,
            size=item.size,
            modified=item.modified,
        )

    def files_at(self, uris: Iterable[str]) -> tuple[list[SourceFile], list[str]]:
        """The source files at ``uris`` (locations a producer reported writing), without listing the source.

        Returns the files that belong to this source (below its root, matching its pattern, not hidden)
        and the locations that do not. A manifest source cannot tell without being read, so every
        location is returned as not belonging.
        """
        belonging: list[SourceFile] = []
        others: list[str] = []
        # A folder is listed with symbolic links resolved, so reported paths are resolved the same way.
        root = self.root if is_remote(self.root) else os.path.realpath(self.root)
        for location in uris:
            uri = normalize_uri(location)
            uri = uri if is_remote(uri) else os.path.realpath(uri)
            relative = uri.removeprefix(root + "/")
            outside = self.kind == "manifest" or relative == uri or is_hidden(relative)
            if outside or not glob_match(relative, self.pattern):
                others.append(location)
                continue
            belonging.append(SourceFile(uri=uri, table=self.naming.table_for(uri, relative), schema=self.naming.schema))
        return belonging, others

    def table_names(self, store: ObjectStore) -> list[str]:
        """The tables the source's files name today, sorted; files whose name gives no valid table are left out."""
        if self.kind == "manifest":
            return sorted({source_file.table for source_file in self.read_manifest(store)})
        names = set()
        for item in self.list_objects(store):
            with contextlib.suppress(ConfigurationError):
                names.add(self.naming.table_for(normalize_uri(item.uri), self.relative_path(item.uri)))
        return sorted(names)

    def read_manifest(self, store: ObjectStore) -> list[SourceFile]:
        """The files a manifest CSV names in its ``full_path`` column, in manifest order."""
        location = self.root
        text = store.get_bytes(location).decode("utf-8-sig")
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None or "full_path" not in [name.strip() for name in reader.fieldnames]:
            raise ConfigurationError(
                f"Manifest {location} has no full_path column; its first line must be a header naming full_path"
            )
        column = next(name for name in reader.fieldnames if name.strip() == "full_path")
        on_s3 = is_s3(location)
        base = posixpath.dirname(location) if on_s3 else os.path.dirname(location)
        files = []
        for line, row in enumerate(reader, start=2):
            entry = (row.get(column) or "").strip()
            if not entry:
                continue
            if on_s3 and not is_remote(entry) and not entry.startswith("/"):
                entry = base + "/" + entry
            try:
                uri = normalize_uri(entry, base=None if on_s3 else base)
            except ConfigurationError as error:
                raise ConfigurationError(f"Manifest {location}, line {line}: {error}") from None
            files.append(SourceFile(uri=uri, table=self.naming.table_for(uri, ""), schema=self.naming.schema))
        return files


@dataclass(frozen=True)
class NewFiles:
    """What changed in a source since a cursor: the new locations and the cursor to keep."""

    uris: tuple[str, ...]
    cursor: str


def find_new_files(
    source: FileSource, store: ObjectStore, cursor: str | None, order: NewFileOrder = "modified"
) -> NewFiles:
    """The files that appeared in ``source`` since ``cursor`` (``None``: every file is new).

    ``order='key'`` suits sources whose new files always sort after the existing ones (date- or
    sequence-named keys): on S3 the listing starts after the cursor's key, so a check costs in
    proportion to the new files. ``order='modified'`` (default) suits any naming: the source is listed
    and files modified after the cursor's time (or at that time but not yet seen) are new; on S3 that
    is one request per 1,000 keys. A manifest counts as changed when its size or modification time
    changes; its cursor is that fingerprint.
    """
    state = json.loads(cursor) if cursor else {}
    if source.kind == "manifest":
        stat = store.stat(source.root)
        fingerprint = f"{stat.size}:{stat.modified.isoformat()}"
        if state.get("manifest") == fingerprint:
            return NewFiles((), cursor or "")
        return NewFiles((source.root,), json.dumps({"manifest": fingerprint}))
    if order == "key":
        after = source.scan(store, start_after=state.get("after"))
        if not after:
            return NewFiles((), cursor or json.dumps({}))
        return NewFiles(tuple(entry[0] for entry in after), json.dumps({"after": after[-1][0]}))
    if order != "modified":
        raise ConfigurationError(f"new-file order must be 'modified' or 'key', got {order!r}")
    # Integer times compared while listing: a tick over 100,000 files does little more per file than a
    # bare listing, and keeps only the files at or after the cursor's time.
    if "modified" in state:
        mark = micros(datetime.fromisoformat(state["modified"]))
        seen_at_mark = set(state.get("seen_at_mark", []))
        # A cursor of version 1 rounded float seconds to the microsecond, where now they are truncated: a
        # file at mark - 1 µs may be one it never saw.
        low = mark if state.get("version") == 2 else mark - 1
        recent = source.scan(store, sort=False, modified_since=low)
        found = [entry for entry in recent if entry[2] > mark or entry[0] not in seen_at_mark]
    else:
        mark, seen_at_mark, found = None, set(), source.scan(store, sort=False)
    if not found:
        return NewFiles((), cursor or json.dumps({}))
    found.sort()
    newest = max(entry[2] for entry in found)
    if mark is not None and newest < mark:  # only files of a version-1 cursor's rounding window
        kept = {"version": 2, "modified": state["modified"], "seen_at_mark": sorted(seen_at_mark)}
        return NewFiles(tuple(entry[0] for entry in found), json.dumps(kept))
    at_newest = {entry[0] for entry in found if entry[2] == newest}
    if newest == mark:
        at_newest |= seen_at_mark
    return NewFiles(
        tuple(entry[0] for entry in found),
        json.dumps({"version": 2, "modified": from_micros(newest).isoformat(), "seen_at_mark": sorted(at_newest)}),
    )


@dataclass(frozen=True)
class PartitionFolders:
    """Where each partition's files live below a source root: ``template`` with ``{partition_key}``, such
    as ``{partition_key}`` (one folder per key) or ``day={partition_key}`` (``day=2026-12-01/``)."""

    template: str = "{partition_key}"

    def __post_init__(self) -> None:
        if self.template.count("{partition_key}") != 1 or self.template.startswith("/"):
            raise ConfigurationError(
                f"partition folder {self.template!r} must hold '{{partition_key}}' exactly once and be relative "
                "to the source, e.g. 'day={partition_key}'"
            )
        if any(character in self.template.replace("{partition_key}", "") for character in "{}*?["):
            raise ConfigurationError(f"partition folder {self.template!r} may hold no other braces or glob characters")

    def folder(self, key: str) -> str:
        """The folder of partition ``key``, relative to the source root."""
        if not key or "/" in key or key in (".", ".."):
            raise ConfigurationError(f"partition key {key!r} cannot name a folder: it is empty or holds '/'")
        return self.template.replace("{partition_key}", key)

    @functools.cached_property
    def _pattern(self) -> "re.Pattern[str]":
        head, tail = self.template.split("{partition_key}")
        return re.compile(re.escape(head) + "(?P<key>[^/]+)" + re.escape(tail) + "/")

    def key_of(self, relative: str) -> str | None:
        """The partition a path below the source root belongs to, ``None`` if it lies in no partition folder."""
        match = self._pattern.match(relative)
        return match.group("key") if match else None

    def source(self, source: FileSource, key: str) -> FileSource:
        """The part of ``source`` that partition ``key`` registers."""
        if source.kind == "manifest":
            raise ConfigurationError("a manifest source cannot be partitioned by folder; list one manifest per run")
        return dataclasses.replace(source, within=self.folder(key))
