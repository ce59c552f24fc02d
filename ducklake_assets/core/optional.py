"""Optional dependencies: what a purely local lake does not need is imported only where it is used.

``boto3`` (extra ``[s3]``) reaches S3; ``psycopg`` (extra ``[postgres]``) parses PostgreSQL connection
strings, claims partitions and captures changes. Importing one that is missing raises an error naming the
extra to install, at the moment a feature needs it.
"""

import importlib
from types import ModuleType

from .errors import ConfigurationError

EXTRAS = {"boto3": "s3", "botocore": "s3", "psycopg": "postgres"}


def require(module: str, needed_for: str) -> ModuleType:
    """Import ``module`` (e.g. ``"psycopg.conninfo"``), or explain which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".", 1)[0]
        extra = EXTRAS.get(top, top)
        raise ConfigurationError(
            f"{needed_for} needs the Python package {top!r}, which is not installed: "
            f"pip install 'ducklake-assets[{extra}]'"
        ) from None
