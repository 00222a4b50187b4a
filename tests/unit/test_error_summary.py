"""summary.json's ``errors`` (most frequent messages with counts) and ``lengths`` (requested
against achieved), from records and from requests.parquet, and their console lines."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from profiler.analysis.request_columns import RequestColumns
from profiler.analysis.request_summary import summarize_requests
from profiler.cli.render import render_summary
from profiler.store.parquet import write_itl_parquet, write_requests_parquet
from profiler.store.record import RequestRecord


def _records() -> list[RequestRecord]:
    out = []
    for i in range(12):
        ok = i < 6
        r = RequestRecord(
            id=i,
            workload="w",
            scenario="s",
            intended_start_s=i * 0.1,
            send_s=i * 0.1,
            end_s=i * 0.1 + 0.05,
            requested_prompt_tokens=128,
            requested_output_tokens=64,
            length_enforced=False,
        )
        if ok:
            r.first_token_s, r.last_token_s = i * 0.1 + 0.01, i * 0.1 + 0.05
            r.prompt_tokens = 128 if i < 4 else 127
            r.output_tokens = 64 if i % 2 else 20  # EOS before max_tokens
            r.chunks, r.chunk_times_s, r.chunk_tokens = 1, [r.first_token_s], [1]
        else:
            r.outcome = "error" if i < 11 else "timeout"
            r.error = "HTTP 429: slow down" if i < 9 else "HTTP 500: boom"
            if i == 11:
                r.error = "no complete response within 5 s"
        out.append(r)
    cancelled = RequestRecord(id=12, workload="w", scenario="s", intended_start_s=1.2)
    cancelled.outcome, cancelled.error = "cancelled", "cancelled before the response finished"
    return [*out, cancelled]


def _check(s: dict) -> None:
    assert s["errors"] == {
        "top": [
            {"message": "HTTP 429: slow down", "count": 3},
            {"message": "HTTP 500: boom", "count": 2},
            {"message": "no complete response within 5 s", "count": 1},
        ],
        "distinct": 3,
    }
    lengths = s["lengths"]
    assert lengths["prompt_tokens"] == {
        "requested_mean": 128.0,
        "achieved_mean": (4 * 128 + 2 * 127) / 6,
        "exact": 4,
        "requests": 6,
    }
    assert lengths["output_tokens"]["exact"] == 3
    assert lengths["output_tokens"]["achieved_mean"] == (3 * 64 + 3 * 20) / 6
    assert lengths["not_enforced_requests"] == 6 and lengths["enforced_requests"] == 0


def test_from_records() -> None:
    _check(summarize_requests(RequestColumns.from_records(_records()), run_id="r"))


def test_from_parquet(tmp_path: Path) -> None:
    recs = _records()
    write_requests_parquet(tmp_path / "requests.parquet", recs)
    write_itl_parquet(tmp_path / "itl.parquet", recs)
    _check(summarize_requests(RequestColumns.from_run_dir(tmp_path), run_id="r"))


def test_console_shows_errors_and_lengths() -> None:
    s = summarize_requests(RequestColumns.from_records(_records()), run_id="r")
    buf = io.StringIO()
    render_summary(s, console=Console(file=buf, width=160, color_system=None))
    out = buf.getvalue()
    assert "errors (most frequent first):" in out
    assert "     3x  HTTP 429: slow down" in out
    assert "     2x  HTTP 500: boom" in out
    assert "prompt tokens: requested mean 128.0, achieved mean 127.7 (4 of 6 exact)" in out
    assert "output tokens: requested mean 64.0, achieved mean 42.0 (3 of 6 exact)" in out
    assert "output lengths not enforced for 6 requests" in out


def test_a_clean_run_prints_neither() -> None:
    recs = [r for r in _records() if r.outcome == "ok"][:4]
    for r in recs:
        r.output_tokens, r.length_enforced = 64, True
    s = summarize_requests(RequestColumns.from_records(recs), run_id="r")
    assert s["errors"] == {"top": [], "distinct": 0}
    buf = io.StringIO()
    render_summary(s, console=Console(file=buf, width=160, color_system=None))
    assert "errors" not in buf.getvalue() and "requested mean" not in buf.getvalue()
