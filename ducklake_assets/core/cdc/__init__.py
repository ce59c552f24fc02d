"""Trigger-based change data capture from PostgreSQL into DuckLake, in mini-batches, exactly once.

In the source database, :func:`setup_capture` installs an ``audit`` schema (name configurable) holding an
UNLOGGED change table, one trigger function and row triggers on the chosen tables: every insert, update,
delete (and truncate) becomes a row with a UUID, a capture time, a capture sequence number, the operation,
the table and the row as JSONB. Nothing else runs in the source: no replication slot, no extra server.

:func:`transfer_batch` moves what was captured into the lake:

1. *swap*: in one PostgreSQL transaction a fresh change table is created like the old one and the two are
   renamed, so the triggers write on into the new table and the old one becomes ``audit.batch_<id>``;
2. *copy*: in one DuckLake transaction the batch is inserted into ``<lake>.cdc.changes`` and its id into
   ``<lake>.cdc.batches``;
3. *drop*: the batch table is dropped.

A crash between any two steps leaves a ``batch_<id>`` table behind. The next transfer resumes such
batches first, oldest first, and skips the copy of a batch the lake already lists, so no change is lost
or copied twice. The one loss a trigger-based capture cannot prevent is a *PostgreSQL* crash: UNLOGGED
tables are emptied by crash recovery (that is the price of not writing the changes to the WAL).

:func:`apply_to_mirrors` keeps, per captured table, a current-state copy in the lake (``<lake>.<source
schema>.<table>``), applying the transferred changes in capture order per primary key.

The steps live in :mod:`.capture`, :mod:`.transfer` and :mod:`.mirrors`; what they share in :mod:`.settings`
(what is captured) and :mod:`.source` (the source database).
"""

from .capture import SetupResult as SetupResult
from .capture import TeardownResult as TeardownResult
from .capture import pending_changes as pending_changes
from .capture import setup_capture as setup_capture
from .capture import teardown_capture as teardown_capture
from .mirrors import MirrorReport as MirrorReport
from .mirrors import MirrorResult as MirrorResult
from .mirrors import apply_to_mirrors as apply_to_mirrors
from .settings import BATCHES_TABLE as BATCHES_TABLE
from .settings import CHANGE_TABLE as CHANGE_TABLE
from .settings import MIRRORED_BATCHES_TABLE as MIRRORED_BATCHES_TABLE
from .settings import CapturedTable as CapturedTable
from .settings import CaptureSettings as CaptureSettings
from .source import PendingChanges as PendingChanges
from .transfer import BatchReport as BatchReport
from .transfer import Checkpoint as Checkpoint
from .transfer import TransferResult as TransferResult
from .transfer import TransferStep as TransferStep
from .transfer import transfer_batch as transfer_batch

__all__ = [
    "BATCHES_TABLE",
    "CHANGE_TABLE",
    "MIRRORED_BATCHES_TABLE",
    "BatchReport",
    "CaptureSettings",
    "CapturedTable",
    "Checkpoint",
    "MirrorReport",
    "MirrorResult",
    "PendingChanges",
    "SetupResult",
    "TeardownResult",
    "TransferResult",
    "TransferStep",
    "apply_to_mirrors",
    "pending_changes",
    "setup_capture",
    "teardown_capture",
    "transfer_batch",
]
