"""How text prompts are sized for an endpoint that does not take token ids (or for chat): the
tokens the server adds to every prompt (a BOS token, a chat template) and, without a
tokenizer, the server's tokens per word, from its own ``prompt_tokens`` for probe prompts of
known sizes. Part of the capability preflight (``profiler.load.preflight``).
"""

from __future__ import annotations

from profiler.load.capabilities import Capabilities
from profiler.load.probes import PROBE_WORDS, Probe, Prober, prompt_words


def size_text(
    caps: Capabilities,
    pr: Prober,
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
        ours = count(prompt_words(k1))
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
