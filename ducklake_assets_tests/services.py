"""Starters for the real services the tests run against.

The tests talk to a real PostgreSQL server and a real (moto) S3 endpoint
instead of mocks, because what breaks in practice is the plumbing between
processes: connection strings, quoting of secrets, password authentication,
path-style S3 addressing. Every starter here is a context manager that raises
`ServiceError` with a readable message when its service cannot be started or
reached; `conftest.py` turns that into a test failure. This module does not
import pytest so it can also be used from a plain Python shell when debugging.
"""

import contextlib
import glob
import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import boto3
import botocore.client
import botocore.config
import psycopg
from moto.server import ThreadedMotoServer
from psycopg import sql

PG_DSN_ENV = "DUCKLAKE_TEST_PG_DSN"
"""Points the tests at an existing PostgreSQL server (superuser DSN or URL)."""

PG_BINDIR_ENV = "DUCKLAKE_TEST_PG_BINDIR"
"""Directory holding `initdb` and `pg_ctl`, when they are not found otherwise."""

PG_SUPERUSER = "postgres"
"""Database superuser of the throwaway cluster."""

_PG_OS_USER = "postgres"
"""OS user that owns and runs the throwaway cluster when we are root."""

# Secrets deliberately contain characters that break naive quoting in SQL
# literals, libpq connection strings and shell commands. If the library
# under test interpolates them carelessly, the tests fail instead of passing
# by luck with alphanumeric passwords.
HOSTILE_SECRET = "pw'; DROP--x"
S3_SECRET_ACCESS_KEY = "s3'; DROP--secret"

# A throwaway cluster only has to survive one test session, so durability is
# traded for startup and write speed. `port` is passed on the command line
# because it changes when a start attempt is retried.
_PG_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "shared_buffers": "32MB",
    "autovacuum": "off",
}

_PG_START_ATTEMPTS = 3


class ServiceError(RuntimeError):
    """A test service could not be started or reached."""


def _libpq_quote(value: str) -> str:
    """Quote a value for a libpq keyword/value connection string.

    libpq only understands single quotes with backslash escapes of `'` and
    `\\`; SQL-style quote doubling would silently produce a different value.
    """
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _libpq_dsn(host: str, port: int, user: str, password: str, dbname: str) -> str:
    """Build a keyword/value DSN; an empty password is left to libpq's defaults."""
    params = {"host": host, "port": str(port), "user": user, "dbname": dbname}
    if password:
        params["password"] = password
    return " ".join(f"{key}={_libpq_quote(value)}" for key, value in params.items())


def _libpq_url(host: str, port: int, user: str, password: str, dbname: str) -> str:
    """Build a postgresql:// URL with every component percent-encoded.

    A unix-socket directory as host is percent-encoded as libpq expects, and
    an IPv6 address is bracketed.
    """
    if host.startswith("/"):
        netloc_host = quote(host, safe="")
    elif ":" in host:
        netloc_host = f"[{host}]"
    else:
        netloc_host = host
    userinfo = quote(user, safe="")
    if password:
        userinfo += ":" + quote(password, safe="")
    return f"postgresql://{userinfo}@{netloc_host}:{port}/{quote(dbname, safe='')}"


@dataclass(frozen=True)
class PostgresServer:
    """A PostgreSQL server reachable with superuser credentials."""

    host: str
    port: int
    user: str
    password: str

    def dsn(self, dbname: str) -> str:
        """Keyword/value connection string for `dbname` on this server."""
        return _libpq_dsn(self.host, self.port, self.user, self.password, dbname)

    def url(self, dbname: str) -> str:
        """postgresql:// URL for `dbname` on this server."""
        return _libpq_url(self.host, self.port, self.user, self.password, dbname)


@dataclass(frozen=True)
class PostgresDatabase:
    """A database owned by a non-superuser role, as a DuckLake catalog would be."""

    host: str
    port: int
    user: str
    password: str
    dbname: str

    def dsn(self) -> str:
        """Keyword/value connection string for this database as its owner."""
        return _libpq_dsn(self.host, self.port, self.user, self.password, self.dbname)

    def url(self) -> str:
        """postgresql:// URL for this database as its owner."""
        return _libpq_url(self.host, self.port, self.user, self.password, self.dbname)


