"""Property tests: random chunk boundaries, junk lines, missing [DONE], huge lines never crash
the stream parser, and a well-formed stream parses the same however it is split."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from profiler.load.stream import MAX_EVENT_BYTES, StreamState
from profiler.store.record import RequestRecord


def _rec() -> RequestRecord:
    return RequestRecord(id=0, workload="w", scenario="s", intended_start_s=0.0, send_s=0.0)


def _stream(n_tokens: int) -> bytes:
    parts = []
    for i in range(n_tokens):
        obj = {
            "choices": [
                {
                    "index": 0,
                    "text": f" t{i}",
                    "finish_reason": "length" if i == n_tokens - 1 else None,
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": i + 1},
        }
        parts.append(b"data: " + json.dumps(obj).encode() + b"\n\n")
    parts.append(
        b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": %d}}\n\n'
        % n_tokens
    )
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in points:
        out.append(data[prev:p])
        prev = p
    out.append(data[prev:])
    return [x for x in out if x]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 30), cuts=st.lists(st.integers(0, 10_000), max_size=40))
def test_any_split_parses_identically(n: int, cuts: list[int]) -> None:
    data = _stream(n)
    rec = _rec()
    state = StreamState(rec)
    for i, part in enumerate(_split(data, cuts)):
        state.feed(part, 0.001 * (i + 1))
    state.finish(1.0)
    state.close(1.0)
    assert rec.outcome == "ok"
    assert rec.output_tokens == n
    assert sum(rec.chunk_tokens) == n
    assert rec.chunks == n


junk_line = st.one_of(
    st.binary(max_size=200).filter(lambda b: b"\n" not in b),
    st.sampled_from(
        [
            b"data:",
            b"data: ",
            b"data: {",
            b"data: null",
            b"data: []",
            b"data: 42",
            b": ping",
            b"event: x",
            b"id: 3",
            b"retry: 10",
            b'data: {"choices": "x"}',
            b'data: {"choices": [null, 3]}',
            b'data: {"usage": "x", "choices": [{"delta": 5}]}',
        ]
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(junk_line, max_size=30),
    cuts=st.lists(st.integers(0, 10_000), max_size=20),
    done=st.booleans(),
)
def test_junk_never_raises(lines: list[bytes], cuts: list[int], done: bool) -> None:
    data = b"\n".join(lines) + (b"\ndata: [DONE]\n\n" if done else b"")
    rec = _rec()
    state = StreamState(rec)
    for part in _split(data, cuts):
        state.feed(part, 0.5)
    state.finish(1.0)
    state.close(1.0)
    assert rec.outcome in ("ok", "error")
    if rec.first_token_s is None:
        assert rec.outcome == "error"


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 10), keep=st.floats(0.0, 0.99))
def test_truncated_stream_is_error(n: int, keep: float) -> None:
    data = _stream(n)
    cut = int(len(data) * keep)
    truncated = data[:cut]
    if b'"finish_reason": "length"' in truncated:  # the last token arrived: a complete answer
        return
    rec = _rec()
    state = StreamState(rec)
    state.feed(truncated, 0.1)
    state.finish(0.2)
    state.close(0.2)
    assert rec.outcome == "error"


def test_huge_line_is_rejected_not_buffered_forever() -> None:
    state = StreamState(_rec())
    chunk = b"x" * (1 << 20)
    try:
        for _ in range(MAX_EVENT_BYTES // len(chunk) + 2):
            state.feed(chunk, 0.1)
    except ValueError as e:
        assert "longer than" in str(e)
    else:
        raise AssertionError("an endless line must be rejected")
