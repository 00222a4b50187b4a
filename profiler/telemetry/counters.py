"""Cumulative counters turned into totals since sampling began and per-second rates.

NVML's NVLink/PCIe/energy counters and psutil's network counters only ever grow (until a
driver reload or a wrap). ``CounterRate`` keeps the previous reading and returns, for each new
one, the total increase since the first reading and the rate over the last interval. A
decrease (reset or wrap) rebases without adding anything, so totals never go backwards.
"""

from __future__ import annotations


class CounterRate:
    __slots__ = ("_prev", "_prev_t", "_total")

    def __init__(self) -> None:
        self._prev: float | None = None
        self._prev_t = 0.0
        self._total = 0.0

    @property
    def total(self) -> float:
        return self._total

    def update(self, value: float, t_s: float) -> tuple[float, float | None]:
        """Feed the counter's ``value`` read at ``t_s`` (seconds on any one clock). Returns
        ``(total since the first reading, rate per second over the last interval)``; the rate
        is None on the first reading, after a reset, or when the clock did not advance."""
        prev, prev_t = self._prev, self._prev_t
        self._prev, self._prev_t = value, t_s
        if prev is None:
            return self._total, None
        delta = value - prev
        if delta < 0:  # reset (driver reload) or wrap: rebase, add nothing
            return self._total, None
        self._total += delta
        dt = t_s - prev_t
        return self._total, (delta / dt if dt > 0 else None)
