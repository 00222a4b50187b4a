"""TelemetryRecorder threads: ticks happen, stop joins with a final tick, failures are contained.

No assertion depends on how fast this (possibly very busy) machine schedules threads: tests
wait for events with generous deadlines and check counts, never durations."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from profiler.clock import RunClock
from profiler.telemetry.recorder import TelemetryRecorder
from profiler.telemetry.sample import Sample


class Counting:
    def __init__(
        self, source: str = "fake", fail_on: Callable[[int], bool] = lambda n: False
    ) -> None:
        self.source = source
        self.n = 0
        self.closed = False
        self.threads: set[str] = set()
        self._fail_on = fail_on

    def sample(self, t_s: float) -> list[Sample]:
        self.n += 1
        self.threads.add(threading.current_thread().name)
        if self._fail_on(self.n):
            raise RuntimeError(f"tick {self.n} failed")
        return [Sample(t_s, self.source, "", "ticks", float(self.n))]

    def close(self) -> None:
        self.closed = True


class Blocking(Counting):
    """Blocks in sample() until released: a /metrics scrape that hangs."""

    def __init__(self) -> None:
        super().__init__("vllm")
        self.release = threading.Event()
        self.entered = threading.Event()

    def sample(self, t_s: float) -> list[Sample]:
        self.entered.set()
        self.release.wait(30)
        return super().sample(t_s)


def wait_until(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def test_ticks_happen_and_stop_joins_with_a_final_tick() -> None:
    s = Counting()
    got: list[Sample] = []
    rec = TelemetryRecorder([s], interval_s=0.01, clock=RunClock(), sink=got.extend)
    rec.start()
    wait_until(lambda: s.n >= 3)
    rec.stop()
    n_at_stop = s.n
    assert s.closed
    assert all(
        not t.is_alive()
        for t in threading.enumerate()
        if t.name.startswith("infprof-telemetry-fake")
    )
    assert s.threads == {"infprof-telemetry-fake"}  # never on the caller's thread
    assert [x.value for x in got] == [float(i) for i in range(1, n_at_stop + 1)]
    assert rec.samples() == []  # a sink was given: nothing kept
    stats = rec.tick_stats()["fake"]
    assert stats["ticks"] == n_at_stop and stats["errors"] == 0
    assert stats["duration_mean_s"] is not None and stats["jitter_max_s"] is not None
    time.sleep(0.05)
    assert s.n == n_at_stop  # nothing after stop
    rec.stop()  # idempotent


def test_a_raising_sampler_does_not_kill_its_thread() -> None:
    s = Counting(fail_on=lambda n: n % 2 == 1)
    rec = TelemetryRecorder([s], interval_s=0.01, clock=RunClock())
    with rec:
        wait_until(lambda: s.n >= 6)
    stats = rec.tick_stats()["fake"]
    assert stats["errors"] >= 3 and "failed" in stats["last_error"]
    assert stats["ticks"] == s.n
    assert {x.value for x in rec.samples()} <= {float(i) for i in range(2, s.n + 1, 2)}


def test_a_slow_sampler_does_not_delay_the_others() -> None:
    fast, slow = Counting("nvml"), Blocking()
    rec = TelemetryRecorder([fast, slow], interval_s=0.01, clock=RunClock())
    rec.start()
    try:
        assert slow.entered.wait(30)
        start = fast.n
        wait_until(lambda: fast.n >= start + 5)  # fast keeps ticking while slow is stuck
        assert slow.n == 0
    finally:
        slow.release.set()
        rec.stop()
    assert slow.n >= 1 and slow.closed
    assert rec.tick_stats()["nvml"]["ticks"] > rec.tick_stats()["vllm"]["ticks"]


def test_latest_and_per_source_intervals() -> None:
    a, b = Counting("host"), Counting("vllm")
    rec = TelemetryRecorder([a, b], interval_s=0.01, clock=RunClock(), intervals={"vllm": 3600.0})
    with rec:
        wait_until(lambda: a.n >= 3)
        latest = rec.latest()
    assert latest[("host", "", "ticks")].value >= 3  # type: ignore[operator]
    assert latest[("vllm", "", "ticks")].value == 1.0  # first tick at start, then the hour
    assert b.n == 2  # plus the final tick at stop
    assert rec.tick_stats()["vllm"]["interval_s"] == 3600.0


def test_sink_failures_are_counted_not_raised() -> None:
    s = Counting()

    def sink(_: list[Sample]) -> None:
        raise OSError("disk full")

    rec = TelemetryRecorder([s], interval_s=0.01, clock=RunClock(), sink=sink)
    with rec:
        wait_until(lambda: s.n >= 2)
    assert rec.sink_errors >= 2 and rec.latest()


def test_stop_without_start_closes_samplers_and_bad_interval() -> None:
    s = Counting()
    TelemetryRecorder([s], interval_s=1.0, clock=RunClock()).stop()
    assert s.closed and s.n == 0
    with pytest.raises(ValueError):
        TelemetryRecorder([s], interval_s=0.0, clock=RunClock())


def test_samples_are_on_the_run_clock() -> None:
    clock = RunClock()
    s = Counting()
    with TelemetryRecorder([s], interval_s=0.01, clock=clock) as rec:
        wait_until(lambda: s.n >= 2)
    after = clock.now()
    ts = [x.t_s for x in rec.samples()]
    assert ts == sorted(ts) and ts[0] >= 0.0 and ts[-1] <= after
