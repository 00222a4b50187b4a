"""The run clock: one time axis for request records and telemetry samples.

Every timestamp in a run is ``t_s``: seconds on ``time.perf_counter()`` minus the run's base,
so records from the load generator and samples from the telemetry threads line up. The wall
anchor (``wall_start``, Unix seconds at ``t_s == 0``) maps the axis to real time, e.g. for
Prometheus range queries.
"""

from __future__ import annotations

import time
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
