"""``ducklake-assets``: the core verbs on the command line, without Dagster.

Back up, restore, list and pin backups; publish, verify and list frozen lakes; serve a folder over HTTP
for local testing. Locations are folders or ``s3://bucket/prefix`` URIs. S3 credentials come from the
environment as boto3 reads them (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_PROFILE``), never from the command line, so they stay out of shell history and process lists. A
PostgreSQL catalog's password comes from ``DUCKLAKE_CATALOG_PASSWORD`` (or libpq's ``PGPASSWORD``).

Examples::

    ducklake-assets backup lake/space.ducklake backups/space --data-path lake/data
    ducklake-assets backups backups/space
    ducklake-assets restore backups/space restored/space.ducklake --data-path restored/data --dry-run
    ducklake-assets publish backups/space s3://lakes/space.ducklake --self-contained --region eu-west-1
    ducklake-assets verify s3://lakes/space.ducklake --region eu-west-1
    ducklake-assets serve site --port 8000
"""

import argparse
import dataclasses
import os
import signal
import sys
from collections.abc import Sequence

from .core.backup import create_backup, list_backups, list_pins, pin_backup
from .core.catalog import PostgresCatalog, parse_catalog
from .core.errors import DuckLakeAssetsError
from .core.lake import LakeSettings
from .core.locations import is_remote
from .core.publish import KEEP_REVISIONS, list_revisions, publish_frozen_lake, verify_as_stranger
from .core.restore import restore_backup
from .core.s3 import S3Settings
from .core.storage import ObjectStore

PASSWORD_ENV = "DUCKLAKE_CATALOG_PASSWORD"


def _s3_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("S3 (credentials come from the environment, as boto3 reads them)")
    group.add_argument("--endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000 (MinIO)")
    group.add_argument("--region", help="S3 region, e.g. eu-west-1")
    group.add_argument("--path-style", action="store_true", help="path-style addressing (MinIO, moto)")


def _s3(arguments: argparse.Namespace, *locations: str | None) -> S3Settings | None:
    if not any(location and is_remote(location) for location in locations) and not arguments.endpoint_url:
        return None
    return S3Settings(
        endpoint_url=arguments.endpoint_url,
        region_name=arguments.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=os.environ.get("AWS_SESSION_TOKEN"),
        path_style=arguments.path_style,
    )


def _lake(catalog: str, data_path: str | None, s3: S3Settings | None) -> LakeSettings:
    parsed = parse_catalog(catalog)
    if isinstance(parsed, PostgresCatalog) and parsed.password is None and os.environ.get(PASSWORD_ENV):
        parsed = dataclasses.replace(parsed, password=os.environ[PASSWORD_ENV])
    return LakeSettings(catalog=parsed, data_path=data_path, s3=s3)


def _backup(arguments: argparse.Namespace) -> None:
    s3 = _s3(arguments, arguments.backup_uri, arguments.data_path)
    lake = _lake(arguments.catalog, arguments.data_path, s3)
    result = create_backup(
        lake,
        arguments.backup_uri,
        mode=arguments.mode,
        store=ObjectStore(s3),
        keep=arguments.keep,
        force=arguments.force,
    )
    if result.up_to_date:
        print(
            f"up to date at snapshot {result.manifest.snapshot_id}: {result.backup.uri} already holds it, "
            "nothing written (--force backs up anyway)"
        )
        return
    print(f"backed up snapshot {result.manifest.snapshot_id} of {result.manifest.catalog} to {result.backup.uri}")
    if result.files is not None:
        print(
            f"data files: {len(result.files.copied)} copied ({result.files.bytes_copied} bytes), "
            f"{len(result.files.reused)} already in the store"
        )
    for removed in result.removed:
        print(f"removed by retention: {removed.uri}")


def _restore(arguments: argparse.Namespace) -> None:
    s3 = _s3(arguments, arguments.backup, arguments.data_path)
    target = _lake(arguments.catalog, arguments.data_path, s3)
    result = restore_backup(
        arguments.backup, target, dry_run=arguments.dry_run, force=arguments.force, store=ObjectStore(s3)
    )
    print(result.summary())
    for snapshot in result.dropped_snapshots:
        print(
            f"  would drop snapshot {snapshot.snapshot_id} ({snapshot.snapshot_time:%Y-%m-%d %H:%M:%S}): "
            f"{snapshot.commit_message or ''}"
        )


