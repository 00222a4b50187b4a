"""summary.json's distributions from sketches: itl.parquet read a batch at a time, the method
and error stated, and per-worker partial summaries that merge into the whole."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from profiler import sketches
from profiler.analysis import request_columns as summary_mod
from profiler.analysis.request_columns import RequestColumns
from profiler.analysis.request_summary import summarize_requests
from profiler.latency_sketches import LatencySketches
from profiler.sketches import RELATIVE_ACCURACY
from profiler.store.record import RequestRecord
from profiler.store.record_columns import sketch_records
from tests.fakes.synthetic_runs import run_of_records, streamed_record


def _records(n: int, gaps: int, seed: int = 0) -> list[RequestRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        send = i * 0.05
        ttft = float(rng.uniform(0.02, 0.2))
        g = rng.gamma(4.0, 0.005, size=gaps)
        times = [send + ttft, *(send + ttft + np.cumsum(g))]
        toks = [1] * (gaps + 1)
        if i % 7 == 3:  # some chunks carry several tokens: their gap is shared among them
            toks = [int(k) for k in rng.integers(1, 4, gaps + 1)]
        out.append(
            streamed_record(
                i,
                send,
                times,
                toks,
                intended_start_s=send - 0.001,
                prompt_tokens=16,
                output_tokens=sum(toks),
                outcome="ok" if i % 11 else "error",
            )
        )
    return out


def _compacted(tmp_path: Path, recs: list[RequestRecord], name: str = "r") -> Path:
    return run_of_records(tmp_path, recs, name)


def _exact_itl(recs: list[RequestRecord], keep: set[int] | None = None) -> np.ndarray:
    return np.array(
        [
            x
            for r in recs
            if r.outcome == "ok" and (keep is None or r.id in keep)
            for x in r.itl_shares()
        ]
    )


def test_itl_parquet_is_read_a_batch_at_a_time(tmp_path: Path, monkeypatch) -> None:
    """The summary streams itl.parquet: never the whole file, no batch larger than
    ITL_BATCH_ROWS, and the numpy memory it holds does not grow with the number of gaps."""
    recs = _records(40, 6000)  # 240k gaps: 1.9 MB as float64
    path = _compacted(tmp_path, recs)
    itl = str(path / "itl.parquet")
    # 241 row groups of 1000 rows (compaction writes row groups of 1Mi rows)
    pq.write_table(pq.read_table(itl), itl, row_group_size=1000, compression="none")
    assert pq.ParquetFile(itl).metadata.num_row_groups == 241
    whole_reads: list[str] = []
    real_read_table = pq.read_table

    def read_table(source, *a, **kw):
        if str(source) == itl:
            whole_reads.append(itl)
        return real_read_table(source, *a, **kw)

    for name in ("read", "read_row_groups"):
        real = getattr(pq.ParquetFile, name)

        def spy(self, *a, _real=real, _name=name, **kw):
            if "gap_s" in self.schema_arrow.names:  # itl.parquet, not requests.parquet
                whole_reads.append(_name)
            return _real(self, *a, **kw)

        monkeypatch.setattr(pq.ParquetFile, name, spy)
    monkeypatch.setattr(pq, "read_table", read_table)
    monkeypatch.setattr(summary_mod.pq, "read_table", read_table)
    monkeypatch.setattr(summary_mod, "ITL_BATCH_ROWS", 1000)
    monkeypatch.setattr(sketches, "EXACT_MAX_VALUES", 5000)

    batches = []
    real_source = summary_mod._parquet_itl_batches

    arrow_bytes = []

    def counting(*a, **kw):
        for gaps, toks in real_source(*a, **kw):
            batches.append(gaps.size)
            arrow_bytes.append(pa.total_allocated_bytes())  # what Arrow holds right now
            yield gaps, toks

    monkeypatch.setattr(summary_mod, "_parquet_itl_batches", counting)
    cols = RequestColumns.from_run_dir(path)
    # what the summary imports on first use (the DDSketch past the exact threshold, the error
    # grouping) is imported now: the peak below is the summary's memory, not a module's
    import ddsketch.mapping  # noqa: F401

    import profiler.load.guard  # noqa: F401

    tracemalloc.start()
    try:
        s = summarize_requests(cols, run_id="x")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not whole_reads
    assert len(batches) >= 240 and max(batches) <= 1000
    # a row group's columns are ~20 kB; the file's gap column alone is 1.9 MB
    assert max(arrow_bytes) < 200_000, max(arrow_bytes)
    # the summary holds a batch, the sketch's bins and the per-request columns (measured
    # 0.35 MB, the same with 80k gaps): not the gaps
    assert peak < 640_000, peak
    want = _exact_itl(recs)
    d = s["latency"]["itl_s"]
    assert d["count"] == want.size and d["method"] == "ddsketch"
    for q in (50, 90, 95, 99):
        exact = np.percentile(want, q, method="lower")
        assert abs(d[f"p{q}"] - exact) <= RELATIVE_ACCURACY * exact * (1 + 1e-9)


@pytest.mark.parametrize("warmup_s", [0.0, 0.3])
def test_run_dir_and_records_give_the_same_sketches(tmp_path: Path, monkeypatch, warmup_s) -> None:
    """Batches that cut requests anywhere (7 rows), a window that drops requests, failed
    requests and multi-token chunks: the streamed ITL equals the in-memory one exactly, in
    both modes, and the sketched one is within the bound of numpy's."""
    recs = _records(60, 30, seed=1)
    path = _compacted(tmp_path, recs)
    monkeypatch.setattr(summary_mod, "ITL_BATCH_ROWS", 7)
    for exact_max in (10**6, 100):
        monkeypatch.setattr(sketches, "EXACT_MAX_VALUES", exact_max)
        want = summarize_requests(RequestColumns.from_records(recs), run_id="x", warmup_s=warmup_s)
        got = summarize_requests(RequestColumns.from_run_dir(path), run_id="x", warmup_s=warmup_s)
        for k in ("ttft_s", "tpot_s", "e2e_s", "itl_s"):
            g, w = got["latency"][k], want["latency"][k]
            assert {a: b for a, b in g.items() if a != "mean"} == {
                a: b for a, b in w.items() if a != "mean"
            }
            assert g["mean"] == pytest.approx(w["mean"], rel=1e-12)
    assert got["latency"]["itl_s"]["method"] == "ddsketch"
    kept = got["window"]["excluded_requests"]
    assert (kept > 0) == (warmup_s > 0)


