"""The planner on session workloads: context growth and the cached share (profiler/capacity/
sessions.py formulas, checked against a brute-force sum over turns), KV held by thinking
sessions, measured or assumed hit ratios, and how many GPUs the cache saves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profiler.capacity.planner import plan
from profiler.capacity.result import PlanRequest
from profiler.capacity.sessions import measured_hit_ratio, session_model
from profiler.capacity.sizing import WorkloadShape, batch_limit
from profiler.errors import SpecError
from profiler.spec import SloSpec, WorkloadSpec


def _spec(turns: dict, think: float = 0.0, prefix: int = 100) -> WorkloadSpec:
    return WorkloadSpec.model_validate(
        {
            "name": "s",
            "scenarios": [
                {
                    "name": "c",
                    "shared_prefix_len": prefix,
                    "input": {"kind": "fixed", "value": 50},
                    "output": {"kind": "fixed", "value": 200},
                    "session": {
                        "turns": turns,
                        "first_input": {"kind": "fixed", "value": 400},
                        "think_time_s": {"kind": "fixed", "value": think},
                    },
                }
            ],
        }
    )


def _brute(
    turn_counts: list[int], s: int = 100, f: int = 400, u: int = 50, o: int = 200
) -> tuple[float, float]:
    """Mean prompt and mean ideal cached tokens over every request of these sessions."""
    prompts, cached = [], []
    for t in turn_counts:
        for k in range(1, t + 1):
            p = s + f + (k - 1) * (u + o)
            prompts.append(p)
            cached.append(p - (f if k == 1 else u))
    return sum(prompts) / len(prompts), sum(cached) / len(cached)


def test_context_growth_and_ideal_cache_match_a_sum_over_turns() -> None:
    m = session_model(_spec({"kind": "fixed", "value": 5}), None)
    assert m is not None
    p, c = _brute([5])
    assert m["prompt"] == pytest.approx(p) and m["cached"] == pytest.approx(c)
    # turns 2..6 uniformly: each session count weighs by its requests
    m = session_model(_spec({"kind": "uniform", "min": 2, "max": 6}), None)
    assert m is not None
    p, c = _brute([2, 3, 4, 5, 6])
    assert m["prompt"] == pytest.approx(p, rel=0.01)
    assert m["cached"] == pytest.approx(c, rel=0.01)
    assert m["turns"] == pytest.approx(4, rel=0.01)


def test_thinking_sessions_hold_kv() -> None:
    m = session_model(_spec({"kind": "fixed", "value": 5}, think=10.0), 0.05)
    assert m is not None
    # 4 think gaps of 10 s per 5 turns each decoding 200 tokens at 50 ms
    assert m["thinking"] == pytest.approx(4 * 10 / (5 * 200 * 0.05))
    assert m["held"] == pytest.approx(m["thinking"] * (m["prompt"] + 200 - 100))
    shape = WorkloadShape(1000, 200)
    held = WorkloadShape(1000, 200, held_tokens_per_stream=5000)
    assert held.resident_tokens_per_stream == shape.resident_tokens_per_stream + 5000


def _req(workload: str, **kw: object) -> PlanRequest:
    return PlanRequest.model_validate(
        {
            "model": "llama-3.1-70b",
            "gpus": ["h100"],
            "workload": workload,
            "target_rps": 20.0,
            "slo": SloSpec(ttft_s=2.0, tpot_s=0.05),
            "scaling": False,
            **kw,
        }
    )


def test_plan_says_how_many_gpus_the_cache_saves(tmp_path: Path) -> None:
    r = plan(_req("agentic"))
    s = r.sessions
    assert s is not None and s["cache_hit_source"] == "ideal"
    assert s["cache_hit_ratio"] == pytest.approx(s["ideal_cache_hit_ratio"])
    assert r.workload["cached_prefix_len"] == pytest.approx(
        s["cache_hit_ratio"] * s["prompt_tokens_mean"]
    )
    w, wo = s["with_cache"]["gpus_total"], s["without_cache"]["gpus_total"]
    assert w is not None and wo is not None and w < wo
    assert s["gpus_saved_by_cache"] == wo - w
    assert any("GPU count from" in n for n in r.notes)
    # an assumed ratio, and a measured one from a run directory
    half = plan(_req("agentic", cache_hit_ratio=0.5)).sessions
    assert half is not None and half["cache_hit_source"] == "assumed"
    assert w <= half["with_cache"]["gpus_total"] <= wo
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"prefix_cache": {"hit_ratio": 0.25}}))
    assert measured_hit_ratio(run) == 0.25
    meas = plan(_req("agentic", cache_hit_from=run)).sessions
    assert meas is not None and meas["cache_hit_source"] == "measured"
    assert meas["cache_hit_ratio"] == 0.25
    # no cache: nothing to hold, no comparison
    none = plan(_req("agentic", cache_hit_ratio=0.0)).sessions
    assert none is not None and none["held_tokens_per_stream"] == 0 and "without_cache" not in none
    (run / "summary.json").write_text("{}")
    with pytest.raises(SpecError, match="no prefix-cache hit ratio"):
        measured_hit_ratio(run)


def test_held_kv_lowers_the_batch_limit() -> None:
    from profiler.capacity.candidates import layouts
    from profiler.capacity.context import build_context, deployment

    ctx = build_context(_req("agentic"))

    g = ctx.gpus[0]
    lay = max(layouts(ctx.model, 8, 8), key=lambda x: x.gpus)  # 8 GPUs: room for the KV
    dep = deployment(ctx, g, lay)
    assert ctx.shape.held_tokens_per_stream > 0
    b_held, kind, _ = batch_limit(dep, ctx.shape)
    free = WorkloadShape(
        ctx.shape.input_len, ctx.shape.output_len, ctx.shape.n, ctx.shape.cached_prefix_len
    )
    b_free, kind_free, _ = batch_limit(dep, free)
    assert b_free > 0 and kind_free == "kv_capacity"
    assert b_held == pytest.approx(
        dep.kv_capacity_tokens()
        / free.resident_tokens_per_stream
        * free.resident_tokens_per_stream
        / ctx.shape.resident_tokens_per_stream
    )
    assert b_held < b_free


def test_plain_workload_with_a_cache_ratio_and_the_plan_report(tmp_path: Path) -> None:
    r = plan(_req("chat", cache_hit_ratio=0.5))
    assert r.sessions is None
    assert r.workload["cached_prefix_len"] == pytest.approx(0.5 * r.workload["input_len"])
    from profiler.report.plan_section import plan_sections

    res = plan(_req("multi-turn"))
    secs = plan_sections(res.model_dump(mode="json"), "test")
    rows = [row for b in secs[0].blocks for row in getattr(b, "rows", [])]
    names = [row[0] for row in rows]
    assert "prefix-cache hit ratio" in names and "without the prefix cache" in names
