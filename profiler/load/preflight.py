"""Capability preflight: what an OpenAI-compatible endpoint accepts and reports
(``profiler.load.capabilities``), found with a few small probe requests before the load
(``profiler.load.probes``; not counted), or taken from ``--server-kind``.

The first probe is vLLM's full request (token ids, ``ignore_eos``/``min_tokens``, usage per
chunk, ``n = 2``): a server that takes it needs no other. A server that refuses it gets a
plain OpenAI request, then one probe per feature; then text prompts are sized
(``profiler.load.prompt_sizing``). ``--server-kind`` skips the probes where the user knows
the answer (``KIND_PRESETS``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from profiler.errors import EndpointError
from profiler.load.capabilities import Capabilities, Needs, StreamUsage, from_kind
from profiler.load.probes import PROBE_TIMEOUT_S, Post, Probe, Prober, http_post
from profiler.load.prompt_sizing import size_text

if TYPE_CHECKING:
    from profiler.serving.endpoint import Endpoint


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
    pr = Prober(post, endpoint.model)
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
    size_text(caps, pr, plain, chat, tokenizer)
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


def _usage_kind(p: Probe) -> StreamUsage:
    return "per_chunk" if p.usage_per_chunk else ("final" if p.usage_final else "none")


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
