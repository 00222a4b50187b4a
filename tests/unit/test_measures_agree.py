"""The three consumers of the per-request metrics agree on the same requests: requests.parquet's
columns (the record's row), summary.json (through requests.parquet and through the records), the
live histograms and the live SLO counter, and compare's point estimates.

Edge cases: several samples per request (n > 1), a one-token answer (no TPOT), a failed request
with a first token, a request exactly at each SLO boundary, a request without a usage report and
a record with n below 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from profiler.analysis.request_columns import RequestColumns
from profiler.analysis.request_summary import summarize_requests
from profiler.metrics.run_metrics import RunMetrics
from profiler.spec import SloSpec
from profiler.store.record import RequestRecord
from tests.fakes.synthetic_runs import run_of_records, streamed_record

L = {"run_id": "r", "workload": "w", "model": "m", "hostname": "h"}
SLO = SloSpec(ttft_s=0.5, tpot_s=0.25, e2e_s=2.0)


def _rec(i: int, send: float, first: float, end: float, out: int | None, **kw: Any):
    return streamed_record(i, send, [first, end], prompt_tokens=10, output_tokens=out, **kw)


def _records() -> list[RequestRecord]:
    return [
        _rec(0, 1.0, 1.25, 2.0, 9, n=2),  # 4.5 tokens a sample: TPOT 0.75 / 3.5
        _rec(1, 2.0, 2.3, 2.4, 1),  # one token: no TPOT
        _rec(2, 3.0, 3.1, 3.5, 5, outcome="error", error="boom"),  # failed, with a first token
        # exactly at the TTFT (0.5) and E2E (2.0) objectives: meets them
        _rec(3, 4.0, 4.5, 6.0, 7),  # TPOT 1.5 / 6 = 0.25: exactly at the TPOT objective
        _rec(4, 7.0, 7.2, 8.0, None),  # no usage report: no TPOT
        _rec(5, 9.0, 9.1, 9.5, 3),  # TPOT 0.2
        _rec(6, 10.0, 10.1, 10.7, 2, n=0),  # n below 1: no per-sample count, no TPOT
    ]


def _live(records: list[RequestRecord]) -> tuple[CollectorRegistry, RunMetrics]:
    reg = CollectorRegistry()
    m = RunMetrics(reg, **L, slo=SLO)
    for r in records:
        m.on_record(r)
    return reg, m


def _parquet_rows(tmp_path: Path, records: list[RequestRecord]) -> tuple[Path, dict]:
    path = run_of_records(tmp_path, records, "agree")
    t = pq.read_table(path / "requests.parquet").to_pydict()
    return path, t


def _ok_values(rows: dict, column: str) -> list[float]:
    return sorted(
        v for v, o in zip(rows[column], rows["outcome"], strict=True) if o == "ok" and v is not None
    )


@pytest.mark.parametrize("key", ["ttft_s", "tpot_s", "e2e_s"])
def test_columns_summary_and_live_histograms_count_the_same_values(
    tmp_path: Path, key: str
) -> None:
    recs = _records()
    path, rows = _parquet_rows(tmp_path, recs)
    col = _ok_values(rows, key)
    for cols in (RequestColumns.from_records(recs), RequestColumns.from_run_dir(path)):
        lat = summarize_requests(cols, run_id="x")["latency"][key]
        assert lat["count"] == len(col)
        assert lat["p50"] == pytest.approx(float(np.median(col)))
        assert lat["max"] == pytest.approx(col[-1])
        assert lat["mean"] == pytest.approx(float(np.mean(col)))
    reg, _ = _live(recs)
    name = {"ttft_s": "ttft", "tpot_s": "tpot", "e2e_s": "e2e"}[key]
    assert reg.get_sample_value(f"infprof_request_{name}_seconds_count", L) == len(col)
    assert reg.get_sample_value(f"infprof_request_{name}_seconds_sum", L) == pytest.approx(sum(col))


def test_tpot_column_by_hand(tmp_path: Path) -> None:
    _, rows = _parquet_rows(tmp_path, _records())
    tpot = dict(zip(rows["id"], rows["tpot_s"], strict=True))
    assert tpot[0] == pytest.approx(0.75 / 3.5)
    assert tpot[1] is None and tpot[2] is None and tpot[4] is None and tpot[6] is None
    assert tpot[3] == pytest.approx(0.25)
    assert tpot[5] == pytest.approx(0.2)


def test_slo_met_counts_agree_at_the_boundaries(tmp_path: Path) -> None:
    recs = _records()
    path, _ = _parquet_rows(tmp_path, recs)
    reg, _ = _live(recs)
    live = reg.get_sample_value("infprof_slo_met_requests_total", L)
    for cols in (RequestColumns.from_records(recs), RequestColumns.from_run_dir(path)):
        att = summarize_requests(cols, run_id="x", slo=SLO, open_loop=False)["slo_attainment"]
        # 0 (TPOT 0.214 within 0.25), 1 (one token), 3 (exactly at every objective),
        # 4 (no TPOT), 5, 6 (no TPOT): six; 2 failed
        assert att["met"] == 6
        assert live == att["met"]


def test_compare_rates_match_summary_with_a_warmup(tmp_path: Path) -> None:
    """With warm-up and cool-down, compare's point estimates are summary.json's figures: the
    request rate counts completions inside the window, output tokens count as they arrived
    inside it, and the fractions cover the requests wholly inside it."""
    import json

    from profiler.analysis.compare_metrics import point
    from profiler.analysis.run_sample import load_run_sample
    from profiler.analysis.summary_json import summarize_run
    from tests.fakes.synthetic_runs import make_run

    slo = SloSpec(ttft_s=0.06, tpot_s=0.02)
    path = make_run(tmp_path, "r", gpu=False, n=400, seed=1, slo=slo)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["spec"].update(warmup_s=2.0, cooldown_s=2.0)
    (path / "manifest.json").write_text(json.dumps(manifest))
    summary = summarize_run(path)
    sample = load_run_sample(path, slo)
    from_send = summary["slo_attainment"]["from_send"]
    assert point([sample], "slo_attainment") == pytest.approx(from_send["fraction"])
    assert point([sample], "slo_met_rps") == pytest.approx(from_send["requests_per_s"])
    assert point([sample], "error_rate") == pytest.approx(summary["error_rate"])
    thr = summary["throughput"]
    assert point([sample], "requests_per_s") == pytest.approx(thr["requests_per_s"])
    assert point([sample], "output_tokens_per_s") == pytest.approx(thr["output_tokens_per_s"])
    # the window cut requests and tokens: the figures differ from the whole run's
    assert summary["tokens"]["straddling_requests"] > 0
