"""Count streamed tokens with the model's own tokenizer, for servers that report no per-chunk
usage (no ``continuous_usage_stats``). Reads a Hugging Face ``tokenizer.json`` with the
``tokenizers`` library only: no transformers, no download, nothing imported until a tokenizer
is loaded. Counters are cached per process, so every client of a process shares one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from profiler.errors import SpecError

TOKENIZER_FILE = "tokenizer.json"
TokenCounter = Callable[[str], int]

_FIX = "pass a tokenizer.json file or a model directory that holds one"


def tokenizer_file(path: str | Path, *, option: str = "tokenizer") -> Path:
    """The ``tokenizer.json`` that ``path`` names: the file itself or one inside a directory."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / TOKENIZER_FILE
        if not p.is_file():
            raise SpecError(f"{option} '{path}': no {TOKENIZER_FILE} in this directory", _FIX)
    elif not p.is_file():
        raise SpecError(f"{option} '{path}' does not exist", _FIX)
    return p


def load_counter(path: str | Path, *, option: str = "tokenizer") -> TokenCounter:
    """``count(text) -> tokens`` with the tokenizer at ``path`` (special tokens not added; at
    least 1 for non-empty text). ``SpecError`` naming ``option`` and the path when the file is
    missing or is not a tokenizers-format ``tokenizer.json``."""
    return _load(path, option, _load_counter)


@functools.lru_cache(maxsize=8)
def _load_counter(file: str) -> TokenCounter:
    from tokenizers import Tokenizer

    encode = Tokenizer.from_file(file).encode

    def count(text: str) -> int:
        if not text:
            return 0
        return len(encode(text, add_special_tokens=False).ids) or 1

    return count


def model_tokenizer(model: str) -> str | None:
    """``model`` when it is a local directory holding a ``tokenizer.json``, else ``None``."""
    p = Path(model).expanduser()
    try:
        return str(p) if (p / TOKENIZER_FILE).is_file() else None
    except OSError:
        return None


TokenEncoder = Callable[[list[str]], list[list[int]]]
TokenOffsets = Callable[[str], list[tuple[int, int]]]
_T = TypeVar("_T")


def load_encoder(path: str | Path, *, option: str = "tokenizer") -> TokenEncoder:
    """``encode(texts) -> token ids of each`` with the tokenizer at ``path`` (special tokens not
    added; batched, so the tokenizers library encodes on all cores). ``SpecError`` as
    :func:`load_counter`."""
    return _load(path, option, _load_encoder)


def load_offsets(path: str | Path, *, option: str = "tokenizer") -> TokenOffsets:
    """``offsets(text) -> [(start, end), ...]``: the character span of every token of ``text``
    under the tokenizer at ``path`` (special tokens not added). Text prompts of an exact token
    length are cut at a token's end (``profiler.load.prompts.TextPrompter``). Errors as
    :func:`load_counter`."""
    return _load(path, option, _load_offsets)


def _load(path: str | Path, option: str, loader: Callable[[str], _T]) -> _T:
    """``loader(file)`` of the tokenizer at ``path``; ``SpecError`` naming ``option`` and the
    path when the file is missing or is not a tokenizers-format ``tokenizer.json``."""
    file = tokenizer_file(path, option=option)
    try:
        return loader(str(file.resolve()))
    except Exception as e:  # tokenizers raises plain Exception: unreadable, not JSON, bad model
        why = " ".join(str(e).split())[:200]
        raise SpecError(f"{option} '{path}': cannot load {file} ({why})", _FIX) from None


@functools.lru_cache(maxsize=8)
def _load_encoder(file: str) -> TokenEncoder:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(file)

    def encode(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]

    return encode


@functools.lru_cache(maxsize=8)
def _load_offsets(file: str) -> TokenOffsets:
    from tokenizers import Tokenizer

    encode = Tokenizer.from_file(file).encode

    def offsets(text: str) -> list[tuple[int, int]]:
        if not text:
            return []
        return list(encode(text, add_special_tokens=False).offsets)

    return offsets
