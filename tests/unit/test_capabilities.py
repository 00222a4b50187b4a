"""The capability preflight against the fake server in its vLLM-like and strict modes, the
``--server-kind`` presets, and the one-line errors when the endpoint cannot serve the
workload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from profiler.errors import EndpointError
from profiler.load.capabilities import KIND_PRESETS, Needs, from_kind
from profiler.load.client import ClientOptions
from profiler.load.preflight import preflight, resolve
from profiler.serving.endpoint import Endpoint
from tests.fakes.fake_openai import FakeConfig, serve_in_thread


def _endpoint(url: str) -> Endpoint:
    return Endpoint(url=url, model="fake-model")


def test_a_vllm_like_server_answers_the_first_probe() -> None:
    with serve_in_thread(FakeConfig()) as srv:
        caps = preflight(_endpoint(srv.url), Needs())
        assert srv.counters.requests == 1
    assert caps.token_id_prompts and caps.length_controls and caps.n_samples
    assert caps.stream_usage == "per_chunk" and caps.continuous_usage
    assert caps.fields_not_sent() == []
    assert [p.name for p in caps.probes] == ["vllm-full"]


def test_a_strict_server_gets_only_what_it_takes() -> None:
    with serve_in_thread(FakeConfig(strict=True)) as srv:
        caps = preflight(_endpoint(srv.url), Needs())
    assert caps.completions is True
    assert caps.token_id_prompts is False
    assert caps.length_controls is False
    assert caps.continuous_usage is False and caps.include_usage is True
    assert caps.stream_usage == "final"
    assert caps.n_samples is True
    # no tokenizer: the server's counts of 16 and 48 words size the text prompts
    assert caps.prompt_fit == "calibrated"
    assert caps.tokens_per_word == pytest.approx(1.0)
    assert caps.text_added_tokens == pytest.approx(0.0)
    assert set(caps.fields_not_sent()) == {
        "prompt as token ids",
        "ignore_eos",
        "min_tokens",
        "stream_options.continuous_usage_stats",
    }
    refused = {p.name: p.error for p in caps.probes if not p.ok}
    assert "Unrecognized request argument supplied: ignore_eos" in refused["vllm-full"]
    opts = caps.client_options(ClientOptions(base_url="http://x", model="m"))
    assert not opts.token_id_prompts and not opts.vllm_extras and not opts.continuous_usage


def test_chat_template_tokens_measured() -> None:
    with serve_in_thread(FakeConfig(strict=True, chat_template_tokens=7)) as srv:
        caps = preflight(_endpoint(srv.url), Needs(completions=False, chat=True))
    assert caps.chat is True
    assert caps.chat_template_tokens == pytest.approx(7.0)


def test_chat_template_tokens_of_a_vllm_like_server_without_a_tokenizer() -> None:
    with serve_in_thread(FakeConfig(chat_template_tokens=5)) as srv:
        caps = preflight(_endpoint(srv.url), Needs(chat=True))
    assert caps.token_id_prompts is True
    assert caps.chat_template_tokens == pytest.approx(5.0)  # a second chat probe calibrates
    assert [p.name for p in caps.probes] == ["vllm-full", "chat", "count-chat-48"]


def test_a_server_streaming_no_usage_is_asked_once_without_streaming() -> None:
    """llama.cpp's server (llama-cpp-python) streams no usage at all, but its non-streaming
    answer has one: the text prompts are still calibrated on the server's own counts."""
    with serve_in_thread(FakeConfig(strict=True, usage=False, chat_template_tokens=3)) as srv:
        caps = preflight(_endpoint(srv.url), Needs(chat=True))
    assert caps.stream_usage == "none"
    assert caps.prompt_fit == "calibrated" and caps.tokens_per_word == pytest.approx(1.0)
    assert caps.chat_template_tokens == pytest.approx(3.0)
    counted = [p for p in caps.probes if p.name.startswith("count-")]
    assert counted and all("stream: false" in p.sent for p in counted)


def test_a_tokenizer_that_is_not_the_servers_is_noted(tmp_path: Path) -> None:
    from profiler.serving.tinymodel import make_tiny_model

    tiny = make_tiny_model(tmp_path / "tiny")
    with serve_in_thread(FakeConfig(strict=True)) as srv:  # the fake counts words
        caps = preflight(_endpoint(srv.url), Needs(), tokenizer=str(tiny))
    assert caps.prompt_fit == "tokenizer"
    assert any("is --tokenizer the served model's" in n for n in caps.notes)


def test_every_probe_refused_is_one_line_with_the_servers_message() -> None:
    with serve_in_thread(FakeConfig(mode="http_400")) as srv, pytest.raises(EndpointError) as e:
        preflight(_endpoint(srv.url), Needs())
    assert "refused every probe request: HTTP 400: injected HTTP 400" in e.value.one_line()
    assert e.value.exit_code == 4


