"""`infprof run` against the fake server's strict mode (a hosted API's validation: no token
ids, no field outside OpenAI's API), as a user runs it: the preflight finds what it takes, the
load sends only that, text prompts come out at the requested length, and a run whose requests
all fail stops early with one line and exit code 8."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from profiler.errors import EXIT_FAILING
from profiler.store.rundir import read_records
from tests.integration.faults_support import fake_server, infprof_cmd, run_cli

pytestmark = pytest.mark.integration


def _fake(*args: str) -> Iterator[str]:
    with fake_server(*args) as fake:
        yield fake.url


@pytest.fixture(scope="module")
def strict_url() -> Iterator[str]:
    yield from _fake("--strict", "--stop-after", "10", "--chat-template-tokens", "6")


def _infprof(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(infprof_cmd(*args), {**os.environ}, timeout_s=300)


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def test_strict_server_completions(strict_url: str, tmp_path: Path) -> None:
    res = _infprof(
        "run", "--endpoint", strict_url, "--num-requests", "24", "--concurrency", "4",
        "--input-len", "100", "--output-len", "16", "--out", str(tmp_path), "--run-id", "c",
        "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["requests"]["ok"] == 24, summary["errors"]
    caps = _manifest(tmp_path / "c")["server_capabilities"]
    assert caps["token_id_prompts"] is False and caps["length_controls"] is False
    assert caps["stream_usage"] == "final" and caps["prompt_fit"] == "calibrated"
    assert "server capabilities (probe): token-id prompts no" in res.stderr
    records = read_records(tmp_path / "c")
    # text prompts of the requested length (the fake counts words; calibrated at 1 per word)
    assert {r.prompt_tokens for r in records} == {100}
    assert {r.requested_prompt_tokens for r in records} == {100}
    # no ignore_eos: the fake "stops" after 10 tokens, and the records say so
    assert {r.output_tokens for r in records} == {10}
    assert {r.length_enforced for r in records} == {False}
    lengths = summary["lengths"]
    assert lengths["output_tokens"]["requested_mean"] == 16.0
    assert lengths["output_tokens"]["achieved_mean"] == 10.0
    assert lengths["not_enforced_requests"] == 24
    assert summary["tokens_estimated_requests"] == 0  # final usage = one token per chunk


def test_strict_server_chat(strict_url: str, tmp_path: Path) -> None:
    res = _infprof(
        "run", "--endpoint", strict_url, "--api", "chat", "--num-requests", "8",
        "--concurrency", "2", "--input-len", "60", "--output-len", "8", "--out", str(tmp_path),
        "--run-id", "h", "--json", "-q",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    caps = _manifest(tmp_path / "h")["server_capabilities"]
    assert caps["chat_template_tokens"] == 6
    # the chat content is cut so that the server's count, template included, is 60
    assert {r.prompt_tokens for r in read_records(tmp_path / "h")} == {60}


def test_requests_that_all_fail_stop_early_with_exit_8(strict_url: str, tmp_path: Path) -> None:
    """--server-kind vllm skips the probe, so token ids reach a server that refuses them."""
    res = _infprof(
        "run", "--endpoint", strict_url, "--server-kind", "vllm", "--num-requests", "500",
        "--concurrency", "4", "--out", str(tmp_path), "--run-id", "f", "-q",
    )  # fmt: skip
    assert res.returncode == EXIT_FAILING, (res.returncode, res.stderr)
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("infprof: run ended early (failing): the first 20 requests all failed")
    assert "Unrecognized request argument supplied" in last
    assert "cause: the server refuses fields outside the OpenAI API" in last
    assert "(fix: let infprof probe the server (drop --server-kind)" in last
    manifest = _manifest(tmp_path / "f")
    assert manifest["ended"] == "failing"
    assert manifest["server_capabilities"]["source"] == "server_kind"
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert summary["requests"]["error"] >= 20
    assert summary["requests"]["total"] < 100  # stopped, not the 500 planned
    assert summary["errors"]["top"][0]["count"] >= 20
    # and the console showed the most frequent errors
    assert "errors (most frequent first):" in res.stdout


@pytest.fixture
def flaky_url() -> Iterator[str]:
    yield from _fake("--error-rate", "0.3", "--seed", "1")


def test_a_run_with_some_errors_completes_with_exit_0_unless_over_the_ceiling(
    flaky_url: str, tmp_path: Path
) -> None:
    for url in (flaky_url,):
        base = ["run", "--endpoint", url, "--num-requests", "40", "--concurrency", "4", "-q"]
        ok = _infprof(*base, "--out", str(tmp_path), "--run-id", "a", "--json")
        assert ok.returncode == 0, ok.stderr
        assert 0 < json.loads(ok.stdout)["requests"]["error"] < 40
        over = _infprof(*base, "--out", str(tmp_path), "--run-id", "b", "--max-error-rate", "0.05")
        assert over.returncode == EXIT_FAILING, over.stderr
        assert "above --max-error-rate 0.05" in over.stderr
        assert _manifest(tmp_path / "b")["ended"] == "error_rate"