@dataclass(frozen=True)
class S3Endpoint:
    """An S3-compatible HTTP endpoint and the credentials to use with it."""

    host: str
    port: int
    endpoint_url: str
    region_name: str = "us-east-1"
    aws_access_key_id: str = "testing"
    aws_secret_access_key: str = S3_SECRET_ACCESS_KEY

    def client(self) -> botocore.client.BaseClient:
        """A boto3 S3 client using path-style addressing.

        Path style is required because virtual-host style would resolve
        `<bucket>.127.0.0.1`, which does not exist.
        """
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region_name,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            config=botocore.config.Config(
                s3={"addressing_style": "path"},
                connect_timeout=5,
                read_timeout=30,
                retries={"max_attempts": 2},
            ),
        )


@dataclass(frozen=True)
class S3Bucket:
    """A bucket on an `S3Endpoint`."""

    endpoint: S3Endpoint
    name: str

    def uri(self, key: str = "") -> str:
        """`s3://` URI of `key` in this bucket (the bucket root by default)."""
        return f"s3://{self.name}/{key}"

    def client(self) -> botocore.client.BaseClient:
        """A boto3 S3 client for the bucket's endpoint."""
        return self.endpoint.client()


def _unique_name(prefix: str) -> str:
    """A name unique across tests and concurrent pytest processes."""
    return f"{prefix}_{secrets.token_hex(6)}"


def _free_port() -> int:
    """Ask the kernel for a currently unused loopback TCP port.

    Another process may grab it before PostgreSQL binds it; the caller
    retries with a fresh port in that case.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bindir() -> Path:
    """Locate the directory of `initdb`/`pg_ctl`.

    Debian keeps them off PATH under /usr/lib/postgresql/<version>/bin, so
    fall back to the newest version there.
    """
    if explicit := os.environ.get(PG_BINDIR_ENV):
        return Path(explicit)
    if on_path := shutil.which("initdb"):
        return Path(on_path).parent
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not candidates:
        raise ServiceError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under "
            f"/usr/lib/postgresql/*/bin; install them, set {PG_BINDIR_ENV}, "
            f"or set {PG_DSN_ENV} to use an existing server"
        )
    newest = max(candidates, key=lambda path: int(Path(path).parts[-3]))
    return Path(newest).parent


def _run_as_owner(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool as the cluster owner.

    PostgreSQL refuses to run as root, so as root the tools run as the
    `postgres` OS user.
    """
    if os.geteuid() == 0:
        argv = ["runuser", "-u", _PG_OS_USER, "--", *argv]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)


def _make_cluster_dir() -> Path:
    """Create the cluster's private directory.

    It lives directly under /tmp (not $TMPDIR) for two reasons: the
    `postgres` user must be able to traverse its parents when we are root,
    and the unix socket path inside it must stay under the ~107-byte limit.
    """
    root = Path(tempfile.mkdtemp(prefix="ducklake-pg-", dir="/tmp"))
    socket_dir = root / "socket"
    socket_dir.mkdir()
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(_PG_OS_USER)
        except KeyError:
            shutil.rmtree(root)
            raise ServiceError(
                f"running as root but OS user {_PG_OS_USER!r} does not exist; PostgreSQL refuses to run as root"
            ) from None
        for path in (root, socket_dir):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    return root


def _init_cluster(bindir: Path, root: Path, password: str) -> Path:
    """initdb a cluster with scram-sha-256 password auth; return its data dir."""
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o644)  # read by initdb as the postgres user, deleted right after
    datadir = root / "data"
    result = _run_as_owner(
        [
            str(bindir / "initdb"),
            f"--pgdata={datadir}",
            f"--username={PG_SUPERUSER}",
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ],
        cwd=root,
    )
    pwfile.unlink()
    if result.returncode != 0:
        raise ServiceError(f"initdb failed:\n{result.stdout}{result.stderr}")
    socket_dir = root / "socket"
    settings = {**_PG_SETTINGS, "unix_socket_directories": f"'{socket_dir}'"}
    with (datadir / "postgresql.conf").open("a") as conf:
        conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
    return datadir


def _start_cluster(bindir: Path, root: Path, datadir: Path) -> int:
    """Start the cluster on a free port, retrying if the port gets taken."""
    logfile = root / "postgres.log"
    for _ in range(_PG_START_ATTEMPTS):
        port = _free_port()
        result = _run_as_owner(
            [
                str(bindir / "pg_ctl"),
                "start",
                "--wait",
                "--timeout=30",
                f"--pgdata={datadir}",
                f"--log={logfile}",
                f"--options=-p {port}",
            ],
            cwd=root,
        )
        if result.returncode == 0:
            return port
    log = logfile.read_text(errors="replace") if logfile.exists() else ""
    raise ServiceError(
        f"pg_ctl start failed {_PG_START_ATTEMPTS} times; last output:\n"
        f"{result.stdout}{result.stderr}\nserver log:\n{log[-4000:]}"
    )


