"""A run directory: its layout, creating it (checked writable first), its journals,
compaction to Parquet (``store/compaction``) and reading its records and samples back.

Layout (DESIGN.md): manifest.json, requests.parquet, itl.parquet, samples.parquet, server.log,
summary.json; during the run requests.jsonl and samples.jsonl are the journals
(``store/journal``); the Parquet files' schemas are in ``store/parquet``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from profiler.errors import SpecError, StorageError
from profiler.store.compaction import compact_run, iter_journal_records
from profiler.store.files import write_json_atomic
from profiler.store.journal import REQUESTS_JOURNAL, SAMPLES_JOURNAL, Journal, read_journal
from profiler.store.record import RequestRecord
from profiler.telemetry.sample import Sample

__all__ = ["SAMPLES_JOURNAL", "write_json_atomic"]  # also read from here by other modules
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


def is_sweep_dir(path: Path) -> bool:
    """Whether ``path`` holds a sweep: its ``index.json``."""
    from profiler.store.schema import SweepIndex

    return (path / SweepIndex.FILE).is_file()


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

    def request_journal(self) -> Journal:
        return Journal(self.file(REQUESTS_JOURNAL))

    def sample_journal(self) -> Journal:
        return Journal(self.file(SAMPLES_JOURNAL), batch=256, interval_s=1.0)

    # ------------------------------------------------------------ compaction and loading
    def compact(self) -> None:
        """Write requests.parquet, itl.parquet and samples.parquet from the journals, a batch
        at a time (``profiler.store.compaction``). Safe to run again; the journals are never
        touched, and requests.parquet appears only once all three files are complete."""
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
        yield from iter_journal_records(self.request_journals())

    def has_journal(self) -> bool:
        return bool(self.request_journals())


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
