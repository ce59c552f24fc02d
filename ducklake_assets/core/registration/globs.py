"""Naming a table's new files in as few ``ducklake_add_data_files`` entries as possible: one glob where a listing
(DuckDB's ``glob()``, or the source's own S3 listing) confirms it names exactly those files, else one per folder,
else the paths themselves."""

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from ..locations import normalize_uri
from ..sources import SourceFile
from ..storage import Listings

_GLOB_CHARACTERS = ("*", "?", "[")
GLOB_REASON = "its path contains *, ? or [, which DuckDB expands as a glob (it could read other files); rename the file"


def has_glob_characters(uri: str) -> bool:
    return any(character in uri for character in _GLOB_CHARACTERS)


Groups = dict[tuple[str, str], list[str]]
"""Per table (lower-cased schema and name): its new files, sorted."""
Entries = dict[tuple[str, str], list[tuple[str, int]]]
"""Per table: the globs or paths naming its new files, each with the number of files it names."""


def group_by_table(files: dict[str, SourceFile], uris: list[str]) -> Groups:
    """Sorted locations per table, keyed case-insensitively as DuckDB compares names."""
    groups: Groups = {}
    for uri in sorted(uris):
        groups.setdefault((files[uri].schema.lower(), files[uri].table.lower()), []).append(uri)
    return dict(sorted(groups.items()))


def globs_or_paths(
    connection: duckdb.DuckDBPyConnection,
    groups: Groups,
    listings: Listings | None = None,
    registered_matching: Callable[[list[str]], set[str]] | None = None,
) -> Entries:
    """Per table, the fewest globs that name exactly its new files (paths where no glob does).

    A table's files get one glob across the folders of a partitioned layout, else one per folder:
    ``<folder>/<common name prefix>*<common suffix>`` (with a dot in the prefix, so under file-name table
    naming any file it matches belongs to this table), or ``<common folder>/*/.../<prefix>*<suffix>``. A
    glob is used only if it matches exactly those files: every folder level is listed once by DuckDB's
    ``glob()`` for all tables together, and each table's glob compared with that listing here. A file
    created in those folders between this check and the call that also matches is registered with the
    batch (the result, read back from the catalog, lists it).

    With ``listings`` (what the source's own S3 listing found, see :class:`.Listings`), a folder below a
    listed prefix is not listed again: its glob is compared with that listing, and then with the catalog's
    files it matches (``registered_matching(globs)``, required with ``listings``), so that an object stored
    after the listing and registered by another writer meanwhile is not added a second time. The window
    in which a newly stored object joins the batch then runs from the listing to the call.
    """
    if listings is not None and registered_matching is None:
        raise ValueError("globs_or_paths: listings need registered_matching, the catalog's files a glob matches")
    scopes: dict[tuple[str, int], tuple[set[str], bool]] = {}  # the objects there, and whether from listings
    listed: dict[tuple[str, str], list[_Glob]] = {}

    def fits(glob: _Glob | None, uris: list[str], key: tuple[str, str]) -> bool:
        if glob is None:
            return False
        scope = (glob.folder, glob.depth)
        if scope not in scopes:
            below = listings.below(*scope) if listings is not None else None
            if below is None:
                pattern = glob.folder + "/*" * glob.depth + "/*"
                rows = connection.execute("SELECT file FROM glob(?)", [pattern]).fetchall()
                scopes[scope] = ({normalize_uri(row[0]) for row in rows}, False)
            else:
                scopes[scope] = (below, True)
        stored, from_listing = scopes[scope]
        match = glob.matcher()
        if {path for path in stored if match(path)} != set(uris):
            return False
        if from_listing:
            listed.setdefault(key, []).append(glob)
        return True

    entries: Entries = {}
    for key, uris in groups.items():
        across = _table_glob(uris)
        if fits(across, uris, key):
            assert across is not None
            entries[key] = [(across.text, len(uris))]
            continue
        folders: dict[str, list[str]] = {}
        for uri in uris:
            folders.setdefault(uri.rpartition("/")[0], []).append(uri)
        found: list[tuple[str, int]] = []
        for folder, in_folder in folders.items():
            glob = _folder_glob(folder, in_folder)
            if glob is not None and fits(glob, in_folder, key):
                found.append((glob.text, len(in_folder)))
            else:
                found.extend((uri, 1) for uri in in_folder)
        entries[key] = found
    if listed and registered_matching is not None:
        registered = registered_matching(sorted({glob.text for globs in listed.values() for glob in globs}))
        spoiled = {
            key
            for key, globs in listed.items()
            if any(match(path) for match in [glob.matcher() for glob in globs] for path in registered)
        }
        if spoiled:
            entries.update(globs_or_paths(connection, {key: groups[key] for key in spoiled}))
    return entries


@dataclass(frozen=True)
class _Glob:
    """``<folder>/`` + ``*/`` x ``depth`` + ``<prefix>*<suffix>``."""

    folder: str
    depth: int
    prefix: str
    suffix: str

    @property
    def text(self) -> str:
        return f"{self.folder}/{'*/' * self.depth}{self.prefix}*{self.suffix}"

    def matcher(self) -> Callable[[str], object]:
        """DuckDB's reading of :attr:`text` (``*`` stays within one path segment), as a regex: the returned
        function's result is true for a path the glob matches."""
        pattern = re.compile(
            re.escape(self.folder + "/")
            + "[^/]*/" * self.depth
            + re.escape(self.prefix)
            + "[^/]*"
            + re.escape(self.suffix)
        )
        return pattern.fullmatch


def _table_glob(uris: list[str]) -> "_Glob | None":
    """One glob for files spread over folders at one depth below a common folder (a partitioned layout such
    as ``src/day=N/astronauts.K.parquet``): ``<common folder>/*/.../<common name prefix>*<common suffix>``."""
    if len(uris) < 2 or uris[0].startswith(("http://", "https://")):
        return None
    folders = {uri.rpartition("/")[0] for uri in uris}
    if len(folders) < 2:
        return None
    parts = [folder.split("/") for folder in folders]
    common: list[str] = []
    for pieces in zip(*parts, strict=False):
        if len(set(pieces)) != 1:
            break
        common.append(pieces[0])
    root = "/".join(common)
    depths = {len(folder) - len(common) for folder in parts}
    if len(depths) != 1 or root in folders or len(common) < 2 or not common[-1]:
        return None
    names = [uri.rpartition("/")[2] for uri in uris]
    prefix = os.path.commonprefix(names)
    suffix = os.path.commonprefix([name[len(prefix) :][::-1] for name in names])[::-1]
    if "." not in prefix or not suffix:
        return None
    return _Glob(root, depths.pop(), prefix, suffix)


def _folder_glob(folder: str, uris: list[str]) -> "_Glob | None":
    if len(uris) < 2 or uris[0].startswith(("http://", "https://")):
        return None
    names = [uri[len(folder) + 1 :] for uri in uris]
    prefix = os.path.commonprefix(names)
    rests = [name[len(prefix) :] for name in names]
    suffix = os.path.commonprefix([rest[::-1] for rest in rests])[::-1]
    if "." not in prefix or not suffix:
        return None
    return _Glob(folder, 0, prefix, suffix)
