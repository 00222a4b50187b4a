"""Streaming compaction: journals -> requests/itl/samples.parquet a batch at a time, with the
same tables as the one-shot compaction it replaced (kept below as the reference), in bounded
memory, crash-safe, ``--workers`` journals merged."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic_core import to_json

from profiler.store import parquet as parquet_mod
from profiler.store.journal import SAMPLES_JOURNAL, read_journal
from profiler.store.parquet import ITL_SCHEMA, REQUEST_SCHEMA, SAMPLE_SCHEMA
from profiler.store.record import RequestRecord
from profiler.store.rundir import RunDir, read_records
from profiler.telemetry.sample import Sample

FILES = ("requests.parquet", "itl.parquet", "samples.parquet")
SMALL = {  # batch and row-group sizes that put many boundaries into a small run
    "BATCH_RECORDS": 7,
    "BATCH_BYTES": 4096,
    "REQUEST_ROW_GROUP": 5,
    "ITL_ROW_GROUP": 50,
    "SAMPLE_ROW_GROUP": 9,
    "SAMPLE_BATCH": 4,
}


# ------------------------------------------------ the one-shot compaction this replaced, verbatim
def _reference_records(rd: RunDir) -> list[RequestRecord]:
    records = []
    for path in rd.request_journals():
        for d in read_journal(path):
            try:
                records.append(RequestRecord.from_journal(d))
            except TypeError:
                continue
    records.sort(key=lambda r: r.id)
    return records


def _reference_requests(records: list[RequestRecord]) -> pa.Table:
    rows = [r.to_row() for r in records]
    cols = {name: [row[name] for row in rows] for name in REQUEST_SCHEMA.names}
    return pa.table(cols, schema=REQUEST_SCHEMA)


def _reference_itl(records: list[RequestRecord]) -> pa.Table:
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


def _reference_samples(rd: RunDir) -> pa.Table:
    samples = [Sample(**d) for d in read_journal(rd.file(SAMPLES_JOURNAL))]
    cols = {name: [getattr(s, name) for s in samples] for name in SAMPLE_SCHEMA.names}
    return pa.table(cols, schema=SAMPLE_SCHEMA)


def _reference(rd: RunDir) -> dict[str, pa.Table]:
    records = _reference_records(rd)
    return {
        "requests.parquet": _reference_requests(records),
        "itl.parquet": _reference_itl(records),
        "samples.parquet": _reference_samples(rd),
    }


# ------------------------------------------------------------------------------- run fixtures
def _record(i: int, rng: np.random.Generator) -> RequestRecord:
    kind = i % 7
    send = float(i) + float(rng.uniform(0, 0.01))
    k = int(rng.integers(0, 12))
    times = (send + 0.05 + np.cumsum(rng.gamma(2.0, 0.01, k))).tolist()
    rec = RequestRecord(
        id=i,
        workload="w",
        scenario=f"s{i % 3}",
        intended_start_s=float(i),
        send_s=send,
        first_token_s=times[0] if times else None,
        last_token_s=times[-1] if times else None,
        end_s=(times[-1] if times else send) + 0.001,
        prompt_tokens=int(rng.integers(1, 300)),
        output_tokens=k,
        requested_output_tokens=16,
        chunks=k,
        chunk_times_s=times,
        chunk_tokens=[int(x) for x in rng.integers(1, 4, k)],
        worker=i % 3,
        queue_wait_s=None if i % 2 else 0.001 * i,
    )
    if kind == 1:  # an error: nothing streamed
        rec.outcome, rec.http_status, rec.error = "error", 500, "HTTP 500: boom é"
        rec.first_token_s = rec.last_token_s = None
        rec.output_tokens, rec.chunks = None, 0
        rec.chunk_times_s, rec.chunk_tokens = [], []
    elif kind == 2 and k:  # n = 2: two interleaved samples
        rec.n = 2
        rec.chunk_choice = [int(c) for c in rng.integers(0, 2, k)]
    elif kind == 3:
        rec.outcome, rec.tokens_estimated = "timeout", True
        rec.send_s = None
    return rec


def _write_journal(path: Path, recs: list[RequestRecord]) -> None:
    with open(path, "ab") as f:
        for r in recs:
            f.write(to_json(r.to_journal(), inf_nan_mode="constants") + b"\n")


def _write_samples(rd: RunDir, n: int) -> None:
    with open(rd.file(SAMPLES_JOURNAL), "ab") as f:
        for s in range(n):
            err = "GPU is lost" if s % 11 == 0 else None
            sample = Sample(
                s * 0.1, "nvml", str(s % 4), "power_watts", None if err else s * 1.5, err
            )
            f.write(to_json(sample._asdict()) + b"\n")


def _finish_order(n: int, rng: np.random.Generator) -> list[int]:
    """Request ids in the order concurrent requests finish: out of order within ~20."""
    return np.argsort(np.arange(n) + rng.uniform(0, 20, n), kind="stable").tolist()


def _make_run(tmp_path: Path, n: int = 120, samples: int = 40, name: str = "r") -> RunDir:
    rng = np.random.default_rng(n)
    rd = RunDir.create(tmp_path, name)
    recs = [_record(i, rng) for i in range(n)]
    _write_journal(rd.file("requests.jsonl"), [recs[i] for i in _finish_order(n, rng)])
    _write_samples(rd, samples)
    return rd


def _tables(path: Path) -> dict[str, pa.Table]:
    return {name: pq.read_table(path / name) for name in FILES}


def _assert_same(path: Path, ref: dict[str, pa.Table]) -> None:
    got = _tables(path)
    for name in FILES:
        assert got[name].schema.equals(ref[name].schema), name
        assert got[name].num_rows == ref[name].num_rows, name
        assert got[name].equals(ref[name]), name


@pytest.fixture(params=["default sizes", "small batches"])
def sizes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "small batches":
        for name, value in SMALL.items():
            monkeypatch.setattr(f"profiler.store.compaction.{name}", value, raising=False)
    return str(request.param)


# ----------------------------------------------------------------------------------- identical
def test_compaction_matches_the_one_shot_reference(tmp_path: Path, sizes: str) -> None:
    rd = _make_run(tmp_path)
    ref = _reference(rd)
    assert ref["itl.parquet"].num_rows > 200 and ref["requests.parquet"].num_rows == 120
    rd.compact()
    _assert_same(rd.path, ref)


def test_compaction_matches_reference_with_bad_lines_and_a_truncated_tail(
    tmp_path: Path, sizes: str
) -> None:
    """Lines the old compaction skipped are skipped (invalid JSON, invalid UTF-8, a field the
    record does not have, a line without an id, a JSON array), one it read through json's
    fallback is read, and the line a killed process left unfinished is ignored."""
    rd = _make_run(tmp_path)
    rng = np.random.default_rng(1)
    extra = _record(500, rng)
    odd = extra.to_journal() | {"error": "x\udcff"}  # lone surrogate: not UTF-8
    with open(rd.file("requests.jsonl"), "ab") as f:
        f.write(b'{"id":7000,"workload":\n')  # not JSON
        f.write(b'{"id": 7001, "workload": "w", "bogus": 1}\n')  # not a RequestRecord field
        f.write(b'{"workload": "w", "scenario": "s", "intended_start_s": 0.0}\n')  # no id
        f.write(b"[1, 2, 3]\n")
        f.write(json.dumps(_record(7002, rng).to_journal()).encode() + b"\n")  # spaced JSON
        f.write(json.dumps(odd, ensure_ascii=False).encode("utf-8", "surrogateescape") + b"\n")
        f.write(b'{"id": 7003, "workload": "w", "sc')  # the process died mid-write
    with open(rd.file(SAMPLES_JOURNAL), "ab") as f:
        f.write(b'{"t_s": 1.0, "source": "nv')
    ref = _reference(rd)
    ids = ref["requests.parquet"].column("id").to_pylist()
    assert 7002 in ids and 500 in ids and 7000 not in ids and 7001 not in ids and 7003 not in ids
    rd.compact()
    _assert_same(rd.path, ref)


def test_workers_journals_merge_in_id_order_as_before(tmp_path: Path, sizes: str) -> None:
    """``--workers`` journals (request i to worker i % K) merge into one id order; an id found
    in two journals (a re-sent record) keeps both, in journal-name order, as the stable sort of
    the old compaction did."""
    rng = np.random.default_rng(3)
    rd = RunDir.create(tmp_path, "w")
    n, k = 150, 11  # w10 sorts between w1 and w2 by name
    recs = [_record(i, rng) for i in range(n)]
    for w in range(k):
        mine = [recs[i] for i in _finish_order(n, rng) if i % k == w]
        _write_journal(rd.file(f"requests.w{w}.jsonl"), mine)
    dup = _record(40, rng)
    dup.scenario = "re-sent"
    _write_journal(rd.file("requests.jsonl"), [dup, _record(n + 5, rng)])
    _write_journal(rd.file("requests.w10.jsonl"), [_record(40, rng)])
    _write_samples(rd, 3)
    assert [p.name for p in rd.request_journals()][:4] == [
        "requests.jsonl",
        "requests.w0.jsonl",
        "requests.w1.jsonl",
        "requests.w10.jsonl",
    ]
    ref = _reference(rd)
    ids = ref["requests.parquet"].column("id").to_pylist()
    assert ids.count(40) == 3 and ids == sorted(ids)
    rd.compact()
    _assert_same(rd.path, ref)
    got = pq.read_table(rd.file("requests.parquet")).to_pylist()
    assert [r["scenario"] for r in got if r["id"] == 40][0] == "re-sent"


def test_empty_journals_compact_to_empty_tables(tmp_path: Path) -> None:
    rd = RunDir.create(tmp_path, "e")
    rd.file("requests.jsonl").touch()
    ref = _reference(rd)
    rd.compact()
    _assert_same(rd.path, ref)


def test_itl_layout_the_summary_relies_on(tmp_path: Path, sizes: str) -> None:
    """Every request's chunks sit contiguously in requests.parquet order, ``chunks`` rows
    each (``_parquet_itl_batches`` selects rows from that layout), and itl.parquet's row
    groups hold ITL_ROW_GROUP rows (the last one the rest)."""
    from profiler.store import compaction

    rd = _make_run(tmp_path, n=200)
    rd.compact()
    req = pq.read_table(rd.file("requests.parquet"), columns=["id", "chunks"])
    itl = pq.ParquetFile(rd.file("itl.parquet"))
    want = np.repeat(req.column("id").to_numpy(), req.column("chunks").to_numpy())
    assert np.array_equal(itl.read(columns=["request_id"]).column(0).to_numpy(), want)
    groups = [itl.metadata.row_group(i).num_rows for i in range(itl.metadata.num_row_groups)]
    size = compaction.ITL_ROW_GROUP
    assert all(g == size for g in groups[:-1]) and 0 < groups[-1] <= size


# ----------------------------------------------------------------------------- bounded memory
class _Alive:
    """Instances of a class alive at once: now and the most ever."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.made = 0

    def born(self) -> None:
        self.now += 1
        self.made += 1
        self.peak = max(self.peak, self.now)

    def died(self) -> None:
        self.now -= 1


