"""What a change data capture captures and where it lives: the settings shared by capture, transfer and
mirrors, and the names of the tables they share."""

from dataclasses import dataclass

from ..catalog import PostgresCatalog
from ..errors import ConfigurationError

CHANGE_TABLE = "changes"
"""The live change table in the audit schema; also the name of the change log in the lake."""
BATCHES_TABLE = "batches"
"""Lake table listing every batch copied into the lake (what makes a re-copy detectable)."""
MIRRORED_BATCHES_TABLE = "mirrored_batches"
"""Lake table listing the batches already applied to the mirrors."""


@dataclass(frozen=True)
class CaptureSettings:
    """What to capture and where the capture lives.

    ``source`` is the source database's connection (libpq keywords, password held apart so it never shows
    in a message). ``schema`` and ``tables`` (shell-style patterns such as ``"order*"``) choose the captured
    tables; ``audit_schema`` is the PostgreSQL schema holding the change table; ``lake_schema`` is the
    lake schema holding the change log. Run setup and transfers as the same role: it owns the change table.
    """

    source: PostgresCatalog
    schema: str = "public"
    tables: tuple[str, ...] = ("*",)
    audit_schema: str = "audit"
    lake_schema: str = "cdc"

    def __post_init__(self) -> None:
        if isinstance(self.tables, str) or not self.tables or not all(isinstance(p, str) and p for p in self.tables):
            raise ConfigurationError("CDC tables must be a non-empty list of table names or patterns like 'order*'")
        if self.schema == self.audit_schema:
            raise ConfigurationError(
                f"CDC schema {self.schema!r} is also the audit schema: the change table cannot capture itself; "
                "choose another audit_schema"
            )
        if not 0 < len(self.audit_schema.encode()) <= 40:
            raise ConfigurationError(f"audit_schema {self.audit_schema!r} must be 1 to 40 bytes long")

    def secrets(self) -> list[str]:
        """Values that must never appear in a message."""
        return [self.source.password] if self.source.password else []

    def describe(self) -> str:
        """The source database, safe to show."""
        return self.source.describe()


@dataclass(frozen=True)
class CapturedTable:
    """A source table and the primary key its changes are applied by."""

    schema: str
    name: str
    key_columns: tuple[str, ...]
