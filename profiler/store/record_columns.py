"""``measures.Columns`` of ``RequestRecord``s held in memory: a load worker's batch (its
latency sketches, ``sketch_records``) or a run's journal (``analysis/request_columns``)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
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


@dataclass(frozen=True)
class Chunks:
    """Every content chunk of some records as columns, each record's chunks contiguous and in
    record order (the rows of itl.parquet)."""

    rid: np.ndarray  # int64: the request's id
    index: np.ndarray  # int32: the chunk's position in its request
    t_s: np.ndarray  # float64: arrival time
    tokens: np.ndarray  # int32: tokens the chunk carried
    choice: np.ndarray  # int32: its sample (0 without n > 1)
    gap_s: np.ndarray  # float64: ``measures.itl_gaps``; NaN for a sample's first chunk


def chunks_of(records: Sequence[RequestRecord]) -> Chunks:
    """The chunks of ``records``, built column-wise: one numpy call per column, not per record.
    The gaps are ``measures.itl_gaps``, per sample for records with several (n > 1). A record
    whose chunk lists differ in length keeps its first ``min`` chunks (``gap_arrays``' rule)."""
    recs = [r for r in records if r.chunk_times_s]
    # attribute and length passes run in C (map), the per-record cost of a compaction batch
    times = list(map(attrgetter("chunk_times_s"), recs))
    toks = list(map(attrgetter("chunk_tokens"), recs))
    choices = list(map(attrgetter("chunk_choice"), recs))
    lens = np.fromiter(map(len, times), np.int64, len(recs))
    n_choice = np.fromiter(map(len, choices), np.int64, len(recs))
    even = np.array_equal(lens, np.fromiter(map(len, toks), np.int64, len(recs)))
    if not (even and np.all((n_choice == 0) | (n_choice == lens))):
        # rare: cut each record to its shortest list
        cut = [
            min(len(t), len(k), len(c or t)) for t, k, c in zip(times, toks, choices, strict=True)
        ]
        times = [t[:n] for t, n in zip(times, cut, strict=True)]
        toks = [k[:n] for k, n in zip(toks, cut, strict=True)]
        choices = [c[:n] for c, n in zip(choices, cut, strict=True)]
        lens = np.array(cut, dtype=np.int64)
    total = int(lens.sum())
    starts = np.zeros(len(recs), dtype=np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    group = np.repeat(np.arange(len(recs), dtype=np.int64), lens)  # a record's chunks
    t = np.fromiter(itertools.chain.from_iterable(times), np.float64, total)
    choice = np.zeros(total, dtype=np.int32)
    gaps = measures.itl_gaps(group, t)
    multi = np.fromiter(map(bool, choices), bool, len(recs))  # n > 1
    if multi.any():  # n > 1: each sample's chunks are their own sequence
        rows = np.repeat(multi, lens)
        choice[rows] = np.fromiter(
            itertools.chain.from_iterable(itertools.compress(choices, multi.tolist())),
            np.int32,
            int(rows.sum()),
        )
        gaps[rows] = measures.itl_gaps(group[rows], t[rows], choice[rows])
    return Chunks(
        rid=np.repeat(np.fromiter(map(attrgetter("id"), recs), np.int64, len(recs)), lens),
        index=(np.arange(total, dtype=np.int64) - np.repeat(starts, lens)).astype(np.int32),
        t_s=t,
        tokens=np.fromiter(itertools.chain.from_iterable(toks), np.int32, total),
        choice=choice,
        gap_s=gaps,
    )


def _record_gaps(records: Sequence[RequestRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(request id, gap, tokens of the later chunk) of every gap of ``records``, in record
    order."""
    c = chunks_of(records)
    later = ~np.isnan(c.gap_s)  # a sample's first chunk has no gap
    return c.rid[later], c.gap_s[later], c.tokens[later]


def _array_itl_source(rid: np.ndarray, gaps: np.ndarray, toks: np.ndarray) -> ItlSource:
    def source(selected: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        keep = selected[rid] & ~np.isnan(gaps)  # a sample's first chunk has no gap
        yield gaps[keep], toks[keep]

    return source


def _record_chunks(
    records: list[RequestRecord], selected: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(request id, arrival time, tokens) of every chunk of the selected records."""
    c = chunks_of([r for r in records if selected[r.id]])
    return c.rid, c.t_s, c.tokens