def _counting_record(alive: _Alive) -> type[RequestRecord]:
    class CountedRecord(RequestRecord):
        __slots__ = ()

        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            alive.born()

        def __del__(self) -> None:
            alive.died()

    return CountedRecord


def _counting_sample(alive: _Alive) -> type[Sample]:
    class CountedSample(Sample):
        __slots__ = ()

        def __new__(cls, *a: Any, **kw: Any) -> CountedSample:
            alive.born()
            return super().__new__(cls, *a, **kw)

        def __del__(self) -> None:
            alive.died()

    return CountedSample


def _count_objects(monkeypatch: pytest.MonkeyPatch) -> tuple[_Alive, _Alive]:
    records, samples = _Alive(), _Alive()
    rec_cls, sample_cls = _counting_record(records), _counting_sample(samples)
    for mod in ("profiler.store.rundir", "profiler.store.compaction"):
        monkeypatch.setattr(f"{mod}.RequestRecord", rec_cls, raising=False)
        monkeypatch.setattr(f"{mod}.Sample", sample_cls, raising=False)
    return records, samples


def test_compaction_holds_at_most_one_batch_of_records_and_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rd = _make_run(tmp_path, n=300, samples=200)
    ref = _reference(rd)
    for name, value in SMALL.items():
        monkeypatch.setattr(f"profiler.store.compaction.{name}", value, raising=False)
    records, samples = _count_objects(monkeypatch)
    rd.compact()
    assert records.made == 300 and samples.made == 200  # every one went through the classes
    assert records.peak <= SMALL["BATCH_RECORDS"], records.peak
    assert samples.peak <= SMALL["SAMPLE_BATCH"], samples.peak
    assert records.now == 0 and samples.now == 0
    _assert_same(rd.path, ref)


