"""Run directory I/O: atomic JSON files, append-only journals written in small batches during
the run, and compaction to Parquet at the end (or later, by ``infprof report``, after a crash).

Layout (DESIGN.md): manifest.json, requests.parquet, itl.parquet, samples.parquet, server.log,
summary.json; during the run requests.jsonl and samples.jsonl are the journals.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic_core import from_json, to_json

from profiler.errors import SpecError, StorageError
from profiler.load.record import RequestRecord
from profiler.store.files import json_default as _json_default
from profiler.store.files import write_json_atomic
from profiler.telemetry.sample import Sample

REQUESTS_JOURNAL = "requests.jsonl"
SAMPLES_JOURNAL = "samples.jsonl"
MIN_FREE_BYTES = 64 * 1024 * 1024
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_run_id(run_id: str) -> str:
    """Run ids become directory names: letters, digits, '.', '_' and '-' only, so a run id can
    never escape the output directory."""
    if not _RUN_ID.match(run_id) or run_id in (".", ".."):
        raise SpecError(
            f"run id '{run_id}' is not allowed",
            "use letters, digits, '.', '_' and '-' (at most 128 characters)",
        )
    return run_id


def new_run_id(prefix: str = "run") -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid() % 10000:04d}"


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


def new_run_directory(out_dir: Path, run_id: str) -> Path:
    """Create ``out_dir/run_id``, which must not exist yet (a run's, or ``--repeat``'s parent);
    ``SpecError`` when it does, ``StorageError`` when it cannot be created."""
    path = out_dir.expanduser() / run_id
    try:
        path.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise SpecError(
            f"run directory {path} already exists", "pick another --run-id or --out"
        ) from None
    except OSError as e:
        raise StorageError(
            f"cannot create {path}: {e.strerror}", "choose a writable --out directory"
        ) from None
    return path


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a run: its manifest, its records, or the journals of one that
    died before compaction."""
    return (
        (path / "manifest.json").exists()
        or (path / "requests.parquet").exists()
        or RunDir(path).has_journal()
    )


class RunDir:
    """One run's directory. ``create`` checks it is writable before anything starts."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, out_dir: Path, run_id: str) -> RunDir:
        check_run_id(run_id)
        path = new_run_directory(out_dir, run_id)
        probe = path / ".write-probe"
        try:
            probe.write_bytes(b"x" * 4096)
            probe.unlink()
        except OSError as e:
            raise StorageError(
                f"cannot write in {path}: {e.strerror}", "choose a writable --out directory"
            ) from None
        free = shutil.disk_usage(path).free
        if free < MIN_FREE_BYTES:
            raise StorageError(
                f"only {free // (1024 * 1024)} MiB free under {path}",
                f"free at least {MIN_FREE_BYTES // (1024 * 1024)} MiB or choose another --out",
            )
        return cls(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj: Any) -> None:
        write_json_atomic(self.file(name), obj)

    def read_json(self, name: str) -> Any:
        try:
            return json.loads(self.file(name).read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as e:
            raise StorageError(
                f"{self.file(name)} is not valid JSON ({e.msg})", "re-run or restore the file"
            ) from None

    def request_journal(self) -> Journal:
        return Journal(self.file(REQUESTS_JOURNAL))

    def sample_journal(self) -> Journal:
        return Journal(self.file(SAMPLES_JOURNAL), batch=256, interval_s=1.0)

    # ------------------------------------------------------------ compaction and loading
    def compact(self) -> None:
        """Write requests.parquet, itl.parquet and samples.parquet from the journals, a batch
        at a time (``profiler.store.compaction``). Safe to run again; the journals are never
        touched, and requests.parquet appears only once all three files are complete."""
        from profiler.store.compaction import compact_run

        compact_run(self.path, self.request_journals(), self.file(SAMPLES_JOURNAL))

    def request_journals(self) -> list[Path]:
        """The main journal and those of ``--workers`` processes (requests.w<k>.jsonl)."""
        return sorted(
            p
            for p in self.path.glob("requests*.jsonl")
            if p.name == REQUESTS_JOURNAL or p.name.startswith("requests.w")
        )

    def iter_journal_records(self) -> Iterator[RequestRecord]:
        """Every record of the request journals in id order, a batch at a time."""
        from profiler.store.compaction import iter_journal_records

        yield from iter_journal_records(self.request_journals())

    def has_journal(self) -> bool:
        return bool(self.request_journals())


# itl.parquet holds mostly incompressible float gaps and is read whole by every summary:
# uncompressed decodes about 2.5x faster than zstd for 10-20% more bytes.
# Float columns are plain-encoded: dictionary pages only slow the decoding of random gaps.
ITL_COMPRESSION = "none"
ITL_DICTIONARY = ["request_id", "index", "tokens", "choice"]


def _write_table(
    path: Path, table: pa.Table, compression: str = "zstd", use_dictionary: bool | list[str] = True
) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp, compression=compression, use_dictionary=use_dictionary)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {e.strerror}", "free disk space") from None


REQUEST_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("workload", pa.string()),
        ("scenario", pa.string()),
        ("intended_start_s", pa.float64()),
        ("send_s", pa.float64()),
        ("first_token_s", pa.float64()),
        ("first_reasoning_s", pa.float64()),
        ("first_answer_s", pa.float64()),
        ("last_token_s", pa.float64()),
        ("end_s", pa.float64()),
        ("prompt_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("requested_output_tokens", pa.int64()),
        ("chunks", pa.int64()),
        ("n", pa.int64()),
        ("outcome", pa.string()),
        ("http_status", pa.int64()),
        ("error", pa.string()),
        ("tokens_estimated", pa.bool_()),
        ("worker", pa.int64()),
        ("ttft_s", pa.float64()),
        ("tpot_s", pa.float64()),
        ("e2e_s", pa.float64()),
        ("dispatch_lag_s", pa.float64()),
        ("queue_wait_s", pa.float64()),
        ("session_id", pa.int64()),
        ("turn", pa.int64()),
        ("cached_tokens", pa.int64()),
        ("requested_prompt_tokens", pa.int64()),
        ("length_enforced", pa.bool_()),
    ]
)

ITL_SCHEMA = pa.schema(
    [
        ("request_id", pa.int64()),
        ("index", pa.int32()),
        ("t_s", pa.float64()),
        ("gap_s", pa.float64()),
        ("tokens", pa.int32()),
        ("choice", pa.int32()),
    ]
)

SAMPLE_SCHEMA = pa.schema(
    [
        ("t_s", pa.float64()),
        ("source", pa.string()),
        ("device", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("error", pa.string()),
    ]
)


def write_requests_parquet(path: Path, records: list[RequestRecord]) -> None:
    _write_table(path, requests_table(records))


def requests_table(records: list[RequestRecord]) -> pa.Table:
    """requests.parquet's rows of ``records``, in their order."""
    rows = [r.to_row() for r in records]
    cols = {name: [row[name] for row in rows] for name in REQUEST_SCHEMA.names}
    return pa.table(cols, schema=REQUEST_SCHEMA)


