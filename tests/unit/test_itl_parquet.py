"""itl.parquet's ``gap_s`` is ``measures.itl_gaps`` (the one definition of ITL): a gap to the
previous chunk of the same request and sample, null for each sample's first chunk, for
requests with one sample and with several (n > 1, samples' chunks interleaved)."""

from __future__ import annotations

import numpy as np
import pytest

from profiler import measures
from profiler.store.parquet import itl_table
from profiler.store.record import RequestRecord


def _rec(i: int, times: list[float], choice: list[int] | None = None) -> RequestRecord:
    return RequestRecord(
        id=i,
        workload="w",
        scenario="s",
        intended_start_s=0.0,
        send_s=0.0,
        first_token_s=times[0] if times else None,
        last_token_s=times[-1] if times else None,
        end_s=(times[-1] if times else 0.0) + 0.01,
        prompt_tokens=10,
        output_tokens=len(times),
        chunk_times_s=list(times),
        chunk_tokens=[1] * len(times),
        chunk_choice=list(choice or []),
        n=1 + max(choice or [0]),
    )


def _records() -> list[RequestRecord]:
    return [
        _rec(0, [0.1, 0.3, 0.6]),
        _rec(1, []),  # no content chunk: no row
        # n = 2: choice 1's first chunk comes after two of choice 0's
        _rec(2, [0.2, 0.25, 0.4, 0.5, 0.9], [0, 0, 1, 0, 1]),
        _rec(3, [1.0, 1.5]),
        _rec(4, [2.0, 2.1, 2.2, 2.6], [1, 0, 1, 0]),  # both choices' first chunks null
    ]


def test_gap_s_is_measures_itl_gaps_for_n1_and_n_gt_1() -> None:
    records = _records()
    table = itl_table(records)
    got = np.asarray(table.column("gap_s").to_numpy(zero_copy_only=False), dtype=np.float64)
    assert table.column("gap_s").null_count == int(np.isnan(got).sum())
    want = np.concatenate(
        [
            measures.itl_gaps(
                np.zeros(len(r.chunk_times_s), dtype=np.int64),
                np.asarray(r.chunk_times_s),
                np.asarray(r.chunk_choice) if r.chunk_choice else None,
            )
            for r in records
            if r.chunk_times_s
        ]
    )
    np.testing.assert_allclose(got, want, equal_nan=True)
    # by hand: record 2's choice 1 starts at 0.4 (null), its next gap is 0.9 - 0.4
    rows = table.to_pylist()
    r2 = [(row["choice"], row["gap_s"]) for row in rows if row["request_id"] == 2]
    assert [c for c, _ in r2] == [0, 0, 1, 0, 1]
    assert r2[0][1] is None and r2[2][1] is None
    assert [g for _, g in r2 if g is not None] == pytest.approx([0.05, 0.25, 0.5])
    r4 = [row["gap_s"] for row in rows if row["request_id"] == 4]
    assert r4[:2] == [None, None] and r4[2:] == pytest.approx([0.2, 0.5])
    assert [row["gap_s"] for row in rows if row["request_id"] == 3] == [None, pytest.approx(0.5)]
    assert not any(row["request_id"] == 1 for row in rows)
