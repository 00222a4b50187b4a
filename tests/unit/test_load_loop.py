"""The event-loop choice: the standard loop by default, uvloop on request, clear errors."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from profiler.errors import SpecError
from profiler.load import loop

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.parametrize("setting", [None, "auto", "asyncio"])
def test_the_standard_loop_by_default(monkeypatch: pytest.MonkeyPatch, setting: str | None) -> None:
    if setting is None:
        monkeypatch.delenv(loop.ENV, raising=False)
    else:
        monkeypatch.setenv(loop.ENV, setting)
    module, name = loop.run(_loop_module())
    assert name == "asyncio" and module.startswith("asyncio")


@pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop is not installed")
def test_uvloop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loop.ENV, "uvloop")
    module, name = loop.run(_loop_module())
    assert name == "uvloop" and module.startswith("uvloop")


def test_unknown_or_missing_loop_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loop.ENV, "trio")
    with pytest.raises(SpecError, match="INFPROF_EVENT_LOOP='trio': unknown event loop"):
        loop.loop_factory()
    monkeypatch.setenv(loop.ENV, "uvloop")
    monkeypatch.setitem(__import__("sys").modules, "uvloop", None)  # as if not installed
    with pytest.raises(SpecError, match="uvloop is not installed"):
        loop.loop_factory()
