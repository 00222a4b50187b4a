"""One definition of each per-request metric, of the measured window and of the SLO test.

Every number that reports them comes from here: requests.parquet's columns and the live
metrics through ``store/record.RequestRecord`` (whose properties call these on one request),
summary.json (``analysis/request_summary``, ``latency_sketches``), the load's dispatch lag
(``load/dispatch``) and ``infprof compare`` (``analysis/run_sample``). Vectorised over float64
arrays (NaN where undefined), or floats for one request. numpy only: every layer imports it.

Definitions (DESIGN.md), times on the run clock:

- TTFT = first content token - send (also from the intended start on the schedule).
- E2E = end - send, for successful requests only.
- TPOT = (E2E - TTFT) / (output tokens per sample - 1); undefined with at most one token per
  sample, without a usage report, or with no sample (n < 1).
- ITL = every gap between consecutive content chunks of one sample, shared evenly among the
  tokens the later chunk carried.
- Dispatch lag = send - intended start - the time queued for a free slot (the load's cap).
- The measured window, which requests and tokens count inside it, and the SLO test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

# (request id, arrival time, tokens) of every content chunk of the requests selected by a
# boolean mask indexed by request id
ChunkSource = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
# Batches of (gap, tokens its chunk carried or None when every chunk carried one) of the
# requests selected by a boolean mask indexed by request id; NaN gaps already dropped
ItlSource = Callable[[np.ndarray], Iterable[tuple[np.ndarray, np.ndarray | None]]]
NAN = float("nan")


@dataclass
class Columns:
    """A run's requests as columns, one row a request (float arrays use NaN for missing);
    ``analysis/request_columns.RequestColumns`` reads them from a run."""

    id: np.ndarray
    outcome: np.ndarray  # fixed-width str
    intended_start_s: np.ndarray
    send_s: np.ndarray
    first_token_s: np.ndarray
    end_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    n: np.ndarray
    # ITL gaps of the requests selected by a boolean mask indexed by request id, in batches
    itl_source: ItlSource
    # Seconds each request waited for a free slot under an open loop's concurrency cap (NaN
    # where there was no cap, or the run predates the field); None: all NaN
    queue_wait_s: np.ndarray | None = None
    # (request id, arrival time, tokens) of every content chunk of the requests selected by a
    # boolean mask indexed by request id; None where the run has no chunk data
    chunk_source: ChunkSource | None = None
    # Error text per request (object array, None where none); None: not read
    error: np.ndarray | None = None
    # Requested lengths (NaN where not recorded) and whether exact output lengths were asked
    # of the server (1.0 / 0.0, NaN: natural lengths); None: the run predates them
    requested_prompt_tokens: np.ndarray | None = None
    requested_output_tokens: np.ndarray | None = None
    length_enforced: np.ndarray | None = None


class Slo(Protocol):
    """What ``profiler.spec.SloSpec`` offers (seconds; ``None`` = not set)."""

    ttft_s: float | None
    tpot_s: float | None
    e2e_s: float | None


# ------------------------------------------------------------------ per request
# A float64 array (one value a request), or a float for one request: each definition below is
# written once, in operations both take (``_where`` picks per element or once)
Values = Any


def _where(cond: Any, a: Values, b: Values) -> Values:
    if isinstance(cond, (bool, np.bool_)):
        return a if cond else b
    return np.where(cond, a, b)


def ttft(start_s: Values, first_token_s: Values) -> Values:
    """Time to first token from ``start_s`` (the send, or the intended start)."""
    return first_token_s - start_s


def e2e(start_s: Values, end_s: Values, ok: Any) -> Values:
    """End-to-end latency from ``start_s`` of the successful requests (``ok``); NaN otherwise."""
    return _where(ok, end_s - start_s, NAN)


def tpot(ttft_s: Values, e2e_s: Values, output_tokens: Values, n: Values) -> Values:
    """Time per output token after the first of each of the ``n`` samples."""
    has_n = n >= 1
    per_sample = _where(has_n, output_tokens / _where(has_n, n, 1.0), NAN)
    more = per_sample > 1
    return _where(more, (e2e_s - ttft_s) / _where(more, per_sample - 1, 1.0), NAN)


def dispatch_lag(intended_start_s: Values, send_s: Values, queue_wait_s: Values | None) -> Values:
    """The load generator's own lag: send minus intended start, less the time the request
    queued for a free slot under a concurrency cap (the load's wait, not the client's; none
    where not recorded)."""
    lag = send_s - intended_start_s
    if queue_wait_s is None:
        return lag
    return lag - _where(queue_wait_s == queue_wait_s, queue_wait_s, 0.0)  # NaN: none


def latencies(cols: Columns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-request TTFT, TPOT and E2E from the send (NaN where undefined)."""
    ok = cols.outcome == "ok"
    t, e = ttft(cols.send_s, cols.first_token_s), e2e(cols.send_s, cols.end_s, ok)
    return t, tpot(t, e, cols.output_tokens, cols.n), e


