"""What older versions wrote, as today's layout: the one place that knows old names.

Per kind of file, steps by ``schema_version``: a step runs on files of its version or older.
The SLO attainment rename predates the version number, so its version-1 step runs on every
version-1 file and changes only one that has the old keys (``goodput`` in summary.json,
``goodput_fraction`` / ``goodput_rps`` / ``goodput_rps_at_best`` in a sweep index)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# ------------------------------------------------------------------------------- migrations
_FIGURES = ("fraction", "requests_per_s", "met", "meets_target")
_KEY_NUMBERS = {"goodput_fraction": "slo_attainment", "goodput_rps": "slo_met_rps"}
_SEARCH = {"goodput_rps_at_best": "slo_met_rps_at_best"}


def summary_v1(d: dict[str, Any]) -> dict[str, Any]:
    """``goodput`` (from the send only) -> ``slo_attainment``; summaries before the per-request
    means counted the ok requests' tokens, so the totals over the count are the means."""
    old = d.get("goodput")
    if isinstance(old, dict) and not isinstance(d.get("slo_attainment"), dict):
        figures = {k: old.get(k) for k in _FIGURES}
        measured = bool(old.get("slo"))
        d = {k: v for k, v in d.items() if k != "goodput"}
        d["slo_attainment"] = {
            "slo": old.get("slo"),
            "headline": "from_send" if measured else None,
            **figures,
            "from_send": figures if measured else None,
            "from_intended": None,
        }
    tokens, ok = d.get("tokens"), (d.get("requests") or {}).get("ok")
    if isinstance(tokens, dict) and ok and "prompt_mean_per_request" not in tokens:
        d = {**d, "tokens": {
            **tokens,
            "prompt_mean_per_request": (tokens.get("prompt") or 0) / ok,
            "output_mean_per_request": (tokens.get("output") or 0) / ok,
        }}  # fmt: skip
    return d


def _index_v1(d: dict[str, Any]) -> dict[str, Any]:
    """Flat key numbers and searches under today's names; sections older indexes lack."""
    d = dict(d)
    for key in ("configs", "searches", "knees"):
        if d.get(key) is None:
            d[key] = []
    d["points"] = (
        [
            {**p, "summary": renamed(p["summary"], _KEY_NUMBERS)}
            if isinstance(p, dict) and isinstance(p.get("summary"), dict)
            else p
            for p in d.get("points") or []
        ]
        if isinstance(d.get("points"), list)
        else d.get("points")
    )
    d["searches"] = [renamed(s, _SEARCH) if isinstance(s, dict) else s for s in d["searches"]]
    return d


def _manifest_v1(d: dict[str, Any]) -> dict[str, Any]:
    """Runs that recorded ``serve`` and ``workload`` beside the spec instead of in it."""
    if isinstance(d.get("spec"), dict) or not (d.get("serve") or d.get("workload")):
        return d
    return {**d, "spec": {"serve": d.get("serve"), "workload": d.get("workload")}}


_PLAN_V1 = {
    "tokens_per_s_per_gpu": "demand_tokens_per_s_per_gpu",
    "max_tokens_per_s_per_gpu": "capacity_tokens_per_s_per_gpu",
}


def _plan_v1(d: dict[str, Any]) -> dict[str, Any]:
    """Plan version 1 named a configuration's per-GPU demand and capacity differently."""
    configs = d.get("configurations")
    if not isinstance(configs, list):
        return d
    return {
        **d,
        "configurations": [renamed(c, _PLAN_V1) if isinstance(c, dict) else c for c in configs],
    }


# per kind: (version, step) in order; a step runs on files of that version or older
MIGRATIONS: dict[str, list[tuple[int, Callable[[dict[str, Any]], dict[str, Any]]]]] = {
    "summary": [(1, summary_v1)],
    "manifest": [(1, _manifest_v1)],
    "index": [(1, _index_v1)],
    "plan": [(1, _plan_v1)],
}


def migrate(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """A file's JSON of any version as today's layout (the one place that knows old names)."""
    version = data.get("schema_version")
    version = version if isinstance(version, int) else 1
    for upto, step in MIGRATIONS[kind]:
        if version <= upto:
            data = step(data)
    if "schema_version" not in data:
        data = {"schema_version": version, **data}
    return data


def renamed(d: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    if not any(old in d for old in names):
        return d
    return {names.get(k, k): v for k, v in d.items() if k not in names or names[k] not in d}


def key_numbers_of(k: dict[str, Any]) -> dict[str, Any]:
    """A sweep point's flat key numbers (an older index's, or a summary) under today's names."""
    return renamed(k, _KEY_NUMBERS)
