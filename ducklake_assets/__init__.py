"""Dagster assets that run a DuckLake through its whole life: register, snapshot, back up, publish."""

from .backup_assets import RestoreCatalogConfig as RestoreCatalogConfig
from .backup_assets import build_backup_definitions as build_backup_definitions
from .cdc_assets import PostgresSourceResource as PostgresSourceResource
from .cdc_assets import build_cdc_definitions as build_cdc_definitions
from .component import DuckLakePipelineComponent as DuckLakePipelineComponent
from .core.backup import BackupInfo as BackupInfo
from .core.backup import BackupManifest as BackupManifest
from .core.backup import BackupResult as BackupResult
from .core.backup import apply_retention as apply_retention
from .core.backup import backup_referenced_files as backup_referenced_files
from .core.backup import create_backup as create_backup
from .core.backup import latest_backup as latest_backup
from .core.backup import list_backups as list_backups
from .core.backup import read_manifest as read_manifest
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
from .core.errors import MaintenanceError as MaintenanceError
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
from .core.storage import ObjectStore as ObjectStore
from .maintenance_assets import build_maintenance_definitions as build_maintenance_definitions
from .pipeline import build_ducklake_pipeline as build_ducklake_pipeline
from .publish_assets import build_publish_definitions as build_publish_definitions
from .resources import DuckDBCatalogConfig as DuckDBCatalogConfig
from .resources import DuckLakeResource as DuckLakeResource
from .resources import PostgresCatalogConfig as PostgresCatalogConfig
from .resources import S3Resource as S3Resource
from .resources import SQLiteCatalogConfig as SQLiteCatalogConfig
from .snapshot_assets import catalog_snapshot_asset as catalog_snapshot_asset
from .snapshot_assets import new_file_sensor as new_file_sensor
from .sql_assets import ducklake_sql_asset as ducklake_sql_asset

__all__ = [
    "apply_retention",
    "apply_to_mirrors",
    "backup_referenced_files",
    "BackupError",
    "BackupInfo",
    "BackupManifest",
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
    "list_revisions",
    "MaintenanceError",
    "MaintenancePolicy",
    "new_file_sensor",
    "ObjectStore",
    "parse_catalog",
    "pending_changes",
    "PostgresCatalog",
    "PostgresCatalogConfig",
    "PostgresSourceResource",
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
    "SQLCommand",
    "SQLCommandError",
    "SQLiteCatalog",
    "SQLiteCatalogConfig",
    "StorageError",
    "StrangerReport",
    "TableNaming",
    "teardown_capture",
    "transfer_batch",
    "verify_as_stranger",
    "WriteConflictError",
]
