"""Session loads: ``users`` (closed loop) and open-loop session arrivals, on a ``Driver``.

- ``users``: ``plan.concurrency`` users; each takes the next session, sends its turns one after
  the other (a turn waits for the previous answer, then the user thinks), and only then takes
  another. A user keeps its slot through the turns and think times.
- open loop: session ``i`` starts at ``offsets_s[i]`` (Poisson, gamma, a trace, ...), whatever
  the other sessions are doing; ``max_concurrency`` caps the requests in flight, and the time
  a turn waits for a slot is its ``queue_wait_s``.
A turn's intended start is its session's scheduled start (first turn) or the previous answer's
end plus the think time, so TTFT from the intended start includes any wait for a slot.
A failed turn ends its session (the next turns would send a history the server never gave).
The load stops sending turns at the deadline (``duration_s``) or when the driver stops; a
session cut there is simply shorter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from profiler.load.client import Answer
from profiler.load.sessions import History, SessionPlan

if TYPE_CHECKING:
    from profiler.load.arrivals import LoadPlan
    from profiler.load.driver import Driver

log = logging.getLogger(__name__)


async def run_sessions(
    driver: Driver, sessions: Iterator[SessionPlan], plan: LoadPlan, deadline: float | None
) -> None:
    """Run the sessions of ``sessions`` as ``plan`` says (users, or open-loop starts)."""
    sources: dict[str, int] = {}
    if plan.offsets_s is None:
        await _users(driver, sessions, plan, deadline, sources)
    else:
        await _open(driver, sessions, plan, deadline, sources)
    if sources.get("synthetic"):
        log.warning(
            "%d answers entered the history as ids drawn for their length: the server sent "
            "no token ids (vLLM's return_token_ids) and no tokenizer was set",
            sources["synthetic"],
        )


async def _users(
    driver: Driver,
    sessions: Iterator[SessionPlan],
    plan: LoadPlan,
    deadline: float | None,
    sources: dict[str, int],
) -> None:
    assert plan.concurrency is not None
    it = iter(sessions)
    clock = driver.clock

    async def user() -> None:
        while not driver.stopping:
            if deadline is not None and clock.now() >= deadline:
                return
            s = next(it, None)
            if s is None:
                return
            await run_session(driver, s, plan, deadline, clock.now(), None, sources)

    await asyncio.gather(*(user() for _ in range(plan.concurrency)))


async def _open(
    driver: Driver,
    sessions: Iterator[SessionPlan],
    plan: LoadPlan,
    deadline: float | None,
    sources: dict[str, int],
) -> None:
    assert plan.offsets_s is not None
    offsets = plan.offsets_s
    sem = asyncio.Semaphore(plan.max_concurrency) if plan.max_concurrency else None
    clock = driver.clock
    t0 = driver.start_s
    running: set[asyncio.Task[None]] = set()
    for i, s in enumerate(sessions):
        if i >= len(offsets) or driver.stopping:
            break
        intended = t0 + float(offsets[i])
        if deadline is not None and intended >= deadline:
            break
        delay = intended - clock.now()
        if delay > 0 and await driver.pause(delay):
            break
        driver.dispatched_late(clock.now() - intended)
        task = asyncio.create_task(run_session(driver, s, plan, deadline, intended, sem, sources))
        running.add(task)
        task.add_done_callback(running.discard)
    if running:
        await asyncio.gather(*list(running), return_exceptions=True)


async def run_session(
    driver: Driver,
    s: SessionPlan,
    plan: LoadPlan,
    deadline: float | None,
    intended: float,
    sem: asyncio.Semaphore | None,
    sources: dict[str, int],
) -> None:
    """Send the turns of ``s`` in order; the first is intended at ``intended``."""
    clock = driver.clock
    history = History(s, plan.answer_encoder)
    last = len(s.turns) - 1
    for k, turn in enumerate(s.turns):
        if driver.stopping or (deadline is not None and k and clock.now() >= deadline):
            return
        req = history.request(k, driver.next_id())
        # the answer is kept only when a next turn will send it back
        answer = None
        if k < last and history.wants_answers:
            answer = Answer(want_ids=s.api == "completions")
        wait: float | None = None
        if sem is not None:
            queued = clock.now()
            await sem.acquire()
            wait = clock.now() - queued
        try:
            rec = await driver.send_turn(req, plan.workload, intended, wait, s.index, k + 1, answer)
        finally:
            if sem is not None:
                sem.release()
        if rec is None or rec.outcome != "ok" or k == last:
            return
        history.answered(k, req, answer, rec.output_tokens)
        if history.answer_source is not None:
            sources[history.answer_source] = sources.get(history.answer_source, 0) + 1
        if await driver.pause(turn.think_s):
            return
        intended = clock.now()
