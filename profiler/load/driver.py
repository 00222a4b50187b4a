"""The load driver: sends a load's units (requests, or sessions: ``profiler.load.session_loop``)
on an arrival schedule (open loop) or keeps a fixed number in flight (closed loop), both on the
one dispatch core (``profiler.load.dispatch``), hands every finished record to the sinks, and
watches its own health (``profiler.load.health``: event-loop lag, CPU, dispatch lag) so a
saturated client is reported, not hidden.

The driver keeps no per-request state after a record is handed on, so memory stays flat over
long runs; summaries are computed from the journal afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from profiler.clock import RunClock
from profiler.errors import StorageError
from profiler.load.arrivals import LoadPlan
from profiler.load.client import StreamingClient
from profiler.load.dispatch import Pace, Slots
from profiler.load.health import ClientHealth, HealthMonitor
from profiler.load.session_loop import SessionLoad
from profiler.store.record import RequestRecord

CONNECTION_FAILURES_TO_ABORT = 16


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
        self._pace: Pace | None = None  # created inside the running loop
        self._health = HealthMonitor()
        self._ended = "completed"
        self._reason: str | None = None
        self._abort_outcome: str = "cancelled"
        self._sent = 0
        self._done = 0
        self._ok = 0
        self._failed = 0
        self._out_tokens = 0
        self._conn_fail_streak = 0
        self._planned: int | None = None
        self._start_s = 0.0

    # ------------------------------------------------------------------ control
    def abort(self, ended: str, reason: str, outcome: str = "cancelled") -> None:
        """Stop dispatching and cancel in-flight requests; they are recorded with ``outcome``.
        Safe to call from signal handlers on the loop and more than once (the first wins)."""
        if self._pace is None or self._pace.stopping:
            return
        self._ended, self._reason, self._abort_outcome = ended, reason, outcome
        self._pace.stop.set()
        for t in list(self._tasks):
            t.cancel()

    @property
    def start_s(self) -> float:
        """When the load started on the run clock (offsets count from here)."""
        return self._start_s

    def health_now(self, *, open_loop: bool) -> ClientHealth:
        """Client health since the previous call (the first call: since the load started),
        for live export while the load runs; the summary's health covers the whole run."""
        return self._health.since_last(open_loop=open_loop)

    # ------------------------------------------------------------------ run
    async def run(self, units: Iterator[Any], plan: LoadPlan) -> DriverResult:
        """Send ``units`` (requests, or ``SessionPlan``s when ``plan.sessions``) as ``plan``
        says: closed loop (``plan.concurrency``) or open loop (``plan.offsets_s``)."""
        self._planned = plan.num_requests
        self._health.start()
        self._start_s = plan.start_s if plan.start_s is not None else self.clock.now()
        deadline = self._start_s + plan.duration_s if plan.duration_s else None
        pace = self._pace = Pace(self.clock, self._start_s, deadline, self._health.late)
        monitors = [asyncio.create_task(self._health.watch_loop())]
        if self.on_progress is not None:
            monitors.append(asyncio.create_task(self._progress_loop()))
        sessions: SessionLoad | None = None
        slots: Slots | None = None
        run_one: Callable[[Any, float], Awaitable[Any]]
        launch: Callable[[Any, float, float | None], None]
        if plan.sessions:  # a unit is a session (profiler.load.session_loop)
            open_cap = plan.max_concurrency if plan.offsets_s is not None else None
            sessions = SessionLoad(
                pace, self.send_turn, plan.workload, plan.answer_encoder, open_cap
            )
            run_one, launch = sessions.run, sessions.launch
        else:  # a unit is a request
            units = _take(units, plan.num_requests)
            if plan.offsets_s is not None and plan.max_concurrency:
                slots = Slots(plan.max_concurrency, pace)
            run_one, launch = self._request_runners(plan.workload, slots)
        try:
            if plan.offsets_s is None:
                assert plan.concurrency is not None
                await pace.closed_loop(units, plan.concurrency, run_one)
            else:
                await pace.open_loop(units, plan.offsets_s, launch, slots)
            if sessions is not None:
                await sessions.finish()
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        finally:
            for m in monitors:
                m.cancel()
            await asyncio.gather(*monitors, return_exceptions=True)
        end_s = self.clock.now()
        health = self._health.whole(
            max(end_s - self._start_s, 1e-9), open_loop=plan.offsets_s is not None
        )
        if self.on_progress is not None:
            self.on_progress(self._progress())
        return DriverResult(
            self._sent, self._done, self._ended, self._reason, health, self._start_s, end_s
        )

    def _request_runners(
        self, workload: str, slots: Slots | None
    ) -> tuple[Callable[[Any, float], Awaitable[None]], Callable[[Any, float, float | None], None]]:
        """(closed-loop run, open-loop launch) of one request."""

        async def run_one(req: Any, intended: float) -> None:
            await asyncio.wait([self._spawn(req, workload, intended)])

        def launch(req: Any, intended: float, queue_wait_s: float | None) -> None:
            task = self._spawn(req, workload, intended, queue_wait_s)
            if slots is not None:
                slots.release_after(task)

        return run_one, launch

    def _spawn(
        self,
        req: Any,
        workload: str,
        intended: float,
        queue_wait_s: float | None = None,
        turn: tuple[int, int, Any] | None = None,
    ) -> asyncio.Task[RequestRecord]:
        task = asyncio.create_task(self._one(req, workload, intended, queue_wait_s, turn))
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
        task = self._spawn(req, workload, intended, queue_wait_s, (session_id, turn, answer))
        await asyncio.wait([task])
        return None if task.cancelled() else task.result()

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

    # ------------------------------------------------------------------ progress
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


def _take(it: Iterator[Any], n: int | None) -> Iterator[Any]:
    if n is None:
        yield from it
        return
    for i, x in enumerate(it):
        if i >= n:
            return
        yield x
