"""summary.json from a run's records: latency distributions, throughput, SLO attainment, window.

Works on columns (numpy) so a million records with a hundred gaps each summarise in seconds.
Keys of the spine contract (schema_version, run_id, requests, throughput, latency, window)
are never renamed; later capabilities add keys beside them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from profiler.analysis.stats import Distribution
from profiler.load.record import OUTCOMES, RequestRecord
from profiler.spec import SloSpec

SCHEMA_VERSION = 1

ChunkSource = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


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
    # ITL shares of the requests selected by a boolean mask indexed by request id
    itl_source: Callable[[np.ndarray], np.ndarray]
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

        gid: list[int] = []
        gs: list[float] = []
        gk: list[int] = []
        for r in records:
            t = r.chunk_times_s
            if r.chunk_choice:
                g = r.itl_gaps()
                gs.extend(x for x, _ in g)
                gk.extend(k for _, k in g)
                gid.extend([r.id] * len(g))
            elif len(t) > 1:
                arr = np.diff(np.asarray(t, dtype=np.float64))
                gs.extend(arr.tolist())
                gk.extend(r.chunk_tokens[1:])
                gid.extend([r.id] * len(arr))
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
            itl_source=_array_itl_source(
                np.array(gid, dtype=np.int64),
                np.array(gs, dtype=np.float64),
                np.array(gk, dtype=np.int64),
            ),
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
        names = pq.read_schema(path).names
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
        req = pq.read_table(
            path,
            columns=[
                "id",
                "outcome",
                "intended_start_s",
                "send_s",
                "first_token_s",
                "end_s",
                "prompt_tokens",
                "output_tokens",
                "n",
                "chunks",
                *optional,  # absent from runs recorded before it existed
                *extra,
            ],
        )

        def f(name: str) -> np.ndarray:
            return np.asarray(req.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)

        itl_path = run_path / "itl.parquet"
        ids = req.column("id").to_numpy()
        chunks = req.column("chunks").to_numpy(zero_copy_only=False)

        def opt(name: str) -> np.ndarray | None:
            return f(name) if name in extra else None

        return cls(
            error=(
                req.column("error").to_numpy(zero_copy_only=False).astype(object)
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
            outcome=req.column("outcome").to_numpy(zero_copy_only=False).astype("U9"),
            intended_start_s=f("intended_start_s"),
            send_s=f("send_s"),
            first_token_s=f("first_token_s"),
            end_s=f("end_s"),
            prompt_tokens=f("prompt_tokens"),
            output_tokens=f("output_tokens"),
            n=f("n"),
            itl_source=lambda sel: _parquet_itl_shares(itl_path, sel, ids, chunks),
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

    ttft, tpot, e2e = latencies(cols)
    ttft_ok, e2e_ok, tpot_ok = ttft[ok], e2e[ok], tpot[ok]

    itl = cols.itl_source(_selected_by_id(cols.id, ok))

    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "requests": {"total": total, **counts},
        "throughput": {
            "requests_per_s": completed_ok / secs if secs > 0 else None,
            "output_tokens_per_s": tok.output / secs if secs > 0 else None,
            "total_tokens_per_s": (tok.output + tok.prompt) / secs if secs > 0 else None,
        },
        "latency": {
            "ttft_s": Distribution.of(ttft_ok).to_dict(),
            "tpot_s": Distribution.of(tpot_ok).to_dict(),
            "itl_s": Distribution.of(itl, overwrite=True).to_dict(),
            "e2e_s": Distribution.of(e2e_ok).to_dict(),
            "ttft_from_intended_s": Distribution.of(
                (cols.first_token_s - cols.intended_start_s)[ok]
            ).to_dict(),
            "e2e_from_intended_s": Distribution.of(
                (cols.end_s - cols.intended_start_s)[ok]
            ).to_dict(),
        },
        "dispatch_lag_s": Distribution.of(dispatch_lags(cols)[in_win]).to_dict(),
        "queue_wait_s": Distribution.of(
            cols.queue_wait_s[in_win] if cols.queue_wait_s is not None else []
        ).to_dict(),
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


def _shares(
    rid: np.ndarray, gaps: np.ndarray, toks: np.ndarray, selected: np.ndarray
) -> np.ndarray:
    """Gaps of selected requests; NaN gaps (a sample's first chunk) dropped."""
    return _apply_shares(gaps, toks, selected[rid] & ~np.isnan(gaps))


def _apply_shares(gaps: np.ndarray, toks: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Kept gaps, each divided evenly among the tokens its chunk carried (a chunk of k tokens
    gives k equal shares)."""
    g = gaps[keep]
    if toks.size == 0 or int(toks.max(initial=1)) <= 1:
        return g
    k = np.maximum(toks[keep], 1)
    return np.repeat(g / k, k)


def _array_itl_source(
    rid: np.ndarray, gaps: np.ndarray, toks: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    return lambda selected: _shares(rid, gaps, toks, selected)


def _parquet_itl_shares(
    path: Path, selected: np.ndarray, ids: np.ndarray, chunks: np.ndarray
) -> np.ndarray:
    """The selected shares from itl.parquet, filtered in Arrow (multi-threaded decode, nulls
    dropped without a NaN pass).

    Compaction writes every request's chunks contiguously in requests.parquet order, ``chunks``
    rows each; when the row counts agree, the selection is expanded from that layout and the
    request-id column is never decoded. Token counts are read only when a row group's
    statistics say some chunk carried more than one token."""
    pf = pq.ParquetFile(path)
    meta = pf.metadata
    by_layout = int(chunks.sum()) == meta.num_rows
    tok_col = pf.schema_arrow.get_field_index("tokens")
    multi = any(
        _stat_max(meta.row_group(i).column(tok_col)) > 1 for i in range(meta.num_row_groups)
    )
    columns = ["gap_s"] + (["tokens"] if multi else []) + ([] if by_layout else ["request_id"])
    table = pq.read_table(path, columns=columns, use_threads=True, memory_map=True)
    keep = pc.is_valid(table.column("gap_s"))  # a sample's first chunk has no gap
    sel_rows = selected[ids]
    if not by_layout:
        keep = pc.and_(keep, pa.array(selected[table.column("request_id").to_numpy()]))
    elif not sel_rows.all():
        keep = pc.and_(keep, pa.array(np.repeat(sel_rows, chunks)))
    table = table.filter(keep)  # one pass, one copy
    gaps = table.column("gap_s").to_numpy()
    if not multi:
        return gaps
    return _apply_shares(gaps, table.column("tokens").to_numpy(), np.ones(gaps.shape, dtype=bool))


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
