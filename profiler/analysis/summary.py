"""summary.json from a run's records: latency distributions, throughput, SLO attainment, window.

Works on columns (numpy) so a million records with a hundred gaps each summarise in seconds.
Distributions come from ``QuantileSketch`` (exact up to a threshold, a DDSketch above it) and
itl.parquet is streamed into it a batch at a time, so memory follows the number of requests,
never the number of gaps; ``LatencySketches`` is the mergeable partial summary.
Keys of the spine contract (schema_version, run_id, requests, throughput, latency, window)
are never renamed; later capabilities add keys beside them.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from profiler.analysis.stats import QuantileSketch, quantile_method
from profiler.load.record import OUTCOMES, RequestRecord
from profiler.spec import SloSpec

SCHEMA_VERSION = 1

ChunkSource = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
# Batches of (gap, tokens its chunk carried or None when every chunk carried one) of the
# requests selected by a boolean mask indexed by request id; NaN gaps already dropped
ItlSource = Callable[[np.ndarray], Iterable[tuple[np.ndarray, np.ndarray | None]]]
# Rows of itl.parquet decoded at a time: memory stays bounded whatever the file's length
ITL_BATCH_ROWS = 1 << 20


@dataclass
class RequestColumns:
    """Columnar view of a run's records (float arrays use NaN for missing)."""

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

    @classmethod
    def from_records(cls, records: Sequence[RequestRecord]) -> RequestColumns:
        def f(vals: list[Any]) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in vals], dtype=np.float64)

        gid, gs, gk = _record_gaps(records)
        return cls(
            id=np.array([r.id for r in records], dtype=np.int64),
            outcome=np.array([r.outcome for r in records], dtype="U9"),
            intended_start_s=f([r.intended_start_s for r in records]),
            send_s=f([r.send_s for r in records]),
            first_token_s=f([r.first_token_s for r in records]),
            end_s=f([r.end_s for r in records]),
            prompt_tokens=f([r.prompt_tokens for r in records]),
            output_tokens=f([r.output_tokens for r in records]),
            n=f([r.n for r in records]),
            itl_source=_array_itl_source(gid, gs, gk),
            queue_wait_s=f([r.queue_wait_s for r in records]),
            chunk_source=functools.partial(_record_chunks, list(records)),
            error=np.array([r.error for r in records], dtype=object),
            requested_prompt_tokens=f([r.requested_prompt_tokens for r in records]),
            requested_output_tokens=f([r.requested_output_tokens for r in records]),
            length_enforced=f([r.length_enforced for r in records]),
        )

    @classmethod
    def from_run_dir(cls, run_path: Path) -> RequestColumns:
        """Columns straight from requests.parquet and itl.parquet: no per-record Python
        objects, so a million records with a hundred gaps each fit in a few GB."""
        path = run_path / "requests.parquet"
        # one column decoded at a time, strings never turned into Python objects: the peak is
        # the columns kept plus one being decoded
        req = pq.ParquetFile(path, pre_buffer=False)
        names = req.schema_arrow.names
        optional = [c for c in ("queue_wait_s",) if c in names]
        # absent from runs recorded before they existed
        extra = [
            c
            for c in (
                "error",
                "requested_prompt_tokens",
                "requested_output_tokens",
                "length_enforced",
            )
            if c in names
        ]

        def f(name: str) -> np.ndarray:
            col = req.read(columns=[name]).column(0)
            return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)

        def outcomes() -> np.ndarray:
            codes = pc.dictionary_encode(req.read(columns=["outcome"]).column(0)).combine_chunks()
            names = np.array([x or "" for x in codes.dictionary.to_pylist()] or [""], dtype="U9")
            return names[codes.indices.fill_null(0).to_numpy()]

        itl_path = run_path / "itl.parquet"
        ids = req.read(columns=["id"]).column(0).to_numpy()
        chunks = np.nan_to_num(f("chunks")).astype(np.int64)

        def opt(name: str) -> np.ndarray | None:
            return f(name) if name in extra else None

        return cls(
            error=(
                req.read(columns=["error"]).column(0).to_numpy(zero_copy_only=False).astype(object)
                if "error" in extra
                else None
            ),
            requested_prompt_tokens=opt("requested_prompt_tokens"),
            requested_output_tokens=opt("requested_output_tokens"),
            length_enforced=opt("length_enforced"),
            queue_wait_s=f("queue_wait_s") if optional else None,
            chunk_source=(
                functools.partial(_parquet_chunks, itl_path) if itl_path.exists() else None
            ),
            id=ids,
            outcome=outcomes(),
            intended_start_s=f("intended_start_s"),
            send_s=f("send_s"),
            first_token_s=f("first_token_s"),
            end_s=f("end_s"),
            prompt_tokens=f("prompt_tokens"),
            output_tokens=f("output_tokens"),
            n=f("n"),
            itl_source=functools.partial(_parquet_itl_batches, itl_path, ids=ids, chunks=chunks),
        )


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    warmup_s: float
    cooldown_s: float

    @property
    def seconds(self) -> float:
        return max(self.end - self.start, 0.0)


