"""Streaming OpenAI-compatible client: pooled keep-alive connections
(``profiler.load.transport``), a ``RequestRecord`` per request. Failed requests are data,
never exceptions.

Timing: every read from the socket is timestamped once (``clock.now()``) and every SSE event
in that read gets that time, so parsing cost never shifts the times of later events. The
stream itself is read by ``profiler.load.stream.StreamState``.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic_core import to_json

from profiler.clock import RunClock
from profiler.load.prompts import TextPrompter, ids_to_words
from profiler.load.stream import ERROR_TEXT_MAX, Answer, StreamState
from profiler.load.tokens import load_counter, load_offsets
from profiler.load.transport import Pool, TransportError
from profiler.store.record import RequestRecord


@dataclass(frozen=True)
class ClientOptions:
    """How requests are built and read. The defaults are vLLM's full request (token-id prompts,
    ``ignore_eos``/``min_tokens``, usage per chunk); ``profiler.load.capabilities`` turns off
    what an endpoint refuses, so a field it rejects is never sent."""

    base_url: str
    model: str
    api_key: str | None = None
    request_timeout_s: float = 600.0
    vllm_extras: bool = True  # ignore_eos / min_tokens (vLLM sampling extensions)
    continuous_usage: bool = True  # stream_options.continuous_usage_stats
    tokenizer: str | None = None  # tokenizer.json (or its directory): counts chunks without usage
    include_usage: bool = True  # stream_options.include_usage (False: no stream_options at all)
    token_id_prompts: bool = True  # False: token-id prompts are sent as text of their length
    # Text prompts without a tokenizer: prompt tokens per word, from the server's own counts
    tokens_per_word: float | None = None
    # Prompt tokens the server adds to a completions text prompt (a BOS token)
    text_added_tokens: float = 0.0
    # Prompt tokens a chat request has beyond its content (the chat template); when known, a
    # single-message chat prompt is cut so that the server counts ``input_len`` tokens
    chat_template_tokens: float | None = None


def text_prompter(opts: ClientOptions) -> TextPrompter | None:
    """The text-prompt maker the options call for: with the tokenizer when one is set, else
    with the calibrated tokens per word; ``None`` when no prompt is sent as fitted text."""
    if opts.token_id_prompts and opts.chat_template_tokens is None:
        return None
    if opts.tokenizer:
        return TextPrompter(offsets=load_offsets(opts.tokenizer))
    return TextPrompter(tokens_per_word=opts.tokens_per_word or 1.0)


def build_payload(
    req: Any, opts: ClientOptions, prompter: TextPrompter | None = None
) -> tuple[str, dict[str, Any]]:
    """(path, JSON body) of one streaming request. Fields the options turn off are left out
    (not sent as ``false``: strict servers refuse a field they do not know whatever its value)."""
    body: dict[str, Any] = {
        "model": opts.model,
        "max_tokens": req.output_len,
        "stream": True,
        "temperature": req.temperature,
    }
    if opts.include_usage:
        stream_options: dict[str, Any] = {"include_usage": True}
        if opts.continuous_usage:
            stream_options["continuous_usage_stats"] = True
        body["stream_options"] = stream_options
    if req.n > 1:
        body["n"] = req.n
    if opts.vllm_extras and req.ignore_eos:
        body["ignore_eos"] = True
        body["min_tokens"] = getattr(req, "min_tokens", None) or req.output_len
    if req.api == "chat":
        messages = getattr(req, "messages", None) or [
            {"role": "user", "content": getattr(req, "text", "")}
        ]
        if prompter is not None and opts.chat_template_tokens is not None:
            messages = _fit_chat(messages, req, opts.chat_template_tokens, prompter)
        body["messages"] = messages
        return "/v1/chat/completions", body
    ids = getattr(req, "prompt_token_ids", None)
    if ids is not None and not opts.token_id_prompts:
        body["prompt"] = (
            prompter.for_ids(ids, opts.text_added_tokens) if prompter else ids_to_words(ids)
        )
    else:
        body["prompt"] = ids if ids is not None else getattr(req, "text", "")
    return "/v1/completions", body


def _fit_chat(
    messages: list[dict[str, Any]], req: Any, template_tokens: float, prompter: TextPrompter
) -> list[dict[str, Any]]:
    """A one-message chat prompt cut so the server counts ``input_len`` prompt tokens, the
    template's included; conversations (several messages) are sent as they are."""
    want = getattr(req, "input_len", None)
    if len(messages) != 1 or not isinstance(want, int):
        return messages
    content = messages[0].get("content")
    if messages[0].get("role") != "user" or not isinstance(content, str):
        return messages
    return [{"role": "user", "content": prompter.fit(content, want - template_tokens)}]


