"""Number formatting shared by the report's tables."""

from __future__ import annotations

import json
from typing import Any


def ms(v: Any) -> str:
    return "-" if v is None else f"{float(v) * 1000:.1f}"


def num(v: Any, fmt: str = "{:.3g}") -> str:
    return "-" if v is None else fmt.format(v)


def pct(v: Any) -> str:
    return "-" if v is None else f"{float(v):.1%}"


def gib(v: Any) -> str:
    return "-" if v is None else f"{float(v) / 2**30:.2f} GiB"


def gb(v: Any) -> str:
    return "-" if v is None else f"{float(v) / 1e9:.3g} GB"


def dig(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def pretty_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=str)


def slo_text(slo: dict[str, Any] | None) -> str:
    if not slo:
        return "none"
    parts = [
        f"{k.removesuffix('_s').upper()} ≤ {v * 1000:.0f} ms"
        for k, v in slo.items()
        if k.endswith("_s") and v is not None
    ]
    if not parts:
        return "none"
    frac = slo.get("target_fraction")
    return ", ".join(parts) + (f" for {frac:.0%} of requests" if frac is not None else "")
