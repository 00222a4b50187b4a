"""The fake OpenAI server streams exactly what it is asked for, and its faults are as named."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.fake_openai import FakeConfig, FakeOpenAIServer, run_in_thread, serve_in_thread

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def with_server(cfg: FakeConfig, fn: Callable[[FakeOpenAIServer], Awaitable[T]]) -> T:
    async def main() -> T:
        server = FakeOpenAIServer(cfg)
        await server.start()
        try:
            return await fn(server)
        finally:
            await server.stop()

    return asyncio.run(main())


async def stream(
    url: str, body: dict[str, Any], path: str = "/v1/completions"
) -> tuple[list[tuple[float, Any]], bool]:
    """(events as (seconds since send, parsed JSON or raw text), saw [DONE])."""
    events: list[tuple[float, Any]] = []
    done = False
    async with aiohttp.ClientSession() as s:
        t0 = time.perf_counter()
        async with s.post(url + path, json={"model": "fake-model", "stream": True, **body}) as r:
            assert r.status == 200, await r.text()
            async for raw in r.content:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    continue
                try:
                    events.append((time.perf_counter() - t0, json.loads(data)))
                except ValueError:
                    events.append((time.perf_counter() - t0, data))
    return events, done


def tokens(text: str | None) -> int:
    return len((text or "").split())


def usage_opts(continuous: bool = False) -> dict[str, Any]:
    return {"stream_options": {"include_usage": True, "continuous_usage_stats": continuous}}


def test_streams_exactly_max_tokens_with_usage() -> None:
    async def go(srv: FakeOpenAIServer) -> None:
        ev, done = await stream(
            srv.url, {"prompt": list(range(37)), "max_tokens": 25, **usage_opts()}
        )
        assert done
        chunks = [e for _, e in ev if e["choices"]]
        assert sum(tokens(c["choices"][0]["text"]) for c in chunks) == 25
        assert len(chunks) == 25
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
        final = ev[-1][1]
        assert final["choices"] == []
        assert final["usage"] == {"prompt_tokens": 37, "completion_tokens": 25, "total_tokens": 62}

    with_server(FakeConfig(), go)


def test_text_prompt_counts_words_and_no_usage_unless_asked() -> None:
    async def go(srv: FakeOpenAIServer) -> None:
        ev, done = await stream(srv.url, {"prompt": "one two three", "max_tokens": 3})
        assert done
        assert all("usage" not in e for _, e in ev)  # vLLM leaves the key out, not null
        assert srv.counters.prompt_tokens == 3
        assert srv.counters.generation_tokens == 3

    with_server(FakeConfig(), go)


@pytest.mark.parametrize(
    ("k", "max_tokens", "sizes"), [(4, 10, [4, 4, 2]), (5, 5, [5]), (3, 1, [1])]
)
def test_chunking_k_tokens_per_chunk(k: int, max_tokens: int, sizes: list[int]) -> None:
    async def go(srv: FakeOpenAIServer) -> None:
        ev, _ = await stream(srv.url, {"prompt": [1, 2], "max_tokens": max_tokens})
        assert [tokens(e["choices"][0]["text"]) for _, e in ev] == sizes

    with_server(FakeConfig(chunk_tokens=k), go)


def test_n_choices_interleaved_with_continuous_usage_per_choice() -> None:
    """As vLLM (completion/serving.py): every event's usage is the running count of its own
    choice and the prompt's length; the final usage event has no choices, the total over all
    choices and the prompt once."""

    async def go(srv: FakeOpenAIServer) -> None:
        ev, done = await stream(
            srv.url, {"prompt": [5] * 8, "max_tokens": 6, "n": 3, **usage_opts(continuous=True)}
        )
        assert done
        chunks = [e for _, e in ev if e["choices"]]
        assert [c["choices"][0]["index"] for c in chunks] == [0, 1, 2] * 3
        per_choice = {i: 0 for i in range(3)}
        for c in chunks:
            i = c["choices"][0]["index"]
            per_choice[i] += tokens(c["choices"][0]["text"])
            assert c["usage"] == {
                "prompt_tokens": 8,
                "total_tokens": 8 + per_choice[i],
                "completion_tokens": per_choice[i],
            }
        assert per_choice == {0: 6, 1: 6, 2: 6}
        final = ev[-1][1]
        assert final["choices"] == [] and final["object"] == "text_completion"
        assert "system_fingerprint" in final  # as vLLM stamps its final usage event
        assert final["usage"] == {"prompt_tokens": 8, "total_tokens": 26, "completion_tokens": 18}
        assert srv.counters.generation_tokens == 18

    with_server(FakeConfig(chunk_tokens=2), go)


def test_chat_n_choices_role_events_then_usage_per_choice() -> None:
    """As vLLM (chat_completion/serving.py): a role event per choice first (usage 0 completion
    tokens), then per-choice running counts; the final event sums the choices, prompt once."""

    async def go(srv: FakeOpenAIServer) -> None:
        body = {"messages": [{"role": "user", "content": "a b c d"}], "max_tokens": 5, "n": 2}
        ev, done = await stream(
            srv.url, {**body, **usage_opts(continuous=True)}, "/v1/chat/completions"
        )
        assert done
        chunks = [e for _, e in ev if e["choices"]]
        roles = chunks[:2]
        assert [c["choices"][0]["index"] for c in roles] == [0, 1]
        for c in roles:
            assert c["choices"][0]["delta"] == {"role": "assistant", "content": ""}
            assert c["usage"]["completion_tokens"] == 0 and c["usage"]["prompt_tokens"] == 4
        seen = {0: 0, 1: 0}
        for c in chunks[2:]:
            i = c["choices"][0]["index"]
            seen[i] += tokens(c["choices"][0]["delta"]["content"])
            assert c["usage"]["completion_tokens"] == seen[i]
            assert c["usage"]["prompt_tokens"] == 4
            assert c["usage"]["total_tokens"] == 4 + seen[i]
        assert seen == {0: 5, 1: 5}
        final = ev[-1][1]
        assert final["choices"] == [] and final["object"] == "chat.completion.chunk"
        assert final["usage"] == {"prompt_tokens": 4, "total_tokens": 14, "completion_tokens": 10}

    with_server(FakeConfig(chunk_tokens=2), go)


def test_client_counts_the_fakes_n4_stream_per_choice() -> None:
    """The client reads the fake's vLLM-shaped n=4 stream (both APIs) as it reads vLLM's:
    server usage for every chunk, per-choice deltas, the total of all samples."""
    from profiler.clock import RunClock
    from profiler.load.client import ClientOptions, StreamingClient
    from profiler.load.workload import RequestSpec

    async def go(srv: FakeOpenAIServer) -> list[Any]:
        clock = RunClock()
        async with StreamingClient(ClientOptions(base_url=srv.url, model="fake-model"), clock) as c:
            return [
                await c.send(
                    RequestSpec(
                        id=i,
                        scenario="s",
                        api=api,
                        input_len=8,
                        output_len=9,
                        n=4,
                        temperature=1.0,
                        text="a b c d e f g h",
                        prompt_token_ids=None if api == "chat" else [1] * 8,
                    ),
                    workload="w",
                    intended_start_s=clock.now(),
                )
                for i, api in enumerate(("completions", "chat"))
            ]

    for rec in with_server(FakeConfig(chunk_tokens=2), go):
        assert rec.outcome == "ok", rec.error
        assert rec.output_tokens == 36 and rec.prompt_tokens == 8
        assert not rec.tokens_estimated
        assert rec.chunk_tokens == [2, 2, 2, 2] * 4 + [1] * 4  # 9 = 2+2+2+2+1 per sample
        assert rec.chunk_choice == [0, 1, 2, 3] * 5
        assert len(rec.itl_shares()) == 36 - 4 * 2  # each sample's first chunk has 2 tokens


def test_chat_reasoning_then_content() -> None:
    async def go(srv: FakeOpenAIServer) -> None:
        body = {"messages": [{"role": "user", "content": "why is the sky blue"}], "max_tokens": 8}
        ev, done = await stream(srv.url, {**body, **usage_opts()}, "/v1/chat/completions")
        assert done
        deltas = [e["choices"][0]["delta"] for _, e in ev if e["choices"]]
        assert deltas[0] == {"role": "assistant", "content": ""}
        kinds = [next(iter(d)) for d in deltas[1:]]
        assert kinds == ["reasoning_content"] * 2 + ["content"] * 3
        assert sum(tokens(d.get("reasoning_content")) for d in deltas) == 3
        assert sum(tokens(d.get("content")) for d in deltas) == 5
        assert ev[-1][1]["usage"]["completion_tokens"] == 8
        assert ev[-1][1]["usage"]["prompt_tokens"] == 5
        assert ev[0][1]["object"] == "chat.completion.chunk"

    with_server(FakeConfig(chunk_tokens=2, reasoning_tokens=3), go)


def test_reasoning_field_can_be_renamed() -> None:
    async def go(srv: FakeOpenAIServer) -> None:
        body = {"messages": [{"role": "user", "content": "q"}], "max_tokens": 2}
        ev, _ = await stream(srv.url, body, "/v1/chat/completions")
        assert ev[1][1]["choices"][0]["delta"] == {"reasoning": " tok"}

    with_server(FakeConfig(reasoning_tokens=1, reasoning_field="reasoning"), go)


def test_ttft_then_itl_per_token() -> None:
    # lower bounds only: the fake may be late under load, never early
    async def go(srv: FakeOpenAIServer) -> None:
        ev, _ = await stream(srv.url, {"prompt": [1], "max_tokens": 6})
        times = [t for t, _ in ev]
        assert times[0] >= 0.060
        # chunks of 2 tokens: each due 2 x 15 ms after the previous one's deadline (absolute
        # deadlines: a late first chunk makes the next gap shorter, never the last one early)
        assert times[-1] >= 0.060 + 2 * 0.030 - 0.002
        assert len(times) == 3

    with_server(FakeConfig(ttft_ms=60, itl_ms=15, chunk_tokens=2), go)


def test_non_streaming_n_and_usage() -> None:
    async def go(srv: FakeOpenAIServer) -> dict[str, Any]:
        async with aiohttp.ClientSession() as s:
            body = {
                "model": "m",
                "messages": [{"role": "user", "content": "a b c"}],
                "max_tokens": 4,
                "n": 2,
            }
            async with s.post(srv.url + "/v1/chat/completions", json=body) as r:
                return dict(await r.json())

    out = with_server(FakeConfig(), go)
    assert [c["index"] for c in out["choices"]] == [0, 1]
    assert tokens(out["choices"][0]["message"]["content"]) == 4
    assert out["usage"] == {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}


async def statuses(url: str, count: int) -> list[int]:
    out = []
    async with aiohttp.ClientSession() as s:
        for _ in range(count):
            body = {"model": "m", "prompt": [1], "max_tokens": 2, "stream": True}
            async with s.post(url + "/v1/completions", json=body) as r:
                await r.read()
                out.append(r.status)
    return out


def test_error_rate_is_seeded() -> None:
    def run(seed: int) -> list[int]:
        return with_server(FakeConfig(error_rate=0.3, seed=seed), lambda srv: statuses(srv.url, 60))

    a, b, c = run(1), run(1), run(2)
    assert a == b
    assert a != c
    assert set(a) == {200, 500}
    assert 6 <= a.count(500) <= 30  # 18 expected


def test_http_error_modes_return_json() -> None:
    async def go(srv: FakeOpenAIServer) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s:
            body = {"model": "m", "prompt": [1], "max_tokens": 2, "stream": True}
            async with s.post(srv.url + "/v1/completions", json=body) as r:
                return r.status, await r.json()

    status, body = with_server(FakeConfig(mode="http_400"), go)
    assert status == 400 and body["error"]["code"] == 400
    status, body = with_server(FakeConfig(mode="http_500"), go)
    assert status == 500 and "injected" in body["error"]["message"]


def test_bad_request_values_are_400() -> None:
    async def go(srv: FakeOpenAIServer) -> list[int]:
        out = []
        async with aiohttp.ClientSession() as s:
            for body in (
                {"prompt": [1], "max_tokens": 0},
                {"prompt": [1], "n": 0, "max_tokens": 2},
            ):
                async with s.post(srv.url + "/v1/completions", json=body) as r:
                    out.append(r.status)
            async with s.post(srv.url + "/v1/completions", data=b"{nope") as r:
                out.append(r.status)
        return out

    assert with_server(FakeConfig(), go) == [400, 400, 400]


def test_drop_mid_stream_cuts_the_connection() -> None:
    async def go(srv: FakeOpenAIServer) -> tuple[int, bool]:
        received = 0
        async with aiohttp.ClientSession() as s:
            body = {"model": "m", "prompt": [1], "max_tokens": 10, "stream": True}
            async with s.post(srv.url + "/v1/completions", json=body) as r:
                try:
                    async for raw in r.content:
                        if raw.startswith(b"data: {"):
                            received += 1
                except aiohttp.ClientPayloadError:
                    return received, True
        return received, False

    received, broken = with_server(FakeConfig(mode="drop_mid_stream"), go)
    assert broken
    assert received == 5


def test_error_mode_drop_mid_stream_at_rate() -> None:
    async def go(srv: FakeOpenAIServer) -> int:
        cut = 0
        async with aiohttp.ClientSession() as s:
            for _ in range(10):
                body = {"model": "m", "prompt": [1], "max_tokens": 4, "stream": True}
                async with s.post(srv.url + "/v1/completions", json=body) as r:
                    assert r.status == 200
                    try:
                        await r.read()
                    except aiohttp.ClientPayloadError:
                        cut += 1
        return cut

    assert with_server(FakeConfig(error_rate=1.0, error_mode="drop_mid_stream"), go) == 10


def test_malformed_and_no_done() -> None:
    async def go(srv: FakeOpenAIServer) -> tuple[list[Any], bool]:
        ev, done = await stream(srv.url, {"prompt": [1], "max_tokens": 3})
        return [e for _, e in ev], done

    events, done = with_server(FakeConfig(mode="malformed"), go)
    assert done and any(isinstance(e, str) for e in events)
    assert sum(tokens(e["choices"][0]["text"]) for e in events if isinstance(e, dict)) == 3
    events, done = with_server(FakeConfig(mode="no_done"), go)
    assert not done and len(events) == 3


def test_hang_sends_headers_then_nothing() -> None:
    async def go(srv: FakeOpenAIServer) -> int:
        async with aiohttp.ClientSession() as s:
            body = {"model": "m", "prompt": [1], "max_tokens": 3, "stream": True}
            async with s.post(srv.url + "/v1/completions", json=body) as r:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(r.content.readany(), 0.3)
                return r.status

    assert with_server(FakeConfig(mode="hang"), go) == 200


def test_max_concurrency_answers_429() -> None:
    async def go(srv: FakeOpenAIServer) -> list[int]:
        async with aiohttp.ClientSession() as s:
            body = {"model": "m", "prompt": [1], "max_tokens": 5, "stream": True}
            first = await s.post(srv.url + "/v1/completions", json=body)
            try:
                second = await s.post(srv.url + "/v1/completions", json=body)
                await second.read()
                await first.read()
                third = await s.post(srv.url + "/v1/completions", json=body)
                await third.read()
                return [first.status, second.status, third.status]
            finally:
                first.release()

    assert with_server(FakeConfig(max_concurrency=1, itl_ms=20), go) == [200, 429, 200]


def test_api_key_is_enforced() -> None:
    async def go(srv: FakeOpenAIServer) -> list[int]:
        out = []
        async with aiohttp.ClientSession() as s:
            for headers in ({}, {"Authorization": "Bearer sekret"}):
                async with s.get(srv.url + "/v1/models", headers=headers) as r:
                    out.append(r.status)
        return out

    assert with_server(FakeConfig(api_key="sekret"), go) == [401, 200]


def test_health_models_and_metrics_in_a_thread() -> None:
    with serve_in_thread(FakeConfig(model="tiny", chunk_tokens=3)) as srv:
        assert urllib.request.urlopen(srv.url + "/health").status == 200
        models = json.loads(urllib.request.urlopen(srv.url + "/v1/models").read())
        assert models["object"] == "list" and models["data"][0]["id"] == "tiny"
        asyncio.run(stream(srv.url, {"prompt": [1, 2, 3, 4], "max_tokens": 7, "n": 2}))
        text = urllib.request.urlopen(srv.url + "/metrics").read().decode()
    values = {
        s.name: (s.value, s.labels)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert values["vllm:generation_tokens_total"][0] == 14
    assert values["vllm:prompt_tokens_total"][0] == 4
    assert values["vllm:num_requests_running"][0] == 0
    assert values["vllm:num_requests_waiting"][0] == 0
    assert values["vllm:num_preemptions_total"][0] == 0
    assert 0 <= values["vllm:kv_cache_usage_perc"][0] <= 1
    assert values["vllm:generation_tokens_total"][1] == {"engine": "0", "model_name": "tiny"}


def test_run_in_thread_yields_url() -> None:
    with run_in_thread() as url:
        assert url.startswith("http://127.0.0.1:")
        assert urllib.request.urlopen(url + "/health").status == 200


def test_command_line_prints_ready() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.fake_openai", "--port", "0", "--model", "cli-model"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY http://127.0.0.1:")
        url = line.split()[1]
        models = json.loads(urllib.request.urlopen(url + "/v1/models", timeout=10).read())
        assert models["data"][0]["id"] == "cli-model"
    finally:
        proc.kill()
        proc.wait()


def test_mode_can_change_between_requests() -> None:
    async def go(srv: FakeOpenAIServer) -> list[int]:
        first = await statuses(srv.url, 1)
        srv.config.mode = "http_500"
        second = await statuses(srv.url, 1)
        srv.config.mode = "ok"
        return first + second + await statuses(srv.url, 1)

    assert with_server(FakeConfig(), go) == [200, 500, 200]


def test_stop_does_not_wait_for_hanging_streams() -> None:
    async def go() -> float:
        srv = FakeOpenAIServer(FakeConfig(mode="hang"))
        await srv.start()
        async with aiohttp.ClientSession() as s:
            body = {"model": "m", "prompt": [1], "max_tokens": 3, "stream": True}
            resp = await s.post(srv.url + "/v1/completions", json=body)
            t0 = time.perf_counter()
            await srv.stop()
            resp.close()
            return time.perf_counter() - t0

    assert asyncio.run(go()) < 5.0
