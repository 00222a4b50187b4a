"""Compaction in bounded memory: the journals become requests.parquet, itl.parquet and
samples.parquet a batch at a time, however long the run.

Both Parquet files of requests hold them in request-id order, each request's chunks contiguous
in itl.parquet (the summary reads itl.parquet by that layout), but the journals hold records
in the order requests finished, one journal per ``--workers`` process. So the request
journals are read twice:

1. Index: every complete line of every journal, in journal-name then line order, becomes
   (id, position, length). The id is read off the line's start (``{"id":123,`` as the
   journal writes it; any other line is parsed whole). This is all that grows with the run:
   24 bytes a request, nothing per chunk (10 million requests: 240 MB).
2. The index is sorted by id (stably, so equal ids keep journal-name then line order, as the
   one-shot compaction's sort did) and the lines are read back in that order a batch at a
   time: ``BATCH_RECORDS`` records or ``BATCH_BYTES`` of lines, whichever comes first. Each
   batch becomes RequestRecords (lines that are not records are skipped, as before), their
   rows are appended to the Parquet files, and the batch is dropped before the next is read.

Samples are streamed in journal order, ``SAMPLE_BATCH`` at a time. Row groups: requests
``REQUEST_ROW_GROUP`` rows, itl.parquet and samples.parquet ``ITL_ROW_GROUP`` and
``SAMPLE_ROW_GROUP`` rows (1Mi, what a one-shot write gives), the last one the rest.

Crash safety: each file is written to a hidden temporary file beside it, and the three are
renamed only once all are complete, requests.parquet last (its presence is what marks a run
compacted), so a compaction stopped part-way publishes nothing; the journals are only read.
"""

from __future__ import annotations

import gc
import os
import re
from array import array
from collections.abc import Generator, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from profiler.errors import StorageError
from profiler.store.journal import parse_journal_line, read_journal
from profiler.store.parquet import (
    ITL_COMPRESSION,
    ITL_DICTIONARY,
    ITL_SCHEMA,
    REQUEST_SCHEMA,
    SAMPLE_SCHEMA,
    itl_table,
    requests_table,
    samples_table,
)
from profiler.store.record import RequestRecord
from profiler.telemetry.sample import Sample

# Records parsed at a time, and the most journal bytes a batch may span (a run of long
# generations has long lines: ~2.6 kB for 100 chunks, so 32 MiB is ~12,000 such records)
BATCH_RECORDS = 1 << 16
BATCH_BYTES = 32 << 20
SAMPLE_BATCH = 1 << 16
REQUEST_ROW_GROUP = 1 << 16
ITL_ROW_GROUP = 1 << 20
SAMPLE_ROW_GROUP = 1 << 20
# Lines of one journal closer than this are fetched by one read, and one read spans at most
# _READ_SPAN bytes (more only for a single longer line)
_GAP_BYTES = 1 << 16
_READ_SPAN = 8 << 20
# A journal line's start as Journal writes it (pydantic-core) or json.dumps would
_ID = re.compile(rb'\{\s*"id"\s*:\s*(-?\d{1,18})\s*[,}]')