def write_itl_parquet(path: Path, records: list[RequestRecord]) -> None:
    _write_table(path, itl_table(records), ITL_COMPRESSION, ITL_DICTIONARY)


def itl_table(records: list[RequestRecord]) -> pa.Table:
    """One row per content chunk: request id, index, arrival time, gap to the previous chunk of
    the same sample (null for a sample's first chunk), tokens and choice; each record's chunks
    contiguous, in the order of ``records``. Built column-wise with numpy; only records with
    several samples (n > 1) are walked chunk by chunk."""
    recs = [r for r in records if r.chunk_times_s]
    lens = np.fromiter((len(r.chunk_times_s) for r in recs), np.int64, len(recs))
    total = int(lens.sum())
    starts = np.zeros(len(recs), dtype=np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    rid = np.repeat(np.fromiter((r.id for r in recs), np.int64, len(recs)), lens)
    idx = (np.arange(total, dtype=np.int64) - np.repeat(starts, lens)).astype(np.int32)
    t = np.fromiter(itertools.chain.from_iterable(r.chunk_times_s for r in recs), np.float64, total)
    toks = np.fromiter(itertools.chain.from_iterable(r.chunk_tokens for r in recs), np.int32, total)
    choice = np.zeros(total, dtype=np.int32)
    gaps = np.empty_like(t)
    gaps[1:] = np.diff(t)
    null = np.zeros(total, dtype=bool)
    null[starts] = True
    for r, row0 in zip(recs, starts.tolist(), strict=True):
        if not r.chunk_choice:
            continue
        prev: dict[int, float] = {}
        for i, (tc, c) in enumerate(zip(r.chunk_times_s, r.chunk_choice, strict=False)):
            choice[row0 + i] = c
            null[row0 + i] = c not in prev
            gaps[row0 + i] = tc - prev[c] if c in prev else 0.0
            prev[c] = tc
    return pa.table(
        {
            "request_id": rid,
            "index": idx,
            "t_s": t,
            "gap_s": pa.array(gaps, mask=null),
            "tokens": toks,
            "choice": choice,
        },
        schema=ITL_SCHEMA,
    )


def write_samples_parquet(path: Path, samples: list[Sample]) -> None:
    _write_table(path, samples_table(samples))


def samples_table(samples: list[Sample]) -> pa.Table:
    cols = {name: [getattr(s, name) for s in samples] for name in SAMPLE_SCHEMA.names}
    return pa.table(cols, schema=SAMPLE_SCHEMA)


def read_records(run_path: Path) -> list[RequestRecord]:
    """The run's records: from Parquet when compacted, else from the journal."""
    rd = RunDir(run_path)
    req = run_path / "requests.parquet"
    if not req.exists():
        return list(rd.iter_journal_records())
    rows = pq.read_table(req).to_pylist()
    chunks: dict[int, tuple[list[float], list[int], list[int]]] = {}
    itl = run_path / "itl.parquet"
    if itl.exists():
        t = pq.read_table(itl, columns=["request_id", "t_s", "tokens", "choice"])
        cols = [t.column(n).to_pylist() for n in ("request_id", "t_s", "tokens", "choice")]
        for r_id, t_s, k, ch in zip(*cols, strict=True):
            c = chunks.setdefault(r_id, ([], [], []))
            c[0].append(t_s)
            c[1].append(k)
            c[2].append(ch)
    fields = set(RequestRecord.__dataclass_fields__)
    out = []
    for row in rows:
        rec = RequestRecord(**{k: v for k, v in row.items() if k in fields})
        if rec.id in chunks:
            rec.chunk_times_s, rec.chunk_tokens, choice = chunks[rec.id]
            if rec.n > 1:
                rec.chunk_choice = choice
        out.append(rec)
    return out


def read_samples(run_path: Path) -> list[Sample]:
    p = run_path / "samples.parquet"
    if p.exists():
        return [Sample(**row) for row in pq.read_table(p).to_pylist()]
    return [Sample(**d) for d in read_journal(run_path / SAMPLES_JOURNAL)]
