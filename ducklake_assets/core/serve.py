"""A small static web server for trying frozen lakes over HTTP on your own machine.

DuckDB reads a frozen lake over HTTP lazily, page by page, with ``Range`` requests; it checks every
response's ``ETag`` against the first one, so a file replaced by a newer revision during a session
raises instead of mixing pages of two revisions. Python's ``http.server`` ignores ``Range`` and sends
no ``ETag``, so it serves neither fast nor safely. This server answers

* ``GET`` and ``HEAD``, with one ``Range: bytes=a-b`` (``206 Partial Content``, ``416`` when out of range);
* a strong ``ETag`` and ``Last-Modified`` taken from the file it actually opened (a file replaced while a
  response is sent keeps its own headers), ``If-None-Match`` (``304``), ``If-Match`` (``412``) and
  ``If-Range``;
* CORS for browsers (DuckDB-Wasm): ``Access-Control-Allow-Origin: *``, preflight ``OPTIONS``, and the
  headers DuckDB needs exposed.

It is for local testing; in production put the folder in a bucket or behind a CDN (both do all of this).
"""

import contextlib
import email.utils
import http.server
import io
import os
import re
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigurationError

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_EXPOSED = "Content-Length, Content-Range, Content-Type, ETag, Last-Modified, Accept-Ranges"


class FrozenLakeRequestHandler(http.server.BaseHTTPRequestHandler):
    """Serves the files below ``root`` read-only; nothing outside it, no listings."""

    root: Path
    quiet: bool = True
    server_version = "ducklake-assets"

    def log_message(self, format: str, *args: object) -> None:
        if not self.quiet:
            super().log_message(format, *args)

    def do_OPTIONS(self) -> None:
        self.send_response(204)
        self._cors()
        self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Range, If-None-Match, If-Match, If-Range, Authorization")
        self.send_header("Access-Control-Max-Age", "86400")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def _cors(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Expose-Headers", _EXPOSED)

    def _resolve(self) -> Path | None:
        relative = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        candidate = (self.root / relative).resolve()
        if candidate != self.root and self.root not in candidate.parents:
            return None
        return candidate if candidate.is_file() else None

    def _fail(self, status: int, reason: str) -> None:
        body = reason.encode()
        self.send_response(status)
        self._cors()
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self, send_body: bool) -> None:
        path = self._resolve()
        if path is None:
            self._fail(404, "not found")
            return
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below, after the body is sent
        except OSError:
            self._fail(404, "not found")
            return
        with handle:
            stat = os.fstat(handle.fileno())
            size = stat.st_size
            etag = f'"{stat.st_ino:x}-{size:x}-{stat.st_mtime_ns:x}"'
            modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
            if_match = self.headers.get("If-Match")
            if if_match and if_match.strip() != "*" and etag not in [tag.strip() for tag in if_match.split(",")]:
                self._fail(412, "the file changed")
                return
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self._cors()
                self.send_header("ETag", etag)
                self.end_headers()
                return
            start, end = 0, size - 1
            ranged = _RANGE.match(self.headers.get("Range", "").strip())
            if ranged and self.headers.get("If-Range", etag) not in (etag, modified):
                ranged = None
            if ranged:
                first, last = ranged.groups()
                if first:
                    start, end = int(first), min(int(last) if last else size - 1, size - 1)
                elif last:
                    start = max(size - int(last), 0)
                if start > end or start >= size:
                    self.send_response(416)
                    self._cors()
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            self.send_response(206 if ranged else 200)
            self._cors()
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Content-Length", str(end - start + 1 if size else 0))
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if send_body and size:
                handle.seek(start)
                _copy_exactly(handle, self.wfile, end - start + 1)


def _copy_exactly(source: io.BufferedIOBase, target: io.BufferedIOBase, count: int) -> None:
    while count > 0:
        block = source.read(min(count, 1 << 20))
        if not block:
            return
        target.write(block)
        count -= len(block)


def make_server(
    folder: str | Path, host: str = "127.0.0.1", port: int = 8000, *, quiet: bool = True
) -> http.server.ThreadingHTTPServer:
    """A server for ``folder`` (call ``serve_forever()``); port ``0`` picks a free one."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise ConfigurationError(f"{root} is not a folder: give the folder that holds the frozen lake")
    handler = type("Handler", (FrozenLakeRequestHandler,), {"root": root, "quiet": quiet})
    return http.server.ThreadingHTTPServer((host, port), handler)


@contextlib.contextmanager
def serving(folder: str | Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``folder`` in a background thread for the duration of the block; yields its base URL."""
    server = make_server(folder, host, port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        bound_host, bound_port = server.server_address[:2]
        # An AF_INET socket's address is always (str, int); the stub also allows bytes hosts.
        assert isinstance(bound_host, str)
        yield f"http://{bound_host}:{bound_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
