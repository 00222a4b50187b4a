"""The driver against the fake server on loopback: closed and open loops, the concurrency cap,
failed / timed-out / cancelled requests recorded (never raised), and the worker split."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from profiler.clock import RunClock
from profiler.load.arrivals import LoadPlan
from profiler.load.client import ClientOptions, StreamingClient
from profiler.load.driver import Driver
from profiler.load.spread import merge_results, split_plan
from profiler.load.workload import RequestSpec
from profiler.store.record import RequestRecord
from tests.fakes.fake_openai import FakeConfig, serve_in_thread


def _requests(n: int, out: int = 8):  # type: ignore[no-untyped-def]
    for i in range(n):
        yield RequestSpec(
            id=i,
            scenario="s",
            api="completions",
            input_len=4,
            output_len=out,
            prompt_token_ids=[5, 6, 7, 8],
        )


def _run(
    url: str,
    plan: LoadPlan,
    n: int,
    *,
    timeout_s: float = 30.0,
    out: int = 8,
    abort_after: float | None = None,
):  # type: ignore[no-untyped-def]
    clock = RunClock()
    records: list[RequestRecord] = []
    peak = {"inflight": 0}

    async def main():  # type: ignore[no-untyped-def]
        opts = ClientOptions(base_url=url, model="fake-model", request_timeout_s=timeout_s)
        async with StreamingClient(opts, clock) as client:
            driver = Driver(client, clock, [records.append])

            def sent() -> None:
                peak["inflight"] = max(peak["inflight"], len(driver._tasks))

            driver.on_send = sent
            if abort_after is not None:
                asyncio.get_running_loop().call_later(
                    abort_after, driver.abort, "interrupted", "test", "cancelled"
                )
            return await driver.run(_requests(n, out), plan)

    return asyncio.run(main()), records, peak["inflight"]


def test_closed_loop_keeps_concurrency_and_records_all() -> None:
    with serve_in_thread(FakeConfig(ttft_ms=5, itl_ms=2)) as server:
        res, recs, peak = _run(
            server.url, LoadPlan(workload="w", num_requests=40, concurrency=4), 40
        )
    assert res.ended == "completed" and res.sent == 40 and len(recs) == 40
    assert peak <= 4
    assert all(r.outcome == "ok" and r.output_tokens == 8 for r in recs)
    assert sorted(r.id for r in recs) == list(range(40))


def test_open_loop_follows_the_schedule_and_cap() -> None:
    offsets = np.arange(20) * 0.02
    with serve_in_thread(FakeConfig(ttft_ms=50, itl_ms=5)) as server:
        res, recs, peak = _run(
            server.url,
            LoadPlan(workload="w", num_requests=20, offsets_s=offsets, max_concurrency=3),
            20,
        )
    assert len(recs) == 20 and peak <= 3
    # the cap makes later requests wait for a slot: that wait is queue_wait_s, not dispatch
    # lag, and intended starts keep the schedule
    intended = sorted(r.intended_start_s - min(x.intended_start_s for x in recs) for r in recs)
    assert intended == pytest.approx(list(offsets), abs=1e-6)
    assert max(r.queue_wait_s or 0.0 for r in recs) > 0.05
    assert all(r.queue_wait_s is not None for r in recs)
    assert res.health.dispatch_lag_p99_s is not None


class _SlowClient:
    """A client whose every request takes ``service_s`` (no server, no sockets)."""

    def __init__(self, clock: RunClock, service_s: float) -> None:
        self.clock, self.service_s = clock, service_s

    async def send(self, req, *, workload, intended_start_s, on_send=None):  # type: ignore[no-untyped-def]
        rec = RequestRecord(
            id=req.id, workload=workload, scenario=req.scenario, intended_start_s=intended_start_s
        )
        rec.send_s = self.clock.now()
        if on_send is not None:
            on_send()
        await asyncio.sleep(self.service_s)
        rec.first_token_s = rec.last_token_s = rec.end_s = self.clock.now()
        rec.output_tokens, rec.chunks = 1, 1
        return rec


def test_open_loop_queueing_under_the_cap_is_not_client_lag() -> None:
    """An open loop at 50 req/s capped at one in flight against 0.1 s requests: the requests
    queue for the slot (up to about 0.7 s here), and that is the load's queue, not a late
    client. The client's own dispatch lag stays small and health does not call it saturated."""
    from profiler.load.health import DISPATCH_LAG_LIMIT_S

    clock = RunClock()
    records: list[RequestRecord] = []
    driver = Driver(_SlowClient(clock, 0.1), clock, [records.append])  # type: ignore[arg-type]
    plan = LoadPlan(
        workload="w", num_requests=10, offsets_s=np.arange(10) * 0.02, max_concurrency=1
    )
    res = asyncio.run(driver.run(_requests(10), plan))
    assert res.ended == "completed" and len(records) == 10
    recs = sorted(records, key=lambda r: r.id)
    waits = [r.queue_wait_s for r in recs]
    assert all(w is not None for w in waits)
    assert waits[-1] > 0.5  # 9 x 0.1 s of service ahead of it, minus 9 x 0.02 s of schedule
    for r in recs:  # the whole delay is the queue's
        assert r.send_s - r.intended_start_s == pytest.approx(r.queue_wait_s, abs=0.02)
        assert r.dispatch_lag_s < 0.02
    assert res.health.dispatch_lag_p99_s is not None
    assert res.health.dispatch_lag_p99_s < DISPATCH_LAG_LIMIT_S
    assert not [x for x in res.health.reasons if "dispatch lag" in x]
    assert res.health.saturated is False, res.health.reasons


