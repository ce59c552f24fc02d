"""Progress lines for long work: counts and rate, at least every few seconds or every few hundred files.

``register_files`` reports ``progress(done, total)`` after each ``ducklake_add_data_files`` call; one
call may cover thousands of files (a glob), so a timer also writes a line while a call runs.
"""

import threading
import time
from collections.abc import Callable
from types import TracebackType


class ProgressLog:
    """A ``progress(done, total)`` callback that writes a line through ``log`` when ``every_files`` more
    files are done, when ``every_seconds`` passed since the last line (a timer thread keeps that promise
    while one call runs), and when the work is done.

    .. code-block:: python

        with ProgressLog(print, "Registered", "new files") as progress:
            register_files(connection, settings, files, progress=progress)
    """

    def __init__(
        self,
        log: Callable[[str], None],
        verb: str = "Registered",
        unit: str = "files",
        *,
        every_seconds: float = 10.0,
        every_files: int = 500,
    ) -> None:
        self._log = log
        self._verb = verb
        self._unit = unit
        self._every_seconds = every_seconds
        self._every_files = every_files
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._last_line = self._started
        self._last_done = 0
        self.done = 0
        self.total: int | None = None
        self.lines = 0

    def __enter__(self) -> "ProgressLog":
        self._started = self._last_line = time.monotonic()
        self._thread = threading.Thread(target=self._tick, name="progress-log", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __call__(self, done: int, total: int) -> None:
        with self._lock:
            self.done, self.total = done, total
            now = time.monotonic()
            if (
                done >= total
                or done - self._last_done >= self._every_files
                or now - self._last_line >= self._every_seconds
            ):
                self._write(now)

    def _tick(self) -> None:
        while not self._stop.wait(min(1.0, self._every_seconds)):
            with self._lock:
                now = time.monotonic()
                if now - self._last_line >= self._every_seconds:
                    self._write(now, still=True)

    def _write(self, now: float, still: bool = False) -> None:
        elapsed = now - self._started
        if self.total is None:
            line = f"Still working after {elapsed:.0f} s: reading the new {self._unit}' Parquet footers"
        else:
            rate = self.done / elapsed if elapsed > 0 else 0.0
            line = (
                f"{'Still working: ' if still else ''}{self._verb} {self.done:,} of {self.total:,} {self._unit} "
                f"({rate:,.0f} {self._unit}/s, {elapsed:.1f} s)"
            )
        self._log(line)
        self.lines += 1
        self._last_line = now
        self._last_done = self.done
