"""The dispatch core on its own (no client, no server): the open loop launches each unit at
its offset until the deadline, tells how late it was, and under a cap hands each unit the time
it waited for a slot; the closed loop runs a fixed number at a time; a stop ends both."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from profiler.clock import RunClock
from profiler.load.dispatch import Pace, Slots


def test_open_loop_launches_on_schedule_until_the_deadline() -> None:
    clock = RunClock()
    lates: list[float] = []
    launched: list[tuple[str, float, float | None]] = []

    async def main() -> None:
        start = clock.now()
        pace = Pace(clock, start, start + 0.1, lates.append)
        offsets = np.array([0.0, 0.02, 0.04, 0.5])
        await pace.open_loop(
            iter("abcd"), offsets, lambda u, t, w: launched.append((u, t - start, w))
        )

    asyncio.run(main())
    assert [u for u, _, _ in launched] == ["a", "b", "c"]  # "d" is due after the deadline
    assert [t for _, t, _ in launched] == pytest.approx([0.0, 0.02, 0.04])
    assert all(w is None for _, _, w in launched)
    assert len(lates) == 3 and all(x >= 0 for x in lates)


def _capped_burst(
    n: int, hold_s: float, on_late: Callable[[float], None] = lambda _lag: None
) -> list[float | None]:
    """``n`` units all due at once through an open loop with one slot, each request holding
    it ``hold_s``: the slot wait each unit was handed (lateness goes to ``on_late``)."""
    clock = RunClock()
    waits: list[float | None] = []

    async def main() -> None:
        pace = Pace(clock, clock.now(), None, on_late)
        slots = Slots(1, pace)
        tasks = []

        def launch(_u: int, _t: float, wait: float | None) -> None:
            waits.append(wait)
            task = asyncio.create_task(asyncio.sleep(hold_s))
            slots.release_after(task)
            tasks.append(task)

        await pace.open_loop(range(n), np.zeros(n), launch, slots)
        await asyncio.gather(*tasks)

    asyncio.run(main())
    return waits


def test_a_capped_open_loop_hands_on_the_slot_wait() -> None:
    waits = _capped_burst(3, 0.05)
    assert waits[0] == pytest.approx(0.0, abs=1e-3)  # a free slot: no wait
    # all three were due at once: the second waited for one request, the third for two
    assert waits[1] is not None and waits[1] >= 0.045
    assert waits[2] is not None and waits[2] >= waits[1] + 0.045


def test_closed_loop_runs_a_fixed_number_at_a_time_and_a_stop_ends_it() -> None:
    clock = RunClock()
    live = {"now": 0, "peak": 0, "ran": 0}

    async def main() -> None:
        pace = Pace(clock, clock.now(), None, lambda _lag: None)

        async def run(_u: int, _intended: float) -> None:
            live["now"] += 1
            live["peak"] = max(live["peak"], live["now"])
            await asyncio.sleep(0.01)
            live["now"] -= 1
            live["ran"] += 1
            if live["ran"] == 6:
                pace.stop.set()

        await pace.closed_loop(range(100), 3, run)

    asyncio.run(main())
    assert live["peak"] == 3
    assert 6 <= live["ran"] < 100  # the workers stop taking units once the load stops


def test_the_lateness_health_hears_is_measures_dispatch_lag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dispatch lag has one definition (``profiler.measures.dispatch_lag``): the open loop's
    lateness is computed by it, with the time waited for a slot taken off."""
    from profiler import measures

    calls: list[tuple[float, float, float | None]] = []
    real = measures.dispatch_lag

    def spy(intended: float, send: float, wait: float | None) -> float:
        calls.append((intended, send, wait))
        return real(intended, send, wait)  # type: ignore[no-any-return]

    monkeypatch.setattr(measures, "dispatch_lag", spy)
    lates: list[float] = []
    _capped_burst(2, 0.02, lates.append)
    assert len(calls) == 2 and len(lates) == 2
    for (intended, send, wait), late in zip(calls, lates, strict=True):
        assert wait is not None
        assert late == pytest.approx(send - intended - wait)
    assert calls[1][2] is not None and calls[1][2] >= 0.015  # the second waited for a slot
    assert all(abs(x) < 0.015 for x in lates)  # the slot wait is not the scheduler's lateness
