"""``measures.Columns`` of ``RequestRecord``s held in memory: a load worker's batch (its
latency sketches, ``sketch_records``) or a run's journal (``analysis/request_columns``)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from profiler import measures
from profiler.latency_sketches import LatencySketches, latency_sketches
from profiler.measures import ItlSource
from profiler.store.record import RequestRecord

C = TypeVar("C", bound=measures.Columns)


def sketch_records(records: Sequence[RequestRecord]) -> LatencySketches:
    """The latency sketches of ``records`` (no window: every successful request's latencies,
    every request's dispatch lag and queue wait): what a load worker ships."""
    cols = columns_of(records, measures.Columns)
    everything = np.ones(cols.id.shape, dtype=bool)
    return latency_sketches(cols, cols.outcome == "ok", everything)


def columns_of(records: Sequence[RequestRecord], cls: type[C]) -> C:
    """``records`` as columns of type ``cls`` (a ``measures.Columns``)."""

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


def _record_gaps(records: Sequence[RequestRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(request id, gap, tokens of the later chunk) of every gap of ``records``, in record
    order (``measures.itl_gaps``). Without several samples per request (n > 1) every record's
    chunks are joined into one array and differenced at once (no numpy call per record)."""
    multi = [r for r in records if len(r.chunk_times_s) > 1]
    if any(r.chunk_choice or len(r.chunk_tokens) != len(r.chunk_times_s) for r in multi):
        parts = [r.gap_arrays() for r in multi]
        sizes = [g.size for g, _ in parts]
        return (
            np.repeat(np.fromiter((r.id for r in multi), np.int64, len(multi)), sizes),
            np.concatenate([g for g, _ in parts]) if parts else np.zeros(0),
            np.concatenate([k for _, k in parts]) if parts else np.zeros(0, dtype=np.int64),
        )
    lens = np.fromiter((len(r.chunk_times_s) for r in multi), np.int64, len(multi))
    total = int(lens.sum())
    t = np.fromiter(
        itertools.chain.from_iterable(r.chunk_times_s for r in multi), np.float64, total
    )
    k = np.fromiter(itertools.chain.from_iterable(r.chunk_tokens for r in multi), np.int64, total)
    gaps = measures.itl_gaps(np.repeat(np.arange(len(multi)), lens), t)
    later = ~np.isnan(gaps)  # a record's first chunk has no gap
    ids = np.fromiter((r.id for r in multi), np.int64, len(multi))
    return np.repeat(ids, lens)[later], gaps[later], k[later]


def _array_itl_source(rid: np.ndarray, gaps: np.ndarray, toks: np.ndarray) -> ItlSource:
    def source(selected: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        keep = selected[rid] & ~np.isnan(gaps)  # a sample's first chunk has no gap
        yield gaps[keep], toks[keep]

    return source


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
