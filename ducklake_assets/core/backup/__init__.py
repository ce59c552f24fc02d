"""Static backups of a DuckLake: the catalog as one DuckDB file that anyone can open read-only and, in
the default ``full`` mode, a copy of every data and delete file it references.

A backup copies every DuckLake table of the catalog database (DuckDB file, SQLite or PostgreSQL) into
schema ``main`` of a new DuckDB file, table by table inside one read transaction, so it holds exactly one
snapshot even while other writers commit. PostgreSQL catalogs are read the same way because DuckDB's
``COPY FROM DATABASE`` cannot copy their primary-key indexes and would put the tables in ``public``.

Two modes:

* ``full`` (default): every data and delete file any snapshot in the backup references, including
  source files registered by reference outside the data path, is copied into the backup store
  (``<backup_uri>/data/`` mirrors the data path, ``<backup_uri>/external/`` holds the rest), and the
  backup's catalog points at those copies. The backup survives the loss of the catalog database and
  of every data and source file. Files are shared by all backups in the store: a file an earlier backup
  copied is never copied again, and retention deletes a file only when no retained backup needs it.
* ``metadata``: the catalog only; the backup references the lake's own data files. For users who
  replicate the data bucket themselves.

Either way the backup opens with

.. code-block:: sql

    ATTACH 'ducklake:backup-20261121T050000000000Z-snapshot-42.ducklake' (READ_ONLY);

Each backup is staged in a private folder: its files are copied and verified (size and checksum), the
catalog file is checkpointed, opened read-only as a DuckLake and checked to hold the expected snapshot
and to reference nothing outside the backup store; only then is it exposed under ``backup_uri``: the
file index ``.files.json``, the manifest ``.json``, the versioned ``backup-<UTC time>-snapshot-<id>.ducklake``,
the stable copy ``latest.ducklake`` and last the pointer ``latest.json``. Every upload is atomic, so a
failure or a kill at any step leaves every earlier backup readable; the next run removes what a killed
run left behind. When the newest backup already holds the catalog's latest snapshot (same id, same commit
time, same data path) and its files are all in the store, nothing is written at all unless ``force`` asks
for a new backup.

The steps live in :mod:`.create`, :mod:`.retention` and :mod:`.checks`; what they share in :mod:`.layout`
(where things live in a store), :mod:`.manifest` (what a backup says about itself) and :mod:`.catalog_database`
(the catalog read directly).
"""

from .catalog_database import attach_catalog_database as attach_catalog_database
from .catalog_database import catalog_extensions as catalog_extensions
from .catalog_database import ducklake_tables as ducklake_tables
from .checks import BackupFilesReport as BackupFilesReport
from .checks import BackupLag as BackupLag
from .checks import RestorabilityReport as RestorabilityReport
from .checks import TableRowCheck as TableRowCheck
from .checks import backup_lag as backup_lag
from .checks import backup_referenced_files as backup_referenced_files
from .checks import check_backup_files as check_backup_files
from .checks import check_backup_restorable as check_backup_restorable
from .create import BackupMode as BackupMode
from .create import BackupResult as BackupResult
from .create import check_mode as check_mode
from .create import create_backup as create_backup
from .manifest import MANIFEST_TABLE as MANIFEST_TABLE
from .manifest import BackupInfo as BackupInfo
from .manifest import BackupManifest as BackupManifest
from .manifest import fetch_backup as fetch_backup
from .manifest import latest_backup as latest_backup
from .manifest import list_backups as list_backups
from .manifest import read_files_index as read_files_index
from .manifest import read_manifest as read_manifest
from .manifest import read_manifest_from_file as read_manifest_from_file
from .retention import BackupPin as BackupPin
from .retention import PruneResult as PruneResult
from .retention import apply_retention as apply_retention
from .retention import check_retention as check_retention
from .retention import list_pins as list_pins
from .retention import pin_backup as pin_backup
from .retention import prune_backups as prune_backups
from .retention import unpin_backup as unpin_backup

__all__ = [
    "BackupFilesReport",
    "BackupInfo",
    "BackupLag",
    "BackupManifest",
    "BackupMode",
    "BackupPin",
    "BackupResult",
    "MANIFEST_TABLE",
    "PruneResult",
    "RestorabilityReport",
    "TableRowCheck",
    "apply_retention",
    "attach_catalog_database",
    "backup_lag",
    "backup_referenced_files",
    "catalog_extensions",
    "check_backup_files",
    "check_backup_restorable",
    "check_mode",
    "check_retention",
    "create_backup",
    "ducklake_tables",
    "fetch_backup",
    "latest_backup",
    "list_backups",
    "list_pins",
    "pin_backup",
    "prune_backups",
    "read_files_index",
    "read_manifest",
    "read_manifest_from_file",
    "unpin_backup",
]
