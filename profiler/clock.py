"""The run clock: one time axis for request records and telemetry samples.

Every timestamp in a run is ``t_s``: seconds on ``time.perf_counter()`` minus the run's base,
so records from the load generator and samples from the telemetry threads line up. The wall
anchor (``wall_start``, Unix seconds at ``t_s == 0``) maps the axis to real time, e.g. for
Prometheus range queries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunClock:
    base: float = field(default_factory=time.perf_counter)
    wall_start: float = field(default_factory=time.time)

    def now(self) -> float:
        """Seconds since the start of the run."""
        return time.perf_counter() - self.base

    def to_wall(self, t_s: float) -> float:
        return self.wall_start + t_s

    def from_wall(self, wall: float) -> float:
        return wall - self.wall_start


def measure_offset(
    remote_now: Callable[[], float], local_now: Callable[[], float], samples: int = 8
) -> tuple[float, float]:
    """``(offset_s, uncertainty_s)`` of a remote clock: remote minus local, read as NTP does.

    Each probe reads the local clock, asks the remote one, and reads the local clock again;
    the remote reading is taken to fall midway, so the error is at most half the round trip.
    The probe with the shortest round trip wins; its half round trip is the uncertainty."""
    best: tuple[float, float] | None = None
    for _ in range(max(1, samples)):
        t0 = local_now()
        remote = remote_now()
        t1 = local_now()
        rtt = t1 - t0
        if best is None or rtt < best[1]:
            best = (remote - (t0 + t1) / 2, rtt)
    assert best is not None
    return best[0], best[1] / 2
