"""S3 settings shared by boto3 and DuckDB, so both always see the same object store."""

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import duckdb

from .optional import require
from .sql import quote_identifier, quote_literal


@dataclass(frozen=True)
class S3Settings:
    """Connection settings for S3 or an S3-compatible store (MinIO, moto, R2...).

    Field names follow boto3 and ``dagster-aws``. ``use_ssl=None`` takes the scheme of
    ``endpoint_url`` (``http://`` means no TLS), else TLS. ``path_style`` and ``virtual_style`` force
    boto3's addressing style (neither: boto3's ``auto``); DuckDB uses path style only with ``path_style``.
    """

    endpoint_url: str | None = None
    region_name: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)
    use_ssl: bool | None = None
    path_style: bool = False
    virtual_style: bool = False

    def secrets(self) -> list[str]:
        """Values that must never appear in a message."""
        return [value for value in (self.aws_secret_access_key, self.aws_session_token) if value]

    def effective_use_ssl(self) -> bool:
        if self.use_ssl is not None:
            return self.use_ssl
        if self.endpoint_url:
            return urlsplit(self.endpoint_url).scheme != "http"
        return True

    def boto3_client(self) -> Any:  # boto3 makes its client classes at run time: no static type
        """A boto3 S3 client for these settings."""
        require("boto3", "S3")  # first, so that a missing extra is named by the package users install
        Config = require("botocore.config", "S3").Config  # noqa: N806

        style = "path" if self.path_style else "virtual" if self.virtual_style else "auto"
        config = Config(s3={"addressing_style": style})
        with _SESSION_LOCK:  # a boto3 session is not safe to make clients from in several threads at once
            return _boto3_session().client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region_name,
                aws_access_key_id=self.aws_access_key_id,
                aws_secret_access_key=self.aws_secret_access_key,
                aws_session_token=self.aws_session_token,
                use_ssl=self.effective_use_ssl(),
                config=config,
            )

    def create_duckdb_secret(self, connection: duckdb.DuckDBPyConnection, name: str) -> None:
        """Create a temporary DuckDB S3 secret named ``name`` from the same settings."""
        fields: list[tuple[str, str]] = [("TYPE", "s3")]
        if self.aws_access_key_id:
            fields.append(("KEY_ID", quote_literal(self.aws_access_key_id)))
        if self.aws_secret_access_key:
            fields.append(("SECRET", quote_literal(self.aws_secret_access_key)))
        if self.aws_session_token:
            fields.append(("SESSION_TOKEN", quote_literal(self.aws_session_token)))
        if self.region_name:
            fields.append(("REGION", quote_literal(self.region_name)))
        if self.endpoint_url:
            parts = urlsplit(self.endpoint_url if "//" in self.endpoint_url else "//" + self.endpoint_url)
            fields.append(("ENDPOINT", quote_literal(parts.netloc + parts.path.rstrip("/"))))
        fields.append(("URL_STYLE", quote_literal("path" if self.path_style else "vhost")))
        fields.append(("USE_SSL", "true" if self.effective_use_ssl() else "false"))
        body = ", ".join(f"{key} {value}" for key, value in fields)
        connection.execute(f"CREATE OR REPLACE TEMPORARY SECRET {quote_identifier(name)} ({body})")


_SESSION_LOCK = threading.Lock()
_SESSION: Any = None


def _boto3_session() -> Any:
    """The process's boto3 session for the library's clients (its service models are loaded once), whose
    clients read S3's timestamps with :func:`s3_timestamp`."""
    global _SESSION
    if _SESSION is None:
        botocore_session = require("botocore.session", "S3").get_session()
        botocore_session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=s3_timestamp)
        _SESSION = require("boto3.session", "S3").Session(botocore_session=botocore_session)
    return _SESSION


def s3_timestamp(value: Any) -> datetime:
    """A timestamp of an S3 response: ISO 8601 in listings, read by the standard library (botocore's own
    parser, through dateutil, is about a third of the client's time listing 1,000 keys), else (HTTP dates
    in headers) by botocore's parser. Always aware, in UTC where the text names no zone."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        parsed = require("botocore.utils", "S3").parse_timestamp(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
