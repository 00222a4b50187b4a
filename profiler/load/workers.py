"""``--workers N``: the schedule spread over N load-generator processes on one host (with
``--executor ray``, over N Ray actors on the cluster's nodes: ``profiler.load.ray_workers``).

Request ``i`` goes to worker ``i % N``; open-loop offsets keep their absolute times and
closed-loop concurrency is divided. Every worker uses the same run clock: ``perf_counter`` is
CLOCK_MONOTONIC, shared by all processes of a Linux host, and the base is passed in. Each
worker appends to its own journal (``requests.w<k>.jsonl``); the run directory merges them.
Each worker also sketches its own requests' latencies (``LatencySketches``) and ships the
sketches, not raw values, with its result; the parent merges them, so figures over all the
workers' requests (the client's dispatch-lag p99) are those of the union.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.clock import RunClock
from profiler.latency_sketches import LatencySketches
from profiler.load.arrivals import LoadPlan
from profiler.load.client import ClientOptions, StreamingClient
from profiler.load.driver import Driver, DriverResult
from profiler.load.loop import run as run_loop
from profiler.load.spread import merge_results, split_plan, stride
from profiler.spec import RunSpec
from profiler.store.journal import Journal
from profiler.store.record_columns import sketch_records


@dataclass
class WorkerTask:
    index: int
    count: int
    spec_json: str
    opts: ClientOptions
    clock_base: float
    wall_start: float
    journal: Path
    load_start_s: float


def _worker_main(task: WorkerTask, plan: LoadPlan, conn: Any) -> None:
    from profiler.load.arrivals import load_plan
    from profiler.load.workload import iter_requests

    spec = RunSpec.model_validate_json(task.spec_json)
    clock = RunClock(base=task.clock_base, wall_start=task.wall_start)
    sched = load_plan(spec)
    requests = stride(
        iter_requests(spec.workload, seed=spec.seed, trace_rows=sched.trace_rows),
        task.index,
        task.count,
    )
    journal = Journal(task.journal)
    sketches = _SketchSink()

    async def main() -> DriverResult:
        async with StreamingClient(task.opts, clock) as client:
            driver = Driver(
                client, clock, [lambda r: journal.append(r.to_journal()), sketches.append]
            )
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(
                signal.SIGTERM, driver.abort, "interrupted", "stopped by SIGTERM", "cancelled"
            )
            loop.add_signal_handler(
                signal.SIGUSR1,
                driver.abort,
                "server_died",
                "the server process exited during the run",
                "error",
            )
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides
            # wait for the common start so every worker's offsets share one origin
            delay = task.load_start_s - clock.now()
            if delay > 0:
                await asyncio.sleep(delay)
            return await driver.run(requests, plan)

    try:
        res, loop_name = run_loop(main())
        res.health.event_loop = loop_name
    finally:
        journal.close()
    conn.send((res, sketches.finish().to_dict()))
    conn.close()


class _SketchSink:
    """A worker's requests sketched in batches (bounded memory, numpy work per batch)."""

    BATCH = 1024

    def __init__(self) -> None:
        self.sketches = LatencySketches()
        self._pending: list[Any] = []

    def append(self, rec: Any) -> None:
        self._pending.append(rec)
        if len(self._pending) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self.sketches.merge(sketch_records(self._pending))
            self._pending = []

    def finish(self) -> LatencySketches:
        self._flush()
        return self.sketches


def run_workers(
    spec: RunSpec, plan: LoadPlan, opts: ClientOptions, clock: RunClock, run_dir: Path, server: Any
) -> DriverResult:
    """Run ``spec.workers`` processes and merge their results; records land in their journals.
    With ``--executor ray`` the workers are Ray actors on the cluster's nodes instead
    (``profiler.load.ray_workers``)."""
    if spec.executor == "ray":
        from profiler.load.ray_workers import run_ray_workers

        return run_ray_workers(spec, plan, opts, clock, run_dir, server)
    count = spec.workers
    ctx = mp.get_context("spawn")
    load_start = clock.now() + 1.0 + 0.2 * count  # time for the workers to start
    procs = []
    for k in range(count):
        parent, child = ctx.Pipe(duplex=False)
        task = WorkerTask(
            k,
            count,
            spec.model_dump_json(),
            opts,
            clock.base,
            clock.wall_start,
            run_dir / f"requests.w{k}.jsonl",
            load_start,
        )
        p = ctx.Process(
            target=_worker_main,
            args=(task, split_plan(plan, k, count, load_start), child),
            daemon=True,
        )
        p.start()
        procs.append((p, parent))
    ended, reason = "completed", None

    def forward(signum: int, _frame: Any) -> None:
        nonlocal ended, reason
        ended, reason = "interrupted", f"stopped by {signal.Signals(signum).name}"
        for p, _ in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    results: list[DriverResult] = []
    sketches: list[LatencySketches] = []
    try:
        pending = list(procs)
        while pending:
            for item in list(pending):
                p, conn = item
                if conn.poll(0.2):
                    try:
                        res, sk = conn.recv()
                        results.append(res)
                        sketches.append(LatencySketches.from_dict(sk))
                    except EOFError:
                        pass
                    pending.remove(item)
                elif not p.is_alive() and not conn.poll(0):
                    pending.remove(item)
            if server is not None and ended == "completed" and not server.alive():
                ended, reason = (
                    "server_died",
                    f"the server process exited (code {server.returncode}) during the run",
                )
                for p, _ in procs:
                    if p.is_alive() and p.pid is not None:
                        os.kill(p.pid, signal.SIGUSR1)
        for p, _ in procs:
            p.join(timeout=10)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return merge_results(results, ended, reason, load_start, sketches)