def _stop_cluster(bindir: Path, root: Path, datadir: Path) -> None:
    """Stop the cluster without a checkpoint; its data is thrown away anyway."""
    _run_as_owner(
        [str(bindir / "pg_ctl"), "stop", "--mode=immediate", f"--pgdata={datadir}"],
        cwd=root,
    )


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[PostgresServer]:
    """Run a private PostgreSQL cluster for the duration of the block.

    Each call gets its own directory and port, so concurrent pytest processes
    do not interfere with each other or with a system PostgreSQL.
    """
    bindir = _pg_bindir()
    password = f"su'\\ {secrets.token_hex(8)}"
    root = _make_cluster_dir()
    try:
        datadir = _init_cluster(bindir, root, password)
        try:
            port = _start_cluster(bindir, root, datadir)
            server = PostgresServer("127.0.0.1", port, PG_SUPERUSER, password)
            _check_superuser(server)
            yield server
        finally:
            # Also after a failed start: a start that timed out may have
            # left a postmaster running.
            _stop_cluster(bindir, root, datadir)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def external_postgres(dsn: str) -> PostgresServer:
    """Describe the server behind a user-supplied superuser DSN.

    The effective host, port, user and password are read back from a live
    connection so that libpq defaults and PG* environment variables are
    resolved the same way they would be for the tests.
    """
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            info = conn.info
            server = PostgresServer(info.host, info.port, info.user, info.password or "")
    except psycopg.Error as exc:
        raise ServiceError(f"cannot connect to {PG_DSN_ENV}: {exc}") from exc
    _check_superuser(server)
    return server


def _admin_connect(server: PostgresServer) -> psycopg.Connection:
    """Autocommit superuser connection; CREATE/DROP DATABASE need autocommit."""
    try:
        return psycopg.connect(server.dsn("postgres"), autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise ServiceError(
            f"cannot connect to PostgreSQL at {server.host}:{server.port} as {server.user!r}: {exc}"
        ) from exc


def _check_superuser(server: PostgresServer) -> None:
    """Fail early and clearly if the fixtures could not create roles."""
    with _admin_connect(server) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if not (row and row[0]):
        raise ServiceError(f"PostgreSQL user {server.user!r} is not a superuser")


@contextlib.contextmanager
def postgres_database(server: PostgresServer) -> Iterator[PostgresDatabase]:
    """Create a fresh database owned by a fresh role; drop both afterwards.

    The role is not a superuser and its password is hostile to naive quoting,
    which is how the library will meet real catalogs.
    """
    role = _unique_name("ducklake_role")
    dbname = _unique_name("ducklake_db")
    password = f"{HOSTILE_SECRET}\\{secrets.token_hex(4)}"
    with _admin_connect(server) as conn:
        try:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
            )
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(role)))
        except psycopg.Error as exc:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            raise ServiceError(f"cannot create test database {dbname!r}: {exc}") from exc
    try:
        yield PostgresDatabase(server.host, server.port, role, password, dbname)
    finally:
        with _admin_connect(server) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@contextlib.contextmanager
def moto_s3() -> Iterator[S3Endpoint]:
    """Run moto's S3 server in a background thread on a free loopback port.

    Moto does not verify request signatures, so any secret key is accepted;
    the hostile secret only proves it survives the client-side quoting.
    """
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = S3Endpoint(host, port, f"http://{host}:{port}")
        try:
            endpoint.client().list_buckets()
        except Exception as exc:
            raise ServiceError(f"moto S3 server at {endpoint.endpoint_url} unreachable: {exc}") from exc
        yield endpoint
    finally:
        server.stop()


def create_bucket(endpoint: S3Endpoint) -> S3Bucket:
    """Create a fresh, empty bucket.

    Buckets are not deleted afterwards: they vanish with the in-memory moto
    server at session end, and emptying one (versions, pending multipart
    uploads) could itself fail and turn a passing test into an error.
    """
    name = _unique_name("ducklake-test").replace("_", "-")
    try:
        endpoint.client().create_bucket(Bucket=name)
    except Exception as exc:
        raise ServiceError(f"cannot create bucket {name!r} at {endpoint.endpoint_url}: {exc}") from exc
    return S3Bucket(endpoint, name)
