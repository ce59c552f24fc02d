"""Lake maintenance that keeps every promise the lake makes: registered files, backups, published revisions.

DuckLake 1.5 maintains a lake with four functions, and two of them, measured, break promises on their own:

* ``ducklake_merge_adjacent_files`` rewrites history: the files it merges leave the catalog at once and are
  scheduled for deletion (no snapshot keeps them), files registered from outside the data path included;
* ``ducklake_cleanup_old_files`` deletes every scheduled file wherever it lives, so after a merge (or a
  ``DROP TABLE`` and snapshot expiry) it deletes the user's registered source files;
* ``ducklake_expire_snapshots`` never expires the latest snapshot and takes an explicit ``versions`` list;
  the files no remaining snapshot sees are scheduled for deletion;
* ``ducklake_flush_inlined_data`` writes rows inlined in the catalog out to Parquet files.

:func:`run_maintenance` therefore runs the steps in that order but guards them:

1. flush inlined data;
2. merge adjacent files table by table, skipping tables that hold files outside the data path;
3. expire the snapshots the policy selects, except those a retained backup or published revision holds;
4. clean up itself instead of calling ``ducklake_cleanup_old_files``: of the scheduled files, delete the
   ones under the data path that no retained backup or published revision references; hand files outside
   the data path back to their owner (unschedule them, never touch them); leave the rest scheduled for a
   later run, when the backup that needs them may be gone.

A dry run changes nothing and reports what each step would do.
"""

import bisect
import functools
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TypedDict

import duckdb

from .backup.checks import backup_referenced_files, catalog_file_references
from .backup.manifest import list_backups
from .errors import ConfigurationError, MaintenanceError, StorageError, redact
from .files import lake_data_path, lake_files, scheduled_files
from .lake import LakeSettings, connect_lake, metadata_prefix
from .locations import is_within
from .publish.revisions import list_revisions
from .retry import RetryLogger, RetryPolicy, execute_with_retry
from .sql import quote_identifier
from .storage import ObjectStore

Step = Literal["flush_inlined_data", "merge_adjacent_files", "expire_snapshots", "cleanup_old_files"]
STEPS: tuple[Step, ...] = ("flush_inlined_data", "merge_adjacent_files", "expire_snapshots", "cleanup_old_files")
FileAction = Literal["delete", "keep", "release"]


@dataclass(frozen=True)
class RetainedCopies:
    """What retained backups and published revisions need from the live lake.

    ``snapshot_ids`` must stay in the catalog (a backup is checked by time travel to its snapshot);
    ``files`` (absolute paths or URLs) must stay on storage. A file also counts as needed when a retained
    copy references a file of the same name, because a published copy may reach the data folder through
    another URL (``https://...`` for ``/srv/lake/...``) while DuckLake's file names are unique.
    ``sources`` names the copies consulted, for reports.
    """

    snapshot_ids: frozenset[int] = frozenset()
    files: frozenset[str] = frozenset()
    sources: tuple[str, ...] = ()

    @functools.cached_property
    def _file_names(self) -> frozenset[str]:
        return frozenset(_file_name(path) for path in self.files)

    def references(self, path: str) -> bool:
        """Whether a retained copy needs the file at ``path``."""
        return path in self.files or _file_name(path) in self._file_names

    def __or__(self, other: "RetainedCopies") -> "RetainedCopies":
        return RetainedCopies(
            self.snapshot_ids | other.snapshot_ids, self.files | other.files, self.sources + other.sources
        )


def retained_copies(
    *, backup_uris: Iterable[str] = (), publish_uris: Iterable[str] = (), store: ObjectStore | None = None
) -> RetainedCopies:
    """Collect what the versioned backups under each of ``backup_uris`` and the revisions of each of
    ``publish_uris`` need: their snapshots and every data or delete file they reference (history included).

    ``store`` reaches those locations (default: local files only). Each backup and revision is downloaded
    once. A location holding no backup or revision is refused with :class:`MaintenanceError`: a mistyped
    location would otherwise protect nothing.
    """
    store = store or ObjectStore()
    found = RetainedCopies()
    for backup_uri in backup_uris:
        backups = list_backups(backup_uri, store)
        if not backups:
            raise MaintenanceError(
                f"Backup location {backup_uri} holds no backup, so maintenance could not protect it: check the "
                "location (a mistyped one protects nothing), take a first backup, or leave it out."
            )
        for backup in backups:
            files = backup_referenced_files(backup.uri, store, include_history=True)
            found |= RetainedCopies(frozenset({backup.snapshot_id}), frozenset(files), (backup.uri,))
    for publish_uri in publish_uris:
        revisions = list_revisions(publish_uri, store)
        if not revisions:
            raise MaintenanceError(
                f"Published lake {publish_uri} has no revision, so maintenance could not protect it: check the "
                "location (a mistyped one protects nothing), publish first, or leave it out."
            )
        for revision in revisions:
            with tempfile.TemporaryDirectory(prefix="ducklake-revision-") as folder:
                local = Path(folder) / "revision.ducklake"
                store.get_file(revision.uri, local)
                files = catalog_file_references(local)
            found |= RetainedCopies(frozenset({revision.snapshot_id}), frozenset(files), (revision.uri,))
    return found


