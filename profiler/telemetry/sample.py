"""The long-format telemetry sample shared by every sampler and by samples.parquet.

Imports nothing outside the standard library so ``profiler.telemetry`` loads without pydantic.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol


class Sample(NamedTuple):
    """One value at one time. ``t_s`` is on the run clock; ``source`` is ``nvml``, ``host``,
    ``vllm`` or ``prometheus``; ``device`` names the GPU index, interface, core, process or
    host (``""`` when none); ``metric`` is a name from ``profiler.telemetry.fields`` with its
    unit in the name; ``value`` is ``None`` when the quantity was read but unavailable, and
    ``error`` carries the reason when a read failed (a lost GPU, say)."""

    t_s: float
    source: str
    device: str
    metric: str
    value: float | None
    error: str | None = None


class Sampler(Protocol):
    """A source of samples. ``sample`` reads everything of one tick in one pass and never
    raises for a device fault: it returns samples with ``error`` set instead."""

    source: str

    def sample(self, t_s: float) -> list[Sample]: ...

    def close(self) -> None: ...