def test_closed_and_uncapped_loads_record_no_queue_wait() -> None:
    clock = RunClock()
    records: list[RequestRecord] = []
    driver = Driver(_SlowClient(clock, 0.01), clock, [records.append])  # type: ignore[arg-type]
    asyncio.run(driver.run(_requests(4), LoadPlan(workload="w", num_requests=4, concurrency=2)))
    plan = LoadPlan(workload="w", num_requests=4, offsets_s=np.arange(4) * 0.01)
    asyncio.run(driver.run(_requests(4), plan))
    assert len(records) == 8 and all(r.queue_wait_s is None for r in records)


def test_failures_are_recorded_not_raised() -> None:
    with serve_in_thread(FakeConfig(error_rate=0.5, seed=3)) as server:
        res, recs, _ = _run(server.url, LoadPlan(workload="w", num_requests=30, concurrency=3), 30)
    errors = [r for r in recs if r.outcome == "error"]
    assert res.ended == "completed" and len(recs) == 30
    assert errors and all(r.http_status == 500 and "500" in (r.error or "") for r in errors)
    assert any(r.outcome == "ok" for r in recs)


def test_timeouts_are_recorded() -> None:
    with serve_in_thread(FakeConfig(mode="hang")) as server:
        res, recs, _ = _run(
            server.url, LoadPlan(workload="w", num_requests=3, concurrency=3), 3, timeout_s=0.5
        )
    assert [r.outcome for r in recs] == ["timeout"] * 3
    assert all(r.end_s is not None for r in recs)


def test_abort_records_in_flight_as_cancelled() -> None:
    with serve_in_thread(FakeConfig(ttft_ms=10, itl_ms=200)) as server:
        res, recs, _ = _run(
            server.url, LoadPlan(workload="w", num_requests=50, concurrency=4), 50, abort_after=0.5
        )
    assert res.ended == "interrupted"
    cancelled = [r for r in recs if r.outcome == "cancelled"]
    assert len(cancelled) == 4  # the in-flight ones; nothing else was sent
    assert res.sent == len(recs)


def test_unreachable_endpoint_aborts_as_endpoint_lost() -> None:
    res, recs, _ = _run(
        "http://127.0.0.1:9", LoadPlan(workload="w", num_requests=100, concurrency=2), 100
    )
    assert res.ended == "endpoint_lost"
    assert recs and all(
        r.outcome == "error" and "connection failed" in (r.error or "") for r in recs
    )
    assert len(recs) < 100


def test_split_plan_partitions_the_schedule() -> None:
    offsets = np.arange(10) * 0.1
    plan = LoadPlan(workload="w", num_requests=10, offsets_s=offsets, max_concurrency=5)
    parts = [split_plan(plan, k, 3, 1.0) for k in range(3)]
    assert sum(p.num_requests or 0 for p in parts) == 10
    merged = sorted(np.concatenate([p.offsets_s for p in parts if p.offsets_s is not None]))
    assert merged == pytest.approx(list(offsets))
    assert all(p.start_s == 1.0 for p in parts)
    closed = [
        split_plan(LoadPlan(workload="w", num_requests=10, concurrency=5), k, 2, 0.0)
        for k in range(2)
    ]
    assert [c.concurrency for c in closed] == [3, 2]
    assert merge_results([], "completed", None, 0.0).sent == 0