@dataclass(frozen=True)
class MaintenancePolicy:
    """What maintenance may remove.

    Snapshots older than ``expire_older_than`` expire, except the newest ``keep_last_snapshots`` (when
    set); with neither set no snapshot expires. A scheduled file is deleted only after it has waited
    ``cleanup_older_than`` (readers that started before it was dropped may still be reading it). Tables
    holding files registered from outside the data path are not merged unless ``merge_external_files``:
    a merge copies their rows into the lake and drops the originals from the catalog.
    """

    expire_older_than: timedelta | None = timedelta(days=7)
    keep_last_snapshots: int | None = None
    cleanup_older_than: timedelta = timedelta(hours=1)
    merge_external_files: bool = False

    def __post_init__(self) -> None:
        if self.keep_last_snapshots is not None and self.keep_last_snapshots < 1:
            raise ConfigurationError(f"keep_last_snapshots must be at least 1, got {self.keep_last_snapshots}")
        for name in ("expire_older_than", "cleanup_older_than"):
            value = getattr(self, name)
            if value is not None and value < timedelta(0):
                raise ConfigurationError(f"{name} must not be negative, got {value}")


@dataclass(frozen=True)
class FileDecision:
    """What cleanup does (or, in a dry run, would do) with one file, and why."""

    path: str
    action: FileAction
    reason: str


@dataclass(frozen=True)
class MaintenanceReport:
    """What one maintenance run did, step by step (in a dry run: what it would do).

    ``flushed`` maps ``schema.table`` to rows written out of the catalog; ``merged`` maps it to
    ``(files merged, files written)`` (in a dry run: the table's current files, none written);
    ``merge_skipped`` to the reason it was left alone;
    ``protected_snapshots`` were due to expire but are kept for a retained copy.
    """

    dry_run: bool
    steps: tuple[Step, ...]
    flushed: dict[str, int] = field(default_factory=dict)
    merged: dict[str, tuple[int, int]] = field(default_factory=dict)
    merge_skipped: dict[str, str] = field(default_factory=dict)
    expired_snapshots: tuple[int, ...] = ()
    protected_snapshots: tuple[int, ...] = ()
    files: tuple[FileDecision, ...] = ()
    retained_sources: tuple[str, ...] = ()

    def files_with(self, action: FileAction) -> list[str]:
        return [decision.path for decision in self.files if decision.action == action]


class _StepResults(TypedDict, total=False):
    """The :class:`MaintenanceReport` fields the chosen steps fill in."""

    flushed: dict[str, int]
    merged: dict[str, tuple[int, int]]
    merge_skipped: dict[str, str]
    expired_snapshots: tuple[int, ...]
    protected_snapshots: tuple[int, ...]
    files: tuple[FileDecision, ...]


