"""Fault matrix, request rows: timeouts, HTTP 4xx/5xx, connection refused, connections reset
mid-stream, malformed and unterminated SSE. Each failed request is a record with its outcome,
HTTP status and error; the run goes on; summary.json has the error rate. ``infprof run`` as a
subprocess against the fake OpenAI server (in this process, so its counters can be compared)."""

from __future__ import annotations

import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from profiler.errors import EXIT_FAILING
from tests.fakes.fake_openai import FakeConfig, serve_in_thread
from tests.integration.faults_support import (
    cli_env,
    infprof_cmd,
    journal_records,
    one_error_line,
    read_json,
    run_cli,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def run_against(
    tmp_path: Path, url: str, *args: str, num: int = 40
) -> tuple[int, str, list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    out = tmp_path / "runs"
    res = run_cli(
        infprof_cmd(
            "run", "--endpoint", url, "--num-requests", str(num), "--input-len", "8",
            "--output-len", "10", "--no-telemetry", "--out", str(out), "--run-id", "r", "-q",
            # the fake is vLLM-like: no capability probe, whose requests the fake would count
            "--server-kind", "vllm", *args,
        ),
        cli_env(tmp_path / "home"),
    )  # fmt: skip
    run_dir = out / "r"
    records = journal_records(run_dir)
    summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").exists() else {}
    return res.returncode, res.stderr, records, summary, read_json(run_dir / "manifest.json")


def check_completed(rc: int, stderr: str, records: list[Any], manifest: dict[str, Any]) -> None:
    assert rc == 0, stderr
    assert "Traceback" not in stderr
    assert manifest["ended"] == "completed"
    assert manifest["requests_sent"] == manifest["requests_recorded"] == len(records)


def test_request_timeout_against_a_hanging_stream(tmp_path: Path) -> None:
    with serve_in_thread(FakeConfig(mode="hang")) as fake:
        t0 = time.monotonic()
        rc, err, records, summary, manifest = run_against(
            tmp_path, fake.url, "--request-timeout", "0.5", "--concurrency", "4", num=8
        )
        took = time.monotonic() - t0
    check_completed(rc, err, records, manifest)
    assert len(records) == 8
    for r in records:
        assert r["outcome"] == "timeout" and r["http_status"] == 200
        assert r["error"] == "no complete response within 0.5 s"
        assert 0.45 <= r["end_s"] - r["send_s"] < 3
    assert summary["requests"]["timeout"] == 8 and summary["error_rate"] == 1.0
    assert took < 30


@pytest.mark.parametrize(
    "config,statuses",
    [
        (FakeConfig(error_rate=0.3, seed=1), {200, 500}),
        (FakeConfig(max_concurrency=1, itl_ms=2), {200, 429}),
    ],
    ids=["5xx-at-30%", "429"],
)
def test_http_errors_are_records(tmp_path: Path, config: FakeConfig, statuses: set[int]) -> None:
    with serve_in_thread(config) as fake:
        rc, err, records, summary, manifest = run_against(
            tmp_path, fake.url, "--concurrency", "4", num=40
        )
        server_statuses = dict(fake.counters.statuses)
    check_completed(rc, err, records, manifest)
    assert len(records) == 40
    seen = Counter(r["http_status"] for r in records)
    assert set(seen) == statuses
    assert dict(seen) == server_statuses  # what the server answered, request by request
    for r in records:
        if r["http_status"] == 200:
            assert r["outcome"] == "ok" and r["error"] is None
        else:
            assert r["outcome"] == "error"
            assert r["error"].startswith(f"HTTP {r['http_status']}: ")
    errors = sum(n for s, n in seen.items() if s != 200)
    assert summary["requests"]["error"] == errors
    assert summary["error_rate"] == pytest.approx(errors / 40)


def test_every_request_refused_stops_early(tmp_path: Path) -> None:
    """HTTP 400 for every request: the first 20 all fail, the run stops (exit 8) with one line
    naming the most frequent error; the records are data, as always."""
    with serve_in_thread(FakeConfig(mode="http_400")) as fake:
        rc, err, records, summary, manifest = run_against(
            tmp_path, fake.url, "--concurrency", "4", num=200
        )
    assert rc == EXIT_FAILING, err
    assert manifest["ended"] == "failing"
    assert manifest["requests_sent"] == manifest["requests_recorded"] == len(records)
    refused = [r for r in records if r["outcome"] == "error"]
    assert 20 <= len(refused) <= len(records) < 40
    assert all(r["error"] == "HTTP 400: injected HTTP 400" for r in refused)
    # those in flight when it stopped are cancelled
    assert all(r["outcome"] == "cancelled" for r in records if r not in refused)

    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            "infprof: run ended early (failing): the first 20 requests all failed; most frequent "
            "error (20x): HTTP 400: injected HTTP 400"
        )
    )
    assert summary["errors"]["top"][0] == {"message": "HTTP 400: injected HTTP 400", "count": 20}


