"""Dagster assets that run a DuckLake through its whole life: register, snapshot, back up, publish.

Every public name is importable from here. They load lazily, so ``import ducklake_assets.core.backup``
(or any other core module) never imports Dagster: the core runs in scripts, notebooks and CLIs without it.
"""

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

if TYPE_CHECKING:
    from .backup_assets import RestoreCatalogConfig as RestoreCatalogConfig
    from .backup_assets import build_backup_definitions as build_backup_definitions
    from .cdc_assets import PostgresSourceResource as PostgresSourceResource
    from .cdc_assets import build_cdc_definitions as build_cdc_definitions
    from .component import DuckLakePipelineComponent as DuckLakePipelineComponent
    from .core.backup import BackupInfo as BackupInfo
    from .core.backup import BackupManifest as BackupManifest
    from .core.backup import BackupPin as BackupPin
    from .core.backup import BackupResult as BackupResult
    from .core.backup import apply_retention as apply_retention
    from .core.backup import backup_referenced_files as backup_referenced_files
    from .core.backup import check_backup_files as check_backup_files
    from .core.backup import create_backup as create_backup
    from .core.backup import latest_backup as latest_backup
    from .core.backup import list_backups as list_backups
    from .core.backup import list_pins as list_pins
    from .core.backup import pin_backup as pin_backup
    from .core.backup import prune_backups as prune_backups
    from .core.backup import read_manifest as read_manifest
    from .core.backup import unpin_backup as unpin_backup
    from .core.catalog import DuckDBCatalog as DuckDBCatalog
    from .core.catalog import PostgresCatalog as PostgresCatalog
    from .core.catalog import SQLiteCatalog as SQLiteCatalog
    from .core.catalog import parse_catalog as parse_catalog
    from .core.cdc import CaptureSettings as CaptureSettings
    from .core.cdc import apply_to_mirrors as apply_to_mirrors
    from .core.cdc import pending_changes as pending_changes
    from .core.cdc import setup_capture as setup_capture
    from .core.cdc import teardown_capture as teardown_capture
    from .core.cdc import transfer_batch as transfer_batch
    from .core.errors import BackupError as BackupError
    from .core.errors import BadSourceFileError as BadSourceFileError
    from .core.errors import CatalogConnectionError as CatalogConnectionError
    from .core.errors import CDCError as CDCError
    from .core.errors import ConfigurationError as ConfigurationError
    from .core.errors import DuckLakeAssetsError as DuckLakeAssetsError
    from .core.errors import ExtensionNotAvailableError as ExtensionNotAvailableError
    from .core.errors import LakeIOError as LakeIOError
    from .core.errors import MaintenanceError as MaintenanceError
    from .core.errors import NotFoundError as NotFoundError
    from .core.errors import PublishError as PublishError
    from .core.errors import ReadOnlyLakeError as ReadOnlyLakeError
    from .core.errors import RegistrationError as RegistrationError
    from .core.errors import RestoreError as RestoreError
    from .core.errors import SchemaDriftError as SchemaDriftError
    from .core.errors import SQLCommandError as SQLCommandError
    from .core.errors import StorageError as StorageError
    from .core.errors import WriteConflictError as WriteConflictError
    from .core.lake import LakeSettings as LakeSettings
    from .core.lake import connect_lake as connect_lake
    from .core.maintenance import MaintenancePolicy as MaintenancePolicy
    from .core.maintenance import RetainedCopies as RetainedCopies
    from .core.maintenance import retained_copies as retained_copies
    from .core.maintenance import run_maintenance as run_maintenance
    from .core.publish import PublishResult as PublishResult
    from .core.publish import StrangerReport as StrangerReport
    from .core.publish import list_revisions as list_revisions
    from .core.publish import prune_revisions as prune_revisions
    from .core.publish import publish_frozen_lake as publish_frozen_lake
    from .core.publish import verify_as_stranger as verify_as_stranger
    from .core.registration import RegistrationResult as RegistrationResult
    from .core.registration import register_files as register_files
    from .core.restore import RestoreResult as RestoreResult
    from .core.restore import SnapshotSummary as SnapshotSummary
    from .core.restore import restore_backup as restore_backup
    from .core.retry import RetryPolicy as RetryPolicy
    from .core.s3 import S3Settings as S3Settings
    from .core.sources import FileSource as FileSource
    from .core.sources import SourceFile as SourceFile
    from .core.sources import TableNaming as TableNaming
    from .core.sql_commands import SQLCommand as SQLCommand
    from .core.storage import Listings as Listings
    from .core.storage import ObjectStore as ObjectStore
    from .io_manager import DuckLakeIOManager as DuckLakeIOManager
    from .maintenance_assets import build_maintenance_definitions as build_maintenance_definitions
    from .options import BackupOptions as BackupOptions
    from .options import CheckOptions as CheckOptions
    from .options import PublishOptions as PublishOptions
    from .options import ScheduleOptions as ScheduleOptions
    from .options import SensorOptions as SensorOptions
    from .options import SourceOptions as SourceOptions
    from .partitions import SourcePartitions as SourcePartitions
    from .pipeline import build_ducklake_pipeline as build_ducklake_pipeline
    from .publish_assets import build_publish_definitions as build_publish_definitions
    from .resources import DuckDBCatalogConfig as DuckDBCatalogConfig
    from .resources import DuckLakeResource as DuckLakeResource
    from .resources import PostgresCatalogConfig as PostgresCatalogConfig
    from .resources import S3Resource as S3Resource
    from .resources import SQLiteCatalogConfig as SQLiteCatalogConfig
    from .snapshot_assets import catalog_snapshot_asset as catalog_snapshot_asset
    from .snapshot_assets import new_file_sensor as new_file_sensor
    from .snapshot_assets import registration_assets as registration_assets
    from .snapshot_assets import written_paths_metadata as written_paths_metadata
    from .sql_assets import ducklake_sql_asset as ducklake_sql_asset
    from .translator import AttributesTranslator as AttributesTranslator
    from .translator import DuckLakeTranslator as DuckLakeTranslator
    from .translator import LakeTable as LakeTable

