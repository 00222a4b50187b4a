"""The event-loop choice: uvloop when installed, the standard loop on request, clear errors."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from profiler.errors import SpecError
from profiler.load import loop

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_prefers_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loop.ENV, raising=False)
    module, name = loop.run(_loop_module())
    assert name == ("uvloop" if HAVE_UVLOOP else "asyncio")
    assert module.startswith("uvloop") == HAVE_UVLOOP


def test_the_standard_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loop.ENV, "asyncio")
    module, name = loop.run(_loop_module())
    assert name == "asyncio" and module.startswith("asyncio")


def test_unknown_or_missing_loop_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loop.ENV, "trio")
    with pytest.raises(SpecError, match="INFPROF_EVENT_LOOP='trio': unknown event loop"):
        loop.loop_factory()
    monkeypatch.setenv(loop.ENV, "uvloop")
    monkeypatch.setitem(__import__("sys").modules, "uvloop", None)  # as if not installed
    with pytest.raises(SpecError, match="uvloop is not installed"):
        loop.loop_factory()