def _backups(arguments: argparse.Namespace) -> None:
    store = ObjectStore(_s3(arguments, arguments.backup_uri))
    pins = {pin.backup_uri: pin.name for pin in list_pins(arguments.backup_uri, store)}
    backups = list_backups(arguments.backup_uri, store)
    if not backups:
        print(f"no backups under {arguments.backup_uri}")
    for info in backups:
        pinned = f"  pinned as {pins[info.uri]}" if info.uri in pins else ""
        print(f"{info.created_at:%Y-%m-%d %H:%M:%S}  snapshot {info.snapshot_id:>6}  {info.uri}{pinned}")


def _pin(arguments: argparse.Namespace) -> None:
    store = ObjectStore(_s3(arguments, arguments.backup_uri))
    pin = pin_backup(arguments.backup_uri, arguments.name, store, backup=arguments.backup)
    print(f"pinned {pin.backup_uri} (snapshot {pin.snapshot_id}) as {pin.name}")


def _publish(arguments: argparse.Namespace) -> None:
    s3 = _s3(arguments, arguments.source, arguments.publish_uri, arguments.data_path)
    result = publish_frozen_lake(
        arguments.source,
        arguments.publish_uri,
        store=ObjectStore(s3),
        keep_revisions=arguments.keep_revisions,
        reader_url=arguments.reader_url,
        data_path=arguments.data_path,
        self_contained=arguments.self_contained,
        force=arguments.force,
    )
    if result.up_to_date:
        print(
            f"up to date at snapshot {result.contents.snapshot_id}: {result.publish_uri} already holds it as "
            f"revision {result.revision.number}, nothing written (--force publishes anyway)"
        )
        print(f"attach it with: {result.attach_sql()}")
        return
    print(
        f"published revision {result.revision.number} (snapshot {result.contents.snapshot_id}) to {result.publish_uri}"
    )
    print(f"attach it with: {result.attach_sql()}")
    for note in result.notes:
        print(f"note: {note}")


def _verify(arguments: argparse.Namespace) -> None:
    report = verify_as_stranger(arguments.url, _s3(arguments, arguments.url), arguments.table)
    if not report.ok:
        raise DuckLakeAssetsError("; ".join(report.problems()))
    tables = ", ".join(f"{name} ({rows} rows)" for name, rows in report.tables.items())
    print(f"{arguments.url}: revision {report.revision}, snapshot {report.snapshot_id}, every data file readable")
    print(f"tables: {tables or 'none'}")


def _revisions(arguments: argparse.Namespace) -> None:
    store = ObjectStore(_s3(arguments, arguments.publish_uri))
    for revision in list_revisions(arguments.publish_uri, store):
        number, snapshot, size = revision.number, revision.snapshot_id, revision.size
        print(f"revision {number:>6}  snapshot {snapshot:>6}  {size:>10} bytes  {revision.uri}")