class StreamingClient:
    """Sends requests and returns records. Use as ``async with StreamingClient(...)``.

    Requests go through ``profiler.load.transport.Pool`` (keep-alive HTTP/1.1 on a
    buffered protocol): the body bytes of every socket read reach ``StreamState.feed`` in the
    read's own callback, stamped with the read's time; the request's task wakes once, at the
    end of the response."""

    def __init__(self, opts: ClientOptions, clock: RunClock) -> None:
        self.opts = opts
        self.clock = clock
        self._headers = {"Content-Type": "application/json"}
        if opts.api_key:
            self._headers["Authorization"] = f"Bearer {opts.api_key}"
        self._count_tokens = load_counter(opts.tokenizer) if opts.tokenizer else None
        self._prompter = text_prompter(opts)
        self._pool: Pool | None = None

    async def __aenter__(self) -> StreamingClient:
        self._pool = Pool(self.opts.base_url, self._headers, self.clock.now, connect_timeout_s=30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def send(
        self,
        req: Any,
        *,
        workload: str,
        intended_start_s: float,
        on_send: Callable[[], None] | None = None,
        answer: Answer | None = None,
    ) -> RequestRecord:
        """One request; ``answer`` (session turns only) receives the streamed answer."""
        pool = self._pool
        assert pool is not None, "use the client as an async context manager"
        path, body = build_payload(req, self.opts, self._prompter)
        if answer is not None and answer.want_ids and self.opts.vllm_extras:
            body["return_token_ids"] = True  # vLLM: each chunk's token ids (exact history)
        rec = RequestRecord(
            id=req.id,
            workload=workload,
            scenario=req.scenario,
            intended_start_s=intended_start_s,
            requested_output_tokens=req.output_len * req.n,
            requested_prompt_tokens=getattr(req, "input_len", None),
            length_enforced=(self.opts.vllm_extras if req.ignore_eos else None),
            n=req.n,
        )
        clock = self.clock
        data = to_json(body)
        state = StreamState(rec, self._count_tokens, answer)
        rec.send_s = clock.now()
        if on_send is not None:
            on_send()
        try:
            async with asyncio.timeout(self.opts.request_timeout_s):
                resp = await pool.post(path, data, state.feed, functools.partial(_status, rec))
        except asyncio.CancelledError:
            rec.end_s = clock.now()
            rec.outcome = "cancelled"
            rec.error = "cancelled before the response finished"
            return rec
        except TimeoutError:
            rec.end_s = clock.now()
            rec.outcome = "timeout"
            rec.error = f"no complete response within {self.opts.request_timeout_s:g} s"
            return rec
        except TransportError as e:
            rec.end_s = clock.now()
            rec.outcome = "error"
            rec.error = str(e)[:ERROR_TEXT_MAX]
            return rec
        if resp.status != 200:
            rec.end_s = resp.end_s
            rec.outcome = "error"
            text = resp.error_body.decode("utf-8", "replace")
            rec.error = f"HTTP {resp.status}: {error_text(text)}"
            return rec
        state.finish(resp.end_s)
        state.close(resp.end_s)
        return rec


def _status(rec: RequestRecord, status: int) -> None:
    rec.http_status = status


def error_text(text: str, limit: int = ERROR_TEXT_MAX) -> str:
    """The message of an HTTP error body: OpenAI's ``error.message``, a bare ``message`` or
    FastAPI's ``detail``, else the body; on one line, at most ``limit`` characters."""
    try:
        obj = json.loads(text)
        if isinstance(obj, dict):
            err = obj.get("error", obj.get("message", obj.get("detail", obj)))
            if isinstance(err, dict):
                err = err.get("message", err)
            text = str(err)
    except ValueError:
        pass
    return " ".join(text.split())[:limit]