def test_n_ignored_is_refused_before_the_load() -> None:
    """GuideLLM's mock server takes n = 2 and streams one choice."""

    def post(path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        if isinstance(body.get("prompt"), list):
            return 400, b'{"error": {"message": "prompt: Input should be a valid string"}}'
        events = [
            b'data: {"choices":[{"index":0,"text":"a","finish_reason":null}]}',
            b'data: {"choices":[{"index":1,"text":"b","finish_reason":"stop"}]}',
            b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}',
            b"data: [DONE]",
        ]
        return 200, b"\n\n".join(events) + b"\n\n"

    ep = _endpoint("http://127.0.0.1:9")
    caps = preflight(ep, Needs(), post=post)
    assert caps.n_samples is False  # one finished choice
    with pytest.raises(EndpointError, match="does not return n > 1 choices") as e:
        preflight(ep, Needs(n_samples=True), post=post)
    assert "--n 1" in e.value.one_line()


def test_completions_refused_names_the_chat_api() -> None:
    def post(path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        if path.endswith("/v1/completions"):
            return 404, b'{"detail": "Not Found"}'
        return (
            200,
            b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}\n\n',
        )

    with pytest.raises(EndpointError) as e:
        preflight(_endpoint("http://127.0.0.1:9"), Needs(), post=post)
    assert "refuses /v1/completions (HTTP 404: Not Found)" in e.value.one_line()
    assert "--api chat" in e.value.one_line()


@pytest.mark.parametrize("kind", sorted(KIND_PRESETS))
def test_server_kind_sends_no_probe(kind: str) -> None:
    caps = resolve(_endpoint("http://127.0.0.1:9"), Needs(), server_kind=kind)  # nothing listens
    assert caps.source == "server_kind" and caps.server_kind == kind and caps.probes == []
    assert caps.token_id_prompts is (kind in ("vllm", "sglang", "trtllm"))


def test_a_launched_server_is_vllm() -> None:
    caps = resolve(_endpoint("http://127.0.0.1:9"), Needs(chat=True), launched=True)
    assert caps.source == "launched" and caps.token_id_prompts and caps.continuous_usage
    assert from_kind("openai").fields_not_sent() == [
        "prompt as token ids",
        "ignore_eos",
        "min_tokens",
        "stream_options.continuous_usage_stats",
    ]


def test_a_probe_failing_transiently_is_sent_again() -> None:
    calls: list[str] = []

    def post(path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        calls.append(path)
        if len(calls) == 1:
            return 503, b'{"error": {"message": "warming up"}}'
        events = [
            b'data: {"choices":[{"index":0,"text":"a","finish_reason":"length"}],'
            b'"usage":{"prompt_tokens":8,"completion_tokens":1}}',
            b'data: {"choices":[{"index":1,"text":"b","finish_reason":"length"}],'
            b'"usage":{"prompt_tokens":8,"completion_tokens":1}}',
            b'data: {"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":2}}',
        ]
        return 200, b"\n\n".join(events) + b"\n\n"

    caps = preflight(_endpoint("http://127.0.0.1:9"), Needs(), post=post)
    assert len(calls) == 2 and caps.probes[0].attempts == 2
    assert caps.token_id_prompts and caps.stream_usage == "per_chunk" and caps.n_samples


def test_a_server_failing_every_probe_without_refusing_gets_the_full_request() -> None:
    """5xx everywhere is no answer about what the server takes: the load goes ahead with
    vLLM's request, and the early stop speaks if it fails too."""
    with serve_in_thread(FakeConfig(mode="http_500")) as srv:
        caps = preflight(_endpoint(srv.url), Needs())
    assert caps.source == "probe_failed" and caps.token_id_prompts is True
    assert "every probe failed without an answer (HTTP 500: injected HTTP 500)" in caps.notes[0]
    assert all(p.attempts == 3 for p in caps.probes)


def test_a_feature_failing_with_500_every_try_is_refused() -> None:
    """llama-cpp-python validates requests with pydantic and answers HTTP 500 to a token-id
    prompt: the plain request works, the one-field change never does, so it is refused."""
    calls: list[dict[str, Any]] = []

    def post(path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        calls.append(body)
        if isinstance(body.get("prompt"), list):
            return 500, b'{"error": {"message": "prompt: Input should be a valid string"}}'
        return 200, b'data: {"choices":[{"index":0,"text":"x","finish_reason":"length"}]}\n\n'

    caps = preflight(_endpoint("http://127.0.0.1:9"), Needs(), post=post)
    assert caps.token_id_prompts is False
    assert caps.length_controls is True and caps.stream_usage == "none"
    ids_probe = next(p for p in caps.probes if p.name == "token-ids")
    assert ids_probe.attempts == 3 and ids_probe.status == 500
