"""summary.json's ``sessions`` and ``prefix_cache`` sections.

``sessions`` (runs whose records carry a session id and turn; ``None`` otherwise): sessions
seen, turns per session, session duration (first send to last end of the sessions whose every
turn succeeded), and per turn: TTFT, TPOT and E2E of the successful requests, prompt tokens
and the server-reported cached prompt tokens, grouped by turn index (``1``, ``2-4``, ``5+``:
``profiler.store.record.TURN_BUCKETS``) and, for plotting, by exact turn index. The latency and
token figures cover the requests the run's latency figures cover (the measured window).

``prefix_cache``: the server's prefix-cache hits over queries (vLLM's ``/metrics`` counters
``prefix_cache_hits_total`` / ``prefix_cache_queries_total``, both in tokens) over the measured
window, and their ratio over time: the counters' increases between scrapes, merged into at
most ``TIMELINE_POINTS`` intervals (a counter that drops, a restarted server, counts its new
value as increase, as Prometheus' ``increase`` does).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from profiler.analysis.request_columns import RequestColumns
from profiler.measures import Window, in_window, latencies
from profiler.sketches import Distribution
from profiler.store.record import TURN_BUCKETS, turn_bucket
from profiler.telemetry.sample import Sample

TIMELINE_POINTS = 120
MAX_TURNS_LISTED = 200  # per-turn rows kept in summary.json (longer sessions: the rest in 5+)


def session_columns(run_path: Path, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(session id, turn, cached tokens) per record, in the order ``RequestColumns`` reads
    them (NaN where absent: requests outside sessions, runs recorded before the fields)."""
    nan = np.full(size, np.nan)
    path = run_path / "requests.parquet"
    if path.exists():
        names = set(pq.read_schema(path).names)
        wanted = [c for c in ("session_id", "turn", "cached_tokens") if c in names]
        if not wanted:
            return nan, nan.copy(), nan.copy()
        t = pq.read_table(path, columns=wanted)

        def col(name: str) -> np.ndarray:
            if name not in wanted:
                return nan.copy()
            return np.asarray(t.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)

        return col("session_id"), col("turn"), col("cached_tokens")
    from profiler.store.rundir import read_records

    recs = read_records(run_path)

    def arr(name: str) -> np.ndarray:
        return np.array(
            [np.nan if getattr(r, name) is None else getattr(r, name) for r in recs],
            dtype=np.float64,
        )

    return arr("session_id"), arr("turn"), arr("cached_tokens")


def _dist(v: np.ndarray) -> dict[str, Any]:
    return Distribution.of(v).to_dict()


def summarize_sessions(
    cols: RequestColumns,
    session_id: np.ndarray,
    turn: np.ndarray,
    cached: np.ndarray,
    counted: np.ndarray,
) -> dict[str, Any] | None:
    """The ``sessions`` section; ``counted`` selects the requests the latency figures cover."""
    has = ~np.isnan(session_id) & ~np.isnan(turn)
    if not has.any():
        return None
    ok = cols.outcome == "ok"
    ttft, tpot, e2e = latencies(cols)
    sid = session_id[has].astype(np.int64)
    uniq, inverse, per_session = np.unique(sid, return_inverse=True, return_counts=True)
    # duration of the sessions whose every turn succeeded: first send to last end
    send, end = cols.send_s[has], cols.end_s[has]
    first = np.full(uniq.size, np.inf)
    last = np.full(uniq.size, -np.inf)
    np.minimum.at(first, inverse, np.nan_to_num(send, nan=np.inf))
    np.maximum.at(last, inverse, np.nan_to_num(end, nan=-np.inf))
    failed = np.zeros(uniq.size, dtype=bool)
    np.logical_or.at(failed, inverse, ~ok[has])
    complete = ~failed & np.isfinite(first) & np.isfinite(last)
    turns = np.where(has, turn, 0).astype(np.int64)
    sel = has & counted
    with_cache = bool(np.any(~np.isnan(cached[sel])))
    by_bucket: dict[str, Any] = {}
    buckets = np.array([turn_bucket(int(k)) if k else "" for k in turns.tolist()])
    for b in TURN_BUCKETS:
        in_b = sel & (buckets == b)
        good = in_b & ok
        by_bucket[b] = {
            "requests": int(np.count_nonzero(in_b)),
            "ok": int(np.count_nonzero(good)),
            "ttft_s": _dist(ttft[good]),
            "tpot_s": _dist(tpot[good]),
            "e2e_s": _dist(e2e[good]),
            "prompt_tokens": _dist(cols.prompt_tokens[good]),
            "cached_tokens": _dist(cached[good]) if with_cache else None,
        }
    per_turn: list[dict[str, Any]] = []
    top = int(turns[sel].max()) if sel.any() else 0
    for k in range(1, min(top, MAX_TURNS_LISTED) + 1):
        in_k = sel & (turns == k)
        good = in_k & ok
        if not in_k.any():
            continue
        per_turn.append(
            {
                "turn": k,
                "requests": int(np.count_nonzero(in_k)),
                "ok": int(np.count_nonzero(good)),
                "ttft_p50_s": _pct(ttft[good], 50),
                "ttft_p90_s": _pct(ttft[good], 90),
                "ttft_mean_s": _mean(ttft[good]),
                "tpot_mean_s": _mean(tpot[good]),
                "e2e_mean_s": _mean(e2e[good]),
                "prompt_tokens_mean": _mean(cols.prompt_tokens[good]),
                "cached_tokens_mean": _mean(cached[good]) if with_cache else None,
            }
        )
    return {
        "sessions": int(uniq.size),
        "complete_sessions": int(np.count_nonzero(complete)),
        "turns_per_session": _dist(per_session.astype(np.float64)),
        "duration_s": _dist((last - first)[complete]),
        "turn_buckets": list(TURN_BUCKETS),
        "by_turn": by_bucket,
        "per_turn": per_turn,
    }


