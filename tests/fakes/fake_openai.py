"""A fake OpenAI-compatible server for tests and benchmarks (never used by the profiler).

Streams exactly ``max_tokens`` tokens per choice with a configurable TTFT and per-token ITL,
``chunk_tokens`` tokens per SSE chunk, ``n`` interleaved choices, optional reasoning content
(chat), usage (final and continuous), errors at a seeded rate and fault modes. Serves
``/health``, ``/v1/models`` and a vLLM-like ``/metrics``.

    python -m tests.fakes.fake_openai --port 0 --ttft-ms 50 --itl-ms 10   # prints READY <url>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

MODES = ("ok", "http_500", "http_400", "drop_mid_stream", "malformed", "no_done", "hang")


@dataclass
class FakeConfig:
    model: str = "fake-model"
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    chunk_tokens: int = 1
    error_rate: float = 0.0
    reasoning_tokens: int = 0
    mode: str = "ok"
    max_concurrency: int | None = None
    seed: int = 0
    api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 0


@dataclass
class _Counters:
    running: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    requests: int = 0
    errors: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)


class FakeOpenAIServer:
    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self.counters = _Counters()
        self._rng = random.Random(self.config.seed)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v1/completions", self._generate)
        app.router.add_post("/v1/chat/completions", self._generate)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ endpoints
    async def _health(self, _r: web.Request) -> web.Response:
        return web.Response(text="")

    def _authorised(self, request: web.Request) -> bool:
        return (
            self.config.api_key is None
            or request.headers.get("Authorization") == f"Bearer {self.config.api_key}"
        )

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": self.config.model, "object": "model", "owned_by": "fake"}],
            }
        )

    async def _metrics(self, _r: web.Request) -> web.Response:
        c, m = self.counters, self.config.model
        lab = f'{{engine="0",model_name="{m}"}}'
        text = (
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{lab} {c.running}\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{lab} 0\n"
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f"vllm:kv_cache_usage_perc{lab} {min(c.running / 64, 1.0)}\n"
            "# TYPE vllm:num_preemptions_total counter\n"
            f"vllm:num_preemptions_total{lab} 0\n"
            "# TYPE vllm:prompt_tokens_total counter\n"
            f"vllm:prompt_tokens_total{lab} {c.prompt_tokens}\n"
            "# TYPE vllm:generation_tokens_total counter\n"
            f"vllm:generation_tokens_total{lab} {c.generation_tokens}\n"
            "# TYPE vllm:request_success_total counter\n"
            f'vllm:request_success_total{{engine="0",finished_reason="length",model_name="{m}"}} {c.requests - c.errors}\n'
        )
        return web.Response(text=text, content_type="text/plain")

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        cfg = self.config
        if not self._authorised(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
        self.counters.requests += 1
        mode = cfg.mode
        if mode == "ok" and cfg.error_rate and self._rng.random() < cfg.error_rate:
            mode = "http_500"
        if cfg.max_concurrency is not None and self.counters.running >= cfg.max_concurrency:
            self.counters.errors += 1
            return web.json_response({"error": {"message": "too many requests"}}, status=429)
        if mode in ("http_500", "http_400"):
            self.counters.errors += 1
            status = 500 if mode == "http_500" else 400
            return web.json_response(
                {"error": {"message": f"injected HTTP {status}", "code": status}}, status=status
            )
        chat = request.path.endswith("/chat/completions")
        prompt = body.get("messages") if chat else body.get("prompt")
        prompt_tokens = _count_prompt(prompt)
        max_tokens = int(body.get("max_tokens") or 16)
        n = int(body.get("n") or 1)
        opts = body.get("stream_options") or {}
        if not body.get("stream"):
            return await self._non_stream(chat, prompt_tokens, max_tokens, n)
        self.counters.running += 1
        self.counters.prompt_tokens += prompt_tokens
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        try:
            await self._stream(
                resp,
                chat,
                mode,
                prompt_tokens,
                max_tokens,
                n,
                bool(opts.get("include_usage")),
                bool(opts.get("continuous_usage_stats")),
            )
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.counters.running -= 1
        return resp

    async def _non_stream(
        self, chat: bool, prompt_tokens: int, max_tokens: int, n: int
    ) -> web.Response:
        await asyncio.sleep(
            (self.config.ttft_ms + self.config.itl_ms * max(max_tokens - 1, 0)) / 1000
        )
        self.counters.prompt_tokens += prompt_tokens
        self.counters.generation_tokens += max_tokens * n
        text = " tok" * max_tokens
        choices = [
            (
                {"index": i, "message": {"role": "assistant", "content": text}}
                if chat
                else {"index": i, "text": text}
            )
            | {"finish_reason": "length"}
            for i in range(n)
        ]
        return web.json_response(
            {
                "id": "fake",
                "object": "chat.completion" if chat else "text_completion",
                "model": self.config.model,
                "choices": choices,
                "usage": _usage(prompt_tokens, max_tokens * n),
            }
        )

    async def _stream(
        self,
        resp: web.StreamResponse,
        chat: bool,
        mode: str,
        prompt_tokens: int,
        max_tokens: int,
        n: int,
        include_usage: bool,
        continuous: bool,
    ) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        k = max(cfg.chunk_tokens, 1)
        start = loop.time()
        due = start + cfg.ttft_ms / 1000
        itl = cfg.itl_ms / 1000
        sent = 0
        emitted = 0
        reasoning_left = cfg.reasoning_tokens if chat else 0
        if mode == "hang":
            await asyncio.sleep(3600)
            return
        while emitted < max_tokens:
            delay = due - loop.time()
            await asyncio.sleep(delay if delay > 0 else 0)
            step = min(k, max_tokens - emitted)
            last = emitted + step >= max_tokens
            out = []
            for i in range(n):
                sent += step
                usage = _usage(prompt_tokens, sent) if continuous else None
                if chat:
                    words = " tok" * step
                    if reasoning_left > 0:
                        delta = {"reasoning_content": words}
                    else:
                        delta = {"content": words}
                    choice = {
                        "index": i,
                        "delta": delta,
                        "finish_reason": "length" if last else None,
                    }
                    obj = {
                        "id": "fake",
                        "object": "chat.completion.chunk",
                        "model": cfg.model,
                        "choices": [choice],
                        "usage": usage,
                    }
                else:
                    choice = {
                        "index": i,
                        "text": " tok" * step,
                        "logprobs": None,
                        "finish_reason": "length" if last else None,
                    }
                    obj = {
                        "id": "fake",
                        "object": "text_completion",
                        "model": cfg.model,
                        "choices": [choice],
                        "usage": usage,
                    }
                out.append(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")
            if reasoning_left > 0:
                reasoning_left -= step
            emitted += step
            self.counters.generation_tokens += step * n
            if mode == "malformed" and emitted == step:
                out.append(b"data: {this is not json\n\n: comment\n\nevent: junk\n")
            await resp.write(b"".join(out))
            if mode == "drop_mid_stream" and emitted >= max_tokens // 2:
                transport = resp._req.transport if resp._req is not None else None  # type: ignore[attr-defined]
                if transport is not None:
                    transport.abort()
                return
            due += itl * step
        if include_usage:
            final = {
                "id": "fake",
                "object": "text_completion",
                "model": cfg.model,
                "choices": [],
                "usage": _usage(prompt_tokens, max_tokens * n),
            }
            await resp.write(
                b"data: " + json.dumps(final, separators=(",", ":")).encode() + b"\n\n"
            )
        if mode != "no_done":
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _count_prompt(prompt: Any) -> int:
    if isinstance(prompt, list):
        if prompt and isinstance(prompt[0], dict):  # chat messages
            return sum(len(str(m.get("content", "")).split()) for m in prompt)
        if prompt and isinstance(prompt[0], list):
            return len(prompt[0])
        return len(prompt)
    if isinstance(prompt, str):
        return len(prompt.split())
    return 0


@contextmanager
def run_in_thread(config: FakeConfig | None = None) -> Iterator[FakeOpenAIServer]:
    """Run the fake server on its own event loop in a daemon thread (for synchronous tests)."""
    server = FakeOpenAIServer(config)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())
        loop.close()

    t = threading.Thread(target=main, name="fake-openai", daemon=True)
    t.start()
    if not ready.wait(30):
        raise RuntimeError("fake server did not start")
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--model", default="fake-model")
    p.add_argument("--ttft-ms", type=float, default=0.0)
    p.add_argument("--itl-ms", type=float, default=0.0)
    p.add_argument("--chunk-tokens", type=int, default=1)
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--reasoning-tokens", type=int, default=0)
    p.add_argument("--mode", choices=MODES, default="ok")
    p.add_argument("--max-concurrency", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--api-key-env", help="require the key in this environment variable")
    a = p.parse_args(argv)
    import os

    cfg = FakeConfig(
        model=a.model,
        ttft_ms=a.ttft_ms,
        itl_ms=a.itl_ms,
        chunk_tokens=a.chunk_tokens,
        error_rate=a.error_rate,
        reasoning_tokens=a.reasoning_tokens,
        mode=a.mode,
        max_concurrency=a.max_concurrency,
        seed=a.seed,
        api_key=os.environ.get(a.api_key_env) if a.api_key_env else None,
        host=a.host,
        port=a.port,
    )

    async def serve() -> None:
        server = FakeOpenAIServer(cfg)
        await server.start()
        print(f"READY {server.url}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        sys.exit(0)


__all__ = ["MODES", "FakeConfig", "FakeOpenAIServer", "main", "replace", "run_in_thread"]

if __name__ == "__main__":
    main()
