"""`infprof run --endpoint` against third-party OpenAI-compatible servers installed from the
package index, each started here on loopback and stopped after: GuideLLM's mock server
(completions and chat) and llama.cpp's server (llama-cpp-python, a tiny GGUF model written
with the ``gguf`` package). They live in ``.venv-compat`` (``scripts/ensure-compat-servers.sh``,
run by ``make test``); without it these tests skip and say how to make it.

What each test checks is what the "Servers tested" table in docs/run.md states: the capabilities the
preflight finds, that every request succeeds, and how the lengths came out."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from profiler.serving.ports import free_port
from profiler.store.rundir import read_records
from tests.integration.faults_support import run_endpoint, run_endpoint_json

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("COMPAT_VENV", ROOT / ".venv-compat"))
MAKE_IT = "run scripts/ensure-compat-servers.sh (make test does)"


def _bin(name: str) -> Path:
    path = VENV / "bin" / name
    if not path.exists():
        pytest.skip(f"{path} is missing: {MAKE_IT}")
    return path


def _start(argv: list[str], url: str, log: Path, ready_path: str) -> Iterator[str]:
    with log.open("w") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + ready_path, timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{argv[0]} did not start: {log.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def guidellm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = _bin("guidellm")
    port = free_port()
    argv = [str(exe), "mock-server", "--host", "127.0.0.1", "--port", str(port),
            "--model", "mock-model", "--ttft-ms", "5", "--itl-ms", "1"]  # fmt: skip
    log = tmp_path_factory.mktemp("guidellm") / "server.log"
    yield from _start(argv, f"http://127.0.0.1:{port}", log, "/health")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from profiler.serving.tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def llama_cpp_url(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Iterator[str]:
    python = _bin("python")
    d = tmp_path_factory.mktemp("llama-cpp")
    gguf = d / "tiny.gguf"
    subprocess.run(
        [str(python), str(ROOT / "tests" / "fakes" / "tiny_gguf.py"), str(tiny_dir), str(gguf)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    # one request at a time; without --interrupt_requests false a new request cuts the
    # stream in progress (llama-cpp-python's default)
    argv = [str(python), "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
            "--port", str(port), "--model_alias", "tiny-gguf", "--n_ctx", "2048",
            "--n_threads", "1", "--verbose", "false", "--interrupt_requests", "false"]  # fmt: skip
    yield from _start(argv, f"http://127.0.0.1:{port}", d / "server.log", "/v1/models")


def _run(url: str, out: Path, run_id: str, *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return run_endpoint_json(url, out, run_id, *args, timeout_s=300)


def test_guidellm_mock_completions(guidellm_url: str, tmp_path: Path) -> None:
    summary, caps = _run(
        guidellm_url, tmp_path, "c", "--num-requests", "30", "--concurrency", "4",
        "--input-len", "64", "--output-len", "16",
    )  # fmt: skip
    assert summary["requests"]["ok"] == 30, summary["errors"]
    assert caps["owned_by"] == "guidellm-mock"
    assert caps["token_id_prompts"] is False  # prompt: str | list[str]
    assert caps["length_controls"] is True  # accepted; it generates max_tokens anyway
    assert caps["stream_usage"] == "final" and caps["continuous_usage"] is False
    assert caps["n_samples"] is False  # n = 2 gives one choice
    # its mock tokenizer counts the spaces too: 2 tokens per word, 1 less per prompt
    assert caps["prompt_fit"] == "calibrated" and caps["tokens_per_word"] == 2.0
    lengths = summary["lengths"]
    assert abs(lengths["prompt_tokens"]["achieved_mean"] - 64) <= 1  # whole words
    assert lengths["output_tokens"]["exact"] == 30
    assert summary["tokens_estimated_requests"] == 0  # final usage = one token per event
    assert summary["tokens"]["output"] == 30 * 16


def test_guidellm_mock_chat(guidellm_url: str, tmp_path: Path) -> None:
    summary, caps = _run(
        guidellm_url, tmp_path, "h", "--api", "chat", "--num-requests", "20",
        "--concurrency", "4", "--input-len", "64", "--output-len", "16",
    )  # fmt: skip
    assert summary["requests"]["ok"] == 20, summary["errors"]
    assert caps["chat"] is True and caps["chat_template_tokens"] is not None
    assert abs(summary["lengths"]["prompt_tokens"]["achieved_mean"] - 64) <= 1
    assert summary["tokens_estimated_requests"] == 0
    assert summary["tokens"]["output"] == 20 * 16


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_llama_cpp_server(llama_cpp_url: str, tiny_dir: Path, tmp_path: Path, api: str) -> None:
    summary, caps = _run(
        llama_cpp_url, tmp_path, api, "--api", api, "--tokenizer", str(tiny_dir),
        "--num-requests", "8", "--concurrency", "2", "--input-len", "64", "--output-len", "8",
    )  # fmt: skip
    assert summary["requests"]["ok"] == 8, summary["errors"]
    assert caps["token_id_prompts"] is False  # prompt: str | list[str]
    assert caps["length_controls"] is True  # min_tokens honoured (ignore_eos ignored)
    assert caps["stream_usage"] == "none"  # no usage in its streams, stream_options or not
    assert caps["n_samples"] is False
    # its non-streaming answer counts the prompt: our tokenizer's count plus its BOS
    assert caps["prompt_fit"] == "tokenizer"
    if api == "completions":
        assert caps["text_added_tokens"] == 1.0
    else:
        assert caps["chat_template_tokens"] > 1
    records = read_records(tmp_path / api)
    assert all(r.length_enforced for r in records)
    assert all(r.prompt_tokens is None for r in records)  # it reports none while streaming


def test_guidellm_mock_with_token_ids_stops_early_and_says_why(
    guidellm_url: str, tmp_path: Path
) -> None:
    """The issue's first run: token-id prompts to a server that takes strings. Forced with
    --server-kind vllm (no probe), the run stops after the first 20 and says why (exit 8)."""
    from profiler.errors import EXIT_FAILING

    res = run_endpoint(
        guidellm_url, tmp_path, "f", "--server-kind", "vllm", "--num-requests", "500",
        "--concurrency", "4", "-q", timeout_s=300,
    )  # fmt: skip
    assert res.returncode == EXIT_FAILING, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    # requests still in flight when the run stops fail too: at least the first 20 are counted
    found = re.search(
        r"the first 20 requests all failed; most frequent error \((\d+)x\): HTTP 400: ", line
    )
    assert found is not None and int(found.group(1)) >= 20, line
    assert "cause: the server takes prompts only as text, not token ids" in line
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert summary["errors"]["top"][0]["count"] >= 20 and summary["errors"]["distinct"] == 1
    assert "errors (most frequent first):" in res.stdout
