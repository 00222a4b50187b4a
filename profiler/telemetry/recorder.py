"""Run samplers on background daemon threads, on the run clock, off the load generator's loop.

Each sampler gets a lane: its own thread and interval (``intervals[source]`` or
``interval_s``), so a slow ``/metrics`` scrape never delays NVML ticks. Ticks follow a fixed
schedule (``start + k * interval``); a tick that overruns skips the missed slots rather than
bunching up, and counts them. ``stop()`` wakes every lane, takes one final tick, closes the
samplers and joins the threads. A sampler that raises loses that tick only.

Samples go to ``sink`` (called from the lanes, serialised by a lock) and the newest value of
every ``(source, device, metric)`` stays in ``latest()`` for a Prometheus collector. Without
a sink the samples are kept in memory (``samples()``), which suits tests and short runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from profiler.clock import RunClock
from profiler.telemetry.sample import Sample, Sampler

log = logging.getLogger(__name__)

Key = tuple[str, str, str]


@dataclass
class _Lane:
    name: str
    sampler: Sampler
    interval_s: float
    thread: threading.Thread | None = None
    ticks: int = 0
    missed: int = 0
    errors: int = 0
    last_error: str | None = None
    dur_sum: float = 0.0
    dur_max: float = 0.0
    cpu_sum: float = 0.0
    jitter_sum: float = 0.0
    jitter_max: float = 0.0
    jitter_n: int = 0
    samples: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            n = self.ticks
            return {
                "interval_s": self.interval_s,
                "ticks": n,
                "missed_ticks": self.missed,
                "errors": self.errors,
                "last_error": self.last_error,
                "samples": self.samples,
                "duration_mean_s": self.dur_sum / n if n else None,
                "duration_max_s": self.dur_max if n else None,
                "cpu_mean_s": self.cpu_sum / n if n else None,
                "jitter_mean_s": self.jitter_sum / self.jitter_n if self.jitter_n else None,
                "jitter_max_s": self.jitter_max if self.jitter_n else None,
            }


class TelemetryRecorder:
    def __init__(
        self,
        samplers: Sequence[Sampler],
        interval_s: float,
        clock: RunClock,
        sink: Callable[[list[Sample]], None] | None = None,
        *,
        intervals: dict[str, float] | None = None,
        keep: bool | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.clock = clock
        self._sink = sink
        self._keep = sink is None if keep is None else keep
        self._kept: list[Sample] = []
        self._latest: dict[Key, Sample] = {}
        self._lock = threading.Lock()
        self._sink_lock = threading.Lock()
        self._stop = threading.Event()
        self._started = False
        self._stopped = False
        self.sink_errors = 0
        self._lanes: list[_Lane] = []
        seen: dict[str, int] = {}
        for s in samplers:
            src = getattr(s, "source", type(s).__name__)
            n = seen[src] = seen.get(src, 0) + 1
            name = src if n == 1 else f"{src}#{n}"
            self._lanes.append(_Lane(name, s, float((intervals or {}).get(src, interval_s))))

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> TelemetryRecorder:
        if self._started:
            return self
        self._started = True
        for lane in self._lanes:
            lane.thread = threading.Thread(
                target=self._run, args=(lane,), name=f"infprof-telemetry-{lane.name}", daemon=True
            )
            lane.thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Final tick on every lane, samplers closed, threads joined (at most ``timeout_s``)."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if not self._started:  # never started: still close what we were given
            for lane in self._lanes:
                self._close(lane)
            return
        deadline = time.monotonic() + timeout_s
        for lane in self._lanes:
            if lane.thread is not None:
                lane.thread.join(max(0.0, deadline - time.monotonic()))
                if lane.thread.is_alive():
                    log.warning(
                        "telemetry lane %s did not stop within %.1f s", lane.name, timeout_s
                    )

    def __enter__(self) -> TelemetryRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- results ------------------------------------------------------------------------

    def latest(self) -> dict[Key, Sample]:
        """A snapshot: newest sample per (source, device, metric)."""
        with self._lock:
            return dict(self._latest)

    def samples(self) -> list[Sample]:
        """Every sample so far, in arrival order (only when kept: no sink, or keep=True)."""
        with self._lock:
            return list(self._kept)

    def tick_stats(self) -> dict[str, dict[str, Any]]:
        """Per lane: ticks, missed ticks, errors, tick duration and CPU (mean/max), jitter
        (start of a tick minus its scheduled time: mean/max)."""
        return {lane.name: lane.stats() for lane in self._lanes}

    # --- the lanes ----------------------------------------------------------------------

    def _run(self, lane: _Lane) -> None:
        clock, interval = self.clock, lane.interval_s
        due = clock.now()
        while not self._stop.is_set():
            wait = due - clock.now()
            if wait > 0 and self._stop.wait(wait):
                break
            self._tick(lane, due)
            due += interval
            behind = clock.now() - due
            if behind >= 0:  # overran: skip the slots already past
                skip = int(behind // interval) + 1
                due += skip * interval
                with lane.lock:
                    lane.missed += skip
        self._tick(lane, None)  # the final tick
        self._close(lane)

    def _tick(self, lane: _Lane, due: float | None) -> None:
        c0, w0 = time.thread_time(), time.perf_counter()
        t_s = self.clock.now()
        try:
            out = lane.sampler.sample(t_s)
        except Exception as e:
            out = []
            with lane.lock:
                lane.errors += 1
                first = lane.last_error is None
                lane.last_error = f"{type(e).__name__}: {e}"
            (log.warning if first else log.debug)(
                "telemetry %s: sample failed: %s", lane.name, lane.last_error
            )
        dur, cpu = time.perf_counter() - w0, time.thread_time() - c0
        with lane.lock:
            lane.ticks += 1
            lane.samples += len(out)
            lane.dur_sum += dur
            lane.dur_max = max(lane.dur_max, dur)
            lane.cpu_sum += cpu
            if due is not None:
                jitter = t_s - due
                lane.jitter_sum += jitter
                lane.jitter_max = max(lane.jitter_max, jitter)
                lane.jitter_n += 1
        if out:
            self._publish(out)

    def _publish(self, out: list[Sample]) -> None:
        with self._lock:
            for s in out:
                self._latest[(s.source, s.device, s.metric)] = s
            if self._keep:
                self._kept.extend(out)
        if self._sink is not None:
            with self._sink_lock:
                try:
                    self._sink(out)
                except Exception as e:  # the store's problem must not stop the sampling
                    self.sink_errors += 1
                    if self.sink_errors == 1:
                        log.warning("telemetry sink failed: %s: %s", type(e).__name__, e)

    def _close(self, lane: _Lane) -> None:
        try:
            lane.sampler.close()
        except Exception as e:
            log.debug("closing %s: %s", lane.name, e)
