"""The dispatch core of a load, the same for requests and for sessions: when each unit is due
and whether the load goes on (``Pace``), the closed loop (``workers`` units at a time, the next
one as soon as one ends) and the open loop (unit ``i`` at ``offsets_s[i]``, whatever the others
are doing), and an open loop's cap on requests in flight (``Slots``).

What a unit is, and what running one means, is the caller's: ``profiler.load.driver`` sends a
request; ``profiler.load.session_loop`` runs a session's turns.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from profiler import measures
from profiler.clock import RunClock

U = TypeVar("U")


class Pace:
    """One load's clock, start, deadline and stop. ``on_late`` hears how late the open loop
    dispatched each unit (the scheduler's own lateness, which client health judges)."""

    def __init__(
        self,
        clock: RunClock,
        start_s: float,
        deadline_s: float | None,
        on_late: Callable[[float], None],
    ) -> None:
        self.clock = clock
        self.start_s = start_s
        self.deadline_s = deadline_s
        self.on_late = on_late
        self.stop = asyncio.Event()

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()

    def over(self) -> bool:
        """The deadline has passed: no unit starts any more."""
        return self.deadline_s is not None and self.clock.now() >= self.deadline_s

    async def pause(self, seconds: float) -> bool:
        """Wait ``seconds``; True when the load is stopping instead."""
        if self.stop.is_set():
            return True
        if seconds <= 0:
            return False
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
            return True
        except TimeoutError:
            return False

    async def closed_loop(
        self, units: Iterable[U], workers: int, run: Callable[[U, float], Awaitable[Any]]
    ) -> None:
        """``workers`` at a time: each runs the next unit, intended now, until none is left."""
        it = iter(units)
        clock = self.clock

        async def worker() -> None:
            while not self.stopping:
                if self.over():
                    return
                unit = next(it, None)
                if unit is None:
                    return
                await run(unit, clock.now())

        await asyncio.gather(*(worker() for _ in range(workers)))

    async def open_loop(
        self,
        units: Iterable[U],
        offsets_s: Any,
        launch: Callable[[U, float, float | None], None],
        slots: Slots | None = None,
    ) -> None:
        """Unit ``i`` launched at ``start_s + offsets_s[i]`` (after a free slot, when capped:
        ``launch`` gets the time it waited for one), until the offsets, the units or the
        deadline end, or the load stops."""
        clock = self.clock
        t0 = self.start_s
        deadline = self.deadline_s
        for i, unit in enumerate(units):
            if i >= len(offsets_s) or self.stopping:
                break
            intended = t0 + float(offsets_s[i])
            if deadline is not None and intended >= deadline:
                break
            delay = intended - clock.now()
            if delay > 0 and await self.pause(delay):
                break
            wait: float | None = None
            if slots is not None:
                wait = await slots.take(intended)
                if wait is None:
                    break  # stopped while waiting for the slot
            # the scheduler's own lateness (the dispatch lag, sent now): health judges this,
            # never the queue's wait
            self.on_late(measures.dispatch_lag(intended, clock.now(), wait))
            launch(unit, intended, wait)


class Slots:
    """An open loop's cap on requests in flight, and the time each waited for a slot. Requests
    are dispatched in schedule order, so a request whose intended start fell while the
    dispatcher was blocked on an earlier request's slot was queued for that time too: its wait
    is the blocked time since its intended start. Intended starts only grow, so blocked spans
    that ended before one are dropped."""

    def __init__(self, limit: int, pace: Pace) -> None:
        self._sem = asyncio.Semaphore(limit)
        self._pace = pace
        self._spans: deque[tuple[float, float, float]] = deque()  # start, end, blocked before
        self._total = 0.0

    async def take(self, intended: float) -> float | None:
        """Wait for a slot; the seconds the request intended at ``intended`` waited for it
        (this one's own, and the part of earlier ones' waits it spent behind them), or None
        when the load stopped meanwhile (no slot is held then)."""
        clock = self._pace.clock
        start = clock.now()
        await self._sem.acquire()
        end = clock.now()
        if end > start:
            self._spans.append((start, end, self._total))
            self._total += end - start
        if self._pace.stopping:
            self._sem.release()
            return None
        spans = self._spans
        while spans and spans[0][1] <= intended:
            spans.popleft()
        if not spans:
            return 0.0
        first, _end, before = spans[0]
        return self._total - before - max(intended - first, 0.0)

    def release_after(self, task: asyncio.Task[Any]) -> None:
        """The slot is freed when ``task`` (the request it was taken for) ends."""
        task.add_done_callback(self._release)

    def _release(self, _task: object) -> None:
        self._sem.release()
