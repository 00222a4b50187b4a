"""A run's records as columns (numpy), from requests.parquet and itl.parquet or from the
records themselves (``store/record_columns``): the input of summary.json's request sections and of compare.

Works on columns so a million records with a hundred gaps each summarise in seconds; itl.parquet
is streamed a batch at a time (``ItlSource``), so memory follows the number of requests, never
the number of gaps. The per-request metrics over these columns are ``profiler.measures``'.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from profiler import measures
from profiler.store.record import RequestRecord
from profiler.store.record_columns import columns_of

# Rows of itl.parquet decoded at a time: memory stays bounded whatever the file's length
ITL_BATCH_ROWS = 1 << 20


class RequestColumns(measures.Columns):
    """``measures.Columns`` read from a run: its records, or requests.parquet and itl.parquet."""

    @classmethod
    def from_records(cls, records: Sequence[RequestRecord]) -> RequestColumns:
        return columns_of(records, cls)

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
