"""The metrics ``infprof compare`` compares: their names and directions, the point estimate of
each over the pooled requests of a side's runs, and its hierarchical bootstrap resamples
(``profiler.analysis.bootstrap``); the per-request values are ``profiler.measures``' definitions
(``analysis/run_sample``).

- Latency percentiles (TTFT, TPOT, E2E) resample the run's successful requests.
- ITL resamples whole requests (a cluster bootstrap) and pools their per-token gaps, because
  the gaps of one request are not independent. On very long runs it uses fewer resamples
  (never under 100; the count is in the result).
- Rates (requests/s, output tokens/s, SLO-met requests/s) resample time: the measured window
  is cut into equal bins (10 to 60, about ten requests each), and the bins are resampled, so
  the interval reflects how steady the rate was over the run. The rates are summary.json's:
  the requests completed inside the window, and each request's output tokens that arrived
  inside it, counted in the bin of its end (clipped into the window).
- Fractions (error rate, SLO attainment) resample every request in the measured window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from profiler.analysis.bootstrap import hierarchical, weighted_percentile
from profiler.analysis.run_sample import RunSample
from profiler.errors import SpecError
from profiler.sketches import Distribution

Better = Literal["lower", "higher"]
DEFAULT_THRESHOLD = 0.05
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