def from_intended(cols: Columns) -> tuple[np.ndarray, np.ndarray]:
    """Per-request TTFT and E2E from the intended start on the arrival schedule."""
    ok = cols.outcome == "ok"
    return (
        ttft(cols.intended_start_s, cols.first_token_s),
        e2e(cols.intended_start_s, cols.end_s, ok),
    )


def itl_gaps(group: np.ndarray, t_s: np.ndarray, choice: np.ndarray | None = None) -> np.ndarray:
    """The gap of every content chunk to the previous chunk of the same sample, NaN for a
    sample's first chunk. ``group`` names each chunk's request (a request's chunks in arrival
    order); ``choice`` its sample when n > 1 (None: one sample per request)."""
    gaps = np.full(t_s.shape, np.nan)
    if t_s.size < 2:
        return gaps
    if choice is None:
        same = group[1:] == group[:-1]
        gaps[1:][same] = np.diff(t_s)[same]
        return gaps
    order = np.lexsort((np.arange(t_s.size), choice, group))
    g, c, t = group[order], choice[order], t_s[order]
    same = (g[1:] == g[:-1]) & (c[1:] == c[:-1])
    sorted_gaps = np.full(t.shape, np.nan)
    sorted_gaps[1:][same] = np.diff(t)[same]
    gaps[order] = sorted_gaps
    return gaps