def test_batches_are_cut_by_journal_bytes_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch closes at BATCH_BYTES of journal lines even below BATCH_RECORDS records, so a
    run of long generations holds as few records as their size needs."""
    rd = _make_run(tmp_path, n=300)
    line = rd.file("requests.jsonl").stat().st_size / 300
    monkeypatch.setattr("profiler.store.compaction.BATCH_RECORDS", 1000, raising=False)
    monkeypatch.setattr("profiler.store.compaction.BATCH_BYTES", int(line * 10), raising=False)
    records, _ = _count_objects(monkeypatch)
    rd.compact()
    assert records.made == 300 and records.peak <= 25, records.peak


def test_journal_records_stream_in_id_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``iter_journal_records`` (a run never compacted) yields in id order without loading
    every record first."""
    rd = _make_run(tmp_path, n=300)
    monkeypatch.setattr("profiler.store.compaction.BATCH_RECORDS", 10, raising=False)
    records, _ = _count_objects(monkeypatch)
    it = rd.iter_journal_records()
    first = next(it)
    assert first.id == 0
    assert records.peak <= 10, records.peak
    rest = [r.id for r in it]
    assert [first.id, *rest] == list(range(300))


# ------------------------------------------------------------------------------- crash safety
class _Stop(BaseException):
    """Stands for a SIGINT/SIGTERM arriving mid-compaction."""


