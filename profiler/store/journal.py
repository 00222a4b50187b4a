"""Append-only JSON-lines journals a run writes as it goes (requests.jsonl, samples.jsonl, and
requests.w<k>.jsonl per ``--workers`` process), written in small batches so a killed process
loses at most the last moments; read back line by line, a truncated last line skipped."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic_core import from_json, to_json

from profiler.errors import StorageError
from profiler.store.files import json_default as _json_default

REQUESTS_JOURNAL = "requests.jsonl"
SAMPLES_JOURNAL = "samples.jsonl"


class Journal:
    """Append-only JSON-lines file written in small batches: every ``batch`` lines, and by a
    background flusher at most ``interval_s`` after a line was appended, so a killed process
    loses at most the last ``interval_s`` of records however slowly they arrive. Thread-safe.

    A failed write (disk full) never leaves a partial line: the file is cut back to its last
    complete line, ``error`` says why, and the journal stops writing (later lines are counted in
    ``dropped``). StorageError is raised once, by the append or flush that meets the failure
    (or the next one, when the background flusher met it); ``close`` never raises it."""

    def __init__(self, path: Path, batch: int = 32, interval_s: float = 0.5) -> None:
        self.path = path
        self._batch = batch
        self._interval = interval_s
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self.count = 0
        self.dropped = 0
        self.error: str | None = None
        self._reported = False
        try:
            self._f = open(path, "ab", buffering=0)  # noqa: SIM115 (closed in close())
            self._size = self._f.seek(0, os.SEEK_END)  # bytes of complete lines on disk
        except OSError as e:
            raise StorageError(
                f"cannot open {path}: {e.strerror}", "fix permissions or free disk space"
            ) from None
        self._closing = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_every, name=f"infprof-journal-{path.name}", daemon=True
        )
        self._flusher.start()

    def append(self, obj: dict[str, Any]) -> None:
        # pydantic-core's encoder: a request's journal line (a float per chunk) costs about a
        # fifth of json.dumps; NaN and infinities are written as json.dumps writes them
        line = to_json(obj, fallback=_json_default, inf_nan_mode="constants")
        with self._lock:
            if self.error is not None:
                self.dropped += 1
                self._report()
                return
            self._pending.append(line)
            self.count += 1
            if len(self._pending) >= self._batch:
                self._flush_reporting()

    def extend(self, objs: Iterable[dict[str, Any]]) -> None:
        for o in objs:
            self.append(o)

    def flush(self) -> None:
        with self._lock:
            if self.error is not None:
                self._report()
                return
            self._flush_reporting()

    def _flush_every(self) -> None:
        while not self._closing.wait(self._interval):
            with self._lock:
                if self._pending and self.error is None:
                    try:
                        self._flush_locked()
                    except StorageError:
                        pass  # kept in self.error; the next append or flush raises it

    def _flush_reporting(self) -> None:
        try:
            self._flush_locked()
        except StorageError:
            self._reported = True
            raise

    def _report(self) -> None:
        if not self._reported:
            self._reported = True
            raise StorageError(f"cannot append to {self.path}: {self.error}", "free disk space")

    def _flush_locked(self) -> None:
        if not self._pending or self._f.closed:
            return
        raw = b"\n".join(self._pending) + b"\n"
        lines = len(self._pending)
        self._pending.clear()
        try:
            view = memoryview(raw)
            while view:
                view = view[self._f.write(view) or 0 :]
        except OSError as e:
            self.dropped += lines
            self.error = e.strerror or str(e)
            try:  # a short write left part of a line: cut back to the last complete one
                os.ftruncate(self._f.fileno(), self._size)
            except OSError:
                pass  # read_journal skips a partial last line anyway
            raise StorageError(
                f"cannot append to {self.path}: {self.error}", "free disk space"
            ) from None
        self._size += len(raw)

    def close(self) -> None:
        self._closing.set()
        if self._flusher is not threading.current_thread():
            self._flusher.join(timeout=5)
        with self._lock:
            try:
                self._flush_locked()
            except StorageError:
                pass  # kept in self.error
            finally:
                self._f.close()


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete line of a journal; a truncated last line (the process died mid-write) is
    skipped, never an error."""
    if not path.exists():
        return
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                yield parse_journal_line(line)
            except ValueError:
                continue


def parse_journal_line(line: bytes) -> Any:
    """One journal line decoded; ValueError when it is not JSON."""
    try:
        return from_json(line)
    except ValueError:  # what pydantic-core refuses and json reads (invalid UTF-8 in a string)
        return json.loads(line.decode("utf-8", "replace"))
