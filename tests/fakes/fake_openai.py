"""A fake OpenAI-compatible server for tests and benchmarks (never used by the profiler).

Streams exactly ``max_tokens`` tokens per choice (each token is the word `` tok``):

- the first chunk arrives ``ttft_ms`` after the request; ``itl_ms`` is per token, so a chunk
  of ``k`` tokens arrives ``k * itl_ms`` after the previous one (``chunk_tokens`` = k; the
  last chunk may carry fewer). Deadlines are absolute, so delays never drift.
- ``n`` choices, interleaved: one SSE event per choice per chunk, each with its ``index``.
- usage exactly as vLLM streams it (``entrypoints/openai/completion/serving.py`` and
  ``chat_completion/serving.py``): ``stream_options.include_usage`` adds a final ``choices: []``
  event with ``prompt_tokens`` (the prompt once, not times n) and ``completion_tokens`` summed
  over all choices (``n * max_tokens``); ``continuous_usage_stats`` adds usage to every event:
  the prompt's tokens and the running count of that event's OWN choice (vLLM's
  ``previous_num_tokens[i]``), not of all choices. Without continuous usage the events have no
  ``usage`` key at all; the final event (or without ``include_usage`` every finishing event)
  carries a ``system_fingerprint``. ``usage=False`` (``--no-usage``) ignores ``stream_options`` and
  streams no usage at all, like a server without them.
- chat: a role-only event per choice first (as vLLM does; its continuous usage counts 0
  completion tokens), then the first ``reasoning_tokens`` tokens as
  ``delta.reasoning_content`` (or ``reasoning_field``), then ``delta.content``.
- prompt tokens: the length of a token-id prompt, else a count of whitespace-separated words.
- faults: ``error_rate`` (seeded, in arrival order) turns a request into ``error_mode``;
  ``mode`` applies to every request: ok, http_500, http_400, drop_mid_stream (the connection
  is cut after half the tokens), malformed (junk events after the first chunk), no_done (no
  ``[DONE]``), hang (headers, then nothing; a non-streaming request gets no answer). Only
  ok, the HTTP errors and hang apply to non-streaming requests. ``max_concurrency`` answers
  429 beyond it (streams in flight).
  ``config`` is read per request, so a test may change ``server.config.mode`` between calls.
- ``/health``, ``/v1/models`` and a small vLLM-like ``/metrics`` reflecting the counters.
- ``return_token_ids`` (vLLM): every chunk's choice carries the ids of its tokens (each token
  `` tok`` is id ``TOKEN_ID``). A prefix cache of ``CACHE_BLOCK``-token blocks (prompt ids, or
  the words of chat messages) counts ``prefix_cache_queries``/``hits`` as vLLM does (tokens);
  ``prefix_caching=False`` turns it off, ``prompt_tokens_details`` reports each request's
  ``cached_tokens`` in its final usage. ``keep_bodies`` keeps every request body.
- ``strict`` (``--strict``): a hosted API's validation. Token-id prompts are refused (HTTP 400,
  ``'prompt' must be a string``), and so is every field outside OpenAI's public API
  (``Unrecognized request argument supplied: ignore_eos``), ``stream_options`` keys included
  (``continuous_usage_stats``).
- ``stop_after`` (``--stop-after K``): the model "emits EOS" after K tokens per choice
  (``finish_reason: stop``) unless the request sets ``ignore_eos`` (``min_tokens`` defers it).
- ``chat_template_tokens`` (``--chat-template-tokens T``): a chat prompt counts T tokens more
  than its words, as a chat template adds.

Events are assembled from prebuilt byte templates, so one stream costs little CPU (the
benchmarks drive 256 concurrent streams). With ``ttft_ms = itl_ms = 0`` every chunk still
yields to the event loop.

    python -m tests.fakes.fake_openai --port 0 --ttft-ms 50 --itl-ms 10   # prints READY <url>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

MODES = ("ok", "http_500", "http_400", "drop_mid_stream", "malformed", "no_done", "hang")
ERROR_MODES = ("http_500", "drop_mid_stream")
TOKEN = b" tok"
TOKEN_ID = 7
CACHE_BLOCK = 16
MAX_CACHED_BLOCKS = 100_000

# OpenAI's public API: what a strict server (``FakeConfig.strict``) accepts
COMPLETIONS_FIELDS = frozenset(
    "model prompt best_of echo frequency_penalty logit_bias logprobs max_tokens n "
    "presence_penalty seed stop stream stream_options suffix temperature top_p user".split()
)
CHAT_FIELDS = frozenset(
    "model messages audio frequency_penalty function_call functions logit_bias logprobs "
    "max_completion_tokens max_tokens metadata modalities n parallel_tool_calls prediction "
    "presence_penalty reasoning_effort response_format seed service_tier stop store stream "
    "stream_options temperature tool_choice tools top_logprobs top_p user "
    "web_search_options".split()
)
STREAM_OPTIONS_FIELDS = frozenset({"include_usage", "include_obfuscation"})
# vLLM sends its system_fingerprint on the final usage event (or, without include_usage, on
# every finishing event)
FINGERPRINT = b',"system_fingerprint":"fake-0"'


@dataclass
class FakeConfig:
    model: str = "fake-model"
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    chunk_tokens: int = 1
    error_rate: float = 0.0
    error_mode: str = "http_500"  # what an injected error is: one of ERROR_MODES
    reasoning_tokens: int = 0
    reasoning_field: str = "reasoning_content"  # vLLM >= 0.11 also accepts "reasoning"
    mode: str = "ok"
    usage: bool = True  # False: stream no usage whatever stream_options asks
    max_concurrency: int | None = None
    seed: int = 0
    api_key: str | None = None
    prefix_caching: bool = True
    prompt_tokens_details: bool = False
    keep_bodies: bool = False
    host: str = "127.0.0.1"
    port: int = 0
    strict: bool = False  # refuse token-id prompts and fields outside OpenAI's API
    stop_after: int | None = None  # EOS after this many tokens unless ignore_eos
    chat_template_tokens: int = 0  # prompt tokens a chat template adds


@dataclass
class Counters:
    running: int = 0
    requests: int = 0
    errors: int = 0
    rejected: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    last_body: dict[str, Any] | None = None
    statuses: dict[int, int] = field(default_factory=dict)
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)


class FakeOpenAIServer:
    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self.counters = Counters()
        self._rng = random.Random(self.config.seed)
        self._runner: web.AppRunner | None = None
        self._mids: dict[tuple[bytes, int, bool, bool, bytes], bytes] = {}
        self._blocks: set[int] = set()
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
        self._runner = web.AppRunner(
            self.app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.1
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ endpoints
    async def _health(self, _r: web.Request) -> web.Response:
        return web.Response(text="")

    def _authorised(self, request: web.Request) -> bool:
        key = self.config.api_key
        return key is None or request.headers.get("Authorization") == f"Bearer {key}"

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _error(401, "invalid API key")
        model = {"id": self.config.model, "object": "model", "created": 0, "owned_by": "fake"}
        return web.json_response({"object": "list", "data": [model]})

    async def _metrics(self, _r: web.Request) -> web.Response:
        c, lab = self.counters, f'{{engine="0",model_name="{self.config.model}"}}'
        cap = self.config.max_concurrency or 256
        families = [
            ("num_requests_running", "gauge", c.running),
            ("num_requests_waiting", "gauge", 0),
            ("kv_cache_usage_perc", "gauge", min(c.running / cap, 1.0)),
            ("num_preemptions_total", "counter", 0),
            ("prompt_tokens_total", "counter", c.prompt_tokens),
            ("generation_tokens_total", "counter", c.generation_tokens),
            ("request_success_total", "counter", c.requests - c.errors - c.rejected),
            ("prefix_cache_queries_total", "counter", c.prefix_cache_queries),
            ("prefix_cache_hits_total", "counter", c.prefix_cache_hits),
        ]
        text = "".join(
            f"# HELP vllm:{name} fake\n# TYPE vllm:{name} {kind}\nvllm:{name}{lab} {value}\n"
            for name, kind, value in families
        )
        return web.Response(text=text, content_type="text/plain")

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        cfg, c = self.config, self.counters
        if not self._authorised(request):
            return self._fail(401, "invalid API key")
        try:
            body = await request.json()
        except ValueError:
            return self._fail(400, "body is not JSON")
        if not isinstance(body, dict):
            return self._fail(400, "body is not a JSON object")
        c.requests += 1
        c.last_body = body
        if cfg.keep_bodies:
            c.bodies.append(body)
        if cfg.max_concurrency is not None and c.running >= cfg.max_concurrency:
            c.rejected += 1
            return self._fail(429, "too many requests", count=False)
        mode = cfg.mode
        if mode == "ok" and cfg.error_rate > 0 and self._rng.random() < cfg.error_rate:
            mode = cfg.error_mode
        if mode in ("http_500", "http_400"):
            status = 500 if mode == "http_500" else 400
            return self._fail(status, f"injected HTTP {status}")
        chat = request.path.endswith("/chat/completions")
        if cfg.strict:
            refused = _strict_refusal(body, chat)
            if refused is not None:
                return self._fail(400, refused)
        try:
            max_tokens = int(_first(body, "max_tokens", "max_completion_tokens", default=16))
            n = int(_first(body, "n", default=1))
            min_tokens = int(_first(body, "min_tokens", default=0))
        except (TypeError, ValueError):
            return self._fail(400, "max_tokens, min_tokens and n must be integers")
        if max_tokens < 1 or not 1 <= n <= 128:
            return self._fail(400, "max_tokens must be >= 1 and n in 1..128")
        finish = b'"length"'
        if cfg.stop_after is not None and not body.get("ignore_eos"):
            eos_at = max(cfg.stop_after, min_tokens)
            if eos_at < max_tokens:
                max_tokens, finish = eos_at, b'"stop"'
        prompt_tokens = _count_prompt(body.get("messages") if chat else body.get("prompt"))
        if chat:
            prompt_tokens += cfg.chat_template_tokens
        c.prompt_tokens += prompt_tokens
        cached = self._cache(body.get("messages") if chat else body.get("prompt"))
        c.statuses[200] = c.statuses.get(200, 0) + 1
        if not body.get("stream"):
            if mode == "hang":
                await asyncio.sleep(3600)
            return await self._complete(chat, prompt_tokens, max_tokens, n)
        opts = body.get("stream_options") or {}
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        c.running += 1
        try:
            await resp.prepare(request)
            await self._stream(
                resp,
                chat,
                mode,
                prompt_tokens,
                max_tokens,
                n,
                cfg.usage and bool(opts.get("include_usage")),
                cfg.usage and bool(opts.get("continuous_usage_stats")),
                bool(body.get("return_token_ids")),
                cached if cfg.prompt_tokens_details else None,
                finish,
            )
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            c.running -= 1
        return resp

    def _cache(self, prompt: Any) -> int:
        """Prefix-cache lookup of a prompt as vLLM counts it: every prompt token is queried, the
        leading full blocks already seen are hits; the prompt's blocks are then cached."""
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
            tokens: list[Any] = " ".join(str(m.get("content", "")) for m in prompt).split()
        elif isinstance(prompt, list):
            tokens = prompt
        else:
            tokens = str(prompt or "").split()
        c = self.counters
        c.prefix_cache_queries += len(tokens)
        if not self.config.prefix_caching:
            return 0
        h, hits, missed = 0, 0, False
        for start in range(0, len(tokens) - CACHE_BLOCK + 1, CACHE_BLOCK):
            h = hash((h, tuple(tokens[start : start + CACHE_BLOCK])))
            if not missed and h in self._blocks:
                hits += CACHE_BLOCK
            else:
                missed = True
                if len(self._blocks) >= MAX_CACHED_BLOCKS:  # bounded, like a real cache
                    self._blocks.clear()
                self._blocks.add(h)
        c.prefix_cache_hits += hits
        return hits

    def _fail(self, status: int, message: str, count: bool = True) -> web.Response:
        if count:
            self.counters.errors += 1
        self.counters.statuses[status] = self.counters.statuses.get(status, 0) + 1
        return _error(status, message)

    async def _complete(
        self, chat: bool, prompt_tokens: int, max_tokens: int, n: int
    ) -> web.Response:
        cfg = self.config
        await asyncio.sleep((cfg.ttft_ms + cfg.itl_ms * (max_tokens - 1)) / 1000)
        self.counters.generation_tokens += max_tokens * n
        r = min(cfg.reasoning_tokens, max_tokens) if chat else 0
        text = (TOKEN * (max_tokens - r)).decode()
        choices: list[dict[str, Any]] = []
        for i in range(n):
            if chat:
                msg: dict[str, Any] = {"role": "assistant", "content": text}
                if r:
                    msg[cfg.reasoning_field] = (TOKEN * r).decode()
                choices.append({"index": i, "message": msg, "finish_reason": "length"})
            else:
                choices.append({"index": i, "text": text, "finish_reason": "length"})
        return web.json_response(
            {
                "id": f"fake-{self.counters.requests}",
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": cfg.model,
                "choices": choices,
                "usage": _usage(prompt_tokens, max_tokens * n),
            }
        )

    def _mid(
        self, kind: bytes, step: int, last: bool, ids: bool = False, reason: bytes = b'"length"'
    ) -> bytes:
        """The bytes of one choice after its index, as vLLM dumps them: ``kind`` is b"text",
        b"content" or the reasoning field; ``ids``: the tokens' ids (``return_token_ids``);
        ``reason``: the last chunk's finish reason; cached, so a stream only concatenates."""
        key = (kind, step, last, ids, reason)
        mid = self._mids.get(key)
        if mid is None:
            finish = reason if last else b"null"
            words = TOKEN * step
            token_ids = json.dumps([TOKEN_ID] * step).encode() if ids else b"null"
            if kind == b"text":
                mid = (
                    b',"text":"' + words + b'","logprobs":null,"finish_reason":' + finish
                    + b',"stop_reason":null,"prompt_token_ids":null,"token_ids":' + token_ids
                    + b"}]"
                )  # fmt: skip
            else:  # chat: stop_reason only on the finishing event
                mid = (
                    b',"delta":{"' + kind + b'":"' + words + b'"},"logprobs":null'
                    + b',"finish_reason":' + finish + (b',"stop_reason":null' if last else b"")
                    + b',"token_ids":' + token_ids + b"}]"
                )  # fmt: skip
            self._mids[key] = mid
        return mid

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
        token_ids: bool = False,
        cached: int | None = None,
        finish: bytes = b'"length"',
    ) -> None:
        cfg, c = self.config, self.counters
        loop = asyncio.get_running_loop()
        if mode == "hang":
            await asyncio.sleep(3600)
            return
        obj = b"chat.completion.chunk" if chat else b"text_completion"
        head = b'data: {"id":"fake-%d","object":"%s","created":%d,"model":%s,"choices":[' % (
            c.requests,
            obj,
            int(time.time()),
            json.dumps(cfg.model).encode(),
        )
        heads = [head + b'{"index":%d' % i for i in range(n)]
        end = b"}\n\n"
        # vLLM's UsageInfo field order; chat sets completion_tokens_details (null) explicitly
        details = b',"completion_tokens_details":null' if chat else b""
        usage_fmt = b',"usage":{"prompt_tokens":%d,"total_tokens":%%d,"completion_tokens":%%d%s}'
        usage_fmt = usage_fmt % (prompt_tokens, details)
        k = max(cfg.chunk_tokens, 1)
        reasoning_left = min(cfg.reasoning_tokens, max_tokens) if chat else 0
        rkind = cfg.reasoning_field.encode()
        itl = cfg.itl_ms / 1000
        due = loop.time() + cfg.ttft_ms / 1000
        emitted = 0  # tokens of every choice so far (the choices advance together)
        drop_at = max(max_tokens // 2, 1)
        while emitted < max_tokens:
            delay = due - loop.time()
            await asyncio.sleep(delay if delay > 0 else 0)
            out: list[bytes] = []
            if chat and emitted == 0:
                role = b',"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]'
                usage0 = usage_fmt % (prompt_tokens, 0) if continuous else b""
                tail = usage0 + b',"prompt_token_ids":null,"prompt_text":null' + end
                out.extend(h + role + tail for h in heads)
            if reasoning_left > 0:
                step, kind = min(k, reasoning_left), rkind
                reasoning_left -= step
            else:
                step, kind = min(k, max_tokens - emitted), (b"content" if chat else b"text")
            emitted += step
            last = emitted >= max_tokens
            mid = self._mid(kind, step, last, token_ids, finish)
            # continuous usage: the running count of each event's own choice (vLLM)
            tail = usage_fmt % (prompt_tokens + emitted, emitted) + end if continuous else end
            if last and not include_usage:  # vLLM stamps the finishing events instead
                tail = FINGERPRINT + end
            out.extend(h + mid + tail for h in heads)
            c.generation_tokens += step * n
            if mode == "malformed" and emitted == step:
                out.append(b"data: {this is not json\n\n: a comment\n\nevent: junk\n")
            await resp.write(b"".join(out))
            if mode == "drop_mid_stream" and emitted >= drop_at:
                transport = request_transport(resp)
                if transport is not None:
                    transport.abort()
                return
            due += itl * step
        if include_usage:
            # prompt once, completion tokens of all choices (vLLM drops null fields here)
            total = n * max_tokens
            final = b',"usage":{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d'
            final %= (prompt_tokens, prompt_tokens + total, total)
            if cached is not None:
                final += b',"prompt_tokens_details":{"cached_tokens":%d}' % cached
            final += b"}"
            await resp.write(head + b"]" + final + FINGERPRINT + end)
        if mode != "no_done":
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()


def request_transport(resp: web.StreamResponse) -> Any:
    req = getattr(resp, "_req", None)
    return req.transport if req is not None else None


def _error(status: int, message: str) -> web.Response:
    kind = "BadRequestError" if status < 500 else "InternalServerError"
    return web.json_response(
        {"error": {"message": message, "type": kind, "code": status}}, status=status
    )


def _strict_refusal(body: dict[str, Any], chat: bool) -> str | None:
    """What a hosted API says to a request outside its public schema (None: accepted)."""
    allowed = CHAT_FIELDS if chat else COMPLETIONS_FIELDS
    for key in body:
        if key not in allowed:
            return f"Unrecognized request argument supplied: {key}"
    opts = body.get("stream_options")
    if isinstance(opts, dict):
        for key in opts:
            if key not in STREAM_OPTIONS_FIELDS:
                return f"Unrecognized request argument supplied: stream_options.{key}"
    if not chat and not isinstance(body.get("prompt"), str):
        return "'prompt' must be a string (token-id prompts are not supported)"
    return None


def _first(body: dict[str, Any], *keys: str, default: int) -> Any:
    for key in keys:
        if body.get(key) is not None:
            return body[key]
    return default


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
        if prompt and isinstance(prompt[0], list):  # a batch of token-id prompts: the first
            return len(prompt[0])
        if prompt and isinstance(prompt[0], str):
            return len(prompt[0].split())
        return len(prompt)
    if isinstance(prompt, str):
        return len(prompt.split())
    return 0


@contextmanager
def serve_in_thread(config: FakeConfig | None = None) -> Iterator[FakeOpenAIServer]:
    """Run the fake server on its own event loop in a daemon thread; yield the server (its
    ``url``, ``config`` and ``counters``)."""
    server = FakeOpenAIServer(config)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failed: list[BaseException] = []

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as e:  # reported to the caller below
            failed.append(e)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())
        loop.close()

    t = threading.Thread(target=main, name="fake-openai", daemon=True)
    t.start()
    if not ready.wait(30) or failed:
        raise RuntimeError(f"fake server did not start: {failed[0] if failed else 'timeout'}")
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)


