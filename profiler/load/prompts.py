"""Synthetic prompt content: random token ids (exact lengths) and words (chat mode).

Ids and words come from pools drawn in large blocks from a seeded generator and handed out in
order, so a prompt costs one list slice, not a call into the generator per request; no two
requests share ids (each id is drawn once). Shared prefixes are a function of
``(seed, prefix key)`` alone, so every worker process and every run with the same seed sends
the same prefix for the same key (what a prefix cache sees).
"""

from __future__ import annotations

import zlib

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
