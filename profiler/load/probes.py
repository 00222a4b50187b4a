"""The probe requests of the capability preflight (``profiler.load.preflight``): each is a
small request (``PROBE_MAX_TOKENS`` tokens, not counted in the load) over its own short-lived
connection, and ``Probe`` is what came back: the status, whether content streamed, usage per
chunk or at the end, the prompt tokens the server counted, the choices finished.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

PROBE_MAX_TOKENS = 4
# words of the two text probes (prompt tokens per word and the tokens added to every prompt
# come from the server's counts of both)
PROBE_WORDS = (16, 48)
PROBE_IDS = list(range(100, 108))  # token ids inside every vocabulary, above the specials
PROBE_TIMEOUT_S = 120.0
PROBE_ATTEMPTS = 3  # a probe that fails transiently (5xx, 429, timeout) is sent again
ERROR_TEXT_MAX = 300


@dataclass
class Probe:
    """One probe request and what came back."""

    name: str
    api: str
    sent: list[str]  # the optional fields and prompt form it tried
    status: int | None = None
    ok: bool = False
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None  # the final usage event's total
    usage_per_chunk: bool = False
    usage_final: bool = False
    choices_finished: int = 0
    content_chunks: int = 0
    attempts: int = 1

    @property
    def refused(self) -> bool:
        """A definite no: the server answered 4xx (not 429) to this request."""
        return self.status is not None and 400 <= self.status < 500 and self.status != 429

    @property
    def transient(self) -> bool:
        """No answer either way: a 5xx, a 429, a timeout, a cut connection."""
        return not self.ok and not self.refused


Post = Callable[[str, dict[str, Any]], tuple[int, bytes]]


def http_post(base_url: str, api_key: str | None, timeout_s: float) -> Post:
    """``post(path, body) -> (status, body bytes)`` over one short-lived connection."""
    parsed = urlparse(base_url)
    prefix = parsed.path.rstrip("/")
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"

    def post(path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        conn_cls = (
            http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
        )
        conn = conn_cls(parsed.netloc, timeout=timeout_s)
        try:
            conn.request("POST", prefix + path, json.dumps(body).encode(), headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    return post


def run_probe(post: Post, name: str, api: str, body: dict[str, Any], sent: list[str]) -> Probe:
    """Send one probe and read its stream."""
    path = "/v1/chat/completions" if api == "chat" else "/v1/completions"
    p = Probe(name=name, api=api, sent=sent)
    try:
        status, data = post(path, body)
    except (OSError, http.client.HTTPException) as e:
        p.error = f"{type(e).__name__}: {e}"[:ERROR_TEXT_MAX]
        return p
    p.status = status
    if status != 200:
        from profiler.load.client import error_text  # the records' reading of an error body

        p.error = f"HTTP {status}: {error_text(data.decode('utf-8', 'replace'), ERROR_TEXT_MAX)}"
        return p
    finished: set[int] = set()
    if body.get("stream"):
        events = [line[5:].strip() for line in data.split(b"\n") if line.startswith(b"data:")]
    else:  # one JSON answer: its usage is the final usage, its choices the content
        events = [data]
    for payload in events:
        if not payload or payload == b"[DONE]":
            continue
        try:
            ev = json.loads(payload)
        except ValueError:
            continue
        if not isinstance(ev, dict):
            continue
        if not body.get("stream"):
            _as_final_event(ev)
        if "error" in ev and not ev.get("choices"):
            err = ev["error"]
            msg = err.get("message") if isinstance(err, dict) else err
            p.error = f"error event: {msg}"[:ERROR_TEXT_MAX]
            return p
        choices = ev.get("choices") or []
        usage = ev.get("usage")
        if "_final_usage" in ev:
            usage, choices = ev["_final_usage"], []
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            if choices:
                p.usage_per_chunk = True
            else:
                p.usage_final = True
                p.completion_tokens = usage["completion_tokens"]
            if isinstance(usage.get("prompt_tokens"), int):
                p.prompt_tokens = usage["prompt_tokens"]
        for ch in ev.get("choices") or []:
            if not isinstance(ch, dict):
                continue
            delta = ch.get("delta")
            if not isinstance(delta, dict):
                delta = {}
            if ch.get("text") or delta.get("content") or delta.get("reasoning_content"):
                p.content_chunks += 1
            if ch.get("finish_reason"):
                finished.add(ch.get("index", 0))
    p.choices_finished = len(finished)
    p.ok = p.content_chunks > 0
    if not p.ok:
        p.error = "HTTP 200 but the stream carried no content"
    return p


def _as_final_event(ev: dict[str, Any]) -> None:
    """A non-streaming answer read as a stream: its message is the content, and its usage
    is the final usage event's (moved off the choices)."""
    for ch in ev.get("choices") or []:
        if isinstance(ch, dict) and isinstance(ch.get("message"), dict):
            ch["delta"] = ch.pop("message")
    usage = ev.pop("usage", None)
    if isinstance(usage, dict):
        ev["_final_usage"] = usage


def prompt_words(k: int) -> str:
    """A text prompt of ``k`` words."""
    from profiler.load.prompts import WORDS

    return " ".join(WORDS[i % len(WORDS)] for i in range(k))


class Prober:
    """Sends the probes of one preflight (``profiler.load.preflight``), each a request built
    from a base and one change, sent again when it fails transiently; keeps them all."""

    def __init__(self, post: Post, model: str) -> None:
        self.post = post
        self.model = model
        self.probes: list[Probe] = []

    def send(
        self,
        name: str,
        api: str,
        *,
        words: int = PROBE_WORDS[0],
        ids: bool = False,
        extras: bool = False,
        usage: str = "final",  # none | final | per_chunk
        n: int = 1,
        stream: bool = True,
    ) -> Probe:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": PROBE_MAX_TOKENS,
            "stream": stream,
            "temperature": 1.0 if n > 1 else 0.0,
        }
        sent = [] if stream else ["stream: false"]
        if api == "chat":
            body["messages"] = [{"role": "user", "content": prompt_words(words)}]
        elif ids:
            body["prompt"] = PROBE_IDS
            sent.append("prompt as token ids")
        else:
            body["prompt"] = prompt_words(words)
        if usage != "none" and stream:
            body["stream_options"] = {"include_usage": True}
            sent.append("stream_options.include_usage")
            if usage == "per_chunk":
                body["stream_options"]["continuous_usage_stats"] = True
                sent.append("stream_options.continuous_usage_stats")
        if extras:
            body.update(ignore_eos=True, min_tokens=PROBE_MAX_TOKENS)
            sent += ["ignore_eos", "min_tokens"]
        if n > 1:
            body["n"] = n
            sent.append(f"n={n}")
        p = run_probe(self.post, name, api, body, sent)
        while p.transient and p.attempts < PROBE_ATTEMPTS:
            time.sleep(0.25 * p.attempts)
            attempts = p.attempts + 1
            p = run_probe(self.post, name, api, body, sent)
            p.attempts = attempts
        self.probes.append(p)
        log.info("probe %s: %s", name, "ok" if p.ok else p.error)
        return p
