"""The Parquet files of a run: requests.parquet, itl.parquet and samples.parquet, their
schemas, and the tables of records and samples (``store/compaction`` streams them; the
one-shot writers here serve synthetic runs and tests)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from profiler.errors import StorageError
from profiler.store.record import RequestRecord
from profiler.store.record_columns import chunks_of
from profiler.telemetry.sample import Sample

# itl.parquet holds mostly incompressible float gaps and is read whole by every summary:
# uncompressed decodes about 2.5x faster than zstd for 10-20% more bytes.
# Float columns are plain-encoded: dictionary pages only slow the decoding of random gaps.
ITL_COMPRESSION = "none"
ITL_DICTIONARY = ["request_id", "index", "tokens", "choice"]


def _write_table(
    path: Path, table: pa.Table, compression: str = "zstd", use_dictionary: bool | list[str] = True
) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp, compression=compression, use_dictionary=use_dictionary)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {e.strerror}", "free disk space") from None


def _schema(columns: str) -> pa.Schema:
    """A schema from ``"name:type ..."`` in column order (types: pyarrow's factories)."""
    return pa.schema([(n, getattr(pa, t)()) for n, t in (c.split(":") for c in columns.split())])


REQUEST_SCHEMA = _schema(
    "id:int64 workload:string scenario:string intended_start_s:float64 send_s:float64 "
    "first_token_s:float64 first_reasoning_s:float64 first_answer_s:float64 "
    "last_token_s:float64 end_s:float64 prompt_tokens:int64 output_tokens:int64 "
    "requested_output_tokens:int64 chunks:int64 n:int64 outcome:string http_status:int64 "
    "error:string tokens_estimated:bool_ worker:int64 ttft_s:float64 tpot_s:float64 "
    "e2e_s:float64 dispatch_lag_s:float64 queue_wait_s:float64 session_id:int64 "
    "turn:int64 cached_tokens:int64 requested_prompt_tokens:int64 length_enforced:bool_"
)

ITL_SCHEMA = _schema(
    "request_id:int64 index:int32 t_s:float64 gap_s:float64 tokens:int32 choice:int32"
)

SAMPLE_SCHEMA = _schema(
    "t_s:float64 source:string device:string metric:string value:float64 error:string"
)


def write_requests_parquet(path: Path, records: list[RequestRecord]) -> None:
    _write_table(path, requests_table(records))


def requests_table(records: list[RequestRecord]) -> pa.Table:
    """requests.parquet's rows of ``records``, in their order."""
    rows = [r.to_row() for r in records]
    cols = {name: [row[name] for row in rows] for name in REQUEST_SCHEMA.names}
    return pa.table(cols, schema=REQUEST_SCHEMA)


def write_itl_parquet(path: Path, records: list[RequestRecord]) -> None:
    _write_table(path, itl_table(records), ITL_COMPRESSION, ITL_DICTIONARY)


def itl_table(records: list[RequestRecord]) -> pa.Table:
    """One row per content chunk (``store/record_columns.chunks_of``): request id, index,
    arrival time, gap to the previous chunk of the same sample (null for a sample's first
    chunk), tokens and choice; each record's chunks contiguous, in the order of ``records``."""
    c = chunks_of(records)
    return pa.table(
        {
            "request_id": c.rid,
            "index": c.index,
            "t_s": c.t_s,
            "gap_s": pa.array(c.gap_s, mask=np.isnan(c.gap_s)),
            "tokens": c.tokens,
            "choice": c.choice,
        },
        schema=ITL_SCHEMA,
    )


def write_samples_parquet(path: Path, samples: list[Sample]) -> None:
    _write_table(path, samples_table(samples))


def samples_table(samples: list[Sample]) -> pa.Table:
    cols = {name: [getattr(s, name) for s in samples] for name in SAMPLE_SCHEMA.names}
    return pa.table(cols, schema=SAMPLE_SCHEMA)