def _pct(v: np.ndarray, q: float) -> float | None:
    v = v[~np.isnan(v)]
    return float(np.percentile(v, q)) if v.size else None


def _mean(v: np.ndarray) -> float | None:
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else None


def _counter(samples: Iterable[Sample], metric: str) -> tuple[np.ndarray, np.ndarray]:
    pts = sorted(
        (s.t_s, float(s.value))
        for s in samples
        if s.source == "vllm" and s.metric == metric and s.error is None and s.value is not None
    )
    if not pts:
        return np.empty(0), np.empty(0)
    arr = np.asarray(pts, dtype=np.float64)
    return arr[:, 0], arr[:, 1]


def _increases(v: np.ndarray) -> np.ndarray:
    """Counter increases between consecutive scrapes (after a drop: the new value)."""
    step = np.diff(v)
    return np.where(step >= 0, step, v[1:])


def prefix_cache(samples: list[Sample], start: float, end: float) -> dict[str, Any]:
    """The ``prefix_cache`` section over the window ``[start, end]`` (run-clock seconds)."""
    th, hits = _counter(samples, "prefix_cache_hits_total")
    tq, queries = _counter(samples, "prefix_cache_queries_total")
    if th.size < 2 or tq.size < 2:
        return {
            "available": False,
            "reason": "the server's /metrics gave no prefix-cache counters (not vLLM, or not "
            "scraped twice)",
        }
    # scrapes carry both counters at the same times; align on the queries' scrape times
    hits_at = np.interp(tq, th, hits)
    dq, dh = _increases(queries), _increases(hits_at)
    t_end = tq[1:]
    # from the last scrape at or before the window start to the first at or after its end
    # (as the server section's counts: profiler.analysis.telemetry_sections)
    first = max(int(np.searchsorted(tq, start, side="right")) - 1, 0)
    last = max(min(int(np.searchsorted(tq, end, side="left")), tq.size - 1), first + 1)
    sl = slice(first, last)
    t_w, dq_w, dh_w = t_end[sl], dq[sl], dh[sl]
    total_q, total_h = float(dq_w.sum()), float(dh_w.sum())
    bins = max(1, min(TIMELINE_POINTS, t_w.size))
    groups = np.array_split(np.arange(t_w.size), bins)
    t_s, ratio, q_tok = [], [], []
    for g in groups:
        if g.size == 0:
            continue
        q, h = float(dq_w[g].sum()), float(dh_w[g].sum())
        t_s.append(float(t_w[g[-1]]))
        q_tok.append(int(round(q)))
        ratio.append(h / q if q > 0 else None)
    return {
        "available": True,
        "hits": int(round(total_h)),
        "queries": int(round(total_q)),
        "hit_ratio": total_h / total_q if total_q > 0 else None,
        "timeline": {"t_s": t_s, "hit_ratio": ratio, "queries": q_tok},
    }


def session_sections(
    run_path: Path, cols: RequestColumns, summary: dict[str, Any], samples: list[Sample]
) -> dict[str, Any]:
    """``sessions`` and ``prefix_cache`` for ``summary.json`` (``summary`` gives the window)."""
    w = summary["window"]
    win = Window(w["start"], w["end"], w["warmup_s"], w["cooldown_s"])
    sid, turn, cached = session_columns(run_path, cols.id.size)
    return {
        "sessions": summarize_sessions(cols, sid, turn, cached, in_window(cols, win)),
        "prefix_cache": prefix_cache(samples, win.start, win.end),
    }