def test_live_health_covers_only_the_last_interval() -> None:
    """``health_now`` (exported once a second during a run) reports a stall of the event loop
    in the interval it happened in, and not in the next one."""
    import time

    snapshots = []
    with serve_in_thread(FakeConfig(ttft_ms=5, itl_ms=5)) as server:

        async def main():  # type: ignore[no-untyped-def]
            clock = RunClock()
            opts = ClientOptions(base_url=server.url, model="fake-model")
            async with StreamingClient(opts, clock) as client:
                driver = Driver(client, clock, [])

                async def observe() -> None:
                    await asyncio.sleep(0.3)
                    time.sleep(0.3)  # the client stalls: the lag monitor wakes late
                    await asyncio.sleep(0.1)
                    snapshots.append(driver.health_now(open_loop=False))
                    await asyncio.sleep(0.6)  # a quiet interval
                    snapshots.append(driver.health_now(open_loop=False))

                obs = asyncio.create_task(observe())
                plan = LoadPlan(workload="w", num_requests=60, concurrency=2)
                res = await driver.run(_requests(60, out=16), plan)
                await obs
                return res

        res = asyncio.run(main())
    stalled, quiet = snapshots
    assert stalled.loop_lag_max_s is not None and stalled.loop_lag_max_s > 0.2
    assert stalled.saturated and "event-loop lag" in " ".join(stalled.reasons)
    assert quiet.loop_lag_max_s is not None and quiet.loop_lag_max_s < 0.2
    assert quiet.cpu_ratio is not None and quiet.cpu_ratio < 1.0
    # the whole-run health still sees the stall
    assert res.health.loop_lag_max_s is not None and res.health.loop_lag_max_s > 0.2


def test_a_lagging_loop_that_waited_for_a_cpu_is_called_starved() -> None:
    from profiler.load.health import RUN_QUEUE_LIMIT, judge

    lags = [0.5] * 100
    starved = judge(0.1, 1.0, open_loop=False, lags=lags, dispatch_lags=[], run_queue_s=0.3)
    assert starved.run_queue_wait_ratio == pytest.approx(0.3)
    assert starved.saturated and "starved: the loop waited for a CPU 30%" in starved.reasons[0]
    assert starved.to_dict()["run_queue_wait_ratio"] == pytest.approx(0.3)
    busy = judge(
        0.1, 1.0, open_loop=False, lags=lags, dispatch_lags=[], run_queue_s=RUN_QUEUE_LIMIT / 2
    )
    assert busy.saturated and "event-loop lag" in busy.reasons[0]
    assert "starved" not in busy.reasons[0]
    unknown = judge(0.1, 1.0, open_loop=False, lags=lags, dispatch_lags=[], run_queue_s=None)
    assert (
        unknown.run_queue_wait_ratio is None and unknown.to_dict()["run_queue_wait_ratio"] is None
    )


def test_run_queue_wait_grows_when_another_process_shares_the_core() -> None:
    """The measurement itself: this thread and a busy process on one core; the kernel makes
    this thread wait for the CPU, and /proc says how long."""
    import os
    import subprocess
    import sys
    import threading
    import time

    from profiler import cpus
    from profiler.load.health import run_delay_s

    tid = threading.get_native_id()
    if run_delay_s(tid) is None or not hasattr(os, "sched_setaffinity"):
        pytest.skip("no per-thread schedstat or CPU affinity here")
    assert run_delay_s(10**9) is None  # no such thread
    core = cpus.available()[0]
    with cpus.on_cpus([core]):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.3)  # the spinner is running
            before = run_delay_s(tid)
            t_end = time.monotonic() + 1.0
            while time.monotonic() < t_end:  # runnable the whole second
                pass
            after = run_delay_s(tid)
        finally:
            spinner.kill()
            spinner.wait()
    assert before is not None and after is not None
    assert after - before > 0.2  # about half the second on a fair scheduler


def test_an_abort_right_after_dispatch_leaves_sent_equal_to_records() -> None:
    """Tasks dispatched in the same loop step as an abort never run: they sent nothing, so they
    are not counted as sent (requests_sent in the manifest must equal the records on disk)."""
    records: list[RequestRecord] = []

    class AbortingClient:
        driver: Driver

        async def send(self, req, *, workload, intended_start_s, on_send=None):  # type: ignore[no-untyped-def]
            self.driver.abort("server_died", "server process exited (code -9)")
            return RequestRecord(
                id=req.id,
                workload=workload,
                scenario=req.scenario,
                intended_start_s=intended_start_s,
                outcome="error",
                error="server died",
            )

    client = AbortingClient()
    driver = Driver(client, RunClock(), [records.append])  # type: ignore[arg-type]
    client.driver = driver
    plan = LoadPlan(workload="w", num_requests=4, offsets_s=np.zeros(4))
    res = asyncio.run(driver.run(_requests(4), plan))
    assert res.ended == "server_died"
    assert res.sent == len(records) == 1
