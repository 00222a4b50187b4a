"""summary.json from a run's records: latency distributions, throughput, goodput, window.

Works on columns (numpy) so a million records with a hundred gaps each summarise in seconds.
Keys of the spine contract (schema_version, run_id, requests, throughput, latency, window)
are never renamed; later capabilities add keys beside them.
"""

from __future__ import annotations

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
        )

    @classmethod
    def from_run_dir(cls, run_path: Path) -> RequestColumns:
        """Columns straight from requests.parquet and itl.parquet: no per-record Python
        objects, so a million records with a hundred gaps each fit in a few GB."""
        req = pq.read_table(
            run_path / "requests.parquet",
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
            ],
        )

        def f(name: str) -> np.ndarray:
            return np.asarray(req.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)

        itl_path = run_path / "itl.parquet"
        ids = req.column("id").to_numpy()
        chunks = req.column("chunks").to_numpy(zero_copy_only=False)
        return cls(
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


def summarize(
    cols: RequestColumns,
    *,
    run_id: str,
    warmup_s: float = 0.0,
    cooldown_s: float = 0.0,
    slo: SloSpec | None = None,
) -> dict[str, Any]:
    win = measured_window(cols, warmup_s, cooldown_s)
    in_win = in_window(cols, win)
    ok = in_win & (cols.outcome == "ok")

    counts = {o: int(np.count_nonzero(in_win & (cols.outcome == o))) for o in OUTCOMES}
    total = int(np.count_nonzero(in_win))
    secs = win.seconds
    out_tok = float(np.nansum(cols.output_tokens[ok]))
    in_tok = float(np.nansum(cols.prompt_tokens[ok]))

    ttft, tpot, e2e = latencies(cols)
    ttft_ok, e2e_ok, tpot_ok = ttft[ok], e2e[ok], tpot[ok]

    itl = cols.itl_source(_selected_by_id(cols.id, ok))

    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "requests": {"total": total, **counts},
        "throughput": {
            "requests_per_s": counts["ok"] / secs if secs > 0 else None,
            "output_tokens_per_s": out_tok / secs if secs > 0 else None,
            "total_tokens_per_s": (out_tok + in_tok) / secs if secs > 0 else None,
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
        "dispatch_lag_s": Distribution.of((cols.send_s - cols.intended_start_s)[in_win]).to_dict(),
        "tokens": {"prompt": int(in_tok), "output": int(out_tok)},
        "error_rate": (total - counts["ok"]) / total if total else None,
        "window": {
            "start": win.start,
            "end": win.end,
            "seconds": secs,
            "warmup_s": win.warmup_s,
            "cooldown_s": win.cooldown_s,
            "excluded_requests": int(cols.id.size - total),
        },
    }
    summary["goodput"] = goodput(slo, ok, in_win, ttft, tpot, e2e, secs)
    return summary


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


def goodput(
    slo: SloSpec | None,
    ok: np.ndarray,
    in_win: np.ndarray,
    ttft: np.ndarray,
    tpot: np.ndarray,
    e2e: np.ndarray,
    secs: float,
) -> dict[str, Any]:
    """DistServe goodput: requests/s meeting every SLO set, and the fraction of all requests in
    the window (failed requests count as misses)."""
    if slo is None or not slo.is_set():
        return {"slo": None, "requests_per_s": None, "fraction": None, "met": None}
    met = int(np.count_nonzero(meets_slo(slo, ok, ttft, tpot, e2e)))
    total = int(np.count_nonzero(in_win))
    return {
        "slo": slo.model_dump(),
        "requests_per_s": met / secs if secs > 0 else None,
        "fraction": met / total if total else None,
        "met": met,
        "meets_target": (met / total >= slo.target_fraction) if total else None,
    }
