"""Dagster assets that run a DuckLake through its whole life."""

from .core.catalog import DuckDBCatalog as DuckDBCatalog
from .core.catalog import PostgresCatalog as PostgresCatalog
from .core.catalog import SQLiteCatalog as SQLiteCatalog
from .core.catalog import parse_catalog as parse_catalog
from .core.errors import BackupError as BackupError
from .core.errors import CatalogConnectionError as CatalogConnectionError
from .core.errors import ConfigurationError as ConfigurationError
from .core.errors import DuckLakeAssetsError as DuckLakeAssetsError
from .core.errors import ExtensionNotAvailableError as ExtensionNotAvailableError
from .core.errors import PublishError as PublishError
from .core.errors import ReadOnlyLakeError as ReadOnlyLakeError
from .core.errors import RegistrationError as RegistrationError
from .core.errors import RestoreError as RestoreError
from .core.errors import StorageError as StorageError
from .core.lake import LakeSettings as LakeSettings
from .core.lake import connect_lake as connect_lake
from .core.s3 import S3Settings as S3Settings
from .core.storage import ObjectStore as ObjectStore
from .resources import DuckDBCatalogConfig as DuckDBCatalogConfig
from .resources import DuckLakeResource as DuckLakeResource
from .resources import PostgresCatalogConfig as PostgresCatalogConfig
from .resources import S3Resource as S3Resource
from .resources import SQLiteCatalogConfig as SQLiteCatalogConfig

__all__ = [
    "BackupError",
    "CatalogConnectionError",
    "ConfigurationError",
    "DuckDBCatalog",
    "DuckDBCatalogConfig",
    "DuckLakeAssetsError",
    "DuckLakeResource",
    "ExtensionNotAvailableError",
    "LakeSettings",
    "ObjectStore",
    "PostgresCatalog",
    "PostgresCatalogConfig",
    "PublishError",
    "ReadOnlyLakeError",
    "RegistrationError",
    "RestoreError",
    "S3Resource",
    "S3Settings",
    "SQLiteCatalog",
    "SQLiteCatalogConfig",
    "StorageError",
    "connect_lake",
    "parse_catalog",
]