@pytest.mark.parametrize("stop_in", ["itl.parquet", "samples.parquet"])
def test_interrupted_compaction_keeps_journals_and_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_in: str
) -> None:
    """A compaction stopped part-way leaves the journals as they were, no requests.parquet
    (the mark of a compacted run, so ``infprof report`` compacts again) and no temporary
    file; compacting again gives the full tables."""
    rd = _make_run(tmp_path, n=200, samples=50)
    ref = _reference(rd)
    before = {p.name: p.read_bytes() for p in rd.path.glob("*.jsonl")}
    for name, value in SMALL.items():
        monkeypatch.setattr(f"profiler.store.compaction.{name}", value, raising=False)
    real = pq.ParquetWriter.write_table
    writes = {"n": 0}

    def write_table(self: pq.ParquetWriter, table: pa.Table, *a: Any, **kw: Any) -> None:
        if stop_in in str(self.where):
            writes["n"] += 1
            if writes["n"] == 2:
                raise _Stop
        real(self, table, *a, **kw)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", write_table)
    real_write = pq.write_table  # the one-shot path writes whole tables

    def one_shot(table: pa.Table, where: Any, *a: Any, **kw: Any) -> None:
        if stop_in in str(where):
            raise _Stop
        real_write(table, where, *a, **kw)

    monkeypatch.setattr(pq, "write_table", one_shot)
    with pytest.raises(_Stop):
        rd.compact()
    assert {p.name: p.read_bytes() for p in rd.path.glob("*.jsonl")} == before
    assert not rd.file("requests.parquet").exists()
    assert [p.name for p in rd.path.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.undo()
    rd.compact()
    _assert_same(rd.path, ref)
    assert {p.name: p.read_bytes() for p in rd.path.glob("*.jsonl")} == before


def test_compacting_again_replaces_the_files(tmp_path: Path) -> None:
    """Safe to run again: a second compaction (more lines appended since) rewrites all three."""
    rd = _make_run(tmp_path, n=50)
    rd.compact()
    _write_journal(rd.file("requests.jsonl"), [_record(60, np.random.default_rng(0))])
    _write_samples(rd, 2)
    ref = _reference(rd)
    rd.compact()
    _assert_same(rd.path, ref)
    assert [r.id for r in read_records(rd.path)][-1] == 60


def test_disk_full_is_a_storage_error_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from profiler.errors import StorageError

    rd = _make_run(tmp_path, n=20)

    def full(self: pq.ParquetWriter, *a: Any, **kw: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    with pytest.raises(StorageError, match="cannot write .*No space left"):
        rd.compact()
    assert sorted(p.name for p in rd.path.iterdir()) == ["requests.jsonl", "samples.jsonl"]


def test_parquet_module_keeps_its_one_shot_writers(tmp_path: Path) -> None:
    """The one-shot writers stay (tests' synthetic runs use them) and agree with compaction."""
    rd = _make_run(tmp_path, n=30)
    recs = _reference_records(rd)
    parquet_mod.write_itl_parquet(tmp_path / "itl.parquet", recs)
    parquet_mod.write_requests_parquet(tmp_path / "requests.parquet", recs)
    rd.compact()
    for name in ("itl.parquet", "requests.parquet"):
        assert pq.read_table(tmp_path / name).equals(pq.read_table(rd.file(name)))


def test_a_journal_only_run_is_repaired_through_compaction_one_batch_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``infprof report`` on a run that died before compaction compacts it (streaming) and
    summarises the Parquet files: no step holds every record."""
    from profiler.analysis.repair import repair_run
    from tests.fakes.synthetic_runs import make_run

    run = make_run(tmp_path, "dead", journal_only=True, n=120)
    monkeypatch.setattr("profiler.store.compaction.BATCH_RECORDS", 16, raising=False)
    records, _ = _count_objects(monkeypatch)
    notes = repair_run(run)
    assert "compacted" in " ".join(notes)
    assert records.made == 120 and records.peak <= 16, records.peak
    summary = json.loads((run / "summary.json").read_text())
    assert summary["requests"]["total"] == 120
