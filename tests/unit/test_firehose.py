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
