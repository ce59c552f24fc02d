"""Claims that keep two registrations of the same source files apart without holding back the others.

Two registrations that race to add the same new file must not both add it. By default a registration
alters the tables it adds to (see :func:`~.registration.register_files`), so on a shared catalog the
later of two overlapping commits conflicts and starts over, having learnt what the first one added. That
also serialises registrations of *different* files into one table, which is what partition runs do by
design. For them the claim is a PostgreSQL advisory lock per partition instead: runs of different
partitions commit side by side, two runs of one partition take turns, and the second finds the files
registered.
"""

import contextlib
import hashlib
from collections.abc import Iterator, Sequence

from .catalog import PostgresCatalog
from .errors import CatalogConnectionError, RegistrationError, redact
from .lake import LakeSettings
from .optional import require

CLAIM_WAIT_SECONDS = 1800
"""How long a registration waits for another run of the same partition before giving up."""

MAX_CLAIMS = 64
"""Above this many partitions in one run the tables are claimed instead (PostgreSQL's lock table is finite)."""


def claim_id(settings: LakeSettings, name: str) -> int:
    """A signed 64-bit advisory-lock key for ``name`` in the lake of ``settings`` (its metadata schema)."""
    digest = hashlib.sha256(f"ducklake_assets\0{settings.metadata_schema or ''}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def claimed(settings: LakeSettings, names: Sequence[str]) -> Iterator[bool]:
    """Hold an advisory lock on each of ``names`` (waiting for other holders) while the block runs.

    Yields whether claims are held: only for a PostgreSQL catalog and 1 to :data:`MAX_CLAIMS` names; any
    other catalog yields ``False`` at once (a DuckDB file has one writer; SQLite serialises its writers).
    The locks belong to a connection of their own, so they end with it even if the process dies.
    """
    catalog = settings.catalog
    if not names or not isinstance(catalog, PostgresCatalog) or len(set(names)) > MAX_CLAIMS:
        yield False  # many partitions in one run (a backfill): claim the tables, not thousands of locks
        return
    psycopg = require("psycopg", "Claiming partitions on a PostgreSQL catalog")
    try:
        connection = psycopg.connect(catalog.conninfo(), password=catalog.password, autocommit=True)
    except psycopg.Error as error:
        raise CatalogConnectionError(
            f"Could not connect to {settings.describe()} to claim the files being registered: "
            f"{redact(str(error).strip(), settings.secrets())}"
        ) from None
    with connection:
        connection.execute("SELECT set_config('lock_timeout', %s, false)", [f"{CLAIM_WAIT_SECONDS}s"])
        for key, name in sorted({claim_id(settings, name): name for name in names}.items()):
            try:
                connection.execute("SELECT pg_advisory_lock(%s)", [key])
            except psycopg.errors.LockNotAvailable:
                raise RegistrationError(
                    f"Another run has been registering {name!r} into {settings.describe()} for {CLAIM_WAIT_SECONDS} s, "
                    "so nothing was registered: look for a stuck run of that partition and stop it"
                ) from None
        yield True
