"""Text prompts of a requested token length (servers that refuse token-id prompts) and the
request bodies built for what an endpoint accepts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from profiler.load.client import ClientOptions, build_payload, text_prompter
from profiler.load.prompts import IdSource, TextPrompter, ids_to_words
from profiler.load.tokens import load_counter, load_offsets
from profiler.load.workload import RequestSpec


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from profiler.serving.tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


def test_tokenizer_text_has_exactly_the_requested_tokens(tiny: Path) -> None:
    """The tiny model's byte-level BPE splits most words into 2-3 tokens, so whole words
    cannot hit every length: the cut falls inside a word and is checked by encoding again."""
    count = load_counter(tiny)
    tp = TextPrompter(offsets=load_offsets(tiny))
    src = IdSource(np.random.default_rng(3))
    for n in (1, 2, 3, 7, 64, 128, 129, 500, 1500):
        for _ in range(5):
            text = tp.for_ids(src.take(n))
            assert count(text) == n, (n, text[:80])


def test_added_tokens_are_left_for_the_server(tiny: Path) -> None:
    count = load_counter(tiny)
    tp = TextPrompter(offsets=load_offsets(tiny))
    ids = IdSource(np.random.default_rng(1)).take(100)
    assert count(tp.for_ids(ids, added_tokens=1)) == 99  # the server's BOS makes it 100


def test_the_same_ids_give_the_same_text_and_a_shared_prefix_stays_shared(tiny: Path) -> None:
    tp = TextPrompter(offsets=load_offsets(tiny))
    src = IdSource(np.random.default_rng(2))
    prefix = src.take(200)
    a, b = tp.for_ids(prefix + src.take(50)), tp.for_ids(prefix + src.take(50))
    assert tp.for_ids(prefix + [5, 6]) == tp.for_ids(prefix + [5, 6])
    shared = len(ids_to_words(prefix))
    assert a[: shared - 20] == b[: shared - 20]


def test_calibrated_words_without_a_tokenizer() -> None:
    tp = TextPrompter(tokens_per_word=2.0)  # e.g. GuideLLM's mock counts spaces as tokens
    assert len(tp.fit("a b c d e f g h", 8).split()) == 4
    assert len(tp.fit("a b", 9).split()) == 4  # repeated when short, rounded to whole words
    assert tp.fit("a b", 0.2) == "a"  # never empty
    with pytest.raises(ValueError):
        TextPrompter()


def _req(**kw: object) -> RequestSpec:
    base: dict[str, object] = dict(
        id=0, scenario="s", api="completions", input_len=8, output_len=16,
        prompt_token_ids=list(range(20, 28)),
    )  # fmt: skip
    base.update(kw)
    return RequestSpec(**base)  # type: ignore[arg-type]


def test_default_body_is_vllms_full_request() -> None:
    path, body = build_payload(_req(), ClientOptions(base_url="http://x", model="m"))
    assert path == "/v1/completions"
    assert body["prompt"] == list(range(20, 28))
    assert body["ignore_eos"] is True and body["min_tokens"] == 16
    assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}


def test_refused_fields_are_not_sent_and_ids_become_text() -> None:
    """A strict server refuses a field it does not know whatever its value: the body must not
    carry ignore_eos, min_tokens or continuous_usage_stats at all."""
    opts = ClientOptions(
        base_url="http://x",
        model="m",
        vllm_extras=False,
        continuous_usage=False,
        token_id_prompts=False,
        tokens_per_word=1.0,
    )
    _, body = build_payload(_req(), opts, text_prompter(opts))
    assert set(body) == {"model", "max_tokens", "stream", "temperature", "stream_options", "prompt"}
    assert body["stream_options"] == {"include_usage": True}
    assert isinstance(body["prompt"], str) and len(body["prompt"].split()) == 8
    no_usage = ClientOptions(base_url="http://x", model="m", include_usage=False)
    assert "stream_options" not in build_payload(_req(), no_usage)[1]


def test_chat_content_cut_to_the_prompt_length_less_the_template(tiny: Path) -> None:
    count = load_counter(tiny)
    opts = ClientOptions(
        base_url="http://x", model="m", tokenizer=str(tiny), chat_template_tokens=12.0
    )
    words = ids_to_words(list(range(300)))
    req = _req(api="chat", input_len=100, prompt_token_ids=None,
               messages=[{"role": "user", "content": words}])  # fmt: skip
    path, body = build_payload(req, opts, text_prompter(opts))
    assert path == "/v1/chat/completions"
    assert count(body["messages"][0]["content"]) == 88
    # a conversation is sent as it is
    convo = [{"role": "system", "content": "be brief"}, {"role": "user", "content": words}]
    _, body = build_payload(_req(api="chat", messages=convo), opts, text_prompter(opts))
    assert body["messages"] == convo


def test_no_prompter_when_every_prompt_is_token_ids() -> None:
    assert text_prompter(ClientOptions(base_url="http://x", model="m")) is None
