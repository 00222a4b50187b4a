"""``--workers N --executor ray``: the load spread over N Ray actors on the cluster's nodes,
for targets one host's client cannot drive.

The schedule is split as for worker processes (``profiler.load.spread.split_plan``: request
``i`` to worker ``i % N``, open-loop offsets kept absolute, closed-loop concurrency divided)
and shared on one epoch: the load starts at ``load_start_s`` on the driver's run clock.

Hosts do not share a monotonic clock, so each worker's clock is measured against the driver's
before the load (``profiler.clock.measure_offset``: the shortest of several round trips, the
uncertainty half of it) and again after it. The worker runs on its own clock shifted by the
start offset, so its intended start times, sends, tokens and ends are on the driver's run
clock: the merged records are corrected by the measured offset. The manifest keeps, per worker,
its node, both offsets, their uncertainties and the drift between them (``workers``); the
summary warns when a worker's uncertainty (the larger of its round-trip bounds and its drift)
exceeds 1 ms.

Each worker journals to a directory on its node; a ``Forwarder`` streams the complete lines to
the driver's run directory as ``requests.w<k>.jsonl`` (``profiler.store.ray_journal``), so a
worker whose node is lost leaves the records that reached the driver.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from profiler.clock import RunClock, measure_offset
from profiler.load.arrivals import LoadPlan
from profiler.load.client import ClientOptions
from profiler.load.driver import DriverResult
from profiler.load.spread import merge_results, split_plan
from profiler.spec import RunSpec

OFFSET_PROBES = 16
START_SLACK_S = 2.0  # time for the actors to receive the plan before the common start
POLL_S = 0.2


class _LoadWorker:
    """A load worker (a Ray actor): ``now`` is its own clock (``skew_s`` lets tests play a
    host whose clock is elsewhere); ``run`` drives its share of the schedule."""

    def __init__(self, index: int, skew_s: float = 0.0) -> None:
        self.index = index
        self.skew_s = skew_s
        self._driver: Any = None

    def now(self) -> float:
        return time.perf_counter() + self.skew_s

    def where(self) -> dict[str, Any]:
        from profiler.cluster import here

        return here()

    async def run(
        self,
        spec_json: str,
        opts: ClientOptions,
        plan: LoadPlan,
        count: int,
        run_base_s: float,
        wall_start: float,
        collector: Any,
    ) -> DriverResult:
        from profiler.load.arrivals import load_plan
        from profiler.load.client import StreamingClient
        from profiler.load.driver import Driver
        from profiler.load.spread import stride
        from profiler.load.workload import iter_requests
        from profiler.store.journal import Journal
        from profiler.store.ray_journal import Forwarder

        spec = RunSpec.model_validate_json(spec_json)
        # ``run_base_s``: where the driver's run clock starts, on this worker's clock
        clock = RunClock(base=run_base_s - self.skew_s, wall_start=wall_start)
        sched = load_plan(spec)
        requests = stride(
            iter_requests(spec.workload, seed=spec.seed, trace_rows=sched.trace_rows),
            self.index,
            count,
        )
        tmp = Path(tempfile.mkdtemp(prefix="infprof-worker-"))
        journal = Journal(tmp / "requests.jsonl")
        name = f"requests.w{self.index}.jsonl"
        fwd = Forwarder(collector, "", tmp, rename=lambda _n: name, manifest=False).start()
        try:
            async with StreamingClient(opts, clock) as client:
                self._driver = Driver(client, clock, [lambda r: journal.append(r.to_journal())])
                assert plan.start_s is not None
                delay = plan.start_s - clock.now()
                if delay > 0:
                    await asyncio.sleep(delay)
                res = await self._driver.run(requests, plan)
                res.health.event_loop = "asyncio"
                return res
        finally:
            journal.close()
            fwd.stop()
            shutil.rmtree(tmp, ignore_errors=True)

    def abort(self, ended: str, reason: str, outcome: str) -> None:
        if self._driver is not None:
            self._driver.abort(ended, reason, outcome)


@functools.lru_cache(maxsize=1)
def _actor_class() -> Any:
    import ray

    return ray.remote(num_cpus=1, max_restarts=0)(_LoadWorker)


def clock_entry(
    index: int,
    where: dict[str, Any],
    start: tuple[float, float],
    end: tuple[float, float] | None,
) -> dict[str, Any]:
    """A worker's entry in the manifest's ``workers``: where it ran and its clock offsets to
    the driver (seconds, worker minus driver) with their uncertainties."""
    off0, unc0 = start
    off1, unc1 = end if end is not None else (None, None)
    drift = off1 - off0 if off1 is not None else None
    bounds = (
        [unc0] + ([unc1] if unc1 is not None else []) + ([abs(drift)] if drift is not None else [])
    )
    return {
        "index": index,
        "node_id": where.get("node_id"),
        "node_ip": where.get("node_ip"),
        "hostname": where.get("hostname"),
        "clock_offset_start_s": off0,
        "clock_offset_end_s": off1,
        "clock_uncertainty_start_s": unc0,
        "clock_uncertainty_end_s": unc1,
        "clock_drift_s": drift,
        # the records are corrected by the start offset: they may be off by this much
        "clock_uncertainty_s": max(bounds),
    }


def run_ray_workers(
    spec: RunSpec,
    plan: LoadPlan,
    opts: ClientOptions,
    clock: RunClock,
    run_dir: Path,
    server: Any,
    *,
    skew_s: list[float] | None = None,
) -> DriverResult:
    """Run ``spec.workers`` Ray actors spread over the cluster's nodes and merge their results;
    their records land in ``run_dir/requests.w<k>.jsonl``."""
    from profiler.cluster import connect, driver_node_id
    from profiler.store.ray_journal import start_collector

    ray = connect(spec.ray_address)
    count = spec.workers
    collector = start_collector(ray, run_dir, driver_node_id(ray))
    cls = _actor_class()
    actors = [
        cls.options(scheduling_strategy="SPREAD", name=None).remote(k, (skew_s or [0.0] * count)[k])
        for k in range(count)
    ]
    try:
        return _drive(ray, spec, plan, opts, clock, server, actors, collector)
    finally:
        for a in actors:
            try:
                ray.kill(a)
            except Exception:  # its node is gone already
                pass
        ray.kill(collector)


def _offset(ray: Any, actor: Any) -> tuple[float, float]:
    """The worker's clock minus the driver's (``perf_counter``, the run clock's source)."""
    return measure_offset(lambda: ray.get(actor.now.remote()), time.perf_counter, OFFSET_PROBES)


def _drive(
    ray: Any,
    spec: RunSpec,
    plan: LoadPlan,
    opts: ClientOptions,
    clock: RunClock,
    server: Any,
    actors: list[Any],
    collector: Any,
) -> DriverResult:
    count = len(actors)
    wheres = ray.get([a.where.remote() for a in actors], timeout=300)
    starts = [_offset(ray, a) for a in actors]
    load_start = clock.now() + START_SLACK_S
    spec_json = spec.model_dump_json()
    refs = [
        a.run.remote(
            spec_json,
            opts,
            split_plan(plan, k, count, load_start),
            count,
            starts[k][0] + clock.base,  # the driver's run clock on the worker's clock
            clock.wall_start,
            collector,
        )
        for k, a in enumerate(actors)
    ]
    ended, reason = "completed", None

    def forward(signum: int, _frame: Any) -> None:
        nonlocal ended, reason
        ended, reason = "interrupted", f"stopped by {signal.Signals(signum).name}"

    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    results: list[DriverResult] = []
    ends: list[tuple[float, float] | None] = [None] * count
    aborted = False
    try:
        pending = dict(zip(refs, range(count), strict=True))
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            for ref in ready:
                k = pending.pop(ref)
                try:
                    results.append(ray.get(ref))
                    ends[k] = _offset(ray, actors[k])
                except ray.exceptions.RayError as e:
                    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    if ended == "completed":
                        ended = "worker_lost"
                        reason = (
                            f"load worker {k} on {wheres[k].get('node_ip')} was lost: {text}; "
                            "the records that reached the driver are kept"
                        )
            if server is not None and ended == "completed" and not server.alive():
                ended, reason = (
                    "server_died",
                    f"the server process exited (code {server.returncode}) during the run",
                )
            if ended != "completed" and not aborted:
                aborted = True
                outcome = "cancelled" if ended == "interrupted" else "error"
                for a in actors:
                    a.abort.remote(ended, reason or ended, outcome)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    merged = merge_results(results, ended, reason, load_start)
    merged.workers = [clock_entry(k, wheres[k], starts[k], ends[k]) for k in range(count)]
    return merged


def describe(workers: list[dict[str, Any]]) -> str:
    nodes = {w.get("node_id") for w in workers}
    return f"{len(workers)} Ray load workers on {len(nodes)} node{'' if len(nodes) == 1 else 's'}"
