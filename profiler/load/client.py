"""Streaming OpenAI-compatible client: pooled keep-alive connections
(``profiler.load.transport``), a ``RequestRecord`` per request. Failed requests are data,
never exceptions.

Timing: every read from the socket is timestamped once (``clock.now()``) and every SSE event
in that read gets that time, so parsing cost never shifts the times of later events.
Tokens per chunk come from ``continuous_usage_stats`` when the server reports it; otherwise
each content chunk is counted with the model's tokenizer when one is set
(``ClientOptions.tokenizer``), else as one token, and the record is marked ``tokens_estimated``.

With ``n > 1`` vLLM's per-event usage is the running count of the event's own choice
(``previous_num_tokens[i]`` in its completions and chat serving), and only the final
usage-only event (``choices: []``) carries the total over all choices: deltas are taken per
choice index, and the record's output tokens are the final total. When the per-choice deltas
do not add up to that total (a server counting all choices together), the per-chunk counts
are not the server's and the record is marked ``tokens_estimated``.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic_core import from_json, to_json

from profiler.clock import RunClock
from profiler.load.prompts import TextPrompter, ids_to_words
from profiler.load.tokens import TokenCounter, load_counter, load_offsets
from profiler.load.transport import Pool, TransportError
from profiler.store.record import RequestRecord

MAX_EVENT_BYTES = 8 * 1024 * 1024
_DECODE = json.JSONDecoder().decode  # fallback for events that are not valid UTF-8
ERROR_TEXT_MAX = 500


@dataclass(frozen=True)
class ClientOptions:
    """How requests are built and read. The defaults are vLLM's full request (token-id prompts,
    ``ignore_eos``/``min_tokens``, usage per chunk); ``profiler.serving.capabilities`` turns off
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


class Answer:
    """The answer a session turn keeps for the next turn's history: the streamed text of the
    first choice (content, not reasoning) and, when asked for (``want_ids``: vLLM's
    ``return_token_ids``) and sent, its token ids. Only session requests carry one; a plain
    request costs one ``is None`` test per event."""

    __slots__ = ("parts", "ids", "want_ids")

    def __init__(self, want_ids: bool = False) -> None:
        self.parts: list[str] = []
        self.ids: list[int] | None = [] if want_ids else None
        self.want_ids = want_ids

    @property
    def text(self) -> str:
        return "".join(self.parts)


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


