"""Compare runs of a baseline A and a candidate B metric by metric, with bootstrap confidence
intervals, and gate regressions.

Each side is one run or several runs of one configuration (``infprof run --repeat``). The
point estimate of a side pools the requests of all its runs (the same definitions as
summary.json). The confidence interval of the difference B - A comes from a seeded
*hierarchical* bootstrap (``profiler.analysis.bootstrap``): each resample draws a side's runs
with replacement, then the units inside each drawn run, and recomputes the metric on the pool;
the resampled values of A and B are paired to give the distribution of the difference.

- Latency percentiles (TTFT, TPOT, E2E) resample the run's successful requests.
- ITL resamples whole requests (a cluster bootstrap) and pools their per-token gaps, because
  the gaps of one request are not independent. On very long runs it uses fewer resamples
  (never under 100; the count is in the result).
- Rates (requests/s, output tokens/s, SLO-met requests/s) resample time: the measured window
  is cut into equal bins (10 to 60, about ten requests each) of completions by end time, and
  the bins are resampled, so the interval reflects how steady the rate was over the run.
- Fractions (error rate, SLO attainment) resample every request in the measured window.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from profiler.analysis.bootstrap import hierarchical, weighted_percentile
from profiler.analysis.run_sample import RunSample, expand_runs, load_run_sample, slo_of
from profiler.analysis.stats import Distribution
from profiler.errors import SpecError
from profiler.spec import SloSpec

__all__ = ["RunSample", "compare_runs", "compare_samples", "expand_runs", "load_run_sample"]

Better = Literal["lower", "higher"]
DEFAULT_THRESHOLD = 0.05
DEFAULT_RESAMPLES = 1000
# ITL pools every token gap; past this many pooled values per side x resample the cluster
# bootstrap uses fewer resamples (at least 100) so a long run still compares in seconds
_ITL_BUDGET = 60_000_000


@dataclass(frozen=True)
class MetricDef:
    name: str
    unit: str
    better: Better
    help: str
    absolute: bool = False  # threshold is an absolute difference, not relative to A


METRICS: tuple[MetricDef, ...] = (
    MetricDef("ttft_p50", "s", "lower", "time to first token, median"),
    MetricDef("ttft_p99", "s", "lower", "time to first token, 99th percentile"),
    MetricDef("tpot_p50", "s", "lower", "time per output token, median"),
    MetricDef("tpot_p99", "s", "lower", "time per output token, 99th percentile"),
    MetricDef("itl_p50", "s", "lower", "inter-token latency, median"),
    MetricDef("e2e_p50", "s", "lower", "end-to-end latency, median"),
    MetricDef("e2e_p99", "s", "lower", "end-to-end latency, 99th percentile"),
    MetricDef("output_tokens_per_s", "tok/s", "higher", "output tokens per second"),
    MetricDef("requests_per_s", "req/s", "higher", "successful requests per second"),
    MetricDef("error_rate", "", "lower", "share of requests that failed", absolute=True),
    MetricDef("slo_met_rps", "req/s", "higher", "requests per second meeting every SLO"),
    MetricDef("slo_attainment", "", "higher", "share of requests meeting every SLO"),
)
BY_NAME = {m.name: m for m in METRICS}
ALIASES = {
    "goodput": "slo_met_rps",
    "goodput_rps": "slo_met_rps",  # the names before the SLO metrics were renamed
    "goodput_fraction": "slo_attainment",
    "ttft": "ttft_p50",
    "tpot": "tpot_p50",
    "itl": "itl_p50",
    "e2e": "e2e_p50",
}
RATES = ("requests_per_s", "output_tokens_per_s", "slo_met_rps")
LATENCIES = ("ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99", "e2e_p50", "e2e_p99")
Interval = Literal["within-run", "hierarchical"]


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


def parse_fraction(option: str, text: str) -> float:
    """``0.1`` or ``10%`` to 0.1 (not negative)."""
    text = text.strip()
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise SpecError(f"{option}: '{text}' is not a fraction", "e.g. 10% or 0.1") from None
    if value < 0 or value != value:
        raise SpecError(f"{option}: '{text}' must not be negative", "e.g. 10% or 0.1")
    return value


def parse_metric_options(options: Sequence[str]) -> dict[str, float]:
    """``NAME[:THRESHOLD]`` items to {metric: threshold}; THRESHOLD is a fraction (0.1) or a
    percentage (10%)."""
    out: dict[str, float] = {}
    for opt in options:
        name, _, thr = opt.partition(":")
        name = ALIASES.get(name.strip().lower(), name.strip().lower())
        if name not in BY_NAME:
            raise SpecError(
                f"--metric: unknown metric '{name}'", f"choose from {', '.join(BY_NAME)}"
            )
        value = DEFAULT_THRESHOLD
        if thr.strip():
            try:
                value = parse_fraction(f"--metric {opt}", thr)
            except SpecError as e:
                raise SpecError(
                    f"--metric {opt}: '{thr}' is not a threshold", "e.g. ttft_p99:10% or 0.1"
                ) from e
        out[name] = value
    return out


# ------------------------------------------------------------------ point estimates
def point(runs: Sequence[RunSample], name: str) -> float | None:
    """Metric ``name`` over the pooled requests (time bins, for rates) of ``runs``."""
    if name in LATENCIES:
        field, q = name.split("_")
        return getattr(_pool(runs, field), q)  # type: ignore[no-any-return]
    if name == "itl_p50":
        return _pool(runs, "itl_values").p50
    if name in RATES:
        if any(name not in r.bins or r.window_s <= 0 for r in runs):
            return None
        return float(sum(r.bins[name].sum() for r in runs) / sum(r.window_s for r in runs))
    flags = [_flags(r, name) for r in runs]
    if any(f is None for f in flags):
        return None
    pooled = np.concatenate([f for f in flags if f is not None])
    return float(pooled.mean()) if pooled.size else None


def _pool(runs: Sequence[RunSample], field: str) -> Distribution:
    return Distribution.of(np.concatenate([getattr(r, field) for r in runs]), overwrite=True)


def _flags(sample: RunSample, name: str) -> np.ndarray | None:
    """Per-request 0/1 values whose mean is the fraction ``name``."""
    if name == "error_rate":
        return (~sample.ok).astype(np.float64)
    if sample.meets_slo is None:
        return None
    return sample.meets_slo.astype(np.float64)  # slo_attainment


# ------------------------------------------------------------------ bootstrap
def bootstrap(
    runs: Sequence[RunSample], name: str, resamples: int, rng: np.random.Generator
) -> np.ndarray | None:
    """``resamples`` hierarchical bootstrap values of metric ``name`` over ``runs`` (runs
    drawn with replacement, then units within each drawn run); None when it cannot be
    computed. With one run this is the ordinary bootstrap of that run's units."""
    if point(runs, name) is None:
        return None
    if name == "itl_p50":
        used = [r for r in runs if r.itl_lengths.size]
        values = np.concatenate([r.itl_values for r in used])
        lengths = np.concatenate([r.itl_lengths for r in used])
        order = np.argsort(values, kind="stable")
        ranked, unit = values[order], np.repeat(np.arange(lengths.size), lengths)[order]
        return hierarchical(
            [r.itl_lengths.size for r in used],
            resamples,
            rng,
            lambda c, _m: weighted_percentile(ranked, c[:, unit], 50.0),
            cells_per_row=values.size,
        )
    if name in LATENCIES:
        field, q = name.split("_")
        arrays = [a for a in (getattr(r, field) for r in runs) if a.size]
        values = np.concatenate(arrays)
        order = np.argsort(values, kind="stable")
        ranked = values[order]
        return hierarchical(
            [a.size for a in arrays],
            resamples,
            rng,
            lambda c, _m: weighted_percentile(ranked, c[:, order], float(q[1:])),
        )
    if name in RATES:
        bins = np.concatenate([r.bins[name] for r in runs])
        windows = np.array([r.window_s for r in runs])
        return hierarchical(
            [r.bins[name].size for r in runs],
            resamples,
            rng,
            lambda c, m: (c @ bins) / (m @ windows),
        )
    flags = [f for f in (_flags(r, name) for r in runs) if f is not None and f.size]
    pooled = np.concatenate(flags)
    return hierarchical(
        [f.size for f in flags], resamples, rng, lambda c, _m: (c @ pooled) / c.sum(axis=1)
    )


