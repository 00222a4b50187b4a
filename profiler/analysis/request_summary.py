"""summary.json's request sections from a run's request columns: outcome counts, throughput,
latency distributions, tokens, the measured window, SLO attainment, errors and lengths.

Keys of the spine contract (schema_version, run_id, requests, throughput, latency, window)
are never renamed; later capabilities add keys beside them. What each figure counts (the
measured window, the SLO test, the per-request metrics) is ``profiler.measures``'.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from profiler import measures
from profiler.analysis.request_columns import RequestColumns
from profiler.latency_sketches import LATENCY_KEYS, latency_sketches
from profiler.sketches import quantile_method
from profiler.spec import SloSpec
from profiler.store.record import OUTCOMES

SCHEMA_VERSION = 1


def summarize_requests(
    cols: RequestColumns,
    *,
    run_id: str,
    warmup_s: float = 0.0,
    cooldown_s: float = 0.0,
    slo: SloSpec | None = None,
    open_loop: bool | None = None,
) -> dict[str, Any]:
    """summary.json's request sections. Rates count what happened inside the measured window:
    requests completed there and tokens that arrived there (``window_tokens``). Latency
    distributions, outcome counts, the error rate and the SLO attainment fraction cover the
    requests wholly inside it (``in_window``). ``open_loop``: the load followed an arrival
    schedule, so SLO attainment is also measured from each request's intended start, and that
    is the headline figure (users wait from when they asked)."""
    win = measures.measured_window(cols, warmup_s, cooldown_s)
    in_win = measures.in_window(cols, win)
    ok_any = cols.outcome == "ok"
    ok = in_win & ok_any
    done_in_win = measures.completed_in_window(cols, win)

    counts = {o: int(np.count_nonzero(in_win & (cols.outcome == o))) for o in OUTCOMES}
    total = int(np.count_nonzero(in_win))
    secs = win.seconds
    tok = measures.window_tokens(cols, win, ok_any)
    completed_ok = int(np.count_nonzero(ok_any & done_in_win))

    sketches = latency_sketches(cols, ok, in_win)
    dist = sketches.distributions()

    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "requests": {"total": total, **counts},
        "throughput": {
            "requests_per_s": completed_ok / secs if secs > 0 else None,
            "output_tokens_per_s": tok.output / secs if secs > 0 else None,
            "total_tokens_per_s": (tok.output + tok.prompt) / secs if secs > 0 else None,
        },
        "latency": {k: dist[k] for k in LATENCY_KEYS},
        "dispatch_lag_s": dist["dispatch_lag_s"],
        "queue_wait_s": dist["queue_wait_s"],
        "quantiles": quantile_method(),
        "tokens": tok.to_dict(),
        "error_rate": (total - counts["ok"]) / total if total else None,
        "window": {
            "start": win.start,
            "end": win.end,
            "seconds": secs,
            "warmup_s": win.warmup_s,
            "cooldown_s": win.cooldown_s,
            "excluded_requests": int(cols.id.size - total),
            "completed_requests": int(np.count_nonzero(done_in_win)),
        },
    }
    summary["slo_attainment"] = measures.slo_attainment(
        slo, cols, in_win, done_in_win, secs, open_loop=bool(open_loop)
    )
    summary["errors"] = error_summary(cols, in_win)
    summary["lengths"] = length_summary(cols, ok)
    return summary


TOP_ERRORS = 5


def error_summary(cols: RequestColumns, sel: np.ndarray) -> dict[str, Any]:
    """The most frequent error messages of the selected failed requests (cancelled ones are
    not failures), with their counts: ``{"top": [{"message", "count"}], "distinct"}``. Messages
    are grouped as ``profiler.load.guard.error_key`` does (echoed token ids left out)."""
    failed = sel & (cols.outcome != "ok") & (cols.outcome != "cancelled")
    if cols.error is None or not failed.any():
        return {"top": [], "distinct": 0}
    from profiler.load.guard import error_key

    msgs = [
        (str(e).strip() or str(o)) if e is not None else str(o)
        for e, o in zip(cols.error[failed], cols.outcome[failed], strict=True)
    ]
    keys = np.asarray([error_key(m, m) for m in msgs], dtype=object).astype(str)
    values, first, counts = np.unique(keys, return_index=True, return_counts=True)
    order = np.lexsort((values, -counts))[:TOP_ERRORS]
    return {  # each group's message as its first request had it
        "top": [{"message": msgs[first[i]], "count": int(counts[i])} for i in order],
        "distinct": int(values.size),
    }


def length_summary(cols: RequestColumns, ok: np.ndarray) -> dict[str, Any]:
    """Requested against achieved lengths of the successful requests: means, and how many got
    exactly what was asked (prompt: the server's count of the prompt; output: of all samples).
    ``length_enforced`` counts requests sent with and without exact-length controls
    (``ignore_eos``/``min_tokens``); without them ``max_tokens`` only bounds the output."""

    def part(requested: np.ndarray | None, achieved: np.ndarray) -> dict[str, Any]:
        if requested is None:
            return {"requested_mean": None, "achieved_mean": None, "exact": None, "requests": 0}
        both = ok & ~np.isnan(requested) & ~np.isnan(achieved)
        n = int(np.count_nonzero(both))
        if not n:
            return {"requested_mean": None, "achieved_mean": None, "exact": None, "requests": 0}
        return {
            "requested_mean": float(requested[both].mean()),
            "achieved_mean": float(achieved[both].mean()),
            "exact": int(np.count_nonzero(requested[both] == achieved[both])),
            "requests": n,
        }

    enforced = cols.length_enforced
    sel = enforced[ok] if enforced is not None else np.zeros(0)
    return {
        "prompt_tokens": part(cols.requested_prompt_tokens, cols.prompt_tokens),
        "output_tokens": part(cols.requested_output_tokens, cols.output_tokens),
        "enforced_requests": int(np.count_nonzero(sel == 1.0)),
        "not_enforced_requests": int(np.count_nonzero(sel == 0.0)),
    }
