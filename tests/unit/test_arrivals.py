"""Arrival schedules: statistics on seeded schedules, reproducibility, traces, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from profiler.errors import SpecError
from profiler.load.arrivals import read_trace, schedule
from profiler.spec import ArrivalSpec


def gaps(spec: ArrivalSpec, n: int = 20_000) -> np.ndarray:
    s = schedule(spec, n, None, workload="w")
    assert s.offsets_s is not None
    assert s.offsets_s[0] == 0.0
    assert np.all(np.diff(s.offsets_s) >= 0)
    return np.diff(s.offsets_s)


def test_constant_spacing_is_exact() -> None:
    s = schedule(ArrivalSpec(kind="constant", rate=8), 100, None, workload="w")
    assert s.offsets_s is not None
    np.testing.assert_allclose(s.offsets_s, np.arange(100) / 8, rtol=0, atol=1e-12)
    assert s.target_rate(3.0) == 8
    assert s.concurrency is None


def test_poisson_mean_rate_and_cv() -> None:
    g = gaps(ArrivalSpec(kind="poisson", rate=20, seed=3))
    assert 1 / g.mean() == pytest.approx(20, rel=0.03)
    assert g.std() / g.mean() == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("burstiness", [0.25, 0.5, 1.0, 4.0])
def test_gamma_rate_and_dispersion(burstiness: float) -> None:
    g = gaps(ArrivalSpec(kind="gamma", rate=10, burstiness=burstiness, seed=11), 40_000)
    assert 1 / g.mean() == pytest.approx(10, rel=0.04)
    cv2 = g.var() / g.mean() ** 2
    assert cv2 == pytest.approx(1 / burstiness, rel=0.08)


def test_same_seed_same_schedule_other_seed_differs() -> None:
    for kind in ("poisson", "gamma"):
        a = schedule(
            ArrivalSpec(kind=kind, rate=5, burstiness=0.5, seed=1), 500, None, workload="w"
        ).offsets_s
        b = schedule(
            ArrivalSpec(kind=kind, rate=5, burstiness=0.5, seed=1), 500, None, workload="w"
        ).offsets_s
        c = schedule(
            ArrivalSpec(kind=kind, rate=5, burstiness=0.5, seed=2), 500, None, workload="w"
        ).offsets_s
        assert a is not None and b is not None and c is not None
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_duration_only_and_whichever_comes_first() -> None:
    spec = ArrivalSpec(kind="poisson", rate=50, seed=4)
    by_time = schedule(spec, None, 60.0, workload="w").offsets_s
    assert by_time is not None
    assert by_time.max() < 60.0
    assert len(by_time) == pytest.approx(3000, rel=0.06)
    few = schedule(spec, 100, 60.0, workload="w").offsets_s  # the count comes first
    assert few is not None and len(few) == 100
    short = schedule(spec, 10_000, 2.0, workload="w").offsets_s  # the duration comes first
    assert short is not None and short.max() < 2.0 and len(short) < 200
    const = schedule(ArrivalSpec(kind="constant", rate=4), None, 10.0, workload="w").offsets_s
    assert const is not None and len(const) == 40


def test_open_loop_needs_count_or_duration() -> None:
    with pytest.raises(SpecError, match="number of requests or a duration"):
        schedule(ArrivalSpec(kind="poisson", rate=1), None, None, workload="w")


def test_ramp_rate_increases_linearly() -> None:
    spec = ArrivalSpec(kind="ramp", rate_start=2, rate=20)
    s = schedule(spec, None, 100.0, workload="w")
    assert s.offsets_s is not None
    # integral of the rate over 100 s: (2 + 20) / 2 * 100 = 1100 requests
    assert len(s.offsets_s) == pytest.approx(1100, abs=2)
    g = np.diff(s.offsets_s)
    assert np.all(np.diff(g) <= 1e-12)  # gaps shrink: the rate only rises
    # local rate near t matches the target rate at t
    for t in (10.0, 50.0, 90.0):
        i = int(np.searchsorted(s.offsets_s, t))
        local = 1 / g[i]
        assert local == pytest.approx(s.target_rate(t), rel=0.02)
    assert s.target_rate(0) == 2 and s.target_rate(100) == 20 and s.target_rate(500) == 20


def test_ramp_by_count_spans_the_mean_rate_horizon() -> None:
    s = schedule(ArrivalSpec(kind="ramp", rate_start=1, rate=9), 500, None, workload="w")
    assert s.offsets_s is not None and len(s.offsets_s) == 500
    # 500 requests at a mean of 5/s take 100 s
    assert s.offsets_s[-1] == pytest.approx(100, rel=0.01)
    assert s.target_rate(50) == pytest.approx(5)


def test_ramp_down_is_allowed() -> None:
    s = schedule(ArrivalSpec(kind="ramp", rate_start=10, rate=2), None, 50.0, workload="w")
    assert s.offsets_s is not None
    g = np.diff(s.offsets_s)
    assert g[-1] > g[0]
    assert len(s.offsets_s) == pytest.approx(300, abs=2)


def test_closed_loop_has_no_times() -> None:
    s = schedule(ArrivalSpec(kind="concurrency", concurrency=16), 200, None, workload="w")
    assert s.offsets_s is None and s.concurrency == 16 and s.trace_rows is None
    assert s.target_rate(1.0) is None


def test_max_concurrency_is_carried() -> None:
    s = schedule(ArrivalSpec(kind="poisson", rate=100, max_concurrency=8), 10, None, workload="w")
    assert s.max_concurrency == 8 and s.concurrency is None


def test_trace_jsonl_replay_is_exact_and_normalised(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    rows = [
        {"timestamp": 1700000002.5, "input_len": 30, "output_len": 7, "prefix_id": "a"},
        {"timestamp": 1700000000.0, "input_len": 10},
        {"timestamp": 1700000001.0, "output_len": 5, "prefix_id": 3},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    s = schedule(ArrivalSpec(kind="trace", trace=p, time_scale=2.0), None, None, workload="w")
    assert s.offsets_s is not None and s.trace_rows is not None
    np.testing.assert_allclose(s.offsets_s, [0.0, 2.0, 5.0])
    assert [(r.input_len, r.output_len, r.prefix_id) for r in s.trace_rows] == [
        (10, None, None),
        (None, 5, "3"),
        (30, 7, "a"),
    ]
    limited = schedule(ArrivalSpec(kind="trace", trace=p), 2, None, workload="w")
    assert limited.offsets_s is not None and list(limited.offsets_s) == [0.0, 1.0]
    assert limited.trace_rows is not None and len(limited.trace_rows) == 2
    by_time = schedule(ArrivalSpec(kind="trace", trace=p), None, 2.0, workload="w")
    assert by_time.offsets_s is not None and len(by_time.offsets_s) == 2


def test_trace_csv(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("timestamp,input_len,output_len,prefix_id\n0.5,100,20,\n0.0,50,,p1\n")
    rows = read_trace(p)
    assert [(r.timestamp_s, r.input_len, r.output_len, r.prefix_id) for r in rows] == [
        (0.0, 50, None, "p1"),
        (0.5, 100, 20, None),
    ]


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("missing.jsonl", None, "does not exist"),
        ("bad.jsonl", '{"timestamp": 0}\n{oops\n', r"bad.jsonl:2: not a JSON object"),
        ("nots.jsonl", '{"timestamp": 0}\n{"input_len": 3}\n', r"nots.jsonl:2: field 'timestamp'"),
        ("num.jsonl", '{"timestamp": "soon"}\n', r"num.jsonl:1: field 'timestamp'.*not a number"),
        ("neg.jsonl", '{"timestamp": 0, "output_len": 0}\n', r"neg.jsonl:1: field 'output_len'"),
        ("empty.jsonl", "\n", "has no rows"),
        ("hdr.csv", "time,input_len\n1,2\n", r"hdr.csv:1: no 'timestamp' column"),
        ("cell.csv", "timestamp,input_len\n1,2\n2,x\n", r"cell.csv:3: field 'input_len'"),
    ],
)
def test_trace_errors_name_file_and_line(
    tmp_path: Path, name: str, text: str | None, match: str
) -> None:
    p = tmp_path / name
    if text is not None:
        p.write_text(text)
    with pytest.raises(SpecError, match=match):
        schedule(ArrivalSpec(kind="trace", trace=p), None, None, workload="w")