class StreamState:
    """Incremental SSE parser and per-request accumulator (pure; unit-testable)."""

    __slots__ = (
        "rec",
        "buf",
        "done",
        "usage_tokens",
        "choice_tokens",
        "usage_seen",
        "finish_seen",
        "malformed",
        "count_tokens",
        "answer",
    )

    def __init__(
        self,
        rec: RequestRecord,
        count_tokens: TokenCounter | None = None,
        answer: Answer | None = None,
    ) -> None:
        self.rec = rec
        self.answer = answer
        self.buf = b""
        self.done = False
        # output tokens the per-event usage accounts for so far (all choices)
        self.usage_tokens = 0
        # n > 1: the last per-event usage count of every choice index (None when n == 1)
        self.choice_tokens: dict[int, int] | None = {} if rec.n > 1 else None
        self.usage_seen = False
        self.finish_seen: set[int] = set()
        self.malformed = 0
        self.count_tokens = count_tokens

    def feed(self, data: bytes, t_s: float) -> None:
        """Consume bytes read at ``t_s``; complete lines are processed, a partial one kept."""
        buf = self.buf + data if self.buf else data
        if b"\n" not in buf:
            if len(buf) > MAX_EVENT_BYTES:
                raise ValueError(f"SSE line longer than {MAX_EVENT_BYTES} bytes")
            self.buf = buf
            return
        *lines, rest = buf.split(b"\n")
        if len(rest) > MAX_EVENT_BYTES:
            raise ValueError(f"SSE line longer than {MAX_EVENT_BYTES} bytes")
        self.buf = rest
        for line in lines:
            if line.startswith(b"data:"):
                self._event(line[5:].strip(), t_s)

    def finish(self, t_s: float) -> None:
        """The stream ended (EOF): process a final unterminated line."""
        if self.buf.startswith(b"data:"):
            self._event(self.buf[5:].strip(), t_s)
        self.buf = b""

    def _event(self, payload: bytes, t_s: float) -> None:
        if not payload:
            return
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            # pydantic-core's parser: about 2.5x faster than json per event, the largest
            # single cost of the client per streamed token
            data = from_json(payload)
        except ValueError:
            try:  # invalid UTF-8 inside a string: decode with replacement, as before
                data = _DECODE(payload.decode("utf-8", "replace"))
            except ValueError:
                self.malformed += 1
                return
        if not isinstance(data, dict):
            self.malformed += 1
            return
        rec = self.rec
        if "error" in data and not data.get("choices"):
            err = data["error"]
            rec.outcome = "error"
            msg = err.get("message") if isinstance(err, dict) else err
            rec.error = str(msg)[:ERROR_TEXT_MAX]
            return
        usage = data.get("usage")
        choices = data.get("choices")
        delta_tokens = 0
        if isinstance(usage, dict):
            ct = usage.get("completion_tokens")
            if isinstance(ct, int):
                self.usage_seen = True
                per_choice = self.choice_tokens
                if not choices:
                    # the final usage-only event: the total over all choices
                    self._final_usage(ct)
                    details = usage.get("prompt_tokens_details")
                    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
                        rec.cached_tokens = details["cached_tokens"]
                elif per_choice is None:  # n == 1: the count is the stream's own
                    delta_tokens = ct - self.usage_tokens
                    self.usage_tokens = ct
                    rec.output_tokens = ct
                else:  # n > 1: the running count of this event's choice (vLLM)
                    ch0 = choices[0] if isinstance(choices, list) else None
                    idx = ch0.get("index", 0) if isinstance(ch0, dict) else 0
                    if not isinstance(idx, int):
                        idx = 0
                    delta_tokens = ct - per_choice.get(idx, 0)
                    per_choice[idx] = ct
                    self.usage_tokens += delta_tokens
                    rec.output_tokens = self.usage_tokens
            pt = usage.get("prompt_tokens")
            if isinstance(pt, int):
                rec.prompt_tokens = pt
        if not choices or not isinstance(choices, list):
            return
        has_content = False
        choice = -1  # the sample this chunk belongs to (n > 1)
        # the chunk's text, only when it is to be counted (no usage delta, a tokenizer set)
        texts: list[str] | None = (
            [] if delta_tokens <= 0 and self.count_tokens is not None else None
        )
        for ch in choices:
            if not isinstance(ch, dict):
                continue
            idx = ch.get("index", 0)
            if ch.get("finish_reason"):
                self.finish_seen.add(idx)
            text = ch.get("text")
            reasoning = None
            delta = ch.get("delta")
            if delta is not None and isinstance(delta, dict):
                text = delta.get("content")
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if reasoning:
                    has_content = True
                    if rec.first_reasoning_s is None:
                        rec.first_reasoning_s = t_s
                    if texts is not None and isinstance(reasoning, str):
                        texts.append(reasoning)
            if text:
                has_content = True
                if rec.first_answer_s is None:
                    rec.first_answer_s = t_s
                if texts is not None and isinstance(text, str):
                    texts.append(text)
            if choice < 0 and (text or reasoning):
                choice = idx if isinstance(idx, int) else 0
            if self.answer is not None and not idx:  # a session turn keeps its answer
                self._keep(ch, text)
        if not has_content:
            if delta_tokens <= 0:
                return
            has_content = True  # tokens whose text detokenised to nothing still arrived
        if rec.n > 1:
            if choice < 0:  # tokens without text: the sample is the event's own choice
                idx = choices[0].get("index", 0) if isinstance(choices[0], dict) else 0
                choice = idx if isinstance(idx, int) else 0
            rec.chunk_choice.append(choice)  # every outcome: failed requests keep it too
        if rec.first_token_s is None:
            rec.first_token_s = t_s
        rec.last_token_s = t_s
        rec.chunks += 1
        rec.chunk_times_s.append(t_s)
        if delta_tokens > 0:
            rec.chunk_tokens.append(delta_tokens)
            return
        tokens = 1
        if texts and self.count_tokens is not None:
            tokens = self.count_tokens("".join(texts)) or 1
        rec.chunk_tokens.append(tokens)
        rec.tokens_estimated = True

    def _keep(self, ch: dict[str, Any], text: Any) -> None:
        answer = self.answer
        assert answer is not None
        if text and isinstance(text, str):
            answer.parts.append(text)
        ids = ch.get("token_ids")
        if answer.ids is not None and isinstance(ids, list):
            answer.ids.extend(ids)

    def _final_usage(self, total: int) -> None:
        """The usage-only event at the end: the server's total over all choices. Per-event
        usage that does not add up to it was not per choice (or not the server's count).
        Without per-event usage, a total equal to the number of content chunks proves one
        token per chunk (every content chunk carries at least one): the counts are exact."""
        rec = self.rec
        if self.usage_tokens:
            if total != self.usage_tokens:
                rec.tokens_estimated = True
        elif rec.tokens_estimated and rec.chunks == total:
            rec.chunk_tokens = [1] * rec.chunks
            rec.tokens_estimated = False
        rec.output_tokens = total

    def close(self, t_s: float) -> None:
        """Settle the outcome once the body ended at ``t_s``."""
        rec = self.rec
        rec.end_s = t_s
        if rec.outcome != "ok":
            return
        if self.malformed and rec.first_token_s is None:
            rec.outcome = "error"
            rec.error = f"{self.malformed} malformed SSE events and no content"
            return
        if rec.first_token_s is None:
            rec.outcome = "error"
            rec.error = "stream ended without any content token"
            return
        if not self.done and len(self.finish_seen) < max(rec.n, 1):
            rec.outcome = "error"
            rec.error = "stream ended before [DONE] (truncated)"
            return
        if not self.usage_seen:
            rec.output_tokens = sum(rec.chunk_tokens)
            rec.tokens_estimated = True
        elif rec.tokens_estimated and rec.output_tokens is not None:
            # usage only at the end: chunk counts were estimates; keep the server's total
            pass
        if self.malformed:
            rec.error = f"{self.malformed} malformed SSE events skipped"


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
