"""Arrival processes: rate, dispersion, reproducibility, trace replay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from profiler.errors import SpecError
from profiler.load.arrivals import schedule
from profiler.spec import ArrivalSpec


def _gaps(kind: str, n: int = 20000, **kw: float) -> np.ndarray:
    s = schedule(
        ArrivalSpec(kind=kind, rate=kw.pop("rate", 10.0), seed=int(kw.pop("seed", 1)), **kw),
        n,
        None,
        workload="w",
    )
    assert s.offsets_s is not None
    return np.diff(s.offsets_s)


def test_constant_is_exact() -> None:
    g = _gaps("constant", 100, rate=4.0)
    assert np.allclose(g, 0.25)


def test_poisson_rate_and_cv() -> None:
    g = _gaps("poisson")
    assert 1 / g.mean() == pytest.approx(10.0, rel=0.03)
    assert g.std() / g.mean() == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("burstiness", [0.25, 0.5, 2.0, 4.0])
def test_gamma_rate_and_dispersion(burstiness: float) -> None:
    g = _gaps("gamma", burstiness=burstiness)
    assert 1 / g.mean() == pytest.approx(10.0, rel=0.05)
    cv2 = g.var() / g.mean() ** 2
    assert cv2 == pytest.approx(1 / burstiness, rel=0.1)


def test_reproducible_from_seed() -> None:
    a, b, c = _gaps("poisson", seed=3), _gaps("poisson", seed=3), _gaps("poisson", seed=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_duration_bounds_open_loop() -> None:
    s = schedule(ArrivalSpec(kind="poisson", rate=50.0), None, 10.0, workload="w")
    assert s.offsets_s is not None
    assert s.offsets_s.max() < 10.0
    assert len(s.offsets_s) == pytest.approx(500, rel=0.15)
    both = schedule(ArrivalSpec(kind="constant", rate=10.0), 30, 1.0, workload="w")
    assert both.offsets_s is not None and len(both.offsets_s) == 10  # whichever comes first


def test_ramp_rate_rises() -> None:
    s = schedule(ArrivalSpec(kind="ramp", rate=20.0, rate_start=2.0), None, 30.0, workload="w")
    assert s.offsets_s is not None
    first = np.count_nonzero(s.offsets_s < 5)
    last = np.count_nonzero(s.offsets_s > 25)
    assert last > 3 * first
    assert s.target_rate(0) == pytest.approx(2.0)
    assert s.target_rate(30) == pytest.approx(20.0)
    assert len(s.offsets_s) == pytest.approx((2 + 20) / 2 * 30, rel=0.05)


def test_closed_loop_has_no_times() -> None:
    s = schedule(ArrivalSpec(kind="concurrency", concurrency=8), 100, None, workload="w")
    assert s.offsets_s is None and s.concurrency == 8


def test_rate_with_cap() -> None:
    s = schedule(ArrivalSpec(kind="poisson", rate=5.0, max_concurrency=4), 10, None, workload="w")
    assert s.max_concurrency == 4


def test_trace_replay_jsonl_and_csv(tmp_path: Path) -> None:
    rows = [
        {"timestamp": 100.0 + t, "input_len": 10 + i, "output_len": 5, "prefix_id": "p"}
        for i, t in enumerate([0.0, 0.5, 0.25, 2.0])
    ]
    j = tmp_path / "t.jsonl"
    j.write_text("\n".join(json.dumps(r) for r in rows))
    s = schedule(ArrivalSpec(kind="trace", trace=j, time_scale=2.0), None, None, workload="w")
    assert s.offsets_s is not None
    assert list(s.offsets_s) == [0.0, 0.5, 1.0, 4.0]  # sorted, shifted to 0, stretched x2
    assert s.trace_rows is not None and [r.input_len for r in s.trace_rows] == [10, 12, 11, 13]
    c = tmp_path / "t.csv"
    c.write_text("timestamp,input_len,output_len\n0,4,4\n1.5,8,\n")
    s2 = schedule(ArrivalSpec(kind="trace", trace=c), None, None, workload="w")
    assert s2.trace_rows is not None and s2.trace_rows[1].output_len is None


def test_bad_trace_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"timestamp": 0}\n{"input_len": 3}\n')
    with pytest.raises(SpecError) as e:
        schedule(ArrivalSpec(kind="trace", trace=bad), None, None, workload="w")
    assert "bad.jsonl:2" in e.value.message and "timestamp" in e.value.message
    with pytest.raises(SpecError):
        schedule(
            ArrivalSpec(kind="trace", trace=tmp_path / "missing.csv"), None, None, workload="w"
        )


def test_a_runs_load_plan_is_its_arrival_schedule() -> None:
    """One shape between the ArrivalSpec and the driver: the plan the runner hands the driver
    is the schedule itself, labelled with the run's workload, requests and duration."""
    from profiler.load.arrivals import LoadPlan, load_plan
    from profiler.spec import EndpointSpec, RunSpec, WorkloadSpec

    wl = WorkloadSpec.model_validate({"name": "chat", "scenarios": [{}]})
    ep = EndpointSpec(url="http://127.0.0.1:9")
    arrival = ArrivalSpec(kind="poisson", rate=5.0, max_concurrency=3, seed=7)
    run = RunSpec(workload=wl, arrival=arrival, endpoint=ep, num_requests=50)
    plan = load_plan(run)
    assert isinstance(plan, LoadPlan)
    assert (plan.workload, plan.num_requests, plan.duration_s) == ("chat", 50, None)
    assert plan.concurrency is None and plan.max_concurrency == 3
    assert plan.target_rate is not None and plan.target_rate(1.0) == 5.0
    same = schedule(arrival, 50, None, workload="chat")
    assert plan.offsets_s is not None and same.offsets_s is not None
    assert np.array_equal(plan.offsets_s, same.offsets_s)
    closed = load_plan(run.model_copy(update={"arrival": ArrivalSpec(concurrency=4)}))
    assert closed.concurrency == 4 and closed.offsets_s is None
    assert closed.max_concurrency is None and closed.target_rate is not None
    assert closed.target_rate(1.0) is None