@contextmanager
def run_in_thread(config: FakeConfig | None = None) -> Iterator[str]:
    """Like :func:`serve_in_thread`, but yield only the base URL (``http://127.0.0.1:PORT``)."""
    with serve_in_thread(config) as server:
        yield server.url


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Fake OpenAI-compatible server (tests, benchmarks).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--model", default="fake-model")
    p.add_argument("--ttft-ms", type=float, default=0.0)
    p.add_argument("--itl-ms", type=float, default=0.0, help="per token")
    p.add_argument("--chunk-tokens", type=int, default=1)
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--error-mode", choices=ERROR_MODES, default="http_500")
    p.add_argument("--reasoning-tokens", type=int, default=0)
    p.add_argument("--reasoning-field", default="reasoning_content")
    p.add_argument("--mode", choices=MODES, default="ok")
    p.add_argument("--no-usage", action="store_true", help="stream no usage (no stream_options)")
    p.add_argument("--max-concurrency", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--api-key-env", help="require the key held in this environment variable")
    p.add_argument("--strict", action="store_true", help="refuse token ids and non-OpenAI fields")
    p.add_argument("--stop-after", type=int, help="EOS after K tokens unless ignore_eos")
    p.add_argument("--chat-template-tokens", type=int, default=0)
    a = p.parse_args(argv)
    cfg = FakeConfig(
        model=a.model,
        ttft_ms=a.ttft_ms,
        itl_ms=a.itl_ms,
        chunk_tokens=a.chunk_tokens,
        error_rate=a.error_rate,
        error_mode=a.error_mode,
        reasoning_tokens=a.reasoning_tokens,
        reasoning_field=a.reasoning_field,
        mode=a.mode,
        usage=not a.no_usage,
        max_concurrency=a.max_concurrency,
        seed=a.seed,
        api_key=os.environ.get(a.api_key_env) if a.api_key_env else None,
        host=a.host,
        port=a.port,
        strict=a.strict,
        stop_after=a.stop_after,
        chat_template_tokens=a.chat_template_tokens,
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


__all__ = [
    "ERROR_MODES",
    "MODES",
    "FakeConfig",
    "FakeOpenAIServer",
    "main",
    "replace",
    "run_in_thread",
    "serve_in_thread",
]

if __name__ == "__main__":
    main()