def run_maintenance(
    settings: LakeSettings,
    *,
    policy: MaintenancePolicy | None = None,
    retained: RetainedCopies | None = None,
    steps: Sequence[Step] = STEPS,
    dry_run: bool = False,
    store: ObjectStore | None = None,
    retry: RetryPolicy | None = None,
    log: RetryLogger | None = None,
) -> MaintenanceReport:
    """Run the maintenance ``steps`` (in their fixed order) on the lake of ``settings``.

    ``retained`` says what backups and published revisions need (see :func:`retained_copies`); nothing
    they need is expired or deleted, and no file outside the lake's data path is ever deleted. ``store``
    deletes data files (default: an ``ObjectStore`` with the lake's S3 settings). DuckLake calls that
    conflict with concurrent writers are retried by ``retry``.
    """
    policy = policy or MaintenancePolicy()
    retained = retained or RetainedCopies()
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise ConfigurationError(f"Unknown maintenance step(s) {unknown}; choose from {list(STEPS)}")
    if settings.read_only and not dry_run:
        raise MaintenanceError(
            f"DuckLake {settings.alias!r} ({settings.describe()}) is attached read-only: maintenance needs a "
            "writable lake (or run it as a dry run)."
        )
    chosen = tuple(step for step in STEPS if step in steps)
    store = store or ObjectStore(settings.s3)
    results: _StepResults = {}
    expiring: tuple[int, ...] = ()
    with connect_lake(settings, retry=retry, log=log) as connection:
        run = _Run(settings, policy, retained, dry_run, store, retry, log, connection)
        if "flush_inlined_data" in chosen:
            results["flushed"] = run.flush_inlined_data()
        if "merge_adjacent_files" in chosen:
            results["merged"], results["merge_skipped"] = run.merge_adjacent_files()
        if "expire_snapshots" in chosen:
            expiring, results["protected_snapshots"] = run.expire_snapshots()
            results["expired_snapshots"] = expiring
        if "cleanup_old_files" in chosen:
            results["files"] = run.cleanup_old_files(expiring)
    return MaintenanceReport(dry_run=dry_run, steps=chosen, retained_sources=retained.sources, **results)


