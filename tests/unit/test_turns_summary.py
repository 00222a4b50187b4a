"""summary.json's per-turn ``sessions`` section, the prefix-cache timeline, the per-turn
Prometheus histograms (bounded ``turn`` label) and the report's sessions section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from profiler.analysis.request_columns import RequestColumns
from profiler.analysis.turns import prefix_cache, session_columns, summarize_sessions
from profiler.metrics.run_metrics import RunMetrics
from profiler.store.parquet import write_requests_parquet
from profiler.store.record import RequestRecord
from profiler.telemetry.sample import Sample

L = {"run_id": "r1", "workload": "chat", "model": "tiny", "hostname": "h"}


def _rec(
    i: int, session: int | None, turn: int | None, ttft: float, ok: bool = True
) -> RequestRecord:
    send = float(i)
    return RequestRecord(
        id=i, workload="w", scenario="s", intended_start_s=send, send_s=send,
        first_token_s=send + ttft, last_token_s=send + ttft + 0.3, end_s=send + ttft + 0.3,
        prompt_tokens=100 * (turn or 1), output_tokens=4, chunks=2,
        outcome="ok" if ok else "error", session_id=session, turn=turn,
        cached_tokens=None if turn is None else 90 * (turn - 1),
        chunk_times_s=[send + ttft, send + ttft + 0.3], chunk_tokens=[1, 3],
    )  # fmt: skip


def _records() -> list[RequestRecord]:
    recs = []
    i = 0
    for s in range(3):  # three sessions of 6 turns; session 2's last turn fails
        for t in range(1, 7):
            recs.append(_rec(i, s, t, 0.01 * t, ok=not (s == 2 and t == 6)))
            i += 1
    return recs


def test_sessions_by_turn_and_duration() -> None:
    recs = _records()
    cols = RequestColumns.from_records(recs)
    sid = np.array([r.session_id for r in recs], dtype=float)
    turn = np.array([r.turn for r in recs], dtype=float)
    cached = np.array([r.cached_tokens for r in recs], dtype=float)
    s = summarize_sessions(cols, sid, turn, cached, np.ones(len(recs), dtype=bool))
    assert s is not None
    assert s["sessions"] == 3 and s["complete_sessions"] == 2
    assert s["turns_per_session"]["mean"] == 6
    # a session's duration: its first send to its last end (complete sessions only)
    assert s["duration_s"]["count"] == 2
    assert s["duration_s"]["max"] == pytest.approx(5 + 0.06 + 0.3)
    b = s["by_turn"]
    assert [b[k]["requests"] for k in ("1", "2-4", "5+")] == [3, 9, 6]
    assert b["5+"]["ok"] == 5
    assert b["1"]["ttft_s"]["p50"] == pytest.approx(0.01)
    assert b["2-4"]["ttft_s"]["mean"] == pytest.approx(0.03)
    assert b["5+"]["prompt_tokens"]["mean"] == pytest.approx((500 * 3 + 600 * 2) / 5)
    assert b["2-4"]["cached_tokens"]["mean"] == pytest.approx(180)
    per = {r["turn"]: r for r in s["per_turn"]}
    assert per[6]["requests"] == 3 and per[6]["ok"] == 2
    assert [per[k]["ttft_mean_s"] for k in range(1, 7)] == pytest.approx(
        [0.01 * k for k in range(1, 7)]
    )
    # no session data: no section
    nan = np.full(len(recs), np.nan)
    assert summarize_sessions(cols, nan, nan, nan, np.ones(len(recs), bool)) is None


def test_session_columns_from_parquet_follow_the_record_order(tmp_path: Path) -> None:
    recs = _records() + [_rec(18, None, None, 0.01)]
    write_requests_parquet(tmp_path / "requests.parquet", recs)
    sid, turn, cached = session_columns(tmp_path, len(recs))
    assert sid[:6].tolist() == [0] * 6 and np.isnan(sid[-1])
    assert turn[:6].tolist() == [1, 2, 3, 4, 5, 6]
    assert cached[1] == 90


def test_prefix_cache_timeline_and_counter_reset() -> None:
    samples = []
    hits = [0, 0, 50, 150, 10, 60]  # the server restarted before the 5th scrape
    queries = [0, 100, 200, 400, 20, 120]
    for k, (h, q) in enumerate(zip(hits, queries, strict=True)):
        samples.append(Sample(float(k), "vllm", "", "prefix_cache_hits_total", float(h)))
        samples.append(Sample(float(k), "vllm", "", "prefix_cache_queries_total", float(q)))
    c = prefix_cache(samples, 0.0, 5.0)
    assert c["available"]
    assert c["queries"] == 100 + 100 + 200 + 20 + 100
    assert c["hits"] == 0 + 50 + 100 + 10 + 50
    assert c["hit_ratio"] == pytest.approx(210 / 520)
    assert c["timeline"]["t_s"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert c["timeline"]["hit_ratio"] == pytest.approx([0.0, 0.5, 0.5, 0.5, 0.5])
    # a window inside the run: from the last scrape at or before its start
    inner = prefix_cache(samples, 2.5, 3.5)
    assert inner["queries"] == 200 + 20 and inner["hits"] == 100 + 10
    assert not prefix_cache([], 0, 1)["available"]


def test_per_turn_histograms_have_a_bounded_turn_label() -> None:
    reg = CollectorRegistry()
    m = RunMetrics(reg, **L, sessions=True)
    for t in (1, 2, 3, 7, 30):
        m.on_record(_rec(t, 0, t, 0.1 * t))
    m.on_record(_rec(99, None, None, 0.5))  # not a turn: no per-turn observation
    count = {
        b: reg.get_sample_value("infprof_turn_ttft_seconds_count", {**L, "turn": b})
        for b in ("1", "2-4", "5+")
    }
    assert count == {"1": 1.0, "2-4": 2.0, "5+": 2.0}
    assert reg.get_sample_value(
        "infprof_turn_e2e_seconds_sum", {**L, "turn": "1"}
    ) == pytest.approx(0.4)
    labels = {
        s.labels["turn"]
        for fam in reg.collect()
        if fam.name.startswith("infprof_turn_")
        for s in fam.samples
    }
    assert labels == {"1", "2-4", "5+"}
    plain = CollectorRegistry()
    RunMetrics(plain, **L).on_record(_rec(1, 0, 1, 0.1))
    assert not any(f.name.startswith("infprof_turn_") for f in plain.collect())


def test_report_has_the_sessions_section(tmp_path: Path) -> None:
    from profiler.report.data import load_run
    from profiler.report.doc import Figure, Table
    from profiler.report.session_section import session_section
    from profiler.store.rundir import write_json_atomic

    recs = _records()
    write_requests_parquet(tmp_path / "requests.parquet", recs)
    cols = RequestColumns.from_records(recs)
    sid, turn, cached = session_columns(tmp_path, len(recs))
    samples = [
        Sample(float(k), "vllm", "", m, float(v))
        for k in range(4)
        for m, v in (("prefix_cache_hits_total", 40 * k), ("prefix_cache_queries_total", 100 * k))
    ]
    summary = {
        "run_id": "r", "window": {"start": 0.0, "end": 20.0, "seconds": 20.0, "warmup_s": 0, "cooldown_s": 0},
        "sessions": summarize_sessions(cols, sid, turn, cached, np.ones(len(recs), bool)),
        "prefix_cache": prefix_cache(samples, 0.0, 20.0),
    }  # fmt: skip
    write_json_atomic(tmp_path / "summary.json", summary)
    write_json_atomic(tmp_path / "manifest.json", {"run_id": "r", "spec": None})
    sec = session_section(load_run(tmp_path), "")
    assert sec is not None
    kinds = [type(b) for b in sec.blocks]
    assert Table in kinds and Figure in kinds
    by_turn = [b for b in sec.blocks if isinstance(b, Table) and b.rows and b.rows[0][0] == "1"]
    assert [r[0] for r in by_turn[0].rows] == ["1", "2-4", "5+"]
