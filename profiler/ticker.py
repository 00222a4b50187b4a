"""A daemon thread that calls ``tick`` every ``interval_s`` until stopped: the loop a journal
forwarder (``profiler.store.ray_journal``) and the drain of Ray nodes' samples
(``profiler.telemetry.ray_nodes``) each run. Their last pass after stopping is their own."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Ticker:
    def __init__(self, tick: Callable[[], None], interval_s: float, name: str) -> None:
        self._tick = tick
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._tick()

    def stop(self, timeout_s: float = 30.0) -> None:
        """No more ticks; waits up to ``timeout_s`` for one under way."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)
