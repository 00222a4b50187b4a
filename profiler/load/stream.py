"""Reading one streamed response: an incremental SSE parser that fills the request's record
(``StreamState``), and the answer a session turn keeps (``Answer``). Pure: no I/O, no clock
(every read's bytes come with the time they were read).

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

import json
from typing import Any

from pydantic_core import from_json

from profiler.load.tokens import TokenCounter
from profiler.store.record import RequestRecord

MAX_EVENT_BYTES = 8 * 1024 * 1024
_DECODE = json.JSONDecoder().decode  # fallback for events that are not valid UTF-8
ERROR_TEXT_MAX = 500


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
                if reasoning and rec.first_reasoning_s is None:
                    rec.first_reasoning_s = t_s
            if text and rec.first_answer_s is None:
                rec.first_answer_s = t_s
            if text or reasoning:
                has_content = True
                if choice < 0:
                    choice = idx if isinstance(idx, int) else 0
                if texts is not None:  # reasoning first, as it was streamed
                    if reasoning and isinstance(reasoning, str):
                        texts.append(reasoning)
                    if text and isinstance(text, str):
                        texts.append(text)
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