def itl_shares(gaps: np.ndarray, tokens: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """ITL values and weights from gaps (no NaN) and the tokens of the chunk that ended each: a
    chunk of k tokens gives k equal shares (gap / k), one value of weight k (None: all 1)."""
    if tokens is None or tokens.size == 0 or int(tokens.max()) <= 1:
        return gaps, None
    k = np.maximum(tokens, 1)
    return gaps / k, k


# ------------------------------------------------------------------ one request
def scalar(value: float | None) -> float:
    """One request's value for the definitions above (NaN for None)."""
    return NAN if value is None else float(value)


def optional(value: float) -> float | None:
    """A definition's result for one request: None where undefined."""
    return None if value != value else float(value)


# ------------------------------------------------------------------ measured window
@dataclass(frozen=True)
class Window:
    start: float
    end: float
    warmup_s: float
    cooldown_s: float

    @property
    def seconds(self) -> float:
        return max(self.end - self.start, 0.0)


def measured_window(cols: Columns, warmup_s: float = 0.0, cooldown_s: float = 0.0) -> Window:
    """[first send + warm-up, last end - cool-down] on the run clock."""
    sends = cols.send_s[~np.isnan(cols.send_s)]
    ends = cols.end_s[~np.isnan(cols.end_s)]
    if sends.size == 0 or ends.size == 0:
        return Window(0.0, 0.0, warmup_s, cooldown_s)
    start = float(sends.min()) + warmup_s
    end = float(ends.max()) - cooldown_s
    if end <= start:  # warm-up and cool-down ate the run: fall back to the whole run
        start, end = float(sends.min()), float(ends.max())
    return Window(start, end, warmup_s, cooldown_s)


def in_window(cols: Columns, win: Window) -> np.ndarray:
    """Requests counted in the measured window: sent at or after its start and finished by its
    end; requests never sent or never finished count when they were intended in the window.
    Without warm-up and cool-down every request counts."""
    if win.warmup_s == 0 and win.cooldown_s == 0:
        return np.ones(cols.send_s.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        sel = (cols.send_s >= win.start) & (cols.end_s <= win.end + 1e-9)
        unsent = np.isnan(cols.send_s) | np.isnan(cols.end_s)
        sel |= (
            unsent
            & (cols.intended_start_s >= win.start - 1e-9)
            & (cols.intended_start_s <= win.end)
        )
    return sel


def completed_in_window(cols: Columns, win: Window) -> np.ndarray:
    """Requests that ended inside the measured window, whenever sent: what the request rate
    counts (for a steady stream, completions per second are unbiased; the requests wholly
    inside it, ``in_window``, undercount by one request's duration over the window's)."""
    with np.errstate(invalid="ignore"):
        return (cols.end_s >= win.start) & (cols.end_s <= win.end + 1e-9)


@dataclass(frozen=True)
class WindowTokens:
    """Tokens of the successful requests that arrived inside the measured window.

    Output tokens count at their chunk's arrival time; a request cut by a window edge
    (``straddling``) contributes the share of its chunk tokens that arrived inside, scaled to
    its reported output tokens. Without chunk times (``interpolated``) its tokens are taken to
    arrive evenly between its first token and its end. Prompt tokens count when the request's
    first token arrived inside the window (the prompt is processed by then)."""

    output: float
    prompt: float
    straddling: int
    interpolated: int
    output_mean_per_request: float | None
    prompt_mean_per_request: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": int(round(self.prompt)),
            "output": int(round(self.output)),
            "straddling_requests": self.straddling,
            "interpolated_requests": self.interpolated,
            "prompt_mean_per_request": self.prompt_mean_per_request,
            "output_mean_per_request": self.output_mean_per_request,
        }


def window_tokens(cols: Columns, win: Window, ok: np.ndarray) -> WindowTokens:
    """Output and prompt tokens of the requests in ``ok`` that arrived inside ``win`` (see
    ``WindowTokens``). Chunk times are read only for the requests cut by a window edge."""
    out_in, straddling, interpolated = output_in_window(cols, win, ok)
    out, prompt = np.nan_to_num(cols.output_tokens), np.nan_to_num(cols.prompt_tokens)
    inside = in_window(cols, win) & ok  # the per-request means cover these
    n_in = int(np.count_nonzero(inside))
    means = (float(out[inside].sum()) / max(n_in, 1), float(prompt[inside].sum()) / max(n_in, 1))
    prompt_in = ok  # a prompt counts when its first token arrived inside
    if win.warmup_s != 0 or win.cooldown_s != 0:
        with np.errstate(invalid="ignore"):
            first = _first_or_end(cols)
            prompt_in = ok & (first >= win.start) & (first <= win.end + 1e-9)
    total = (float(out_in.sum()), float(prompt[prompt_in].sum()), straddling, interpolated)
    return WindowTokens(*total, *(means if n_in else (None, None)))


def _first_or_end(cols: Columns) -> np.ndarray:
    return np.where(np.isnan(cols.first_token_s), cols.end_s, cols.first_token_s)


def output_in_window(cols: Columns, win: Window, ok: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Per request, the output tokens that arrived inside ``win`` (``WindowTokens``' rule; 0
    outside ``ok``), the requests cut by an edge, and those of them interpolated."""
    out = np.nan_to_num(cols.output_tokens)
    if win.warmup_s == 0 and win.cooldown_s == 0:
        # the whole run: every chunk arrived between the first send and the last end
        return np.where(ok, out, 0.0), 0, 0
    with np.errstate(invalid="ignore"):
        first = _first_or_end(cols)
        lo, hi = win.start, win.end + 1e-9
        whole = ok & (first >= lo) & (cols.end_s <= hi)
        cut = ok & ~whole & (first <= hi) & (cols.end_s >= lo) & (out > 0)
    per = np.where(whole, out, 0.0)
    idx = np.flatnonzero(cut)
    frac = _inside_fractions(cols, cut, idx, lo, hi)
    missing = np.isnan(frac)
    interpolated = int(np.count_nonzero(missing))
    if interpolated:
        f0, f1 = first[idx[missing]], cols.end_s[idx[missing]]
        overlap = np.clip(np.minimum(f1, hi) - np.maximum(f0, lo), 0.0, None)
        with np.errstate(invalid="ignore", divide="ignore"):
            frac[missing] = np.where(f1 > f0, overlap / (f1 - f0), 1.0)
    per[idx] = out[idx] * frac
    return per, int(idx.size), interpolated


def _inside_fractions(
    cols: Columns, cut: np.ndarray, idx: np.ndarray, lo: float, hi: float
) -> np.ndarray:
    """Per request ``idx`` (those in ``cut``): the share of its chunk tokens that arrived in
    [lo, hi]; NaN where no chunk times are known."""
    frac = np.full(idx.size, np.nan)
    if not idx.size or cols.chunk_source is None:
        return frac
    rid, t, k = cols.chunk_source(selected_by_id(cols.id, cut))
    slot = np.full(int(cols.id.max()) + 1, -1, dtype=np.int64)
    slot[cols.id[idx]] = np.arange(idx.size)
    pos = slot[rid]
    known = pos >= 0  # a source may hand back more than was asked for
    pos, t, k = pos[known], t[known], k[known].astype(np.float64)
    with np.errstate(invalid="ignore"):
        inside_k = np.where((t >= lo) & (t <= hi), k, 0.0)
    all_k = np.bincount(pos, weights=k, minlength=idx.size)
    in_k = np.bincount(pos, weights=inside_k, minlength=idx.size)
    has = all_k > 0
    frac[has] = in_k[has] / all_k[has]
    return frac


def selected_by_id(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A boolean lookup table: ``table[request_id]`` is True for the requests in ``mask``."""
    size = int(ids.max()) + 1 if ids.size else 1
    table = np.zeros(size, dtype=bool)
    table[ids[mask]] = True
    return table


# ------------------------------------------------------------------ SLO
def slo_is_set(slo: Slo | None) -> bool:
    return slo is not None and any(v is not None for v in (slo.ttft_s, slo.tpot_s, slo.e2e_s))


def meets_slo(slo: Slo, ok: Any, ttft_s: Values, tpot_s: Values, e2e_s: Values) -> Any:
    """Successful requests meeting every objective set, each at most its limit (a request
    without a TPOT, one token a sample, cannot violate that objective). Arrays, or one
    request's bool and floats."""
    meets = ok
    if slo.ttft_s is not None:
        meets = meets & (ttft_s <= slo.ttft_s)
    if slo.tpot_s is not None:
        meets = meets & ((tpot_s != tpot_s) | (tpot_s <= slo.tpot_s))  # NaN: no TPOT
    if slo.e2e_s is not None:
        meets = meets & (e2e_s <= slo.e2e_s)
    return meets


def meets_target(fraction: float, target_fraction: float) -> bool:
    """SLO attainment reaches its target: at least ``target_fraction`` of the requests met it."""
    return fraction >= target_fraction


def slo_attainment(
    slo: Any,
    cols: Columns,
    in_win: np.ndarray,
    done_in_win: np.ndarray,
    secs: float,
    *,
    open_loop: bool,
) -> dict[str, Any]:
    """SLO attainment (``slo``: a ``SloSpec``): of the requests in the window, the fraction that
    succeeded and met every objective set (failed requests count as misses), and the rate of
    such requests completing inside the window. Measured from the send (``from_send``) and, for
    an open loop, from the intended start on the schedule (``from_intended``: what a user who
    asked at that moment waited, the queueing under a concurrency cap included). ``headline``
    names the one whose figures are repeated at the top: ``from_intended`` for an open loop,
    else ``from_send``. (DistServe's goodput is the highest request rate at which the
    attainment still reaches its target: ``infprof sweep --search slo`` finds it.)"""
    empty = {"fraction": None, "requests_per_s": None, "met": None, "meets_target": None}
    if not slo_is_set(slo):
        return {"slo": None, "headline": None, **empty, "from_send": None, "from_intended": None}
    ok = cols.outcome == "ok"
    ttft_s, tpot_s, e2e_s = latencies(cols)
    total = int(np.count_nonzero(in_win))

    def part(meets: np.ndarray) -> dict[str, Any]:
        met = int(np.count_nonzero(meets & in_win))
        return {
            "fraction": met / total if total else None,
            "requests_per_s": (
                int(np.count_nonzero(meets & done_in_win)) / secs if secs > 0 else None
            ),
            "met": met,
            "meets_target": meets_target(met / total, slo.target_fraction) if total else None,
        }

    from_send = part(meets_slo(slo, ok, ttft_s, tpot_s, e2e_s))
    intended = None
    if open_loop:
        ttft_i, e2e_i = from_intended(cols)
        intended = part(meets_slo(slo, ok, ttft_i, tpot_s, e2e_i))
    return {
        "slo": slo.model_dump(),
        "headline": "from_intended" if intended is not None else "from_send",
        **(intended if intended is not None else from_send),
        "from_send": from_send,
        "from_intended": intended,
    }
