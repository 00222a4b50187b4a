"""Test-time scaling (``infprof plan`` without ``--no-scaling``): GPUs per 1,000 users as the
reasoning output grows and with n samples per prompt, each point the cheapest layout per GPU
type at fractional replicas (docs/capacity.md, "Test-time scaling")."""

from __future__ import annotations

from typing import Any

import numpy as np

from profiler.capacity.candidates import evaluate, plan_layouts
from profiler.capacity.context import PlanContext, build_context, deployment
from profiler.capacity.hardware import GpuSpec
from profiler.capacity.result import (
    DEFAULT_RATE_PER_USER_PER_S,
    ConfigResult,
    PlanRequest,
    ScalingRow,
    TestTimeScaling,
)
from profiler.capacity.sizing import WorkloadShape, capacity


def _fractional_best(ctx: PlanContext, g: GpuSpec, shape: WorkloadShape, rate: float) -> ScalingRow:
    """The layout with the fewest GPUs per req/s for ``shape`` (capacity only: no replicas, no
    fabric checks, so the 13-point sweep stays cheap)."""
    sub = PlanContext(**{**ctx.__dict__, "shape": shape, "target_rps": None})
    # (GPUs per req/s, layout, TPOT at capacity, bottleneck, source)
    best: tuple[Any, ...] | None = None
    for lay in plan_layouts(ctx, g):
        if ctx.measured:  # measured capacity may replace the model's: take the full path
            r = evaluate(sub, g, lay, checks=False)
            if not isinstance(r, ConfigResult):
                continue
            cand: tuple[Any, ...] = (
                r.gpus_per_replica / r.max_rps_per_replica,
                r.parallelism,
                r.tpot_s,
                r.bottleneck,
                r.source,
            )
        else:
            cap = capacity(deployment(sub, g, lay), shape, ctx.req.slo, ctx.req.concurrency)
            if not cap.feasible or cap.curve is None:
                continue
            i = int(np.searchsorted(cap.curve.b, cap.b_star))
            cand = (
                lay.gpus / cap.rps_max,
                lay.label(),
                float(cap.curve.tpot_s[i]),
                cap.bottleneck,
                "modelled",
            )
        if best is None or cand[0] < best[0]:
            best = cand
    # no layout fits: a row of Nones
    per_rps, label, tpot, bottleneck, source = best or (None, None, None, None, "modelled")
    return ScalingRow(
        gpu=g.key,
        output_len=int(round(shape.output_len)),
        n=int(round(shape.n)),
        gpus_per_1k_users=None if per_rps is None else per_rps * rate * 1000,
        gpus_per_rps=per_rps,
        parallelism=label,
        tpot_s=tpot,
        bottleneck=bottleneck,
        source=source,
    )


def test_time_scaling(
    req: PlanRequest,
    output_lens: list[int] | None = None,
    ns: list[int] | None = None,
    *,
    ctx: PlanContext | None = None,
) -> TestTimeScaling:
    """GPUs needed per 1k users as reasoning output length grows and with n samples per prompt,
    each point the cheapest configuration per GPU type (fractional replicas, so the curve shows
    the trend rather than rounding)."""
    ctx = ctx or build_context(req)
    if req.users is not None and req.rate_per_user_per_s is not None:
        rate = req.rate_per_user_per_s * req.peak_factor
        assumption = f"{rate * 86400:g} requests per user per day at peak (rate x peak factor)"
    else:
        rate = DEFAULT_RATE_PER_USER_PER_S
        assumption = "1,000 active users each sending one request per minute (no --users given)"
    base = ctx.shape
    rows_o: list[ScalingRow] = []
    rows_n: list[ScalingRow] = []
    for g in ctx.gpus:
        for o in output_lens or req.scaling_output_lens:
            rows_o.append(
                _fractional_best(
                    ctx,
                    g,
                    WorkloadShape(base.input_len, float(o), base.n, base.cached_prefix_len),
                    rate,
                )
            )
        for n in ns or req.scaling_ns:
            rows_n.append(
                _fractional_best(
                    ctx,
                    g,
                    WorkloadShape(
                        base.input_len, base.output_len, float(n), base.cached_prefix_len
                    ),
                    rate,
                )
            )
    return TestTimeScaling(
        rate_per_user_per_s=rate,
        assumption=assumption,
        input_len=base.input_len,
        by_output_len=rows_o,
        by_n=rows_n,
    )


test_time_scaling.__test__ = False  # type: ignore[attr-defined]  # a planner API, not a pytest test