def itl_resamples(a: Sequence[RunSample], b: Sequence[RunSample], resamples: int) -> int:
    pooled = max(sum(r.itl_values.size for r in a), sum(r.itl_values.size for r in b), 1)
    return max(min(resamples, 100), min(resamples, _ITL_BUDGET // pooled))


# ------------------------------------------------------------------ comparison
def compare_samples(
    a: Sequence[RunSample] | RunSample,
    b: Sequence[RunSample] | RunSample,
    *,
    gates: dict[str, float] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
    slo: SloSpec | None = None,
    min_effect: float | None = None,
    labels: tuple[str, str] | None = None,
) -> CompareResult:
    """Compare the runs of B against those of baseline A (one run or several a side)."""
    runs_a = [a] if isinstance(a, RunSample) else list(a)
    runs_b = [b] if isinstance(b, RunSample) else list(b)
    if not runs_a or not runs_b:
        raise SpecError("compare needs at least one run on each side", "pass A and B")
    gates = gates or {}
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
    gates: dict[str, float] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
    slo: SloSpec | None = None,
    min_effect: float | None = None,
) -> CompareResult:
    """Compare B against baseline A. Each side is a run directory, a directory of repeats, or
    a list of those. SLO attainment uses ``slo``, else A's SLO, else B's."""
    if not 0 < confidence < 1:
        raise SpecError(f"--confidence {confidence} is not between 0 and 1", "e.g. 0.95")
    if resamples < 10:
        raise SpecError(f"--resamples {resamples} is too few", "use at least 100 (default 1000)")
    if min_effect is not None and min_effect < 0:
        raise SpecError(f"--min-effect {min_effect} is negative", "e.g. --min-effect 10%")
    runs_a, runs_b = _paths(path_a), _paths(path_b)
    slo = slo if slo is not None and slo.is_set() else (slo_of(runs_a[0]) or slo_of(runs_b[0]))
    a = [load_run_sample(p, slo) for p in runs_a]
    b = [load_run_sample(p, slo) for p in runs_b]
    labels = tuple(
        " ".join(str(x) for x in ([p] if isinstance(p, Path) else p)) for p in (path_a, path_b)
    )
    return compare_samples(
        a,
        b,
        gates=gates,
        resamples=resamples,
        confidence=confidence,
        seed=seed,
        slo=slo,
        min_effect=min_effect,
        labels=(labels[0], labels[1]),
    )
