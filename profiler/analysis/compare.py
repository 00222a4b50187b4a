"""Compare two runs metric by metric with bootstrap confidence intervals, and gate regressions.

For each metric the point estimate is computed on every request of the run (the same
definitions as summary.json), and the confidence interval of the difference B - A comes from
a seeded percentile bootstrap: each run's requests are resampled with replacement, the metric
is recomputed on each resample, and the resampled values of A and B are paired to give the
distribution of the difference.

- Latency percentiles (TTFT, TPOT, E2E) resample the run's successful requests.
- ITL resamples whole requests (a cluster bootstrap) and pools their per-token gaps, because
  the gaps of one request are not independent. On very long runs it uses fewer resamples
  (never under 100; the count is in the result).
- Rates (requests/s, output tokens/s, goodput requests/s) resample time: the measured window
  is cut into equal bins (10 to 60, about ten requests each) of completions by end time, and
  the bins are resampled, so the interval reflects how steady the rate was over the run.
- Fractions (error rate, goodput fraction) resample every request in the measured window.

A metric *regresses* when it moves in its worse direction (latency and error rate up,
throughput and goodput down), the confidence interval of the difference excludes zero, and the
change exceeds the threshold: relative to A (0.05 = 5%), except ``error_rate`` whose threshold
is absolute (0.01 = one percentage point).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from profiler.analysis.stats import Distribution
from profiler.analysis.summary import (
    RequestColumns,
    in_window,
    latencies,
    measured_window,
    meets_slo,
)
from profiler.errors import SpecError, StorageError
from profiler.spec import SloSpec
from profiler.store.rundir import read_records

Better = Literal["lower", "higher"]
DEFAULT_THRESHOLD = 0.05
DEFAULT_RESAMPLES = 1000
_MAX_CELLS = 4_000_000  # bootstrap index matrix cells per chunk (memory bound)
# ITL pools every token gap; past this many pooled values per run x resample the cluster
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
    MetricDef("goodput_rps", "req/s", "higher", "requests per second meeting every SLO"),
    MetricDef("goodput_fraction", "", "higher", "share of requests meeting every SLO"),
)
BY_NAME = {m.name: m for m in METRICS}
ALIASES = {
    "goodput": "goodput_rps",
    "ttft": "ttft_p50",
    "tpot": "tpot_p50",
    "itl": "itl_p50",
    "e2e": "e2e_p50",
}


class MetricDelta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    unit: str
    better: Better
    a: float | None
    b: float | None
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
    resamples: int
    confidence: float
    seed: int
    slo: dict[str, Any] | None
    metrics: list[MetricDelta]
    regressions: list[str]


@dataclass
class RunSample:
    """Per-request arrays of one run, restricted to its measured window."""

    name: str
    ok: np.ndarray  # bool, every request in the window
    meets_slo: np.ndarray | None  # bool, None without an SLO
    window_s: float
    # per time bin of the window (completions by end time): rates are bin sums / window_s
    bins: dict[str, np.ndarray]
    ttft: np.ndarray  # successful requests only, NaN dropped
    tpot: np.ndarray
    e2e: np.ndarray
    itl_values: np.ndarray  # per-token ITL shares of successful requests, grouped by request
    itl_lengths: np.ndarray  # shares per successful request with gaps


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
            text = thr.strip()
            try:
                value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
            except ValueError:
                raise SpecError(
                    f"--metric {opt}: '{thr}' is not a threshold",
                    "e.g. ttft_p99:10% or ttft_p99:0.1",
                ) from None
            if value < 0:
                raise SpecError(
                    f"--metric {opt}: the threshold must not be negative", "e.g. ttft_p99:10%"
                )
        out[name] = value
    return out


def load_run_sample(path: Path, slo: SloSpec | None) -> RunSample:
    if not path.is_dir():
        raise SpecError(f"{path} is not a run directory", "pass a directory written by infprof run")
    if not (path / "requests.parquet").exists() and not (path / "requests.jsonl").exists():
        raise StorageError(
            f"{path} has no request records", "pass a run directory (it holds requests.parquet)"
        )
    manifest = _manifest(path)
    spec = manifest.get("spec") or {}
    records = read_records(path)
    cols = RequestColumns.from_records(records)
    win = measured_window(
        cols, float(spec.get("warmup_s") or 0.0), float(spec.get("cooldown_s") or 0.0)
    )
    in_win = in_window(cols, win)
    ok_all = in_win & (cols.outcome == "ok")
    ttft, tpot, e2e = latencies(cols)
    meets: np.ndarray | None = None
    if slo is not None and slo.is_set():
        meets = meets_slo(slo, ok_all, ttft, tpot, e2e)[in_win]
    nbins = int(np.clip(int(np.count_nonzero(in_win)) // 10, 10, 60))
    span = (win.start, win.end if win.end > win.start else win.start + 1.0)

    def binned(mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        w = None if weights is None else weights[mask]
        return np.histogram(cols.end_s[mask], bins=nbins, range=span, weights=w)[0].astype(
            np.float64
        )

    bins = {
        "requests_per_s": binned(ok_all),
        "output_tokens_per_s": binned(ok_all, np.nan_to_num(cols.output_tokens)),
    }
    if meets is not None:
        full = np.zeros(cols.id.shape, dtype=bool)
        full[in_win] = meets
        bins["goodput_rps"] = binned(full)
    ok_ids = {int(i) for i in cols.id[ok_all]}
    shares = [r.itl_shares() for r in records if r.id in ok_ids]
    shares = [s for s in shares if s]
    values = np.fromiter((v for s in shares for v in s), dtype=np.float64)

    def drop_nan(a: np.ndarray) -> np.ndarray:
        return a[~np.isnan(a)]

    return RunSample(
        name=str(path),
        ok=ok_all[in_win],
        meets_slo=meets,
        window_s=win.seconds,
        bins=bins,
        ttft=drop_nan(ttft[ok_all]),
        tpot=drop_nan(tpot[ok_all]),
        e2e=drop_nan(e2e[ok_all]),
        itl_values=values,
        itl_lengths=np.array([len(s) for s in shares], dtype=np.int64),
    )


def slo_of(path: Path) -> SloSpec | None:
    slo = (_manifest(path).get("spec") or {}).get("slo")
    if not slo:
        return None
    spec = SloSpec.model_validate(slo)
    return spec if spec.is_set() else None


def _manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


# ------------------------------------------------------------------ point estimates
def point(sample: RunSample, name: str) -> float | None:
    if name in ("ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99", "e2e_p50", "e2e_p99"):
        arr = getattr(sample, name.split("_")[0])
        return getattr(Distribution.of(arr), name.split("_")[1])  # type: ignore[no-any-return]
    if name == "itl_p50":
        return Distribution.of(sample.itl_values).p50
    if name in RATES:
        if name not in sample.bins or sample.window_s <= 0:
            return None
        return float(sample.bins[name].sum() / sample.window_s)
    flags = _flags(sample, name)
    return float(flags.mean()) if flags is not None and flags.size else None


RATES = ("requests_per_s", "output_tokens_per_s", "goodput_rps")


def _flags(sample: RunSample, name: str) -> np.ndarray | None:
    """Per-request 0/1 values whose mean is the fraction ``name``."""
    if name == "error_rate":
        return (~sample.ok).astype(np.float64)
    if sample.meets_slo is None:
        return None
    return sample.meets_slo.astype(np.float64)  # goodput_fraction


# ------------------------------------------------------------------ bootstrap
def bootstrap(
    sample: RunSample, name: str, resamples: int, rng: np.random.Generator
) -> np.ndarray | None:
    """``resamples`` bootstrap values of metric ``name`` (None when it cannot be computed)."""
    if name == "itl_p50":
        return _bootstrap_clusters(sample.itl_values, sample.itl_lengths, 50.0, resamples, rng)
    if name.split("_")[0] in ("ttft", "tpot", "e2e"):
        arr = getattr(sample, name.split("_")[0])
        q = float(name.split("_")[1][1:])
        if arr.size == 0:
            return None
        return _chunked(arr.size, resamples, rng, lambda idx: np.percentile(arr[idx], q, axis=1))
    if point(sample, name) is None:
        return None
    if name in RATES:
        b, secs = sample.bins[name], sample.window_s
        return _chunked(b.size, resamples, rng, lambda idx: b[idx].sum(axis=1) / secs)
    flags = _flags(sample, name)
    assert flags is not None
    return _chunked(flags.size, resamples, rng, lambda idx: flags[idx].mean(axis=1))


def _chunked(
    n: int, resamples: int, rng: np.random.Generator, stat: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    rows = max(1, _MAX_CELLS // max(n, 1))
    out: list[np.ndarray] = []
    done = 0
    while done < resamples:
        k = min(rows, resamples - done)
        out.append(stat(rng.integers(0, n, size=(k, n))))
        done += k
    return np.concatenate(out)


def itl_resamples(a: RunSample, b: RunSample, resamples: int) -> int:
    pooled = max(a.itl_values.size, b.itl_values.size, 1)
    return max(min(resamples, 100), min(resamples, _ITL_BUDGET // pooled))


def _bootstrap_clusters(
    values: np.ndarray, lengths: np.ndarray, q: float, resamples: int, rng: np.random.Generator
) -> np.ndarray | None:
    """Percentile ``q`` of pooled values after resampling whole groups (requests)."""
    groups = lengths.size
    if groups == 0:
        return None
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    out = np.empty(resamples, dtype=np.float64)
    for i in range(resamples):
        pick = rng.integers(0, groups, size=groups)
        lens = lengths[pick]
        ends = np.cumsum(lens)
        pos = np.arange(ends[-1]) + np.repeat(offsets[pick] - (ends - lens), lens)
        out[i] = np.percentile(values[pos], q)
    return out


# ------------------------------------------------------------------ comparison
def compare_samples(
    a: RunSample,
    b: RunSample,
    *,
    gates: dict[str, float] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
    slo: SloSpec | None = None,
) -> CompareResult:
    gates = gates or {}
    tail = (1.0 - confidence) / 2 * 100
    out: list[MetricDelta] = []
    for k, m in enumerate(METRICS):
        out.append(_delta(a, b, k, m, gates, resamples, tail, seed))
    return CompareResult(
        a=a.name,
        b=b.name,
        resamples=resamples,
        confidence=confidence,
        seed=seed,
        slo=slo.model_dump() if slo is not None else None,
        metrics=out,
        regressions=[d.name for d in out if d.verdict == "regression"],
    )


def _delta(
    a: RunSample,
    b: RunSample,
    k: int,
    m: MetricDef,
    gates: dict[str, float],
    resamples: int,
    tail: float,
    seed: int,
) -> MetricDelta:
    va, vb = point(a, m.name), point(b, m.name)
    d: dict[str, Any] = dict(
        name=m.name, unit=m.unit, better=m.better, a=va, b=vb, gated=m.name in gates
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
        if worse and d["gated"]:
            change = (
                abs(delta)
                if m.absolute
                else abs(relative)
                if relative is not None
                else float("inf")
            )
            if change > gates[m.name]:
                d["verdict"] = "regression"
    return MetricDelta(**d)


def compare_runs(
    path_a: Path,
    path_b: Path,
    *,
    gates: dict[str, float] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
    slo: SloSpec | None = None,
) -> CompareResult:
    """Compare run B against baseline A. Goodput uses ``slo``, else A's SLO, else B's."""
    if not 0 < confidence < 1:
        raise SpecError(f"--confidence {confidence} is not between 0 and 1", "e.g. 0.95")
    if resamples < 10:
        raise SpecError(f"--resamples {resamples} is too few", "use at least 100 (default 1000)")
    slo = slo if slo is not None and slo.is_set() else (slo_of(path_a) or slo_of(path_b))
    a = load_run_sample(path_a, slo)
    b = load_run_sample(path_b, slo)
    return compare_samples(
        a, b, gates=gates, resamples=resamples, confidence=confidence, seed=seed, slo=slo
    )