@dataclass
class _Run:
    """One maintenance run's settings and connection, shared by its steps."""

    settings: LakeSettings
    policy: MaintenancePolicy
    retained: RetainedCopies
    dry_run: bool
    store: ObjectStore
    retry: RetryPolicy | None
    log: RetryLogger | None
    connection: duckdb.DuckDBPyConnection

    @functools.cached_property
    def data_path(self) -> str:
        return lake_data_path(self.connection, self.settings)

    @property
    def alias(self) -> str:
        return self.settings.alias

    @property
    def metadata(self) -> str:
        return metadata_prefix(self.alias, self.settings.catalog_schema)

    def call(self, what: str, sql: str, parameters: Sequence[object]) -> list[tuple]:
        try:
            return execute_with_retry(
                self.connection,
                sql,
                parameters,
                policy=self.retry,
                log=self.log,
                what=what,
                secrets=self.settings.secrets(),
            ).fetchall()
        except duckdb.Error as error:
            raise MaintenanceError(
                f"{what} failed on {self.settings.describe()}: {redact(str(error), self.settings.secrets())}"
            ) from None

    def tables(self) -> list[tuple[str, str]]:
        return self.connection.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ? ORDER BY 1, 2",
            [self.alias],
        ).fetchall()

    def flush_inlined_data(self) -> dict[str, int]:
        if not self.dry_run:
            rows = self.call("Flushing inlined data", "CALL ducklake_flush_inlined_data(?)", [self.alias])
            return {f"{schema}.{table}": int(count) for schema, table, count in rows if count}
        pending: dict[str, int] = {}
        inlined = self.connection.execute(
            f"SELECT s.schema_name, t.table_name, i.table_name FROM {self.metadata}.ducklake_inlined_data_tables i "
            f"JOIN {self.metadata}.ducklake_table t ON t.table_id = i.table_id AND t.end_snapshot IS NULL "
            f"JOIN {self.metadata}.ducklake_schema s ON s.schema_id = t.schema_id AND s.end_snapshot IS NULL"
        ).fetchall()
        for schema, table, inlined_table in inlined:
            [(count,)] = self.connection.execute(
                f"SELECT count(*) FROM {self.metadata}.{quote_identifier(inlined_table)} WHERE end_snapshot IS NULL"
            ).fetchall()
            if count:
                key = f"{schema}.{table}"
                pending[key] = pending.get(key, 0) + count
        return pending

    def merge_adjacent_files(self) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
        merged: dict[str, tuple[int, int]] = {}
        skipped: dict[str, str] = {}
        for schema, table in self.tables():
            name = f"{schema}.{table}"
            files = self.connection.execute(
                "SELECT data_file FROM ducklake_list_files(?, ?, schema => ?)", [self.alias, table, schema]
            ).fetchall()
            outside = [path for (path,) in files if not is_within(path, self.data_path)]
            if outside and not self.policy.merge_external_files:
                skipped[name] = f"{len(outside)} registered file(s) outside the data path, e.g. {outside[0]}"
                continue
            if self.dry_run:
                merged[name] = (len(files), 0)
                continue
            for _, _, processed, created in self.call(
                f"Merging adjacent files of {name}",
                "CALL ducklake_merge_adjacent_files(?, ?, schema => ?)",
                [self.alias, table, schema],
            ):
                merged[name] = (int(processed), int(created))
        return merged, skipped

    def expire_snapshots(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        due = self.snapshots_due()
        protected = tuple(snapshot for snapshot in due if snapshot in self.retained.snapshot_ids)
        expiring = [snapshot for snapshot in due if snapshot not in self.retained.snapshot_ids]
        if expiring and not self.dry_run:
            rows = self.call(
                "Expiring snapshots",
                "CALL ducklake_expire_snapshots(?, versions => ?)",
                [self.alias, expiring],
            )
            expiring = sorted(int(row[0]) for row in rows)
        return tuple(expiring), protected

    def snapshots_due(self) -> list[int]:
        """Snapshots the policy lets expire, oldest first; never the latest one."""
        policy = self.policy
        if policy.expire_older_than is None and policy.keep_last_snapshots is None:
            return []
        snapshots = self.connection.execute(
            "SELECT snapshot_id, snapshot_time FROM ducklake_snapshots(?) ORDER BY snapshot_id DESC", [self.alias]
        ).fetchall()
        keep = max(policy.keep_last_snapshots or 1, 1)
        cutoff = datetime.now(UTC) - policy.expire_older_than if policy.expire_older_than is not None else None
        due = [
            snapshot
            for position, (snapshot, created) in enumerate(snapshots)
            if position >= keep and (cutoff is None or created < cutoff)
        ]
        return sorted(due)

    def cleanup_old_files(self, expiring: Sequence[int]) -> tuple[FileDecision, ...]:
        due_before = datetime.now(UTC) - self.policy.cleanup_older_than
        candidates = [
            (file.file_id, file.path, file.schedule_start < due_before)
            for file in scheduled_files(self.connection, self.settings)
        ]
        decisions = [self.decide(path, due) for _, path, due in candidates]
        if self.dry_run:
            if expiring:
                # Files the expiry would schedule: not scheduled yet, so they have no id.
                freed_due = self.policy.cleanup_older_than <= timedelta(0)
                decisions += [self.decide(path, freed_due) for path in self.freed_by(expiring)]
            return tuple(decisions)
        done: list[int] = []
        try:
            for (file_id, path, _), decision in zip(candidates, decisions, strict=True):
                if decision.action == "delete":
                    self.store.delete(path)
                if decision.action != "keep":
                    done.append(file_id)
        except StorageError as error:
            raise MaintenanceError(
                f"Cleanup could not delete {path}: {error}. The files deleted before it were unscheduled; the "
                "rest stay scheduled for the next run."
            ) from None
        finally:
            if done:
                self.unschedule(done)
        return tuple(decisions)

    def decide(self, path: str, due: bool) -> FileDecision:
        if not is_within(path, self.data_path):
            return FileDecision(path, "release", "outside the data path: handed back to its owner, never deleted")
        if self.retained.references(path):
            return FileDecision(path, "keep", "referenced by a retained backup or published revision")
        if not due:
            return FileDecision(
                path, "keep", f"scheduled for deletion less than {_duration(self.policy.cleanup_older_than)} ago"
            )
        return FileDecision(path, "delete", "no snapshot and no retained copy references it")

    def unschedule(self, file_ids: Sequence[int]) -> None:
        self.connection.executemany(
            f"DELETE FROM {self.metadata}.ducklake_files_scheduled_for_deletion WHERE data_file_id = ?",
            [[file_id] for file_id in file_ids],
        )

    def freed_by(self, expiring: Sequence[int]) -> list[str]:
        """Files that expiring ``expiring`` would schedule for deletion: no remaining snapshot sees them."""
        [(remaining,)] = self.connection.execute(
            f"SELECT list(snapshot_id ORDER BY snapshot_id) FROM {self.metadata}.ducklake_snapshot "
            "WHERE NOT list_contains(?, snapshot_id)",
            [list(expiring)],
        ).fetchall()
        remaining = remaining or []
        return sorted(
            file.path
            for file in lake_files(self.connection, self.settings)
            if file.end_snapshot is not None
            and bisect.bisect_left(remaining, file.begin_snapshot) == bisect.bisect_left(remaining, file.end_snapshot)
        )


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} s"


def _file_name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]