_EXPORTS: dict[str, str] = {
    "RestoreCatalogConfig": ".backup_assets",
    "build_backup_definitions": ".backup_assets",
    "PostgresSourceResource": ".cdc_assets",
    "build_cdc_definitions": ".cdc_assets",
    "DuckLakePipelineComponent": ".component",
    "DuckLakeIOManager": ".io_manager",
    "BackupInfo": ".core.backup",
    "BackupManifest": ".core.backup",
    "BackupPin": ".core.backup",
    "BackupResult": ".core.backup",
    "apply_retention": ".core.backup",
    "backup_referenced_files": ".core.backup",
    "check_backup_files": ".core.backup",
    "create_backup": ".core.backup",
    "latest_backup": ".core.backup",
    "list_backups": ".core.backup",
    "list_pins": ".core.backup",
    "pin_backup": ".core.backup",
    "prune_backups": ".core.backup",
    "read_manifest": ".core.backup",
    "unpin_backup": ".core.backup",
    "DuckDBCatalog": ".core.catalog",
    "PostgresCatalog": ".core.catalog",
    "SQLiteCatalog": ".core.catalog",
    "parse_catalog": ".core.catalog",
    "CaptureSettings": ".core.cdc",
    "apply_to_mirrors": ".core.cdc",
    "pending_changes": ".core.cdc",
    "setup_capture": ".core.cdc",
    "teardown_capture": ".core.cdc",
    "transfer_batch": ".core.cdc",
    "BackupError": ".core.errors",
    "BadSourceFileError": ".core.errors",
    "CDCError": ".core.errors",
    "CatalogConnectionError": ".core.errors",
    "ConfigurationError": ".core.errors",
    "DuckLakeAssetsError": ".core.errors",
    "ExtensionNotAvailableError": ".core.errors",
    "MaintenanceError": ".core.errors",
    "PublishError": ".core.errors",
    "ReadOnlyLakeError": ".core.errors",
    "RegistrationError": ".core.errors",
    "RestoreError": ".core.errors",
    "SQLCommandError": ".core.errors",
    "SchemaDriftError": ".core.errors",
    "StorageError": ".core.errors",
    "LakeIOError": ".core.errors",
    "NotFoundError": ".core.errors",
    "WriteConflictError": ".core.errors",
    "LakeSettings": ".core.lake",
    "connect_lake": ".core.lake",
    "MaintenancePolicy": ".core.maintenance",
    "RetainedCopies": ".core.maintenance",
    "retained_copies": ".core.maintenance",
    "run_maintenance": ".core.maintenance",
    "PublishResult": ".core.publish",
    "StrangerReport": ".core.publish",
    "list_revisions": ".core.publish",
    "prune_revisions": ".core.publish",
    "publish_frozen_lake": ".core.publish",
    "verify_as_stranger": ".core.publish",
    "RegistrationResult": ".core.registration",
    "register_files": ".core.registration",
    "RestoreResult": ".core.restore",
    "SnapshotSummary": ".core.restore",
    "restore_backup": ".core.restore",
    "RetryPolicy": ".core.retry",
    "S3Settings": ".core.s3",
    "FileSource": ".core.sources",
    "SourceFile": ".core.sources",
    "TableNaming": ".core.sources",
    "SQLCommand": ".core.sql_commands",
    "Listings": ".core.storage",
    "ObjectStore": ".core.storage",
    "build_maintenance_definitions": ".maintenance_assets",
    "build_ducklake_pipeline": ".pipeline",
    "build_publish_definitions": ".publish_assets",
    "DuckDBCatalogConfig": ".resources",
    "DuckLakeResource": ".resources",
    "PostgresCatalogConfig": ".resources",
    "S3Resource": ".resources",
    "SQLiteCatalogConfig": ".resources",
    "SourcePartitions": ".partitions",
    "BackupOptions": ".options",
    "CheckOptions": ".options",
    "PublishOptions": ".options",
    "ScheduleOptions": ".options",
    "SensorOptions": ".options",
    "SourceOptions": ".options",
    "catalog_snapshot_asset": ".snapshot_assets",
    "new_file_sensor": ".snapshot_assets",
    "registration_assets": ".snapshot_assets",
    "written_paths_metadata": ".snapshot_assets",
    "AttributesTranslator": ".translator",
    "DuckLakeTranslator": ".translator",
    "LakeTable": ".translator",
    "ducklake_sql_asset": ".sql_assets",
}

