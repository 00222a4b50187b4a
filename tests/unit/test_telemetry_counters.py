"""Counter -> (total since sampling began, rate) arithmetic."""

from __future__ import annotations

import pytest

from profiler.telemetry.counters import CounterRate


def test_known_deltas() -> None:
    c = CounterRate()
    assert c.update(1000.0, 10.0) == (0.0, None)
    assert c.update(1500.0, 12.0) == (500.0, 250.0)
    total, rate = c.update(1600.0, 12.5)
    assert total == 600.0 and rate == pytest.approx(200.0)
    assert c.total == 600.0


def test_reset_rebases_and_clock_standstill_gives_no_rate() -> None:
    c = CounterRate()
    c.update(100.0, 0.0)
    c.update(200.0, 1.0)
    assert c.update(50.0, 2.0) == (100.0, None)  # reset: no negative increase
    assert c.update(80.0, 3.0) == (130.0, 30.0)
    assert c.update(90.0, 3.0) == (140.0, None)  # dt == 0
