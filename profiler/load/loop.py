"""The event loop that drives the load: the standard asyncio loop by default,
``INFPROF_EVENT_LOOP=uvloop`` to use uvloop (when installed).

The client benchmark (``make bench``, client efficiency) measured no gain from uvloop for this
client: with infprof's buffered-protocol transport its marginal CPU per streamed token was
the same or higher than on the standard loop (the per-read work left is parsing, in Python),
so it is an opt-in, not the default.
``auto`` is accepted as a synonym of the default. The loop in use is recorded in
``summary.json`` (``client.event_loop``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
ENV = "INFPROF_EVENT_LOOP"


def loop_factory() -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """(name, factory) of the loop to use; factory None means asyncio's default."""
    choice = os.environ.get(ENV, "auto").strip().lower()
    if choice not in ("auto", "uvloop", "asyncio"):
        from profiler.errors import SpecError

        raise SpecError(f"{ENV}={choice!r}: unknown event loop", "use auto, uvloop or asyncio")
    if choice in ("auto", "asyncio"):
        return "asyncio", None
    try:
        import uvloop
    except ImportError:
        from profiler.errors import SpecError

        raise SpecError(f"{ENV}=uvloop but uvloop is not installed", "pip install uvloop") from None
    return "uvloop", uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> tuple[T, str]:
    """``asyncio.run(main)`` on the chosen loop; returns (result, loop name)."""
    name, factory = loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main), name
