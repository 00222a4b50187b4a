"""Client health: whether the load generator itself is the bottleneck. The driver's event loop
is watched while the load runs (its lag, the CPU it uses, how late the open loop dispatches,
how long its thread waited for a CPU); a saturated client is reported, not hidden.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LAG_INTERVAL_S = 0.05
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
MAX_LAGS = 200_000  # loop-lag samples kept (one per LAG_INTERVAL_S: about 2.8 hours)


def run_delay_s(tid: int | None) -> float | None:
    """Seconds thread ``tid`` has spent runnable but waiting for a CPU (Linux schedstat)."""
    if tid is None:
        return None
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


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


def judge(
    cpu_s: float,
    wall_s: float,
    *,
    open_loop: bool,
    lags: list[float],
    dispatch_lags: list[float],
    run_queue_s: float | None = None,
) -> ClientHealth:
    """The health of a client that used ``cpu_s`` of CPU over ``wall_s``, whose event loop
    woke ``lags`` late and whose open loop dispatched ``dispatch_lags`` behind schedule."""
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
        h.reasons.append(f"dispatch lag p99 {h.dispatch_lag_p99_s * 1000:.0f} ms behind schedule")
    h.saturated = bool(h.reasons)
    return h


class HealthMonitor:
    """The samples of one load: event-loop lags (``watch_loop``, a task on the loop) and
    dispatch lags (``late``), judged over the whole load (``whole``) or since the previous
    look (``since_last``, for live export)."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.dispatch_lags: list[float] = []
        self._cpu0 = 0.0
        self._rq0: float | None = None
        self._tid: int | None = None
        # lags, dispatch lags, cpu, wall, run-queue wait at the previous since_last()
        self._snap: tuple[int, int, float, float, float | None] | None = None

    def start(self) -> None:
        """The load starts on this thread's event loop."""
        self._cpu0 = time.process_time()
        self._tid = threading.get_native_id()
        self._rq0 = run_delay_s(self._tid)
        self._snap = (
            len(self.lags),
            len(self.dispatch_lags),
            self._cpu0,
            time.monotonic(),
            self._rq0,
        )

    def late(self, lag_s: float) -> None:
        """A unit of an open loop was dispatched ``lag_s`` behind its schedule."""
        self.dispatch_lags.append(lag_s)

    async def watch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(LAG_INTERVAL_S)
            lag = loop.time() - t - LAG_INTERVAL_S
            if len(self.lags) < MAX_LAGS:
                self.lags.append(max(lag, 0.0))

    def whole(self, wall_s: float, *, open_loop: bool) -> ClientHealth:
        """Health over the whole load (``wall_s`` long), for the summary."""
        rq1 = run_delay_s(self._tid)
        return judge(
            time.process_time() - self._cpu0,
            wall_s,
            open_loop=open_loop,
            lags=self.lags,
            dispatch_lags=self.dispatch_lags,
            run_queue_s=None if self._rq0 is None or rq1 is None else rq1 - self._rq0,
        )

    def since_last(self, *, open_loop: bool) -> ClientHealth:
        """Health since the previous call (the first call: since the load started)."""
        cpu, wall = time.process_time(), time.monotonic()
        rq = run_delay_s(self._tid)
        lag_i, disp_i, cpu0, wall0, rq0 = self._snap or (0, 0, cpu, wall, rq)
        self._snap = (len(self.lags), len(self.dispatch_lags), cpu, wall, rq)
        if wall - wall0 <= 0:
            return ClientHealth()
        return judge(
            cpu - cpu0,
            wall - wall0,
            open_loop=open_loop,
            lags=self.lags[lag_i:],
            dispatch_lags=self.dispatch_lags[disp_i:],
            run_queue_s=None if rq is None or rq0 is None else rq - rq0,
        )
