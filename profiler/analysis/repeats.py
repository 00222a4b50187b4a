"""Figures of one configuration run several times (``infprof run --repeat``, ``infprof sweep
--repeat``): per figure of the runs' key numbers (``profiler.sweep.index.key_numbers``) the
median and the spread across repeats."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

REPEATS = "repeats.json"


def rep_id(index: int, of: int) -> str:
    """Directory name of repeat ``index`` (1-based) of ``of``: ``rep-01`` .. ``rep-12``."""
    return f"rep-{index:0{max(2, len(str(of)))}d}"


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v


def across_repeats(
    summaries: Sequence[Mapping[str, Any] | None],
) -> dict[str, dict[str, Any]]:
    """For every numeric figure: ``n`` (repeats that have it), ``median``, ``min``, ``max``,
    ``spread`` (max - min) and ``rel_spread`` (spread / |median|; None when the median is 0)."""
    keys: list[str] = []
    for s in summaries:
        for k, v in (s or {}).items():
            if _number(v) and k not in keys:
                keys.append(k)
    out: dict[str, dict[str, Any]] = {}
    for k in keys:
        vals = [s[k] for s in summaries if s and _number(s.get(k))]
        median = float(np.median(vals))
        spread = max(vals) - min(vals)
        out[k] = {
            "n": len(vals),
            "median": median,
            "min": min(vals),
            "max": max(vals),
            "spread": spread,
            "rel_spread": spread / abs(median) if median != 0 else None,
        }
    return out


def median_figures(summaries: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
    """One key-numbers dict for the repeats: each number the median across repeats; any other
    value (a flag) kept when every repeat agrees on it, else None (unknown, not a guess)."""
    present = [s for s in summaries if s]
    if not present:
        return {}
    figures = across_repeats(present)
    out: dict[str, Any] = {}
    for k in dict.fromkeys(k for s in present for k in s):
        if k in figures:
            out[k] = figures[k]["median"]
            continue
        values = [s.get(k) for s in present]
        out[k] = values[0] if all(v == values[0] for v in values) else None
    return out
