"""``--workers``: each worker ships sketches of its requests and the parent merges them, so
the client's dispatch-lag p99 is that of all the workers' requests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from profiler.latency_sketches import LatencySketches
from profiler.load.driver import DriverResult
from profiler.load.health import ClientHealth
from profiler.load.spread import merge_results
from profiler.load.workers import _SketchSink
from profiler.store.record import RequestRecord
from profiler.store.record_columns import sketch_records


def _records(lags: list[float], start_id: int) -> list[RequestRecord]:
    out = []
    for i, lag in enumerate(lags):
        t0 = float(i) * 0.01
        out.append(
            RequestRecord(
                id=start_id + i,
                workload="w",
                scenario="s",
                intended_start_s=t0,
                send_s=t0 + lag,
                first_token_s=t0 + lag + 0.05,
                last_token_s=t0 + lag + 0.2,
                end_s=t0 + lag + 0.2,
                prompt_tokens=8,
                output_tokens=4,
                chunks=4,
                chunk_times_s=[t0 + lag + 0.05 + 0.05 * k for k in range(4)],
                chunk_tokens=[1, 1, 1, 1],
            )
        )
    return out


def _result(worker_p99: float) -> DriverResult:
    return DriverResult(
        sent=0,
        done=0,
        ended="completed",
        reason=None,
        health=ClientHealth(dispatch_lag_p99_s=worker_p99),
        load_start_s=0.0,
        load_end_s=10.0,
    )


def test_dispatch_lag_p99_is_that_of_all_workers_requests() -> None:
    """A worker that sent 10 late requests out of 1000 does not make the run's p99 its own:
    merging per-worker p99s by max reported 0.5 s where the union's p99 is about 6 ms."""
    lags_a, lags_b = [0.001] * 990, [0.5] * 10
    shipped = []
    for lags, first in ((lags_a, 0), (lags_b, 990)):
        sink = _SketchSink()
        for rec in _records(lags, first):
            sink.append(rec)
        shipped.append(json.loads(json.dumps(sink.finish().to_dict())))  # over the pipe
    results = [_result(float(np.percentile(lags_a, 99))), _result(float(np.percentile(lags_b, 99)))]
    merged = merge_results(
        results, "completed", None, 0.0, [LatencySketches.from_dict(d) for d in shipped]
    )
    want = float(np.percentile(lags_a + lags_b, 99))
    assert merged.health.dispatch_lag_p99_s == pytest.approx(want, rel=1e-9)
    assert want < 0.01


def test_sink_batches_and_merges_every_record() -> None:
    recs = _records([0.001 * (i % 7) for i in range(2500)], 0)
    sink = _SketchSink()
    for r in recs:
        sink.append(r)
    got = sink.finish().distributions()
    want = sketch_records(recs).distributions()
    assert got["itl_s"]["count"] == 2500 * 3
    for k in got:
        assert {q: v for q, v in got[k].items() if q != "mean"} == {
            q: v for q, v in want[k].items() if q != "mean"
        }
