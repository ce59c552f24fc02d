"""Publishing a frozen DuckLake: a read-only catalog file that anyone can attach from S3, HTTP or a folder.

A frozen lake is a DuckDB-file DuckLake catalog copied to where readers are, whose data files are
referenced by absolute path or URL. Readers need no database server: ``ATTACH 'ducklake:<url>' AS x
(READ_ONLY)`` is enough. This package makes such a file from a catalog file without ever touching the
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

The flow lives in :mod:`.publication`, the private copy's preparation in :mod:`.staging`, the revisions in
:mod:`.revisions`, the stranger's check in :mod:`.stranger` and what a reader sees in :mod:`.contents`.
"""

from .contents import LakeContents as LakeContents
from .contents import attach_statement as attach_statement
from .contents import catalog_contents as catalog_contents
from .contents import table_key as table_key
from .publication import PublishResult as PublishResult
from .publication import publish_frozen_lake as publish_frozen_lake
from .revisions import KEEP_REVISIONS as KEEP_REVISIONS
from .revisions import PUBLICATION_TABLE as PUBLICATION_TABLE
from .revisions import Revision as Revision
from .revisions import current_revision as current_revision
from .revisions import list_revisions as list_revisions
from .revisions import prune_revisions as prune_revisions
from .revisions import revision_uri as revision_uri
from .stranger import StrangerReport as StrangerReport
from .stranger import report_from_json as report_from_json
from .stranger import report_to_json as report_to_json
from .stranger import verify_as_stranger as verify_as_stranger

__all__ = [
    "KEEP_REVISIONS",
    "LakeContents",
    "PUBLICATION_TABLE",
    "PublishResult",
    "Revision",
    "StrangerReport",
    "attach_statement",
    "catalog_contents",
    "current_revision",
    "list_revisions",
    "prune_revisions",
    "publish_frozen_lake",
    "report_from_json",
    "report_to_json",
    "revision_uri",
    "table_key",
    "verify_as_stranger",
]
