"""One run's per-request arrays for ``infprof compare``, restricted to its measured window
(the definitions of summary.json), and where a side's runs are: a run directory or a directory
of repeats."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from profiler import measures
from profiler.analysis.request_columns import RequestColumns
from profiler.errors import SpecError, StorageError
from profiler.spec import SloSpec
from profiler.store.rundir import read_records
from profiler.store.schema import Manifest


@dataclass
class RunSample:
    """Per-request arrays of one run, restricted to its measured window."""

    name: str
    ok: np.ndarray  # bool, every request in the window
    meets_slo: np.ndarray | None  # bool, None without an SLO
    window_s: float
    # per time bin of the window: rates are bin sums / window_s (summary.json's figures)
    bins: dict[str, np.ndarray]
    ttft: np.ndarray  # successful requests only, NaN dropped
    tpot: np.ndarray
    e2e: np.ndarray
    itl_values: np.ndarray  # per-token ITL shares of successful requests, grouped by request
    itl_lengths: np.ndarray  # shares per successful request with gaps


def _is_run(path: Path) -> bool:
    return (path / "requests.parquet").exists() or (path / "requests.jsonl").exists()


def expand_runs(path: Path) -> list[Path]:
    """A run directory, or a directory of repeats (``infprof run --repeat``, a sweep point
    run with ``--repeat``): its run subdirectories in name order."""
    if not path.is_dir():
        raise SpecError(f"{path} is not a run directory", "pass a directory written by infprof run")
    if _is_run(path):
        return [path]
    subs = sorted(p for p in path.iterdir() if p.is_dir() and _is_run(p))
    if not subs:
        raise StorageError(
            f"{path} has no request records",
            "pass a run directory (it holds requests.parquet) or a directory of repeats",
        )
    return subs


def load_run_sample(path: Path, slo: SloSpec | None) -> RunSample:
    if not path.is_dir():
        raise SpecError(f"{path} is not a run directory", "pass a directory written by infprof run")
    if not _is_run(path):
        raise StorageError(
            f"{path} has no request records", "pass a run directory (it holds requests.parquet)"
        )
    spec = _manifest(path).recorded_spec()
    records = read_records(path)
    cols = RequestColumns.from_records(records)
    win = measures.measured_window(cols, float(spec.warmup_s or 0.0), float(spec.cooldown_s or 0.0))
    in_win = measures.in_window(cols, win)
    ok_any = cols.outcome == "ok"
    ok_all = in_win & ok_any
    ttft, tpot, e2e = measures.latencies(cols)
    met: np.ndarray | None = None  # every request meeting the SLO, wherever it ran
    if slo is not None and slo.is_set():
        met = measures.meets_slo(slo, ok_any, ttft, tpot, e2e)
    # Rates are summary.json's: completions inside the window (completed_in_window) and output
    # tokens as they arrived inside it (output_in_window), each binned at the request's end
    # clipped into the window; fractions and latencies cover the requests wholly inside it
    done = measures.completed_in_window(cols, win) & ok_any
    tokens = measures.output_in_window(cols, win, ok_any)[0]
    has_tokens = tokens > 0
    nbins = int(np.clip(int(np.count_nonzero(in_win)) // 10, 10, 60))
    span = (win.start, win.end if win.end > win.start else win.start + 1.0)
    end_in_span = np.clip(np.nan_to_num(cols.end_s, nan=span[0]), *span)

    def binned(mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        w = None if weights is None else weights[mask]
        return np.histogram(end_in_span[mask], bins=nbins, range=span, weights=w)[0].astype(
            np.float64
        )

    bins = {
        "requests_per_s": binned(done),
        "output_tokens_per_s": binned(has_tokens, tokens),
    }
    if met is not None:
        bins["slo_met_rps"] = binned(met & done)
    ok_ids = {int(i) for i in cols.id[ok_all]}
    shares = [r.itl_shares() for r in records if r.id in ok_ids]
    shares = [s for s in shares if s]
    values = np.fromiter((v for s in shares for v in s), dtype=np.float64)

    def drop_nan(a: np.ndarray) -> np.ndarray:
        return a[~np.isnan(a)]

    return RunSample(
        name=str(path),
        ok=ok_all[in_win],
        meets_slo=None if met is None else met[in_win],
        window_s=win.seconds,
        bins=bins,
        ttft=drop_nan(ttft[ok_all]),
        tpot=drop_nan(tpot[ok_all]),
        e2e=drop_nan(e2e[ok_all]),
        itl_values=values,
        itl_lengths=np.array([len(s) for s in shares], dtype=np.int64),
    )


def slo_of(path: Path) -> SloSpec | None:
    slo = _manifest(path).recorded_spec().slo
    if not slo:
        return None
    spec = SloSpec.model_validate(slo)
    return spec if spec.is_set() else None


def _manifest(path: Path) -> Manifest:
    """The run's manifest.json (an empty one where the run has none)."""
    return Manifest.load(path) if (path / Manifest.FILE).exists() else Manifest()