class JournalIndex:
    """Where every request line of the journals is, in request-id order."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        ids, pos, lens = array("q"), array("q"), array("q")
        bases = []
        base = 0
        for path in paths:
            bases.append(base)
            base = _index_journal(path, base, ids, pos, lens)
        self._bases = np.array(bases, dtype=np.int64)
        id_arr = np.frombuffer(ids, dtype=np.int64) if ids else np.zeros(0, np.int64)
        pos_arr = np.frombuffer(pos, dtype=np.int64) if pos else np.zeros(0, np.int64)
        len_arr = np.frombuffer(lens, dtype=np.int64) if lens else np.zeros(0, np.int64)
        if id_arr.size > 1 and not bool(np.all(id_arr[1:] >= id_arr[:-1])):
            order = np.argsort(id_arr, kind="stable")
            pos_arr, len_arr = pos_arr[order], len_arr[order]
            del order
        del id_arr, ids  # (already in id order, pos and lens stay views of their arrays)
        self.pos = pos_arr  # position of each line, in id order (journals laid end to end)
        self.lens = len_arr

    def __len__(self) -> int:
        return int(self.pos.size)

    def batches(self) -> Iterator[tuple[int, int]]:
        """[start, end) of each batch in id order."""
        n = len(self)
        i = 0
        while i < n:
            j = min(i + BATCH_RECORDS, n)
            fits = int(np.searchsorted(np.cumsum(self.lens[i:j]), BATCH_BYTES, side="right"))
            if fits < j - i:
                j = i + max(fits, 1)
            yield i, j
            i = j

    def read(self, fds: list[int], start: int, end: int) -> list[bytes]:
        """Lines [start, end) in id order, read in file order: nearby lines with one read."""
        p = self.pos[start:end]
        o = np.argsort(p, kind="stable")
        ps = p[o]
        es = ps + self.lens[start:end][o]
        fl = (np.searchsorted(self._bases, ps, side="right") - 1).tolist()
        order, psl, esl = o.tolist(), ps.tolist(), es.tolist()
        bases = self._bases.tolist()
        lines: list[bytes] = [b""] * len(order)
        a = 0
        m = len(order)
        for k in range(1, m + 1):
            if (
                k < m
                and fl[k] == fl[a]
                and psl[k] - esl[k - 1] <= _GAP_BYTES
                and esl[k] - psl[a] <= _READ_SPAN
            ):
                continue
            lo, hi = psl[a], esl[k - 1]
            buf = os.pread(fds[fl[a]], hi - lo, lo - bases[fl[a]])
            for x in range(a, k):
                lines[order[x]] = buf[psl[x] - lo : esl[x] - lo]
            a = k
        return lines


def _index_journal(path: Path, base: int, ids: array, pos: array, lens: array) -> int:
    """Append (id, position, length) of every request line of one journal; returns the
    position after its last complete line. A truncated last line (the process died
    mid-write) ends the journal; lines with no integer id are left out (they are no record)."""
    off = base
    try:
        f = open(path, "rb", buffering=1 << 20)  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        return off
    with f:
        for line in f:
            n = len(line)
            if not line.endswith(b"\n"):
                break
            m = _ID.match(line)
            rid = int(m[1]) if m is not None else _parsed_id(line)
            if rid is None:
                off += n
                continue
            ids.append(rid)
            pos.append(off)
            lens.append(n)
            off += n
    return off


def _parsed_id(line: bytes) -> int | None:
    """The id of a line that does not start as the journal writes it; None when it has no
    int64 id (then it is no record: the record would fail, or the old sort would)."""
    try:
        d = parse_journal_line(line)
    except ValueError:
        return None
    rid = d.get("id") if isinstance(d, dict) else None
    if type(rid) is not int or not -(1 << 63) <= rid < (1 << 63):
        return None
    return rid


def _open_journals(paths: list[Path]) -> list[int]:
    fds = []
    try:
        for p in paths:
            fds.append(os.open(p, os.O_RDONLY))
    except OSError as e:
        for fd in fds:
            os.close(fd)
        raise StorageError(f"cannot read {p}: {e.strerror}", "fix its permissions") from None
    return fds


def record_batches(paths: list[Path]) -> Generator[list[RequestRecord], None, None]:
    """The journals' records in id order, one batch (a fresh list) at a time. A consumer that
    drops each batch before asking for the next holds one batch at most."""
    index = JournalIndex(paths)
    fds = _open_journals(paths)
    try:
        for start, end in index.batches():
            batch = _parse_records(index.read(fds, start, end))
            yield batch
            del batch
    finally:
        for fd in fds:
            os.close(fd)


def _parse_records(lines: list[bytes]) -> list[RequestRecord]:
    """The records of a batch's lines (the cyclic garbage collector paused meanwhile)."""
    out = []
    with _gc_paused():
        for line in lines:
            try:
                d = parse_journal_line(line)
            except ValueError:
                continue
            try:
                out.append(RequestRecord.from_journal(d))
            except TypeError:  # not a record (a field it does not have, a JSON array)
                continue
    return out


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Compaction creates no reference cycles; the cyclic collector's passes over the many
    new lists and records of each batch would cost a fifth of its time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def iter_journal_records(paths: list[Path]) -> Iterator[RequestRecord]:
    """Every record of the journals in id order, holding one batch at a time."""
    for batch in record_batches(paths):
        batch.reverse()
        while batch:
            yield batch.pop()


