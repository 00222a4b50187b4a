"""SLO search: the highest request rate at which a target fraction of requests meets every SLO
(DistServe's per-replica goodput: ``best_rate``), found with few runs.

1. Probe ``start_rate``. While probes pass, double the rate; when the first probe fails,
   halve instead until one passes (or ``min_rate`` is reached: nothing passes).
2. Bisect between the highest passing and the lowest failing rate until they are within
   ``tolerance`` of each other (relative to the failing rate).

A probe passes when its SLO attainment (the fraction of requests meeting every SLO, from the
intended start for these open-loop probes) reaches the target and the server is not clearly
saturated. *Clearly saturated* stops the doubling at once: the attainment collapsed
(below half the target), half or more of the requests failed, or the achieved request rate
barely rose (under 10%) although the offered rate grew by half or more since the last
passing probe. The probe function is the only seam to the outside: ``probe(rate)`` runs a
load at ``rate`` and returns its summary (summary.json's nested dict or the sweep index's
flat key numbers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from profiler import measures
from profiler.store.schema import key_numbers_of
from profiler.sweep.index import key_numbers

COLLAPSE = 0.5  # fraction below target x COLLAPSE: collapsed
ERRORS_SATURATED = 0.5
RISE_MIN = 1.10  # achieved rate must rise at least this much ...
RATE_STEP_FOR_RISE = 1.5  # ... when the offered rate grew at least this much


@dataclass
class Probe:
    rate: float
    passed: bool
    fraction: float | None
    achieved_rps: float | None
    error_rate: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    best_rate: float | None  # highest passing rate
    failed_rate: float | None  # lowest failing rate above it
    probes: list[Probe] = field(default_factory=list)
    stopped: str = ""
    saturated_rate: float | None = None  # first rate at which the server was clearly saturated

    def best_probe(self) -> Probe | None:
        return next((p for p in self.probes if p.rate == self.best_rate and p.passed), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_rate": self.best_rate,
            # DistServe's goodput: the highest rate at which the target attainment holds
            "goodput_rps": self.best_rate,
            "failed_rate": self.failed_rate,
            "saturated_rate": self.saturated_rate,
            "stopped": self.stopped,
            "probes": [p.to_dict() for p in self.probes],
        }


def round_rate(rate: float) -> float:
    """Rates are kept to three significant digits so point names stay short and stable."""
    return float(f"{rate:.3g}")


def _flat(summary: dict[str, Any]) -> dict[str, Any]:
    if "latency" in summary or "throughput" in summary:
        return key_numbers(summary)
    return key_numbers_of(summary)


def judge(
    rate: float,
    summary: dict[str, Any],
    target_fraction: float,
    last_pass: Probe | None,
) -> tuple[Probe, bool]:
    """The probe's verdict and whether the server is clearly saturated at ``rate``."""
    k = _flat(summary)
    fraction = k.get("slo_attainment")
    achieved = k.get("requests_per_s")
    errors = k.get("error_rate")
    saturated = ""
    if fraction is None:
        saturated = "no SLO attainment (no requests completed, or no SLO in the run)"
    elif fraction < target_fraction * COLLAPSE:
        saturated = f"SLO attainment collapsed to {fraction:.0%}"
    if errors is not None and errors >= ERRORS_SATURATED:
        saturated = f"{errors:.0%} of requests failed"
    if (
        not saturated
        and last_pass is not None
        and last_pass.achieved_rps
        and achieved is not None
        and rate >= last_pass.rate * RATE_STEP_FOR_RISE
        and achieved < last_pass.achieved_rps * RISE_MIN
    ):
        saturated = (
            f"throughput stopped rising ({achieved:.3g} req/s at {rate:g}/s offered vs "
            f"{last_pass.achieved_rps:.3g} at {last_pass.rate:g}/s)"
        )
    if saturated:
        return Probe(rate, False, fraction, achieved, errors, f"saturated: {saturated}"), True
    assert fraction is not None
    ok = measures.meets_target(fraction, target_fraction)
    reason = f"{fraction:.1%} met the SLOs ({'>=' if ok else '<'} target {target_fraction:.0%})"
    return Probe(rate, ok, fraction, achieved, errors, reason), False


def slo_search(
    probe: Callable[[float], dict[str, Any]],
    *,
    target_fraction: float,
    start_rate: float = 1.0,
    tolerance: float = 0.05,
    max_probes: int = 12,
    max_rate: float | None = None,
    min_rate: float | None = None,
) -> SearchResult:
    """Find the highest rate whose probe passes; see the module docstring. ``target_fraction``:
    the SLO's (``SloSpec.target_fraction``; its default is ``spec.TARGET_FRACTION``)."""
    min_rate = min_rate if min_rate is not None else start_rate / 64
    res = SearchResult(best_rate=None, failed_rate=None)
    done: dict[float, Probe] = {}
    last_pass: Probe | None = None

    def run(rate: float) -> Probe:
        nonlocal last_pass
        p, saturated = judge(rate, probe(rate), target_fraction, last_pass)
        if saturated and (res.saturated_rate is None or rate < res.saturated_rate):
            res.saturated_rate = rate
        res.probes.append(p)
        done[rate] = p
        if p.passed and (last_pass is None or rate > last_pass.rate):
            last_pass = p
        return p

    # 1. bracket: double while passing, halve while failing
    rate = round_rate(start_rate)
    first = run(rate)
    if first.passed:
        res.best_rate = rate
        while len(res.probes) < max_probes:
            nxt = round_rate(rate * 2)
            if max_rate is not None and nxt > max_rate:
                nxt = round_rate(max_rate)
                if nxt <= rate:
                    res.stopped = f"reached --max-rate {max_rate:g} while passing"
                    return res
            p = run(nxt)
            if not p.passed:
                res.failed_rate = nxt
                break
            res.best_rate = rate = nxt
            if max_rate is not None and nxt >= max_rate:
                res.stopped = f"reached --max-rate {max_rate:g} while passing"
                return res
        else:
            res.stopped = f"used all {max_probes} probes while still passing"
            return res
    else:
        res.failed_rate = rate
        while len(res.probes) < max_probes:
            nxt = round_rate(rate / 2)
            if nxt < min_rate or nxt in done:
                res.stopped = f"no rate down to {min_rate:g}/s met the SLOs"
                return res
            p = run(nxt)
            if p.passed:
                res.best_rate = nxt
                break
            res.failed_rate = rate = nxt
        else:
            res.stopped = f"used all {max_probes} probes without a passing rate"
            return res

    # 2. bisect between best (passing) and failed
    assert res.best_rate is not None and res.failed_rate is not None
    while len(res.probes) < max_probes:
        lo, hi = res.best_rate, res.failed_rate
        if (hi - lo) / hi <= tolerance:
            res.stopped = f"converged: {lo:g}/s passes, {hi:g}/s fails (within {tolerance:.0%})"
            return res
        mid = round_rate((lo + hi) / 2)
        if mid in done or mid <= lo or mid >= hi:
            res.stopped = f"converged at the rate resolution: {lo:g}/s passes, {hi:g}/s fails"
            return res
        if run(mid).passed:
            res.best_rate = mid
        else:
            res.failed_rate = mid
    lo, hi = res.best_rate, res.failed_rate
    res.stopped = f"used all {max_probes} probes: {lo:g}/s passes, {hi:g}/s fails"
    return res
