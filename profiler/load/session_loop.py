"""Session loads: ``users`` (closed loop) and open-loop session arrivals. Each session is one
unit of the load's dispatch core (``profiler.load.dispatch``); its turns are sent by the
``Driver`` (``send_turn``).

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
from collections.abc import Awaitable, Callable
from typing import Any

from profiler.load.dispatch import Pace
from profiler.load.sessions import History, SessionPlan
from profiler.load.stream import Answer
from profiler.store.record import RequestRecord

log = logging.getLogger(__name__)

# (request, workload, intended start, queue wait, session index, turn number, answer or None)
# -> the turn's record, or None when aborted before sending (``Driver.send_turn``)
SendTurn = Callable[
    [Any, str, float, float | None, int, int, Answer | None], Awaitable[RequestRecord | None]
]


class SessionLoad:
    """The sessions of one load, each a unit of the load's closed loop (``run``) or open loop
    (``launch``); ``max_concurrency`` caps the turns in flight (open loop)."""

    def __init__(
        self,
        pace: Pace,
        send_turn: SendTurn,
        workload: str,
        answer_encoder: Callable[[list[str]], list[list[int]]] | None,
        max_concurrency: int | None,
    ) -> None:
        self.pace = pace
        self.send_turn = send_turn
        self.workload = workload
        self.answer_encoder = answer_encoder
        self.sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self.sources: dict[str, int] = {}  # where the answers in the histories came from
        self._running: set[asyncio.Task[None]] = set()
        self._next_id = 0  # request ids follow the order of sending

    def launch(self, s: SessionPlan, intended: float, _queue_wait_s: float | None) -> None:
        """Start session ``s`` (open loop) and go on: it runs beside the others."""
        task = asyncio.create_task(self.run(s, intended))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def finish(self) -> None:
        """Wait for the sessions still running."""
        if self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)
        if self.sources.get("synthetic"):
            log.warning(
                "%d answers entered the history as ids drawn for their length: the server sent "
                "no token ids (vLLM's return_token_ids) and no tokenizer was set",
                self.sources["synthetic"],
            )

    async def run(self, s: SessionPlan, intended: float) -> None:
        """Send the turns of ``s`` in order; the first is intended at ``intended``."""
        pace, clock, sem = self.pace, self.pace.clock, self.sem
        history = History(s, self.answer_encoder)
        last = len(s.turns) - 1
        for k, turn in enumerate(s.turns):
            if pace.stopping or (k and pace.over()):
                return
            req = history.request(k, self._next_id)
            self._next_id += 1
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
                rec = await self.send_turn(
                    req, self.workload, intended, wait, s.index, k + 1, answer
                )
            finally:
                if sem is not None:
                    sem.release()
            if rec is None or rec.outcome != "ok" or k == last:
                return
            history.answered(k, req, answer, rec.output_tokens)
            if history.answer_source is not None:
                self.sources[history.answer_source] = self.sources.get(history.answer_source, 0) + 1
            if await pace.pause(turn.think_s):
                return
            intended = clock.now()