def measured_window(cols: RequestColumns, warmup_s: float = 0.0, cooldown_s: float = 0.0) -> Window:
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


def in_window(cols: RequestColumns, win: Window) -> np.ndarray:
    """Requests counted in the measured window: sent at or after its start and finished by its
    end; requests never sent or never finished count when they were intended in the window.
    Without warm-up and cool-down every request counts."""
    if win.warmup_s == 0 and win.cooldown_s == 0:
        return np.ones(cols.id.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        sel = (cols.send_s >= win.start) & (cols.end_s <= win.end + 1e-9)
        unsent = np.isnan(cols.send_s) | np.isnan(cols.end_s)
        sel |= (
            unsent
            & (cols.intended_start_s >= win.start - 1e-9)
            & (cols.intended_start_s <= win.end)
        )
    return sel


def latencies(cols: RequestColumns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-request TTFT, TPOT and E2E (DESIGN.md definitions; NaN where undefined)."""
    ttft = cols.first_token_s - cols.send_s
    e2e = cols.end_s - cols.send_s
    per_sample = cols.output_tokens / np.where(cols.n > 0, cols.n, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(per_sample > 1, (e2e - ttft) / (per_sample - 1), np.nan)
    return ttft, tpot, e2e


def meets_slo(
    slo: SloSpec, ok: np.ndarray, ttft: np.ndarray, tpot: np.ndarray, e2e: np.ndarray
) -> np.ndarray:
    """Successful requests meeting every objective set (a one-token answer has no TPOT and
    cannot violate that objective)."""
    meets = ok.copy()
    with np.errstate(invalid="ignore"):
        if slo.ttft_s is not None:
            meets &= ttft <= slo.ttft_s
        if slo.tpot_s is not None:
            meets &= np.isnan(tpot) | (tpot <= slo.tpot_s)
        if slo.e2e_s is not None:
            meets &= e2e <= slo.e2e_s
    return meets


def completed_in_window(cols: RequestColumns, win: Window) -> np.ndarray:
    """Requests that ended inside the measured window, whenever they were sent: the requests
    the request rate counts (for a steady stream, completions per second are unbiased; the
    requests wholly inside the window, which ``in_window`` selects, undercount by the share
    of the window that one request's duration takes)."""
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


def window_tokens(cols: RequestColumns, win: Window, ok: np.ndarray) -> WindowTokens:
    """Output and prompt tokens of the requests in ``ok`` that arrived inside ``win`` (see
    ``WindowTokens``). Chunk times are read only for the requests cut by a window edge."""
    out = np.nan_to_num(cols.output_tokens)
    prompt = np.nan_to_num(cols.prompt_tokens)
    inside = in_window(cols, win) & ok  # the per-request means cover these
    n_in = int(np.count_nonzero(inside))
    means = (
        (float(out[inside].sum()) / n_in, float(prompt[inside].sum()) / n_in)
        if n_in
        else (None, None)
    )
    if win.warmup_s == 0 and win.cooldown_s == 0:
        # the whole run: every chunk arrived between the first send and the last end
        return WindowTokens(float(out[ok].sum()), float(prompt[ok].sum()), 0, 0, *means)
    with np.errstate(invalid="ignore"):
        first = np.where(np.isnan(cols.first_token_s), cols.end_s, cols.first_token_s)
        lo, hi = win.start, win.end + 1e-9
        whole = ok & (first >= lo) & (cols.end_s <= hi)
        cut = ok & ~whole & (first <= hi) & (cols.end_s >= lo) & (out > 0)
        prompt_in = ok & (first >= lo) & (first <= hi)
    total_out = float(out[whole].sum())
    interpolated = 0
    idx = np.flatnonzero(cut)
    if idx.size:
        frac = np.full(idx.size, np.nan)
        if cols.chunk_source is not None:
            rid, t, k = cols.chunk_source(_selected_by_id(cols.id, cut))
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
        missing = np.isnan(frac)
        interpolated = int(np.count_nonzero(missing))
        if interpolated:
            f0, f1 = first[idx[missing]], cols.end_s[idx[missing]]
            span = f1 - f0
            overlap = np.clip(np.minimum(f1, hi) - np.maximum(f0, lo), 0.0, None)
            with np.errstate(invalid="ignore", divide="ignore"):
                frac[missing] = np.where(span > 0, overlap / span, 1.0)
        total_out += float((out[idx] * frac).sum())
    return WindowTokens(
        total_out, float(prompt[prompt_in].sum()), int(idx.size), interpolated, *means
    )


def dispatch_lags(cols: RequestColumns) -> np.ndarray:
    """The load generator's own lag per request: send minus intended start, less the time the
    request queued for a free slot under a concurrency cap (that wait is the load's, not the
    client's; older runs did not record it and it counts as none)."""
    lag = cols.send_s - cols.intended_start_s
    if cols.queue_wait_s is None:
        return lag
    return lag - np.nan_to_num(cols.queue_wait_s)


def summarize(
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
    win = measured_window(cols, warmup_s, cooldown_s)
    in_win = in_window(cols, win)
    ok_any = cols.outcome == "ok"
    ok = in_win & ok_any
    done_in_win = completed_in_window(cols, win)

    counts = {o: int(np.count_nonzero(in_win & (cols.outcome == o))) for o in OUTCOMES}
    total = int(np.count_nonzero(in_win))
    secs = win.seconds
    tok = window_tokens(cols, win, ok_any)
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
    summary["slo_attainment"] = slo_attainment(
        slo, cols, in_win, done_in_win, secs, open_loop=bool(open_loop)
    )
    summary["errors"] = error_summary(cols, in_win)
    summary["lengths"] = length_summary(cols, ok)
    return summary


LATENCY_KEYS = (
    "ttft_s",
    "tpot_s",
    "itl_s",
    "e2e_s",
    "ttft_from_intended_s",
    "e2e_from_intended_s",
)
SKETCH_KEYS = (*LATENCY_KEYS, "dispatch_lag_s", "queue_wait_s")


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


@dataclass
class LatencySketches:
    """A partial summary: the distributions of ``SKETCH_KEYS`` as mergeable sketches. A
    worker, a Ray actor or a host sketches its own requests (``latency_sketches``, or
    ``of_records``), ships ``to_dict()`` (JSON-safe, a few KB once past the exact threshold),
    and the receiver merges them: the merge equals the sketches of all the requests."""

    sketches: dict[str, QuantileSketch] = field(
        default_factory=lambda: {k: QuantileSketch() for k in SKETCH_KEYS}
    )

    def merge(self, other: LatencySketches) -> None:
        for k, sk in other.sketches.items():
            self.sketches.setdefault(k, QuantileSketch(sk.relative_accuracy)).merge(sk)

    def distributions(self) -> dict[str, dict[str, Any]]:
        return {k: sk.distribution().to_dict() for k, sk in self.sketches.items()}

    def to_dict(self) -> dict[str, Any]:
        return {k: sk.to_dict() for k, sk in self.sketches.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencySketches:
        return cls({k: QuantileSketch.from_dict(v) for k, v in d.items()})

    @classmethod
    def of_records(cls, records: Sequence[RequestRecord]) -> LatencySketches:
        """Sketches of ``records`` (no window: every successful request's latencies, every
        request's dispatch lag and queue wait)."""
        cols = RequestColumns.from_records(records)
        everything = np.ones(cols.id.shape, dtype=bool)
        return latency_sketches(cols, cols.outcome == "ok", everything)


def latency_sketches(cols: RequestColumns, ok: np.ndarray, in_win: np.ndarray) -> LatencySketches:
    """The latency distributions of the successful requests in ``ok`` (ITL shares streamed
    from ``cols.itl_source``), and dispatch lag and queue wait of the requests in ``in_win``."""
    ttft, tpot, e2e = latencies(cols)
    out = LatencySketches()
    sk = out.sketches
    sk["ttft_s"].add(ttft[ok])
    sk["tpot_s"].add(tpot[ok])
    sk["e2e_s"].add(e2e[ok])
    sk["ttft_from_intended_s"].add((cols.first_token_s - cols.intended_start_s)[ok])
    sk["e2e_from_intended_s"].add((cols.end_s - cols.intended_start_s)[ok])
    sk["dispatch_lag_s"].add(dispatch_lags(cols)[in_win])
    if cols.queue_wait_s is not None:
        sk["queue_wait_s"].add(cols.queue_wait_s[in_win])
    for gaps, toks in cols.itl_source(_selected_by_id(cols.id, ok)):
        add_itl_shares(sk["itl_s"], gaps, toks)
    return out


def add_itl_shares(sketch: QuantileSketch, gaps: np.ndarray, toks: np.ndarray | None) -> None:
    """Count each gap as its chunk's tokens' shares: a chunk of k tokens gives k equal shares
    (gap / k), counted as one value of weight k rather than k copies."""
    if toks is None or toks.size == 0 or int(toks.max()) <= 1:
        sketch.add(gaps)
        return
    k = np.maximum(toks, 1)
    sketch.add(gaps / k, weights=k)


def _record_gaps(records: Sequence[RequestRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(request id, gap, tokens of the later chunk) of every gap of ``records``, in record
    order. Without several samples per request (n > 1) every record's chunks are joined into
    one array and differenced at once (no numpy call per record)."""
    multi = [r for r in records if len(r.chunk_times_s) > 1]
    if any(r.chunk_choice or len(r.chunk_tokens) != len(r.chunk_times_s) for r in multi):
        gid: list[int] = []
        gs: list[float] = []
        gk: list[int] = []
        for r in multi:
            if r.chunk_choice:
                g = r.itl_gaps()
                gs.extend(x for x, _ in g)
                gk.extend(k for _, k in g)
                gid.extend([r.id] * len(g))
            else:
                arr = np.diff(np.asarray(r.chunk_times_s, dtype=np.float64))
                gs.extend(arr.tolist())
                gk.extend(r.chunk_tokens[1:])
                gid.extend([r.id] * len(arr))
        return (
            np.array(gid, dtype=np.int64),
            np.array(gs, dtype=np.float64),
            np.array(gk, dtype=np.int64),
        )
    lens = np.fromiter((len(r.chunk_times_s) for r in multi), np.int64, len(multi))
    total = int(lens.sum())
    t = np.fromiter(
        itertools.chain.from_iterable(r.chunk_times_s for r in multi), np.float64, total
    )
    k = np.fromiter(itertools.chain.from_iterable(r.chunk_tokens for r in multi), np.int64, total)
    later = np.ones(total, dtype=bool)
    later[np.cumsum(lens) - lens] = False  # a record's first chunk has no gap
    gaps = np.empty(total, dtype=np.float64)
    gaps[1:] = np.diff(t)
    ids = np.fromiter((r.id for r in multi), np.int64, len(multi))
    return np.repeat(ids, lens - 1), gaps[later], k[later]


def _array_itl_source(rid: np.ndarray, gaps: np.ndarray, toks: np.ndarray) -> ItlSource:
    def source(selected: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        keep = selected[rid] & ~np.isnan(gaps)  # a sample's first chunk has no gap
        yield gaps[keep], toks[keep]

    return source


def _parquet_itl_batches(
    path: Path, selected: np.ndarray, *, ids: np.ndarray, chunks: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The selected gaps of itl.parquet, ``ITL_BATCH_ROWS`` rows at a time (never the whole
    file), filtered in Arrow (nulls dropped without a NaN pass).

    Compaction writes every request's chunks contiguously in requests.parquet order, ``chunks``
    rows each; when the row counts agree, each batch's selection is expanded from that layout
    and the request-id column is never decoded. Token counts are read only when a row group's
    statistics say some chunk carried more than one token. ``pre_buffer`` is off: with it,
    Arrow reads ahead every row group's column chunks, the whole file."""
    pf = pq.ParquetFile(path, pre_buffer=False)
    meta = pf.metadata
    by_layout = int(chunks.sum()) == meta.num_rows
    tok_col = pf.schema_arrow.get_field_index("tokens")
    multi = any(
        _stat_max(meta.row_group(i).column(tok_col)) > 1 for i in range(meta.num_row_groups)
    )
    columns = ["gap_s"] + (["tokens"] if multi else []) + ([] if by_layout else ["request_id"])
    sel_rows = selected[ids]
    every_row = by_layout and bool(sel_rows.all())
    ends = np.cumsum(chunks) if by_layout else chunks
    row0 = 0
    for batch in pf.iter_batches(batch_size=ITL_BATCH_ROWS, columns=columns, use_threads=True):
        rows = batch.num_rows
        keep: Any = None if batch.column(0).null_count == 0 else pc.is_valid(batch.column(0))
        wanted = None
        if not by_layout:
            rid = batch.column(columns.index("request_id")).to_numpy()
            wanted = np.zeros(rid.size, dtype=bool)
            known = (rid >= 0) & (rid < selected.size)
            wanted[known] = selected[rid[known]]
        elif not every_row:
            wanted = _layout_rows(ends, chunks, sel_rows, row0, rows)
        row0 += rows
        if wanted is not None:
            keep = pa.array(wanted) if keep is None else pc.and_(keep, pa.array(wanted))
        if keep is not None:
            batch = batch.filter(keep)
        gaps = batch.column(0).to_numpy()
        yield gaps, batch.column(1).to_numpy() if multi else None


def _layout_rows(
    ends: np.ndarray, chunks: np.ndarray, sel_rows: np.ndarray, row0: int, rows: int
) -> np.ndarray:
    """Which of rows [row0, row0 + rows) of itl.parquet belong to selected requests, when
    request ``i`` owns rows [ends[i] - chunks[i], ends[i])."""
    if rows == 0:
        return np.zeros(0, dtype=bool)
    first = int(np.searchsorted(ends, row0, side="right"))
    last = int(np.searchsorted(ends, row0 + rows - 1, side="right"))
    e = ends[first : last + 1]
    lo = np.maximum(e - chunks[first : last + 1], row0)
    hi = np.minimum(e, row0 + rows)
    return np.repeat(sel_rows[first : last + 1], np.maximum(hi - lo, 0))


def _record_chunks(
    records: list[RequestRecord], selected: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(request id, arrival time, tokens) of every chunk of the selected records."""
    chosen = [r for r in records if r.chunk_times_s and selected[r.id]]
    lens = [len(r.chunk_times_s) for r in chosen]
    rid = np.repeat(np.array([r.id for r in chosen], dtype=np.int64), lens)
    t = np.array([x for r in chosen for x in r.chunk_times_s], dtype=np.float64)
    k = np.array([x for r in chosen for x in r.chunk_tokens], dtype=np.int64)
    return rid, t, k


def _parquet_chunks(path: Path, selected: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(request id, arrival time, tokens) of every chunk of the selected requests in
    itl.parquet. Only the row groups whose request-id range holds a selected request are
    read: the requests cut by a window edge are few and, in id order, near the run's two ends,
    so a million-request run reads a few row groups, not the file."""
    pf = pq.ParquetFile(path)
    meta = pf.metadata
    id_col = pf.schema_arrow.get_field_index("request_id")
    wanted = np.flatnonzero(selected)
    groups = []
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(id_col).statistics
        if stats is None or not stats.has_min_max:
            groups.append(i)
            continue
        lo = np.searchsorted(wanted, int(stats.min), side="left")
        if lo < wanted.size and wanted[lo] <= int(stats.max):
            groups.append(i)
    if not groups:
        empty = np.zeros(0, dtype=np.int64)
        return empty, np.zeros(0), empty
    table = pf.read_row_groups(groups, columns=["request_id", "t_s", "tokens"])
    rid = table.column("request_id").to_numpy()
    keep = np.zeros(rid.size, dtype=bool)
    known = rid < selected.size
    keep[known] = selected[rid[known]]
    return (
        rid[keep],
        table.column("t_s").to_numpy()[keep],
        table.column("tokens").to_numpy()[keep].astype(np.int64),
    )


def _stat_max(col: Any) -> int:
    stats = col.statistics
    if stats is None or not stats.has_min_max:
        return 2**31  # unknown: read the tokens
    return int(stats.max)


def _selected_by_id(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A boolean lookup table: ``table[request_id]`` is True for the requests in ``mask``."""
    size = int(ids.max()) + 1 if ids.size else 1
    table = np.zeros(size, dtype=bool)
    table[ids[mask]] = True
    return table


def slo_attainment(
    slo: SloSpec | None,
    cols: RequestColumns,
    in_win: np.ndarray,
    done_in_win: np.ndarray,
    secs: float,
    *,
    open_loop: bool,
) -> dict[str, Any]:
    """SLO attainment: of the requests in the window, the fraction that succeeded and met every
    objective set (failed requests count as misses), and the rate of such requests completing
    inside the window. Measured from the send (``from_send``) and, for an open loop, from the
    intended start on the schedule (``from_intended``: what a user who asked at that moment
    waited, the queueing under a concurrency cap included). ``headline`` names the one whose
    figures are repeated at the top: ``from_intended`` for an open loop, else ``from_send``.
    (DistServe's goodput is the highest request rate at which the attainment still reaches its
    target: ``infprof sweep --search slo`` finds it.)"""
    empty = {"fraction": None, "requests_per_s": None, "met": None, "meets_target": None}
    if slo is None or not slo.is_set():
        return {"slo": None, "headline": None, **empty, "from_send": None, "from_intended": None}
    ok = cols.outcome == "ok"
    ttft, tpot, e2e = latencies(cols)
    total = int(np.count_nonzero(in_win))

    def part(meets: np.ndarray) -> dict[str, Any]:
        met = int(np.count_nonzero(meets & in_win))
        return {
            "fraction": met / total if total else None,
            "requests_per_s": (
                int(np.count_nonzero(meets & done_in_win)) / secs if secs > 0 else None
            ),
            "met": met,
            "meets_target": (met / total >= slo.target_fraction) if total else None,
        }

    from_send = part(meets_slo(slo, ok, ttft, tpot, e2e))
    from_intended = None
    if open_loop:
        ttft_i = cols.first_token_s - cols.intended_start_s
        e2e_i = cols.end_s - cols.intended_start_s
        from_intended = part(meets_slo(slo, ok, ttft_i, tpot, e2e_i))
    headline = "from_intended" if from_intended is not None else "from_send"
    return {
        "slo": slo.model_dump(),
        "headline": headline,
        **(from_intended if from_intended is not None else from_send),
        "from_send": from_send,
        "from_intended": from_intended,
    }
