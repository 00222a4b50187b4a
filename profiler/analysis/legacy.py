"""Reading what older versions wrote: the one place that knows old names.

Runs recorded before the rename call summary.json's SLO attainment section ``goodput``
(figures from the send only), and sweep indexes written then call its flat key numbers
``goodput_fraction`` / ``goodput_rps`` and the SLO search's ``goodput_rps_at_best``. Today's
names: ``slo_attainment`` {``fraction``, ``requests_per_s``, ...}, ``slo_attainment`` /
``slo_met_rps`` and ``slo_met_rps_at_best``. (Goodput, in DistServe's sense, is the highest
request rate meeting the attainment target: what ``infprof sweep --search slo`` finds.)
"""

from __future__ import annotations

from typing import Any

_FIGURES = ("fraction", "requests_per_s", "met", "meets_target")
_KEY_NUMBERS = {"goodput_fraction": "slo_attainment", "goodput_rps": "slo_met_rps"}
_SEARCH = {"goodput_rps_at_best": "slo_met_rps_at_best"}


def slo_attainment_of(summary: dict[str, Any]) -> dict[str, Any]:
    """summary.json's ``slo_attainment`` section, from a file of any version ({} without one)."""
    att = summary.get("slo_attainment")
    if isinstance(att, dict):
        return att
    old = summary.get("goodput")
    if not isinstance(old, dict):
        return {}
    figures = {k: old.get(k) for k in _FIGURES}
    measured = bool(old.get("slo"))
    return {
        "slo": old.get("slo"),
        "headline": "from_send" if measured else None,
        **figures,
        "from_send": figures if measured else None,
        "from_intended": None,
    }


def key_numbers_of(k: dict[str, Any]) -> dict[str, Any]:
    """A sweep point's flat key numbers under today's names."""
    return _renamed(k, _KEY_NUMBERS)


def search_of(entry: dict[str, Any]) -> dict[str, Any]:
    """A sweep index's SLO search entry under today's names."""
    return _renamed(entry, _SEARCH)


def _renamed(d: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    if not any(old in d for old in names):
        return d
    out = {names.get(k, k): v for k, v in d.items() if k not in names or names[k] not in d}
    return out
