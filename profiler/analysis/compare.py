"""Compare runs of a baseline A and a candidate B metric by metric, with bootstrap confidence
intervals, and gate regressions.

Each side is one run or several runs of one configuration (``infprof run --repeat``). The
point estimate of a side pools the requests of all its runs (the same definitions as
summary.json). The confidence interval of the difference B - A comes from a seeded
*hierarchical* bootstrap: each resample draws a side's runs with replacement, then the units
inside each drawn run, and recomputes the metric on the pool; the resampled values of A and B
are paired to give the distribution of the difference. What each metric resamples:
``profiler.analysis.compare_metrics``.

With one run on a side there are no runs to resample: the interval covers only the noise
within that run, while a server's run-to-run spread is often larger. Such a comparison
(``interval == "within-run"``) gates nothing unless the user sets ``min_effect``.

A metric *regresses* when it moves in its worse direction (latency and error rate up,
throughput and SLO attainment down), the confidence interval of the difference excludes zero,
and the change exceeds the threshold and ``min_effect``: relative to A (0.05 = 5%), except
``error_rate`` whose thresholds are absolute (0.01 = one percentage point).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

import numpy as np
from pydantic import BaseModel, ConfigDict

from profiler.analysis.compare_metrics import (
    METRICS,
    Better,
    MetricDef,
    bootstrap,
    itl_resamples,
    point,
)
from profiler.analysis.run_sample import RunSample, expand_runs, load_run_sample, slo_of
from profiler.errors import SpecError
from profiler.spec import SloSpec

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
Interval = Literal["within-run", "hierarchical"]


class Settings(TypedDict, total=False):
    """How to compare, the same for runs and for loaded samples."""

    gates: dict[str, float] | None  # metric: threshold; a gated metric can regress
    resamples: int
    confidence: float
    seed: int
    min_effect: float | None  # the least change a regression needs, beyond its threshold


class MetricDelta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    unit: str
    better: Better
    a: float | None  # pooled over A's runs
    b: float | None
    a_per_run: list[float | None]  # the metric of each run: the run-to-run spread
    b_per_run: list[float | None]
    delta: float | None
    relative: float | None  # delta / |a|; None when a is 0 or missing
    ci_low: float | None
    ci_high: float | None
    significant: bool | None  # the CI of the delta excludes 0
    resamples: int | None  # bootstrap resamples behind the CI
    gated: bool
    threshold: float | None
    verdict: Literal["regression", "worse", "better", "not significant", "n/a"]


class CompareResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    a: str
    b: str
    runs_a: list[str]
    runs_b: list[str]
    # "hierarchical": runs resampled, then requests (run-to-run and within-run noise);
    # "within-run": a side has one run, the interval covers only the noise inside runs
    interval: Interval
    min_effect: float | None
    note: str | None
    resamples: int
    confidence: float
    seed: int
    slo: dict[str, Any] | None
    metrics: list[MetricDelta]
    regressions: list[str]


# ------------------------------------------------------------------ comparison
def compare_samples(
    a: Sequence[RunSample] | RunSample,
    b: Sequence[RunSample] | RunSample,
    *,
    slo: SloSpec | None = None,
    labels: tuple[str, str] | None = None,
    **settings: Unpack[Settings],
) -> CompareResult:
    """Compare the runs of B against those of baseline A (one run or several a side); ``slo``
    is the SLO the samples' attainment was measured against."""
    resamples, confidence, min_effect = _checked(settings)
    seed = settings.get("seed", 0)
    runs_a = [a] if isinstance(a, RunSample) else list(a)
    runs_b = [b] if isinstance(b, RunSample) else list(b)
    if not runs_a or not runs_b:
        raise SpecError("compare needs at least one run on each side", "pass A and B")
    gates = settings.get("gates") or {}
    interval: Interval = "hierarchical" if len(runs_a) > 1 and len(runs_b) > 1 else "within-run"
    can_gate = interval == "hierarchical" or min_effect is not None
    tail = (1.0 - confidence) / 2 * 100
    out = [
        _delta(runs_a, runs_b, k, m, gates, resamples, tail, seed, can_gate, min_effect)
        for k, m in enumerate(METRICS)
    ]
    la, lb = labels or (", ".join(r.name for r in runs_a), ", ".join(r.name for r in runs_b))
    return CompareResult(
        a=la,
        b=lb,
        runs_a=[r.name for r in runs_a],
        runs_b=[r.name for r in runs_b],
        interval=interval,
        min_effect=min_effect,
        note=_note(len(runs_a), len(runs_b), bool(gates), min_effect),
        resamples=resamples,
        confidence=confidence,
        seed=seed,
        slo=slo.model_dump() if slo is not None else None,
        metrics=out,
        regressions=[d.name for d in out if d.verdict == "regression"],
    )