def _serve(arguments: argparse.Namespace) -> None:
    from .core.serve import make_server

    server = make_server(arguments.folder, arguments.host, arguments.port, quiet=False)
    host, port = server.socket.getsockname()[:2]

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # A service manager (systemd, docker stop, Kubernetes) stops it with SIGTERM: stop as on Ctrl-C, even
    # where the parent left SIGTERM ignored.
    signal.signal(signal.SIGTERM, stop)
    print(
        f"serving {os.path.abspath(arguments.folder)} at http://{host}:{port}/ (Range, ETag, CORS); Ctrl-C stops",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def parser() -> argparse.ArgumentParser:
    """The command line, one sub-command per core verb."""
    top = argparse.ArgumentParser(
        prog="ducklake-assets",
        description="Back up, restore and publish DuckLakes from the command line (no Dagster needed).",
        epilog="Run 'ducklake-assets COMMAND --help' for a command's options.",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    backup = commands.add_parser("backup", help="back up a lake: its catalog and (full mode) every data file")
    backup.add_argument("catalog", help="DuckLake catalog: a .ducklake file, sqlite:<path> or postgres:<dsn>")
    backup.add_argument("backup_uri", help="backup store: a folder or s3://bucket/prefix")
    backup.add_argument("--data-path", help="the lake's data path, when the catalog's entry should not be used")
    backup.add_argument("--mode", choices=["full", "metadata"], default="full", help="default: full")
    backup.add_argument(
        "--keep", "--keep-last", type=int, dest="keep", help="prune older backups, keeping this many (and pinned ones)"
    )
    backup.add_argument("--force", action="store_true", help="back up even when the newest backup is up to date")
    _s3_options(backup)
    backup.set_defaults(run=_backup)

    restore = commands.add_parser("restore", help="restore a backup into a catalog of any kind (try --dry-run)")
    restore.add_argument("backup", help="a backup store (its latest backup) or one backup-*.ducklake file")
    restore.add_argument("catalog", help="target catalog: a .ducklake file, sqlite:<path> or postgres:<dsn>")
    restore.add_argument("--data-path", help="where the restored lake keeps its data (full backups copy it there)")
    restore.add_argument("--dry-run", action="store_true", help="only say what would happen")
    restore.add_argument("--force", action="store_true", help="overwrite a catalog with snapshots the backup lacks")
    _s3_options(restore)
    restore.set_defaults(run=_restore)

    backups = commands.add_parser("backups", help="list the backups of a store, newest first")
    backups.add_argument("backup_uri", help="backup store: a folder or s3://bucket/prefix")
    _s3_options(backups)
    backups.set_defaults(run=_backups)

    pin = commands.add_parser("pin", help="keep a backup forever under a name (retention never removes it)")
    pin.add_argument("backup_uri", help="backup store: a folder or s3://bucket/prefix")
    pin.add_argument("name", help="the pin's name, e.g. before-upgrade")
    pin.add_argument("--backup", default="latest", help="'latest' (default) or a backup-*.ducklake file name")
    _s3_options(pin)
    pin.set_defaults(run=_pin)

    publish = commands.add_parser("publish", help="publish a frozen (read-only) lake anyone can attach")
    publish.add_argument("source", help="a DuckDB catalog file, or a backup store (its latest backup)")
    publish.add_argument("publish_uri", help="where the frozen lake goes: a path or s3://bucket/name.ducklake")
    publish.add_argument("--reader-url", help="where readers find it, when served elsewhere (https://...)")
    publish.add_argument("--data-path", help="the lake's data path, when the catalog's entry should not be used")
    publish.add_argument("--self-contained", action="store_true", help="copy every data file next to the lake")
    publish.add_argument(
        "--keep-revisions", type=int, default=KEEP_REVISIONS, help=f"revisions kept (default {KEEP_REVISIONS})"
    )
    publish.add_argument("--force", action="store_true", help="publish even when the frozen lake is up to date")
    _s3_options(publish)
    publish.set_defaults(run=_publish)

    verify = commands.add_parser("verify", help="attach a frozen lake as a stranger and open every data file")
    verify.add_argument("url", help="a path, s3:// URI or http(s):// URL of a .ducklake file")
    verify.add_argument("--table", action="append", default=[], help="a table that must be there (repeatable)")
    _s3_options(verify)
    verify.set_defaults(run=_verify)

    revisions = commands.add_parser("revisions", help="list the published revisions of a frozen lake")
    revisions.add_argument("publish_uri", help="the frozen lake: a path or s3://bucket/name.ducklake")
    _s3_options(revisions)
    revisions.set_defaults(run=_revisions)

    serve = commands.add_parser("serve", help="serve a folder over HTTP for local testing (Range, ETag, CORS)")
    serve.add_argument("folder", help="the folder to serve, e.g. the one holding a published .ducklake")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.set_defaults(run=_serve)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; errors are printed in one line (no traceback) and exit with status 2."""
    arguments = parser().parse_args(argv)
    try:
        arguments.run(arguments)
    except DuckLakeAssetsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