class _ParquetStream:
    """A Parquet file written a table at a time into row groups of ``group_rows`` rows, under a
    hidden temporary name until ``publish``."""

    def __init__(
        self,
        path: Path,
        schema: pa.Schema,
        group_rows: int,
        compression: str = "zstd",
        use_dictionary: bool | list[str] = True,
    ) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")
        self._group = group_rows
        self._pending: list[pa.Table] = []
        self._rows = 0
        self._writer: pq.ParquetWriter | None = None
        with self._storage_errors():
            self._writer = pq.ParquetWriter(
                self.tmp, schema, compression=compression, use_dictionary=use_dictionary
            )

    @contextmanager
    def _storage_errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            why = e.strerror or str(e)
            raise StorageError(f"cannot write {self.path}: {why}", "free disk space") from None

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._rows += table.num_rows
        if self._rows >= self._group:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        assert self._writer is not None
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._pending = []
        done = 0
        with self._storage_errors():
            while table.num_rows - done >= self._group or (final and done < table.num_rows):
                n = min(self._group, table.num_rows - done)
                self._writer.write_table(table.slice(done, n), row_group_size=n)
                done += n
        rest = table.slice(done)
        self._rows = rest.num_rows
        if rest.num_rows:
            self._pending.append(rest)

    def close(self) -> None:
        self._flush(final=True)
        assert self._writer is not None
        with self._storage_errors():
            self._writer.close()

    def publish(self) -> None:
        with self._storage_errors():
            os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self._pending = []
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 (a failed file is thrown away whatever its state)
                pass
        self.tmp.unlink(missing_ok=True)


def compact_run(run_path: Path, request_journals: list[Path], samples_journal: Path) -> None:
    """requests.parquet, itl.parquet and samples.parquet from the journals (module docstring)."""
    streams: list[_ParquetStream] = []
    try:
        req = _ParquetStream(run_path / "requests.parquet", REQUEST_SCHEMA, REQUEST_ROW_GROUP)
        streams.append(req)
        itl = _ParquetStream(
            run_path / "itl.parquet", ITL_SCHEMA, ITL_ROW_GROUP, ITL_COMPRESSION, ITL_DICTIONARY
        )
        streams.append(itl)
        smp = _ParquetStream(run_path / "samples.parquet", SAMPLE_SCHEMA, SAMPLE_ROW_GROUP)
        streams.append(smp)
        with _gc_paused(), closing(record_batches(request_journals)) as batches:
            for batch in batches:
                req.write(requests_table(batch))
                itl.write(itl_table(batch))
                del batch  # dropped before the next batch is read
        with _gc_paused():
            samples: list[Sample] = []
            for d in read_journal(samples_journal):
                samples.append(Sample(**d))
                if len(samples) >= SAMPLE_BATCH:
                    smp.write(samples_table(samples))
                    samples = []
            smp.write(samples_table(samples))
            del samples
        for s in streams:
            s.close()
        for s in (itl, smp, req):  # requests.parquet last: it marks the run compacted
            s.publish()
    except BaseException:
        for s in streams:
            s.discard()
        raise
