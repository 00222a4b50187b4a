"""Rates over a measured window with warm-up and cool-down: a steady stream must read its true
token and request rates, whichever way the records reach the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiler.analysis.request_columns import RequestColumns
from profiler.analysis.request_summary import summarize_requests
from profiler.store.record import RequestRecord
from tests.fakes.synthetic_runs import run_of_records, streamed_record

RATE = 10.0  # requests per second, constant arrivals
N = 1200  # 120 s of load
TTFT = 0.1
OUT = 200  # output tokens per request, one per chunk
ITL = 0.05  # so E2E is about 10 s: a tenth of the window
PROMPT = 100
WARMUP = 10.0
COOLDOWN = 10.0


def _stream(*, chunks: bool = True, tokens_per_chunk: int = 1) -> list[RequestRecord]:
    out = []
    per = OUT // tokens_per_chunk
    for i in range(N):
        send = i / RATE
        times = [send + TTFT + k * ITL * tokens_per_chunk for k in range(per)]
        out.append(
            streamed_record(
                i,
                send,
                times,
                [tokens_per_chunk] * per,
                prompt_tokens=PROMPT,
                output_tokens=OUT,
                keep_chunks=chunks,
            )
        )
    return out


def _compacted(tmp_path: Path, recs: list[RequestRecord]) -> Path:
    return run_of_records(tmp_path, recs, "steady")


def _check_rates(s: dict) -> None:
    thr = s["throughput"]
    secs = s["window"]["seconds"]
    assert secs > 90
    assert thr["output_tokens_per_s"] == pytest.approx(RATE * OUT, rel=0.01)
    assert thr["total_tokens_per_s"] == pytest.approx(RATE * (OUT + PROMPT), rel=0.01)
    assert thr["requests_per_s"] == pytest.approx(RATE, rel=0.01)
    # the energy section divides by these: the tokens that arrived inside the window
    assert s["tokens"]["output"] == pytest.approx(RATE * OUT * secs, rel=0.01)
    assert s["tokens"]["prompt"] == pytest.approx(RATE * PROMPT * secs, rel=0.01)


def test_steady_stream_rates_from_records() -> None:
    s = summarize_requests(
        RequestColumns.from_records(_stream()),
        run_id="steady",
        warmup_s=WARMUP,
        cooldown_s=COOLDOWN,
    )
    _check_rates(s)
    # per-request means of the requests wholly inside the window (the planner's input/output
    # lengths): unchanged by the edges
    assert s["tokens"]["output_mean_per_request"] == OUT
    assert s["tokens"]["prompt_mean_per_request"] == PROMPT
    assert s["tokens"]["interpolated_requests"] == 0
    assert s["tokens"]["straddling_requests"] > 0


def test_steady_stream_rates_from_run_dir(tmp_path: Path) -> None:
    recs = _stream(tokens_per_chunk=4)
    want = summarize_requests(
        RequestColumns.from_records(recs), run_id="x", warmup_s=WARMUP, cooldown_s=COOLDOWN
    )
    got = summarize_requests(
        RequestColumns.from_run_dir(_compacted(tmp_path, recs)),
        run_id="x",
        warmup_s=WARMUP,
        cooldown_s=COOLDOWN,
    )
    _check_rates(got)
    assert got["throughput"] == want["throughput"]
    assert got["tokens"] == want["tokens"]


def test_without_chunk_times_tokens_are_interpolated_and_said_so(tmp_path: Path) -> None:
    recs = _stream(chunks=False)
    for cols in (
        RequestColumns.from_records(recs),
        RequestColumns.from_run_dir(_compacted(tmp_path, recs)),
    ):
        s = summarize_requests(cols, run_id="x", warmup_s=WARMUP, cooldown_s=COOLDOWN)
        _check_rates(s)  # evenly spaced tokens: the estimate is exact here
        assert s["tokens"]["interpolated_requests"] == s["tokens"]["straddling_requests"] > 0


def test_whole_run_counts_every_token_of_the_ok_requests() -> None:
    recs = _stream()
    recs[5].outcome = "error"
    s = summarize_requests(RequestColumns.from_records(recs), run_id="x")
    assert s["tokens"]["output"] == (N - 1) * OUT
    assert s["tokens"]["prompt"] == (N - 1) * PROMPT
    assert s["tokens"]["straddling_requests"] == 0
    assert s["throughput"]["requests_per_s"] == pytest.approx((N - 1) / s["window"]["seconds"])


def test_planner_reads_mean_lengths_not_window_totals(tmp_path: Path) -> None:
    """With a warm-up the window's token totals no longer divide by the ok count into a mean
    length; the measured point takes the per-request means (older summaries: the old ratio)."""
    import json

    from profiler.capacity.measured import point_from_run

    s = summarize_requests(
        RequestColumns.from_records(_stream()),
        run_id="steady",
        warmup_s=WARMUP,
        cooldown_s=COOLDOWN,
    )
    (tmp_path / "summary.json").write_text(json.dumps(s))
    p = point_from_run(tmp_path)
    assert p is not None
    assert p.input_len == PROMPT and p.output_len == OUT
    assert s["tokens"]["output"] / s["requests"]["ok"] != pytest.approx(OUT, rel=0.01)
    old = {**s, "tokens": {"prompt": 400, "output": 800}, "requests": {"ok": 4}}
    (tmp_path / "summary.json").write_text(json.dumps(old))
    p = point_from_run(tmp_path)
    assert p is not None and p.input_len == 100 and p.output_len == 200
