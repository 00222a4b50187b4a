"""Child: the smallest useful streaming client, the floor for any asyncio + aiohttp client.

One aiohttp session, ``CONCURRENCY`` streams, and per SSE event only what every benchmark
client must do: split lines, parse the JSON, take a timestamp. No records, no files, no
summary. Its marginal CPU per token is what infprof and `vllm bench serve` cannot go below
on this loop and HTTP stack (the kernel's receive per TCP segment and aiohttp's per-chunk
path are in it).

Usage: python tests/bench/_child_floor.py URL NUM CONCURRENCY INPUT OUTPUT
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp
from pydantic_core import from_json


def main() -> None:
    url, num, conc, inp, outp = sys.argv[1:6]
    body = json.dumps(
        {
            "model": "fake",
            "prompt": [1] * int(inp),
            "max_tokens": int(outp),
            "stream": True,
            "ignore_eos": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
    ).encode()
    tokens = 0
    stamps: list[float] = []

    async def load() -> None:
        nonlocal tokens
        sem = asyncio.Semaphore(int(conc))
        async with aiohttp.ClientSession(read_bufsize=1 << 17) as session:

            async def one() -> None:
                nonlocal tokens
                async with (
                    sem,
                    session.post(
                        url.rstrip("/") + "/v1/completions",
                        data=body,
                        headers={"Content-Type": "application/json"},
                    ) as resp,
                ):
                    buf = b""
                    async for chunk in resp.content.iter_any():
                        t = time.perf_counter()
                        *lines, buf = (buf + chunk).split(b"\n")
                        for line in lines:
                            if line.startswith(b"data:"):
                                payload = line[5:].strip()
                                if payload and payload != b"[DONE]":
                                    event = from_json(payload)
                                    if event.get("choices"):
                                        tokens += 1
                                        stamps.append(t)

            await asyncio.gather(*(one() for _ in range(int(num))))

    c0 = time.process_time()
    t0 = time.perf_counter()
    asyncio.run(load())
    print(
        json.dumps(
            {
                "cpu_s": time.process_time() - c0,
                "wall_s": time.perf_counter() - t0,
                "tokens": tokens,
            }
        )
    )


if __name__ == "__main__":
    main()
