"""Server capabilities: what an OpenAI-compatible endpoint accepts and reports (recorded in
``manifest.json`` under ``server_capabilities``), so the load sends only what the server takes,
and what a workload needs of it.

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

They are found by ``profiler.load.preflight`` (the probes: ``profiler.load.probes``; text
prompt sizing: ``profiler.load.prompt_sizing``), or stated by ``--server-kind``
(``KIND_PRESETS``, no probe), or known (a server infprof launched is vLLM).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from profiler.load.client import ClientOptions
    from profiler.load.probes import Probe
    from profiler.spec import WorkloadSpec

SERVER_KINDS = ("auto", "vllm", "sglang", "trtllm", "openai", "generic")
# where the capabilities come from: probed, probing failed (vLLM's assumed), --server-kind,
# or a server infprof launched
Source = Literal["probe", "probe_failed", "server_kind", "launched"]
StreamUsage = Literal["per_chunk", "final", "none"]  # usage per chunk, at the end, or none
PromptFit = Literal["token_ids", "tokenizer", "calibrated", "words"]  # how prompts are sized

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

    source: Source
    server_kind: str
    owned_by: str | None = None
    completions: bool | None = None
    chat: bool | None = None
    token_id_prompts: bool | None = None
    length_controls: bool | None = None
    stream_usage: StreamUsage | None = None
    include_usage: bool = True  # stream_options.include_usage is sent
    continuous_usage: bool = False  # stream_options.continuous_usage_stats is sent
    n_samples: bool | None = None
    chat_template_tokens: float | None = None
    text_added_tokens: float | None = None
    tokens_per_word: float | None = None
    prompt_fit: PromptFit = "token_ids"
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
    kind: str, owned_by: str | None = None, *, source: Source = "server_kind"
) -> Capabilities:
    """The capabilities ``--server-kind`` states (no probe)."""
    preset = KIND_PRESETS[kind]
    caps = Capabilities(source=source, server_kind=kind, owned_by=owned_by, **preset)
    caps.prompt_fit = "token_ids" if caps.token_id_prompts else "words"
    return caps
