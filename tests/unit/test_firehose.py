"""The benchmark's firehose fake streams exactly the requested tokens, with per-event usage,
to infprof's own client (so both benchmark clients read a well-formed stream)."""

from __future__ import annotations

import asyncio

import pytest

from profiler.clock import RunClock
from profiler.load.client import ClientOptions, StreamingClient
from profiler.load.workload import RequestSpec
from tests.bench.common import fake_server


@pytest.mark.timeout(60)
def test_firehose_streams_every_requested_token_with_usage() -> None:
    with fake_server(module="tests.fakes.firehose") as url:

        async def main() -> list:
            clock = RunClock()
            async with StreamingClient(ClientOptions(base_url=url, model="fake"), clock) as c:
                reqs = [
                    RequestSpec(
                        id=i,
                        scenario="s",
                        api="completions",
                        input_len=8,
                        output_len=20,
                        prompt_token_ids=[1] * 8,
                    )
                    for i in range(16)
                ]
                return list(
                    await asyncio.gather(
                        *(c.send(r, workload="w", intended_start_s=clock.now()) for r in reqs)
                    )
                )

        recs = asyncio.run(main())
    assert len(recs) == 16
    for r in recs:
        assert r.outcome == "ok", r.error
        assert r.output_tokens == 20 and r.chunks == 20 and r.chunk_tokens == [1] * 20
        assert r.prompt_tokens == 8 and not r.tokens_estimated


def _post(url: str, body: dict) -> tuple[int, bytes]:
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        url + "/v1/completions",
        data=json.dumps({"model": "fake", "stream": True, **body}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.timeout(60)
def test_firehose_usage_as_vllm_sends_it_and_n_above_one_refused() -> None:
    """The firehose streams one choice: with n > 1 it would send a quarter of a best-of-4 and
    call it complete, so it refuses (400, naming n). Usage as vLLM streams it for one choice:
    no ``usage`` key unless continuous usage is asked; the final event has no choices."""
    import json

    with fake_server(module="tests.fakes.firehose") as url:
        status, body = _post(url, {"prompt": [1] * 4, "max_tokens": 3, "n": 4})
        assert status == 400 and b"n" in body and b"firehose" in body
        opts = {"stream_options": {"include_usage": True, "continuous_usage_stats": False}}
        status, body = _post(url, {"prompt": [1] * 4, "max_tokens": 3, **opts})
    assert status == 200
    events = [
        json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: {")
    ]
    assert all("usage" not in e for e in events[:-1])
    assert events[-1]["choices"] == []
    assert events[-1]["usage"] == {"prompt_tokens": 4, "total_tokens": 7, "completion_tokens": 3}
