"""The load spread over N workers (processes: ``profiler.load.workers``; Ray actors:
``profiler.load.ray_workers``): worker ``k``'s share of the plan and of the requests, and one
result for all of them.

Request ``i`` goes to worker ``i % N``; open-loop offsets keep their absolute times and
closed-loop concurrency (and an open loop's cap) is divided.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from profiler.latency_sketches import LatencySketches
from profiler.load.driver import DriverResult, LoadPlan
from profiler.load.health import ClientHealth


def split_plan(plan: LoadPlan, index: int, count: int, load_start_s: float) -> LoadPlan:
    """Worker ``index``'s share of ``plan``: every ``count``-th request, its offsets shifted so
    each keeps its absolute intended time on the shared clock."""
    num = None if plan.num_requests is None else len(range(index, plan.num_requests, count))
    conc = None
    if plan.concurrency is not None:
        conc = plan.concurrency // count + (1 if index < plan.concurrency % count else 0)
    offsets = None
    if plan.offsets_s is not None:
        offsets = np.asarray(plan.offsets_s[index::count], dtype=np.float64)
    cap = None
    if plan.max_concurrency is not None:
        cap = max(
            1, plan.max_concurrency // count + (1 if index < plan.max_concurrency % count else 0)
        )
    return LoadPlan(
        workload=plan.workload,
        num_requests=num,
        duration_s=plan.duration_s,
        concurrency=max(conc, 1) if conc is not None else None,
        offsets_s=offsets,
        max_concurrency=cap,
        start_s=load_start_s,
    )


def stride(it: Iterator[Any], index: int, count: int) -> Iterator[Any]:
    """Worker ``index``'s requests: every ``count``-th of ``it``, from the ``index``-th."""
    for i, x in enumerate(it):
        if i % count == index:
            yield x


def merge_results(
    results: list[DriverResult],
    ended: str,
    reason: str | None,
    load_start: float,
    sketches: list[LatencySketches] | None = None,
) -> DriverResult:
    """One result for all workers. With the workers' ``sketches``, the dispatch-lag p99 is
    that of all their requests (their merged sketch), not the largest worker's p99; each
    worker's event loop is its own, so loop lag stays the worst worker's."""
    h = ClientHealth()
    for r in results:
        if r.ended != "completed" and ended == "completed":
            ended, reason = r.ended, r.reason
        h.cpu_seconds += r.health.cpu_seconds
        for name in ("loop_lag_p50_s", "loop_lag_p99_s", "loop_lag_max_s", "dispatch_lag_p99_s"):
            vals = [getattr(r.health, name) for r in results if getattr(r.health, name) is not None]
            setattr(h, name, max(vals) if vals else None)
        h.reasons.extend(f"worker: {x}" for x in r.health.reasons)
    end = max((r.load_end_s for r in results), default=load_start)
    start = min((r.load_start_s for r in results), default=load_start)
    if sketches:
        merged = LatencySketches()
        for sk in sketches:
            merged.merge(sk)
        p99 = merged.sketches["dispatch_lag_s"].quantile(0.99)
        if p99 is not None:
            h.dispatch_lag_p99_s = p99
    h.cpu_ratio = h.cpu_seconds / max(end - start, 1e-9) / max(len(results), 1)
    h.saturated = bool(h.reasons)
    h.event_loop = next((r.health.event_loop for r in results if r.health.event_loop), None)
    return DriverResult(
        sent=sum(r.sent for r in results),
        done=sum(r.done for r in results),
        ended=ended,
        reason=reason,
        health=h,
        load_start_s=start,
        load_end_s=end,
    )