def _checked(settings: Settings) -> tuple[int, float, float | None]:
    """(resamples, confidence, min_effect) of ``settings``, defaults filled in and checked."""
    resamples = settings.get("resamples", DEFAULT_RESAMPLES)
    confidence = settings.get("confidence", DEFAULT_CONFIDENCE)
    min_effect = settings.get("min_effect")
    if not 0 < confidence < 1:
        raise SpecError(f"--confidence {confidence} is not between 0 and 1", "e.g. 0.95")
    if resamples < 10:
        raise SpecError(f"--resamples {resamples} is too few", "use at least 100 (default 1000)")
    if min_effect is not None and min_effect < 0:
        raise SpecError(f"--min-effect {min_effect} is negative", "e.g. --min-effect 10%")
    return resamples, confidence, min_effect


def _note(na: int, nb: int, gated: bool, min_effect: float | None) -> str | None:
    if na > 1 and nb > 1:
        if min(na, nb) < 5:
            return (
                f"{min(na, nb)} runs on a side: the run-to-run part of the intervals is "
                "estimated from few runs and is somewhat narrow; keep gate thresholds above "
                "the spread of the runs (A runs, B runs), or compare 5 or more runs a side"
            )
        return None
    side = "each side" if na == nb == 1 else ("side A" if na == 1 else "side B")
    text = (
        f"one run on {side}: the intervals cover only within-run noise (the requests of one "
        "run), not the server's run-to-run variance"
    )
    if min_effect is not None:
        return f"{text}; a gated metric regresses only beyond --min-effect {min_effect:g}"
    if gated:
        return (
            f"{text}, so no gated metric is called a regression; repeat the runs "
            "(infprof run --repeat 3) and compare them all, or accept an effect size with "
            "--min-effect (e.g. 10%)"
        )
    return text


def _delta(
    a: list[RunSample],
    b: list[RunSample],
    k: int,
    m: MetricDef,
    gates: dict[str, float],
    resamples: int,
    tail: float,
    seed: int,
    can_gate: bool,
    min_effect: float | None,
) -> MetricDelta:
    va, vb = point(a, m.name), point(b, m.name)
    d: dict[str, Any] = dict(
        name=m.name, unit=m.unit, better=m.better, a=va, b=vb, gated=m.name in gates
    )
    d.update(
        a_per_run=[point([r], m.name) for r in a] if len(a) > 1 else [va],
        b_per_run=[point([r], m.name) for r in b] if len(b) > 1 else [vb],
    )
    d.update(threshold=gates.get(m.name), delta=None, relative=None, ci_low=None, ci_high=None)
    d.update(significant=None, resamples=None, verdict="n/a")
    if va is None or vb is None:
        return MetricDelta(**d)
    delta = vb - va
    relative = delta / abs(va) if va != 0 else None
    d.update(delta=delta, relative=relative, verdict="not significant")
    r = itl_resamples(a, b, resamples) if m.name == "itl_p50" else resamples
    ba = bootstrap(a, m.name, r, np.random.default_rng([seed, k, 0]))
    bb = bootstrap(b, m.name, r, np.random.default_rng([seed, k, 1]))
    if ba is None or bb is None:
        return MetricDelta(**d)
    lo, hi = (float(v) for v in np.percentile(bb - ba, [tail, 100 - tail]))
    d.update(ci_low=lo, ci_high=hi, significant=lo > 0 or hi < 0, resamples=r)
    if d["significant"]:
        worse = delta > 0 if m.better == "lower" else delta < 0
        d["verdict"] = "worse" if worse else "better"
        if worse and d["gated"] and can_gate:
            change = (
                abs(delta)
                if m.absolute
                else abs(relative)
                if relative is not None
                else float("inf")
            )
            if change > max(gates[m.name], min_effect or 0.0):
                d["verdict"] = "regression"
    return MetricDelta(**d)


def _paths(p: Path | Sequence[Path]) -> list[Path]:
    given = [p] if isinstance(p, Path) else list(p)
    return [run for path in given for run in expand_runs(Path(path))]


def compare_runs(
    path_a: Path | Sequence[Path],
    path_b: Path | Sequence[Path],
    *,
    slo: SloSpec | None = None,
    **settings: Unpack[Settings],
) -> CompareResult:
    """Compare B against baseline A. Each side is a run directory, a directory of repeats, or
    a list of those. SLO attainment uses ``slo``, else A's SLO, else B's."""
    _checked(settings)  # before any run is read
    runs_a, runs_b = _paths(path_a), _paths(path_b)
    slo = slo if slo is not None and slo.is_set() else (slo_of(runs_a[0]) or slo_of(runs_b[0]))
    a = [load_run_sample(p, slo) for p in runs_a]
    b = [load_run_sample(p, slo) for p in runs_b]
    la, lb = (
        " ".join(str(x) for x in ([p] if isinstance(p, Path) else p)) for p in (path_a, path_b)
    )
    return compare_samples(a, b, slo=slo, labels=(la, lb), **settings)
