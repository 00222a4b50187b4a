"""Number formatting: the one set of helpers the report's and the console's tables use
(``-`` for a missing value)."""

from __future__ import annotations

import json
from typing import Any


def ms(v: Any) -> str:
    return "-" if v is None else f"{float(v) * 1000:.1f}"


def num(v: Any, fmt: str = "{:.3g}") -> str:
    return "-" if v is None else fmt.format(v)


def text(v: Any) -> str:
    return "-" if v is None else str(v)


def pct(v: Any) -> str:
    return "-" if v is None else f"{float(v):.1%}"


def gib(v: Any, digits: int = 2) -> str:
    return "-" if v is None else f"{float(v) / 2**30:.{digits}f} GiB"


def gb(v: Any) -> str:
    return "-" if v is None else f"{float(v) / 1e9:.3g} GB"


def with_unit(v: float | None, unit: str) -> str:
    """A compared metric's value: seconds below 1 s in ms, a unitless share in %."""
    if v is None:
        return "-"
    if unit == "s":
        return f"{v * 1000:.1f} ms" if abs(v) < 1 else f"{v:.3f} s"
    if unit == "":
        return f"{v:.2%}"
    return f"{v:.4g} {unit}"


def value_range(values: list[float | None], unit: str) -> str:
    """The runs' lowest to highest value, the unit written once: ``45.7-52.6 ms``."""
    known = [v for v in values if v is not None]
    if len(values) < 2 or not known:
        return "-"
    lo, hi = min(known), max(known)
    if unit == "s" and abs(hi) < 1:
        return f"{lo * 1000:.1f}-{hi * 1000:.1f} ms"
    if unit == "":
        return f"{lo:.2%}-{hi:.2%}"
    return f"{lo:.4g}-{hi:.4g} {unit}".rstrip()


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


def _ms_unit(v: Any) -> str:
    return "-" if v is None else f"{float(v) * 1000:.1f} ms"


def _plain(v: Any) -> str:
    """Any other value of the client block: a dict as 'key value, ...', no ``None``."""
    if isinstance(v, dict):
        return ", ".join(f"{k} {_plain(x)}" for k, x in v.items()) or "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}"
    return "-" if v is None else str(v)


_HEALTH: dict[str, tuple[str, Any]] = {
    "saturated": ("saturated", lambda v: "not recorded" if v is None else _plain(v)),
    "reason": ("why", str),
    "event_loop_lag_s": (
        "event-loop lag",
        lambda d: ", ".join(f"{q} {_ms_unit(d.get(q))}" for q in ("p50", "p99", "max")),
    ),
    "cpu_seconds": ("client CPU time", lambda v: f"{float(v):.1f} s"),
    "cpu_ratio": ("client CPU", lambda v: f"{float(v):.0%} of a core"),
    "dispatch_lag_p99_s": ("dispatch lag p99", _ms_unit),
    "run_queue_wait_ratio": ("waited for a CPU", lambda v: f"{float(v):.0%} of the run"),
    "event_loop": ("event loop", str),
    "token_counting": ("output tokens counted by", str),
}


def client_health_rows(client: dict[str, Any]) -> list[tuple[str, str]]:
    """summary.json's ``client`` block as (label, value) rows: numbers with units, a value
    that was not recorded left out (``saturated`` says 'not recorded')."""
    rows = []
    for key, v in client.items():
        if v is None and key != "saturated":
            continue
        label, fmt = _HEALTH.get(key, (key.replace("_", " "), _plain))
        if isinstance(v, dict) and key != "event_loop_lag_s":
            fmt = _plain
        rows.append((label, fmt(v)))
    return rows
