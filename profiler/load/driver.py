"""The load driver: dispatches requests on an arrival schedule (open loop) or keeps a fixed
number in flight (closed loop), hands every finished record to the sinks, and watches its own
health (event-loop lag, CPU, dispatch lag) so a saturated client is reported, not hidden.

The driver keeps no per-request state after a record is handed on, so memory stays flat over
long runs; summaries are computed from the journal afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from profiler.clock import RunClock
from profiler.errors import StorageError
from profiler.load.arrivals import LoadPlan
from profiler.load.client import StreamingClient
from profiler.load.record import RequestRecord

LAG_INTERVAL_S = 0.05
CONNECTION_FAILURES_TO_ABORT = 16
# A client using more than this share of its one core, or whose event loop stalls more than
# LOOP_LAG_LIMIT_S at p99, or whose open-loop dispatch lags more than DISPATCH_LAG_LIMIT_S at
# p99, is the bottleneck: its latencies measure itself, not the server. Waiting for a free slot
# under an open loop's concurrency cap is the load's queue, not client lag (queue_wait_s).
CPU_LIMIT = 0.9
LOOP_LAG_LIMIT_S = 0.025
DISPATCH_LAG_LIMIT_S = 0.025
# Share of the time the event loop's thread waited in the kernel's run queue (runnable, no CPU
# given) above which a lagging loop is called starved by other processes, not busy.
RUN_QUEUE_LIMIT = 0.05


def _run_delay_s(tid: int | None) -> float | None:
    """Seconds thread ``tid`` has spent runnable but waiting for a CPU (Linux schedstat)."""
    if tid is None:
        return None
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Progress:
    elapsed_s: float
    sent: int
    done: int
    ok: int
    failed: int
    inflight: int
    output_tokens: int
    planned: int | None


@dataclass
class ClientHealth:
    loop_lag_p50_s: float | None = None
    loop_lag_p99_s: float | None = None
    loop_lag_max_s: float | None = None
    cpu_seconds: float = 0.0
    cpu_ratio: float | None = None
    dispatch_lag_p99_s: float | None = None
    run_queue_wait_ratio: float | None = None  # None where the kernel does not say (not Linux)
    saturated: bool = False
    reasons: list[str] = field(default_factory=list)
    event_loop: str | None = None  # asyncio or uvloop (profiler.load.loop)

    def to_dict(self) -> dict[str, Any]:
        return {
            "saturated": self.saturated,
            "reason": "; ".join(self.reasons) if self.reasons else None,
            "event_loop_lag_s": {
                "p50": self.loop_lag_p50_s,
                "p99": self.loop_lag_p99_s,
                "max": self.loop_lag_max_s,
            },
            "cpu_seconds": self.cpu_seconds,
            "cpu_ratio": self.cpu_ratio,
            "dispatch_lag_p99_s": self.dispatch_lag_p99_s,
            "run_queue_wait_ratio": self.run_queue_wait_ratio,
            "event_loop": self.event_loop,
        }


@dataclass
class DriverResult:
    sent: int
    done: int
    ended: str  # completed | interrupted | server_died | endpoint_lost | storage_error
    reason: str | None
    health: ClientHealth
    load_start_s: float
    load_end_s: float
    workers: list[dict[str, Any]] | None = None  # Ray load workers: where, clock offsets


class Driver:
    def __init__(
        self,
        client: StreamingClient,
        clock: RunClock,
        sinks: list[Callable[[RequestRecord], None]],
        *,
        on_send: Callable[[], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        progress_interval_s: float = 2.0,
    ) -> None:
        self.client = client
        self.clock = clock
        self.sinks = sinks
        self.on_send = on_send
        self.on_progress = on_progress
        self.progress_interval_s = progress_interval_s
        self._tasks: set[asyncio.Task[RequestRecord]] = set()
        self._stop: asyncio.Event | None = None  # created inside the running loop
        self._ended = "completed"
        self._reason: str | None = None
        self._abort_outcome: str = "cancelled"
        self._sent = 0
        self._done = 0
        self._ok = 0
        self._failed = 0
        self._out_tokens = 0
        self._conn_fail_streak = 0
        self._lags: list[float] = []
        self._dispatch_lags: list[float] = []
        self._planned: int | None = None
        self._start_s = 0.0
        # lags, dispatch lags, cpu, wall, run-queue wait at the previous health_now()
        self._snap: tuple[int, int, float, float, float | None] | None = None
        self._loop_tid: int | None = None
        self._next_id = 0

    # ------------------------------------------------------------------ control
    def abort(self, ended: str, reason: str, outcome: str = "cancelled") -> None:
        """Stop dispatching and cancel in-flight requests; they are recorded with ``outcome``.
        Safe to call from signal handlers on the loop and more than once (the first wins)."""
        if self._stop is None or self._stop.is_set():
            return
        self._ended, self._reason, self._abort_outcome = ended, reason, outcome
        self._stop.set()
        for t in list(self._tasks):
            t.cancel()

    @property
    def start_s(self) -> float:
        """When the load started on the run clock (offsets count from here)."""
        return self._start_s

    @property
    def stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    # ------------------------------------------------------------------ run
    async def run(self, requests: Iterator[Any], plan: LoadPlan) -> DriverResult:
        self._stop = asyncio.Event()
        self._planned = plan.num_requests
        cpu0 = time.process_time()
        self._loop_tid = threading.get_native_id()
        rq0 = _run_delay_s(self._loop_tid)
        self._snap = (0, 0, cpu0, time.monotonic(), rq0)
        self._start_s = plan.start_s if plan.start_s is not None else self.clock.now()
        monitors = [asyncio.create_task(self._lag_monitor())]
        if self.on_progress is not None:
            monitors.append(asyncio.create_task(self._progress_loop()))
        deadline = self._start_s + plan.duration_s if plan.duration_s else None
        limited = requests if plan.sessions else _take(requests, plan.num_requests)
        try:
            if plan.sessions:
                from profiler.load.session_loop import run_sessions

                await run_sessions(self, limited, plan, deadline)
            elif plan.offsets_s is None:
                await self._closed_loop(limited, plan, deadline)
            else:
                await self._open_loop(limited, plan, deadline)
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        finally:
            for m in monitors:
                m.cancel()
            await asyncio.gather(*monitors, return_exceptions=True)
        end_s = self.clock.now()
        wall = max(end_s - self._start_s, 1e-9)
        rq1 = _run_delay_s(self._loop_tid)
        health = self._health(
            time.process_time() - cpu0,
            wall,
            open_loop=plan.offsets_s is not None,
            run_queue_s=None if rq0 is None or rq1 is None else rq1 - rq0,
        )
        if self.on_progress is not None:
            self.on_progress(self._progress())
        return DriverResult(
            self._sent, self._done, self._ended, self._reason, health, self._start_s, end_s
        )

    async def _closed_loop(
        self, requests: Iterator[Any], plan: LoadPlan, deadline: float | None
    ) -> None:
        assert plan.concurrency is not None
        it = iter(requests)

        async def worker() -> None:
            while not self.stopping:
                if deadline is not None and self.clock.now() >= deadline:
                    return
                req = next(it, None)
                if req is None:
                    return
                task = self._spawn(req, plan.workload, self.clock.now())
                await asyncio.wait([task])

        await asyncio.gather(*(worker() for _ in range(plan.concurrency)))

    async def _open_loop(
        self, requests: Iterator[Any], plan: LoadPlan, deadline: float | None
    ) -> None:
        assert plan.offsets_s is not None
        offsets = plan.offsets_s
        sem = asyncio.Semaphore(plan.max_concurrency) if plan.max_concurrency else None
        queue = _SlotQueue()
        t0 = self._start_s
        clock = self.clock
        for i, req in enumerate(requests):
            if i >= len(offsets) or self.stopping:
                break
            intended = t0 + float(offsets[i])
            if deadline is not None and intended >= deadline:
                break
            delay = intended - clock.now()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)  # type: ignore[union-attr]
                    break  # stop was set while waiting
                except TimeoutError:
                    pass
            wait: float | None = None
            if sem is not None:
                queue.block(clock.now())
                await sem.acquire()
                queue.unblock(clock.now())
                if self.stopping:
                    sem.release()
                    break
                # the slot wait: this request's own, and the part of earlier ones' waits
                # that it spent behind them (the loop dispatches in order)
                wait = queue.waited_since(intended)
            # the scheduler's own lateness: health judges this, never the queue's wait
            self._dispatch_lags.append(clock.now() - intended - (wait or 0.0))
            task = self._spawn(req, plan.workload, intended, wait)
            if sem is not None:
                task.add_done_callback(functools.partial(_release, sem))

    def _spawn(
        self, req: Any, workload: str, intended: float, queue_wait_s: float | None = None
    ) -> asyncio.Task[RequestRecord]:
        task = asyncio.create_task(self._one(req, workload, intended, queue_wait_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _one(
        self,
        req: Any,
        workload: str,
        intended: float,
        queue_wait_s: float | None,
        turn: tuple[int, int, Any] | None = None,
    ) -> RequestRecord:
        # counted here, not at spawn: a task cancelled before it ever ran (an abort right after
        # dispatch) sent nothing and leaves no record, so "sent" always equals the records
        self._sent += 1
        if turn is None:
            rec = await self.client.send(
                req, workload=workload, intended_start_s=intended, on_send=self.on_send
            )
        else:  # a session's turn: (session id, turn index, Answer or None)
            rec = await self.client.send(
                req,
                workload=workload,
                intended_start_s=intended,
                on_send=self.on_send,
                answer=turn[2],
            )
            rec.session_id, rec.turn = turn[0], turn[1]
        rec.queue_wait_s = queue_wait_s
        if rec.outcome == "cancelled" and self._abort_outcome != "cancelled":
            rec.outcome = self._abort_outcome  # type: ignore[assignment]
            rec.error = self._reason
        self._account(rec)
        try:
            for sink in self.sinks:
                sink(rec)
        except StorageError as e:  # disk full: stop, keeping what is on disk intact
            self.abort("storage_error", e.one_line())
        return rec

    # ------------------------------------------------------------------ sessions
    def next_id(self) -> int:
        """The next request id of a session load (ids follow the order of sending)."""
        rid = self._next_id
        self._next_id += 1
        return rid

    async def send_turn(
        self,
        req: Any,
        workload: str,
        intended: float,
        queue_wait_s: float | None,
        session_id: int,
        turn: int,
        answer: Any,
    ) -> RequestRecord | None:
        """Send one turn of a session and wait for its record (None: aborted before sending)."""
        task = asyncio.create_task(
            self._one(req, workload, intended, queue_wait_s, (session_id, turn, answer))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.wait([task])
        return None if task.cancelled() else task.result()

    async def pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (a user's think time); True when the load is stopping instead."""
        if self._stop is None or self._stop.is_set():
            return True
        if seconds <= 0:
            return False
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
            return True
        except TimeoutError:
            return False

    def dispatched_late(self, lag_s: float) -> None:
        """A session start's lateness on an open-loop schedule (judged by client health)."""
        self._dispatch_lags.append(lag_s)

    def _account(self, rec: RequestRecord) -> None:
        self._done += 1
        if rec.outcome == "ok":
            self._ok += 1
            self._out_tokens += rec.output_tokens or 0
            self._conn_fail_streak = 0
        else:
            self._failed += 1
            if rec.error and rec.error.startswith(("connection failed", "server disconnected")):
                self._conn_fail_streak += 1
                if self._conn_fail_streak >= CONNECTION_FAILURES_TO_ABORT:
                    self.abort(
                        "endpoint_lost",
                        f"{self._conn_fail_streak} requests in a row could not reach the server",
                        outcome="error",
                    )
            else:
                self._conn_fail_streak = 0

    # ------------------------------------------------------------------ health and progress
    async def _lag_monitor(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(LAG_INTERVAL_S)
            lag = loop.time() - t - LAG_INTERVAL_S
            if len(self._lags) < 200_000:
                self._lags.append(max(lag, 0.0))

    def health_now(self, *, open_loop: bool) -> ClientHealth:
        """Client health since the previous call (the first call: since the load started),
        for live export while the load runs; the summary's health covers the whole run."""
        cpu, wall = time.process_time(), time.monotonic()
        rq = _run_delay_s(self._loop_tid)
        lag_i, disp_i, cpu0, wall0, rq0 = self._snap or (0, 0, cpu, wall, rq)
        self._snap = (len(self._lags), len(self._dispatch_lags), cpu, wall, rq)
        if wall - wall0 <= 0:
            return ClientHealth()
        return self._health(
            cpu - cpu0,
            wall - wall0,
            open_loop=open_loop,
            lags=self._lags[lag_i:],
            dispatch_lags=self._dispatch_lags[disp_i:],
            run_queue_s=None if rq is None or rq0 is None else rq - rq0,
        )

    def _health(
        self,
        cpu_s: float,
        wall_s: float,
        *,
        open_loop: bool,
        lags: list[float] | None = None,
        dispatch_lags: list[float] | None = None,
        run_queue_s: float | None = None,
    ) -> ClientHealth:
        lags = self._lags if lags is None else lags
        dispatch_lags = self._dispatch_lags if dispatch_lags is None else dispatch_lags
        h = ClientHealth(cpu_seconds=cpu_s, cpu_ratio=cpu_s / wall_s)
        if run_queue_s is not None:
            h.run_queue_wait_ratio = max(run_queue_s, 0.0) / wall_s
        if lags:
            p50, p99 = np.percentile(lags, [50, 99])
            h.loop_lag_p50_s, h.loop_lag_p99_s, h.loop_lag_max_s = (
                float(p50),
                float(p99),
                max(lags),
            )
        if dispatch_lags:
            h.dispatch_lag_p99_s = float(np.percentile(dispatch_lags, 99))
        if h.cpu_ratio is not None and h.cpu_ratio > CPU_LIMIT:
            h.reasons.append(f"client used {h.cpu_ratio:.0%} of a core")
        if h.loop_lag_p99_s is not None and h.loop_lag_p99_s > LOOP_LAG_LIMIT_S:
            reason = f"event-loop lag p99 {h.loop_lag_p99_s * 1000:.0f} ms"
            if h.run_queue_wait_ratio is not None and h.run_queue_wait_ratio > RUN_QUEUE_LIMIT:
                reason += (
                    f", starved: the loop waited for a CPU {h.run_queue_wait_ratio:.0%} of the "
                    "time (other processes on its cores; keep the server off them, or run the "
                    "client on another host)"
                )
            h.reasons.append(reason)
        if (
            open_loop
            and h.dispatch_lag_p99_s is not None
            and h.dispatch_lag_p99_s > DISPATCH_LAG_LIMIT_S
        ):
            h.reasons.append(
                f"dispatch lag p99 {h.dispatch_lag_p99_s * 1000:.0f} ms behind schedule"
            )
        h.saturated = bool(h.reasons)
        return h

    def _progress(self) -> Progress:
        return Progress(
            elapsed_s=self.clock.now() - self._start_s,
            sent=self._sent,
            done=self._done,
            ok=self._ok,
            failed=self._failed,
            inflight=len(self._tasks),
            output_tokens=self._out_tokens,
            planned=self._planned,
        )

    async def _progress_loop(self) -> None:
        assert self.on_progress is not None
        while True:
            await asyncio.sleep(self.progress_interval_s)
            self.on_progress(self._progress())


class _SlotQueue:
    """When the open loop's dispatcher was blocked waiting for a free slot under the
    concurrency cap. Requests are dispatched in schedule order, so a request whose intended
    start fell while the dispatcher was blocked on an earlier request's slot was queued for
    that time too: ``waited_since(intended)`` is the blocked time since ``intended``. Intended
    starts only grow, so intervals that ended before one are dropped."""

    def __init__(self) -> None:
        self._spans: deque[tuple[float, float, float]] = deque()  # start, end, blocked before
        self._total = 0.0
        self._since: float | None = None

    def block(self, t: float) -> None:
        self._since = t

    def unblock(self, t: float) -> None:
        start, self._since = self._since, None
        if start is None or t <= start:
            return
        self._spans.append((start, t, self._total))
        self._total += t - start

    def waited_since(self, t: float) -> float:
        spans = self._spans
        while spans and spans[0][1] <= t:
            spans.popleft()
        if not spans:
            return 0.0
        start, _end, before = spans[0]
        return self._total - before - max(t - start, 0.0)


def _release(sem: asyncio.Semaphore, _task: object) -> None:
    sem.release()


def _take(it: Iterator[Any], n: int | None) -> Iterator[Any]:
    if n is None:
        yield from it
        return
    for i, x in enumerate(it):
        if i >= n:
            return
        yield x