__all__ = [
    "__version__",
    "AttributesTranslator",
    "DuckLakeIOManager",
    "DuckLakeTranslator",
    "LakeIOError",
    "LakeTable",
    "NotFoundError",
    "registration_assets",
    "written_paths_metadata",
    "apply_retention",
    "apply_to_mirrors",
    "backup_referenced_files",
    "BackupError",
    "BackupInfo",
    "BackupManifest",
    "BackupPin",
    "BackupResult",
    "BadSourceFileError",
    "build_backup_definitions",
    "build_cdc_definitions",
    "build_ducklake_pipeline",
    "build_maintenance_definitions",
    "build_publish_definitions",
    "CaptureSettings",
    "catalog_snapshot_asset",
    "CatalogConnectionError",
    "CDCError",
    "check_backup_files",
    "ConfigurationError",
    "connect_lake",
    "create_backup",
    "DuckDBCatalog",
    "DuckDBCatalogConfig",
    "ducklake_sql_asset",
    "DuckLakeAssetsError",
    "DuckLakePipelineComponent",
    "DuckLakeResource",
    "ExtensionNotAvailableError",
    "FileSource",
    "LakeSettings",
    "latest_backup",
    "list_backups",
    "list_pins",
    "list_revisions",
    "MaintenanceError",
    "MaintenancePolicy",
    "new_file_sensor",
    "Listings",
    "ObjectStore",
    "parse_catalog",
    "pending_changes",
    "pin_backup",
    "PostgresCatalog",
    "PostgresCatalogConfig",
    "PostgresSourceResource",
    "prune_backups",
    "prune_revisions",
    "publish_frozen_lake",
    "PublishError",
    "PublishResult",
    "read_manifest",
    "ReadOnlyLakeError",
    "register_files",
    "RegistrationError",
    "RegistrationResult",
    "restore_backup",
    "RestoreCatalogConfig",
    "RestoreError",
    "RestoreResult",
    "retained_copies",
    "RetainedCopies",
    "RetryPolicy",
    "run_maintenance",
    "S3Resource",
    "S3Settings",
    "SchemaDriftError",
    "setup_capture",
    "SnapshotSummary",
    "SourceFile",
    "SourcePartitions",
    "BackupOptions",
    "CheckOptions",
    "PublishOptions",
    "ScheduleOptions",
    "SensorOptions",
    "SourceOptions",
    "SQLCommand",
    "SQLCommandError",
    "SQLiteCatalog",
    "SQLiteCatalogConfig",
    "StorageError",
    "StrangerReport",
    "TableNaming",
    "teardown_capture",
    "transfer_batch",
    "unpin_backup",
    "verify_as_stranger",
    "WriteConflictError",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
