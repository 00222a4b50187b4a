"""The cause of a lost endpoint: a launched server that is still being torn down when the
connection failures end the load counts as exited (its sockets close before it can be reaped)."""

from __future__ import annotations

import asyncio
import time

from profiler.runner import _server_exited


class DyingServer:
    """alive() turns False ``after_s`` after creation, like a SIGKILLed process being reaped."""

    def __init__(self, after_s: float | None) -> None:
        self.t0 = time.monotonic()
        self.after_s = after_s

    def alive(self) -> bool:
        return self.after_s is None or time.monotonic() - self.t0 < self.after_s


def test_a_server_that_exits_shortly_after_the_failures_is_the_cause() -> None:
    assert asyncio.run(_server_exited(DyingServer(0.3), within_s=2.0)) is True


def test_a_server_still_alive_is_not_the_cause() -> None:
    started = time.monotonic()
    assert asyncio.run(_server_exited(DyingServer(None), within_s=0.2)) is False
    assert time.monotonic() - started < 2.0


def test_no_launched_server() -> None:
    assert asyncio.run(_server_exited(None)) is False
