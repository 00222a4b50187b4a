"""Synthetic prompt content: random token ids (exact lengths) and words (chat mode).

Ids and words come from pools drawn in large blocks from a seeded generator and handed out in
order, so a prompt costs one list slice, not a call into the generator per request; no two
requests share ids (each id is drawn once). Shared prefixes are a function of
``(seed, prefix key)`` alone, so every worker process and every run with the same seed sends
the same prefix for the same key (what a prefix cache sees).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

# Token ids drawn for prompts: above the special tokens of common vocabularies (the embedded
# tiny model's specials are 0..3) and inside every vocabulary we serve (the tiny model has
# 2,048 entries).
VOCAB_LOW, VOCAB_HIGH = 16, 2000
POOL = 1 << 16
# Words that are one token each (with their leading space) in common BPE vocabularies.
WORDS = (
    "the of and to in is that for it as with was on be by at this are from or an have not "
    "they which one you were all we can her has there been if more when will would who so no "
    "time about many then them these some other into than its only could new also two first "
    "any like after over such make where through most well even way because each good system "
    "data model server token request latency memory network cluster power energy"
).split()


class IdSource:
    """Random token ids in ``[low, high)`` handed out from a seeded pool."""

    def __init__(self, rng: np.random.Generator, low: int = VOCAB_LOW, high: int = VOCAB_HIGH):
        if not 0 <= low < high:
            raise ValueError(f"bad token-id range [{low}, {high})")
        self.rng, self.low, self.high = rng, low, high
        self._pool: list[int] = []
        self._pos = 0

    def take(self, n: int) -> list[int]:
        if self._pos + n > len(self._pool):
            self._pool = self.rng.integers(self.low, self.high, max(POOL, n)).tolist()
            self._pos = 0
        out = self._pool[self._pos : self._pos + n]
        self._pos += n
        return out


class WordSource:
    """Space-separated words from :data:`WORDS`, handed out from a seeded pool."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._pool: list[str] = []
        self._pos = 0

    def take(self, n: int) -> str:
        if self._pos + n > len(self._pool):
            idx = self.rng.integers(0, len(WORDS), max(POOL, n))
            self._pool = np.asarray(WORDS, dtype=object)[idx].tolist()
            self._pos = 0
        out = " ".join(self._pool[self._pos : self._pos + n])
        self._pos += n
        return out


def prefix_key(prefix_id: str) -> int:
    """A stable integer for a prefix id (``hash()`` differs between processes)."""
    return zlib.crc32(prefix_id.encode())


def prefix_ids(
    seed: int, prefix_id: str, length: int, low: int = VOCAB_LOW, high: int = VOCAB_HIGH
) -> list[int]:
    """The ``length`` shared token ids of ``prefix_id``: the same for the same seed and id."""
    rng = np.random.default_rng([seed, 7919, prefix_key(prefix_id)])
    return rng.integers(low, high, length).tolist()


def ids_to_words(ids: list[int]) -> str:
    """Words standing for ``ids`` (a chat system prompt derived from a shared prefix)."""
    return " ".join(WORDS[t % len(WORDS)] for t in ids)


# ------------------------------------------------------------------ text of a token length
# Servers that refuse token-id prompts get text: the words standing for the ids
# (``ids_to_words``, so a shared prefix stays a shared text prefix), cut to the requested
# token count under the model's tokenizer, or, without one, sized by the server's own counts
# of the capability probe's prompts (tokens per word and the tokens it adds to every prompt).
FIT_ROUNDS = 4


class TextPrompter:
    """Text prompts of a requested token length.

    With ``offsets`` (``profiler.load.tokens.load_offsets``) the text is cut at the end of the
    token that reaches the length and checked by encoding the cut text again (a cut inside a
    word may tokenise differently; the target is corrected and cut again, at most
    ``FIT_ROUNDS`` times, keeping the closest). Without a tokenizer, ``tokens_per_word``
    (calibrated from the server's ``prompt_tokens``) sizes it in whole words. ``added_tokens``
    is what the server adds to every text prompt of the API (a BOS token; a chat template's
    tokens): the text gets that many fewer."""

    def __init__(
        self,
        offsets: Callable[[str], list[tuple[int, int]]] | None = None,
        tokens_per_word: float | None = None,
    ) -> None:
        if offsets is None and (tokens_per_word is None or tokens_per_word <= 0):
            raise ValueError("a TextPrompter needs a tokenizer or a positive tokens_per_word")
        self.offsets = offsets
        self.tokens_per_word = tokens_per_word

    @property
    def exact(self) -> bool:
        """The text's token count is checked with the model's tokenizer."""
        return self.offsets is not None

    def for_ids(self, ids: list[int], added_tokens: float = 0.0) -> str:
        """Text that the server counts as ``len(ids)`` prompt tokens, made of the words that
        stand for ``ids`` (the same ids give the same text; a shared prefix of ids a shared
        prefix of text)."""
        return self.fit(ids_to_words(ids), len(ids) - added_tokens)

    def fit(self, words: str, target: float) -> str:
        """``words`` (repeated when too short) cut to ``target`` tokens (at least one)."""
        target_i = max(int(round(target)), 1)
        if not words.strip():
            words = WORDS[0]
        if self.offsets is None:
            assert self.tokens_per_word is not None
            k = max(int(round(target_i / self.tokens_per_word)), 1)
            return _words(words, k)
        offsets = self.offsets
        text = words
        offs = offsets(text)
        while len(offs) < target_i:  # a word is at least one token: rarely needed
            text = f"{text} {words}"
            offs = offsets(text)
        want = target_i
        best, best_err = text, abs(len(offs) - target_i)
        for _ in range(FIT_ROUNDS):
            cut = text[: offs[want - 1][1]]
            got = len(offsets(cut))
            if got == target_i:
                return cut
            if abs(got - target_i) < best_err:
                best, best_err = cut, abs(got - target_i)
            want = min(max(want + target_i - got, 1), len(offs))
        return best


def _words(words: str, k: int) -> str:
    """The first ``k`` words of ``words``, repeated as often as needed."""
    parts = words.split()
    if len(parts) >= k:
        return " ".join(parts[:k])
    reps = -(-k // len(parts))
    return " ".join((parts * reps)[:k])