def test_connection_refused_from_the_start(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = run_cli(
        infprof_cmd(
            "run", "--endpoint", f"http://127.0.0.1:{port}", "--num-requests", "5",
            "--out", str(tmp_path / "runs"), "-q",
        ),
        cli_env(tmp_path / "home"),
    )  # fmt: skip
    assert res.returncode == 4, res.stderr
    line = one_error_line(res.stderr)
    assert line.startswith(f"infprof: error: cannot reach http://127.0.0.1:{port}: ")
    assert "Connection refused" in line and "fix: start the server or fix --endpoint" in line
    assert res.stderr.strip() == line


def test_connection_reset_mid_stream(tmp_path: Path) -> None:
    """Every stream is cut after half its tokens: errors in a row from a server that is still
    up do not end the run as 'endpoint lost'; the first 20 all failing stop it early."""
    with serve_in_thread(FakeConfig(mode="drop_mid_stream", itl_ms=1)) as fake:
        rc, err, records, summary, manifest = run_against(
            tmp_path, fake.url, "--concurrency", "4", num=40
        )
    assert rc == EXIT_FAILING, err
    assert manifest["ended"] == "failing"
    assert "cause: the server (or a proxy) closes streams before they end" in err
    assert 20 <= len(records) < 40
    assert sum(r["outcome"] == "error" for r in records) >= 20
    for r in records:
        if r["outcome"] == "cancelled":  # in flight when the run stopped
            continue
        assert r["outcome"] == "error" and r["http_status"] == 200, r
        assert r["first_token_s"] is not None and r["chunks"] >= 1  # it got part of the answer
        assert r["error"]
    assert summary["error_rate"] == 1.0


def test_mixed_resets_and_successes(tmp_path: Path) -> None:
    with serve_in_thread(
        FakeConfig(error_rate=0.2, error_mode="drop_mid_stream", itl_ms=1, seed=3)
    ) as fake:
        rc, err, records, summary, manifest = run_against(
            tmp_path, fake.url, "--concurrency", "4", num=50
        )
    check_completed(rc, err, records, manifest)
    outcomes = Counter(r["outcome"] for r in records)
    assert outcomes["ok"] > 0 and outcomes["error"] > 0 and sum(outcomes.values()) == 50
    assert summary["error_rate"] == pytest.approx(outcomes["error"] / 50)


# ---------------------------------------------------------------------- 7: bad SSE end to end
def test_malformed_events_are_skipped_and_noted(tmp_path: Path) -> None:
    with serve_in_thread(FakeConfig(mode="malformed", itl_ms=1)) as fake:
        rc, err, records, summary, manifest = run_against(
            tmp_path, fake.url, "--concurrency", "4", num=20
        )
    check_completed(rc, err, records, manifest)
    assert len(records) == 20
    for r in records:
        assert r["outcome"] == "ok" and r["output_tokens"] == 10
        assert r["error"] is not None and "malformed SSE events skipped" in r["error"]
    assert summary["error_rate"] == 0.0


def test_stream_without_done_marker(tmp_path: Path) -> None:
    """No ``[DONE]``, but every choice finished and the usage came: a complete answer."""
    with serve_in_thread(FakeConfig(mode="no_done", itl_ms=1)) as fake:
        rc, err, records, summary, manifest = run_against(
            tmp_path, fake.url, "--concurrency", "4", num=20
        )
    check_completed(rc, err, records, manifest)
    assert len(records) == 20
    assert all(r["outcome"] == "ok" and r["output_tokens"] == 10 for r in records)
    assert summary["requests"]["ok"] == 20
