"""One exception hierarchy for the library, so callers can catch ``DuckLakeAssetsError``."""


class DuckLakeAssetsError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigurationError(DuckLakeAssetsError):
    """A setting is missing, malformed or contradicts another one."""


class ExtensionNotAvailableError(DuckLakeAssetsError):
    """A DuckDB extension could neither be loaded from its wheel nor installed."""


class CatalogConnectionError(DuckLakeAssetsError):
    """The DuckLake catalog could not be attached (server down, wrong password, missing path)."""


class ReadOnlyLakeError(DuckLakeAssetsError):
    """A write was attempted through a lake attached read-only."""


class StorageError(DuckLakeAssetsError):
    """A local folder or object store could not be listed, read or written."""


class NotFoundError(StorageError):
    """A folder, prefix or object that was expected is not there (yet)."""


class AlreadyExistsError(StorageError):
    """A create-only write found the target already there (another writer claimed it first)."""


class ChangedError(StorageError):
    """A conditional replace found the target changed since it was read (another writer replaced it)."""


class RegistrationError(DuckLakeAssetsError):
    """Source Parquet files could not be registered into the catalog."""


class SchemaDriftError(RegistrationError):
    """A source file's columns do not match its table under the configured drift policy."""


class BadSourceFileError(RegistrationError):
    """A source file is not readable Parquet (corrupt, empty, gone or not Parquet at all)."""


class BackupError(DuckLakeAssetsError):
    """A static backup could not be written, verified or exposed."""


class RestoreError(DuckLakeAssetsError):
    """A backup could not be restored, or a restore guard refused it."""


class PublishError(DuckLakeAssetsError):
    """A frozen lake could not be published or verified."""


class CDCError(DuckLakeAssetsError):
    """Change data capture from PostgreSQL failed."""


class MaintenanceError(DuckLakeAssetsError):
    """A maintenance step was refused because it would break a promise the lake keeps."""


class SQLCommandError(DuckLakeAssetsError):
    """A user SQL command failed."""


class LakeIOError(DuckLakeAssetsError):
    """An asset's output could not be written to its lake table, or an input could not be read from one."""


class WriteConflictError(DuckLakeAssetsError):
    """A write kept conflicting with concurrent writers after every retry."""


def redact(text: str, secrets: "list[str] | tuple[str, ...]") -> str:
    """Replace every secret (and its SQL-escaped form) in ``text`` with ``***``."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        for form in (secret, secret.replace("'", "''"), secret.replace("'", "\\'")):
            text = text.replace(form, "***")
    return text