def test_summary_states_method_and_error(tmp_path: Path, monkeypatch) -> None:
    recs = _records(20, 10)
    s = summarize_requests(RequestColumns.from_records(recs), run_id="x")
    assert s["quantiles"]["exact_max_values"] == sketches.EXACT_MAX_VALUES
    assert s["quantiles"]["relative_error"] == RELATIVE_ACCURACY
    assert s["quantiles"]["above"] == "ddsketch"
    for k in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
        assert s["latency"][k]["method"] == "exact"
        assert s["latency"][k]["relative_error"] == 0.0
    monkeypatch.setattr(sketches, "EXACT_MAX_VALUES", 50)
    s = summarize_requests(RequestColumns.from_records(recs), run_id="x")
    assert s["latency"]["itl_s"]["method"] == "ddsketch"
    assert s["latency"]["itl_s"]["relative_error"] == RELATIVE_ACCURACY
    assert s["latency"]["ttft_s"]["method"] == "exact"  # 18 successful requests
    json.dumps(s)


def test_worker_partial_summaries_merge_into_the_whole(monkeypatch) -> None:
    """Each worker sketches its own requests; the merge of the shipped (JSON) forms equals
    the sketches of all the requests, exact below the threshold and sketched above it."""
    recs = _records(90, 40, seed=2)
    for exact_max in (10**6, 200):
        monkeypatch.setattr(sketches, "EXACT_MAX_VALUES", exact_max)
        whole = sketch_records(recs)
        merged = LatencySketches()
        for k in range(3):
            part = sketch_records(recs[k::3])
            merged.merge(LatencySketches.from_dict(json.loads(json.dumps(part.to_dict()))))
        a, b = merged.distributions(), whole.distributions()
        assert a.keys() == b.keys()
        for key in a:
            if exact_max == 200 and a[key]["count"] > 200:
                assert a[key]["method"] == "ddsketch"
            # the same values (exact) or the same bin counts (sketched): the same figures
            assert {q: v for q, v in a[key].items() if q != "mean"} == {
                q: v for q, v in b[key].items() if q != "mean"
            }
            assert a[key]["mean"] == (b[key]["mean"] and pytest.approx(b[key]["mean"], rel=1e-12))
    itl = _exact_itl(recs)
    got = merged.distributions()["itl_s"]
    assert got["count"] == itl.size
    exact = np.percentile(itl, 99, method="lower")
    assert abs(got["p99"] - exact) <= RELATIVE_ACCURACY * exact * (1 + 1e-9)
