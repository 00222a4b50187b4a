"""Capability preflight: what an OpenAI-compatible endpoint accepts and reports, found with a
few small probe requests before the load (not counted; recorded in ``manifest.json`` under
``server_capabilities``), so the load sends only what the server takes.

What is found:

- ``token_id_prompts``: ``/v1/completions`` takes a prompt as a list of token ids (vLLM,
  SGLang, TensorRT-LLM, llama.cpp do; OpenAI's chat-era endpoints, GuideLLM's mock server and
  many gateways take strings only). Where refused, prompts are text of the requested length.
- ``length_controls``: vLLM's ``ignore_eos`` and ``min_tokens`` are accepted. Where refused,
  ``max_tokens`` only bounds the output and every record says ``length_enforced: false``.
- ``stream_usage``: ``per_chunk`` (``stream_options.continuous_usage_stats``), ``final`` (one
  usage event at the end, ``include_usage``) or ``none``.
- ``n_samples``: ``n > 1`` gives that many choices.
- ``chat_template_tokens``: prompt tokens a chat request has beyond its content.
- ``tokens_per_word`` and ``text_added_tokens``: without a tokenizer, the server's own
  ``prompt_tokens`` for two text prompts of different lengths give the tokens per word and the
  tokens it adds to every prompt (a BOS token), which size text prompts.

The first probe is vLLM's full request (token ids, ``ignore_eos``/``min_tokens``, usage per
chunk, ``n = 2``): a server that takes it needs no other. A server that refuses it gets a
plain OpenAI request, then one probe per feature. ``--server-kind`` skips the probes where the
user knows the answer (``KIND_PRESETS``).
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from profiler.errors import EndpointError

if TYPE_CHECKING:
    from profiler.load.client import ClientOptions
    from profiler.serving.endpoint import Endpoint
    from profiler.spec import WorkloadSpec

log = logging.getLogger(__name__)

SERVER_KINDS = ("auto", "vllm", "sglang", "trtllm", "openai", "generic")
PROBE_MAX_TOKENS = 4
# words of the two text probes (prompt tokens per word and the tokens added to every prompt
# come from the server's counts of both)
PROBE_WORDS = (16, 48)
PROBE_IDS = list(range(100, 108))  # token ids inside every vocabulary, above the specials
PROBE_TIMEOUT_S = 120.0
PROBE_ATTEMPTS = 3  # a probe that fails transiently (5xx, 429, timeout) is sent again
ERROR_TEXT_MAX = 300

# What each kind is known to take, for ``--server-kind``: no probe is sent. vLLM, SGLang and
# TensorRT-LLM's OpenAI servers take token-id prompts, ignore_eos/min_tokens and
# stream_options.continuous_usage_stats; OpenAI's API takes none of them; ``generic`` is the
# plain OpenAI request with the final usage event.
_FULL = {
    "completions": True,
    "token_id_prompts": True,
    "length_controls": True,
    "stream_usage": "per_chunk",
    "include_usage": True,
    "continuous_usage": True,
    "n_samples": True,
}
_PLAIN = {
    "completions": True,
    "token_id_prompts": False,
    "length_controls": False,
    "include_usage": True,
    "continuous_usage": False,
    "n_samples": True,
}
KIND_PRESETS: dict[str, dict[str, Any]] = {
    "vllm": _FULL,
    "sglang": _FULL,
    "trtllm": _FULL,
    "openai": {**_PLAIN, "stream_usage": "final"},
    "generic": {**_PLAIN, "stream_usage": None},
}


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


@dataclass
class Needs:
    """What the workload asks of the server."""

    completions: bool = True
    chat: bool = False
    n_samples: bool = False
    exact_lengths: bool = False

    @classmethod
    def of(cls, wl: WorkloadSpec) -> Needs:
        apis = {s.api for s in wl.scenarios}
        return cls(
            completions="completions" in apis,
            chat="chat" in apis,
            n_samples=any(s.n > 1 for s in wl.scenarios),
            exact_lengths=any(s.ignore_eos for s in wl.scenarios),
        )


@dataclass
class Capabilities:
    """What the endpoint takes; ``None`` where not found (not probed, or not needed)."""

    source: str  # probe | server_kind | launched
    server_kind: str
    owned_by: str | None = None
    completions: bool | None = None
    chat: bool | None = None
    token_id_prompts: bool | None = None
    length_controls: bool | None = None
    stream_usage: str | None = None  # per_chunk | final | none
    include_usage: bool = True  # stream_options.include_usage is sent
    continuous_usage: bool = False  # stream_options.continuous_usage_stats is sent
    n_samples: bool | None = None
    chat_template_tokens: float | None = None
    text_added_tokens: float | None = None
    tokens_per_word: float | None = None
    prompt_fit: str = "token_ids"  # token_ids | tokenizer | calibrated | words
    notes: list[str] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)

    def fields_not_sent(self) -> list[str]:
        out = []
        if self.token_id_prompts is False:
            out.append("prompt as token ids")
        if self.length_controls is False:
            out += ["ignore_eos", "min_tokens"]
        if not self.include_usage:
            out.append("stream_options")
        elif not self.continuous_usage:
            out.append("stream_options.continuous_usage_stats")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fields_not_sent"] = self.fields_not_sent()
        return d

    def client_options(self, opts: ClientOptions) -> ClientOptions:
        """``opts`` with every field the endpoint refuses turned off, and text prompts sized."""
        return replace(
            opts,
            token_id_prompts=self.token_id_prompts is not False,
            vllm_extras=self.length_controls is not False,
            include_usage=self.include_usage,
            continuous_usage=self.continuous_usage,
            tokens_per_word=self.tokens_per_word,
            text_added_tokens=self.text_added_tokens or 0.0,
            chat_template_tokens=self.chat_template_tokens,
        )

    def summary_line(self) -> str:
        """One status line for the console."""

        def yn(v: bool | None) -> str:
            return "?" if v is None else ("yes" if v else "no")

        parts = [
            f"token-id prompts {yn(self.token_id_prompts)}",
            f"ignore_eos/min_tokens {yn(self.length_controls)}",
            f"usage {self.stream_usage or '?'}",
            f"n>1 {yn(self.n_samples)}",
        ]
        if self.chat_template_tokens is not None:
            parts.append(f"chat template {self.chat_template_tokens:g} tokens")
        if self.token_id_prompts is False:
            parts.append(f"text prompts sized by {self.prompt_fit}")
        return f"server capabilities ({self.source}): " + ", ".join(parts)


def from_kind(
    kind: str, owned_by: str | None = None, *, source: str = "server_kind"
) -> Capabilities:
    """The capabilities ``--server-kind`` states (no probe)."""
    preset = KIND_PRESETS[kind]
    caps = Capabilities(source=source, server_kind=kind, owned_by=owned_by, **preset)
    caps.prompt_fit = "token_ids" if caps.token_id_prompts else "words"
    return caps


# ---------------------------------------------------------------------- the probe itself
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


def _words(k: int) -> str:
    from profiler.load.prompts import WORDS

    return " ".join(WORDS[i % len(WORDS)] for i in range(k))


class _Prober:
    """The probe sequence (``preflight``): requests built from a base and one change each."""

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
            body["messages"] = [{"role": "user", "content": _words(words)}]
        elif ids:
            body["prompt"] = PROBE_IDS
            sent.append("prompt as token ids")
        else:
            body["prompt"] = _words(words)
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


def _n_works(p: Probe, n: int) -> bool:
    """``n`` choices each finished and, when usage came, the total counts all of them."""
    if not p.ok or p.choices_finished < n:
        return False
    return p.completion_tokens is None or p.completion_tokens >= n


def preflight(
    endpoint: Endpoint,
    needs: Needs,
    *,
    tokenizer: str | None = None,
    timeout_s: float = PROBE_TIMEOUT_S,
    post: Post | None = None,
) -> Capabilities:
    """Probe ``endpoint`` (see the module's docstring). ``EndpointError`` with the server's
    own message when it cannot serve the workload at all (every probe refused, the workload's
    API refused, ``n > 1`` ignored)."""
    post = post or http_post(endpoint.url, endpoint.api_key, timeout_s)
    pr = _Prober(post, endpoint.model)
    caps = Capabilities(source="probe", server_kind="auto", owned_by=endpoint.owned_by)
    base_api = "completions"
    full = pr.send("vllm-full", "completions", ids=True, extras=True, usage="per_chunk", n=2)
    plain: Probe | None = None
    if full.ok:
        caps.completions = caps.token_id_prompts = caps.length_controls = True
        caps.include_usage = caps.continuous_usage = True
        caps.n_samples = _n_works(full, 2)
        caps.stream_usage = _usage_kind(full)
    else:
        plain = pr.send("plain", "completions")
        if not plain.ok and plain.status is not None and 400 <= plain.status < 500:
            bare = pr.send("plain-no-stream-options", "completions", usage="none")
            if bare.ok:
                caps.include_usage, plain = False, bare
        caps.completions = plain.ok
        if not plain.ok:
            base_api = "chat"
    chat: Probe | None = None
    if needs.chat or not caps.completions:
        chat = pr.send("chat", "chat", usage="final" if caps.include_usage else "none")
        if not chat.ok and caps.include_usage and chat.status is not None and chat.status < 500:
            bare = pr.send("chat-no-stream-options", "chat", usage="none")
            if bare.ok:
                caps.include_usage, chat = False, bare
        caps.chat = chat.ok
    if not caps.completions and not caps.chat:
        first = plain or full
        if not any(p.refused for p in pr.probes):
            return _unknown(caps, pr.probes, first)
        raise EndpointError(
            f"{endpoint.url} refused every probe request: {first.error}",
            _diagnose(first.error or ""),
        )
    if not full.ok:  # one change at a time, from the plain request that worked
        base = plain if base_api == "completions" else chat
        assert base is not None
        usage = "final" if caps.include_usage else "none"
        if base_api == "completions":
            caps.token_id_prompts = _accepted(pr.send("token-ids", base_api, ids=True, usage=usage))
        caps.length_controls = _accepted(pr.send("ignore-eos", base_api, extras=True, usage=usage))
        if caps.include_usage:
            cont = pr.send("continuous-usage", base_api, usage="per_chunk")
            caps.continuous_usage = cont.ok and cont.usage_per_chunk
            caps.stream_usage = _usage_kind(cont if caps.continuous_usage else base)
        else:
            caps.stream_usage = _usage_kind(base)
        n_probe = pr.send("n", base_api, usage=usage, n=2)
        caps.n_samples = None if n_probe.status == 429 else _n_works(n_probe, 2)
    _size_text(caps, pr, plain, chat, tokenizer)
    caps.probes = pr.probes
    _check_needs(caps, needs, endpoint, pr.probes)
    return caps


def _accepted(p: Probe) -> bool | None:
    """A feature probe, a one-field change to a request that works: True when it worked;
    False when it failed every try (a 4xx, or a 5xx, as llama-cpp-python answers a request it
    cannot validate); None when rate-limited (429), so nothing is known (sent as before)."""
    if p.ok:
        return True
    return None if p.status == 429 else False


def _unknown(caps: Capabilities, probes: list[Probe], first: Probe) -> Capabilities:
    """Every probe failed without a refusal (5xx, timeouts, cut streams): nothing is known,
    so the load sends vLLM's full request; if it fails too, the early stop says why."""
    preset = from_kind("vllm", caps.owned_by, source="probe_failed")
    preset.server_kind = "auto"
    preset.completions = None
    preset.notes.append(
        f"every probe failed without an answer ({first.error}); sending vLLM's full request "
        "(--server-kind sets what the server takes)"
    )
    preset.probes = probes
    return preset


def _usage_kind(p: Probe) -> str:
    return "per_chunk" if p.usage_per_chunk else ("final" if p.usage_final else "none")


def _size_text(
    caps: Capabilities,
    pr: _Prober,
    plain: Probe | None,
    chat: Probe | None,
    tokenizer: str | None,
) -> None:
    """How text prompts are sized: the tokens the server adds to every prompt (a BOS token, a
    chat template) from its ``prompt_tokens`` for a prompt of known size and, without a
    tokenizer, tokens per word from a second prompt of another length. A server that streams
    no usage is asked once more without streaming (its answer carries usage)."""
    text_completions = bool(caps.completions and caps.token_id_prompts is False)
    chat_ok = chat is not None and chat.ok
    if not text_completions and not chat_ok:
        caps.prompt_fit = "token_ids"
        return
    k1, k2 = PROBE_WORDS
    counts: dict[tuple[str, int], int | None] = {}
    if plain is not None and plain.prompt_tokens is not None:
        counts[("completions", k1)] = plain.prompt_tokens
    if chat is not None and chat.prompt_tokens is not None:
        counts[("chat", k1)] = chat.prompt_tokens

    def server_count(api: str, words: int) -> int | None:
        if (api, words) not in counts:
            streamed = caps.stream_usage not in (None, "none")
            usage = "final" if caps.include_usage else "none"
            p = pr.send(f"count-{api}-{words}", api, words=words, usage=usage, stream=streamed)
            counts[(api, words)] = p.prompt_tokens if p.ok else None
        return counts[(api, words)]

    if tokenizer:
        from profiler.load.tokens import load_counter

        count = load_counter(tokenizer)
        caps.prompt_fit = "tokenizer"
        ours = count(_words(k1))
        if text_completions:
            theirs = server_count("completions", k1)
            if theirs is None:
                caps.notes.append("the server reports no prompt_tokens: the tokenizer alone sizes")
            else:
                caps.text_added_tokens = float(theirs - ours)
                if not 0 <= caps.text_added_tokens <= 8:
                    caps.notes.append(
                        f"the server counts {theirs} prompt tokens where the tokenizer counts "
                        f"{ours}: is --tokenizer the served model's?"
                    )
        if chat_ok:
            theirs = server_count("chat", k1)
            if theirs is not None:
                caps.chat_template_tokens = float(theirs - ours)
        return
    api = "completions" if text_completions else "chat"
    p1 = server_count(api, k1)
    p2 = server_count(api, k2) if p1 is not None else None
    if p1 is None or p2 is None or p2 <= p1:
        caps.prompt_fit = "words"
        caps.notes.append("no tokenizer and no usable prompt_tokens: one token per word")
        return
    per_word = (p2 - p1) / (k2 - k1)
    caps.tokens_per_word = round(per_word, 4)
    caps.prompt_fit = "calibrated"
    added = round(p1 - per_word * k1, 2)
    if api == "chat":
        caps.chat_template_tokens = added
        return
    caps.text_added_tokens = added
    if chat_ok:
        theirs = server_count("chat", k1)
        if theirs is not None:
            caps.chat_template_tokens = round(theirs - per_word * k1, 2)


def _check_needs(caps: Capabilities, needs: Needs, endpoint: Endpoint, probes: list[Probe]) -> None:
    def err_of(api: str) -> str:
        return next((p.error or "" for p in probes if p.api == api and not p.ok), "")

    if needs.completions and not caps.completions:
        raise EndpointError(
            f"{endpoint.url} refuses /v1/completions ({err_of('completions')})",
            "send chat requests: --api chat",
        )
    if needs.chat and not caps.chat:
        raise EndpointError(
            f"{endpoint.url} refuses /v1/chat/completions ({err_of('chat')})",
            "send completions requests (--api completions), or serve a model with a chat template",
        )
    if needs.n_samples and caps.n_samples is False:
        raise EndpointError(
            f"{endpoint.url} does not return n > 1 choices per request (it sent one)",
            "use one sample per prompt: --n 1, or a workload without n",
        )


def _diagnose(error: str) -> str:
    """The fix for a refused probe, from the server's message."""
    from profiler.load.guard import diagnose

    return diagnose(error)[1]


def resolve(
    endpoint: Endpoint,
    needs: Needs,
    *,
    server_kind: str = "auto",
    launched: bool = False,
    tokenizer: str | None = None,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> Capabilities:
    """The endpoint's capabilities: vLLM's for a server infprof launched, the preset of
    ``server_kind`` when given, else probed."""
    if launched:
        return from_kind("vllm", endpoint.owned_by, source="launched")
    if server_kind != "auto":
        caps = from_kind(server_kind, endpoint.owned_by)
        if caps.token_id_prompts is False and tokenizer:
            caps.prompt_fit = "tokenizer"
        return caps
    return preflight(endpoint, needs, tokenizer=tokenizer, timeout_s=timeout_s)
