"""The embedded default model: a tiny Llama-architecture model directory, made offline.

``make_tiny_model()`` writes ``config.json`` (LlamaForCausalLM, 2 layers, hidden 128, 4 heads
of 32, 2 KV heads, vocab 2048, 8192 positions), a byte-level BPE ``tokenizer.json`` with a
Llama-style ``<s>``/``</s>`` and a Jinja chat template, ``tokenizer_config.json``,
``special_tokens_map.json`` and ``generation_config.json``. Everything is built from constants
in this file, so the output is byte-for-byte the same on every machine.

No weights are written: vLLM serves the directory with ``--load-format dummy``
(:data:`TINY_LOAD_FORMAT`), which fills the parameters with small random values. The point of
the model is to exercise the serving path (scheduling, KV cache, streaming) in seconds on a CPU,
not to produce meaningful text; requests should set ``ignore_eos`` to get a fixed output length.

The tokenizer is built without training: 256 byte tokens (GPT-2 byte-to-unicode alphabet) plus
merges of pairs of common characters in a fixed order, so ids never depend on a trainer's
tie-breaking. Special ids follow Llama: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, plus ``<pad>`` 3.

The directory is cached under ``models_dir()/tiny-llama`` (``INFPROF_HOME`` moves it). A stamp
file holds the hash of the generated content; a changed generator produces another hash and the
directory is rebuilt. Nothing here imports vLLM, transformers or torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from profiler.errors import SpecError
from profiler.paths import models_dir

TINY_NAME = "tiny-llama"
TINY_LOAD_FORMAT = "dummy"
"""vLLM ``--load-format`` the tiny model needs: it ships no weights."""
TINY_DTYPE = "float32"
"""dtype the tiny model is declared in and served with (fastest on AVX2-only CPUs)."""
TINY_MAX_MODEL_LEN = 8192
STAMP_FILE = ".infprof-tiny.json"
GENERATOR_VERSION = 1

VOCAB_SIZE = 2048
HIDDEN_SIZE = 128
NUM_LAYERS = 2
NUM_HEADS = 4
NUM_KV_HEADS = 2
INTERMEDIATE_SIZE = 512

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 3

# Characters (in the byte-level alphabet) paired to make merges, most frequent first.
# "Ġ" is the byte-level form of a space, "Ċ" of a newline.
_PAIR_CHARS = "Ġetaoinshrdlcumwfgypbvkjxqz.,ĊTAISCMNOPBDEFGHLRW0123456789'-:"

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def default_dir() -> Path:
    return models_dir() / TINY_NAME


def make_tiny_model(out_dir: Path | None = None) -> Path:
    """Create (or reuse) the tiny model directory and return its path.

    Idempotent: when the directory's stamp matches the content this version generates, nothing
    is written. Otherwise the files are built in a sibling temporary directory and swapped in,
    so a reader never sees a half-written model.
    """
    target = Path(out_dir) if out_dir is not None else default_dir()
    return write_model_dir(target, _render_files(), "a tiny model directory")


def write_model_dir(target: Path, files: dict[str, bytes], what: str) -> Path:
    """Write ``files`` as the embedded model directory ``target`` (stamped, swapped in whole).

    Shared by every embedded model (this tiny one and profiler/serving/shapes.py): nothing is
    written when the stamp already matches ``files``; a directory that is neither empty nor an
    embedded model is refused (``what`` names the expected kind in the message)."""
    digest = _digest(files)
    if _stamp_digest(target) == digest:
        return target
    if target.exists() and not (target.is_dir() and (is_tiny_model(target) or _is_empty(target))):
        raise SpecError(
            f"{target} exists and is not {what}",
            "pass --out with a new or empty directory",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        stamp = {"generator_version": GENERATOR_VERSION, "sha256": digest}
        (tmp / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n")
        _swap_in(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def is_tiny_model(path: str | Path) -> bool:
    """True when ``path`` is an embedded model directory this package generated: the tiny model
    or one of the real shapes of profiler/serving/shapes.py. None has weights: each needs
    TINY_LOAD_FORMAT."""
    return (Path(path) / STAMP_FILE).is_file()


is_embedded_model = is_tiny_model


# ---------------------------------------------------------------- content
def _render_files() -> dict[str, bytes]:
    return {
        "config.json": _json_bytes(_config()),
        "generation_config.json": _json_bytes(_generation_config()),
        "tokenizer.json": _tokenizer_json().encode(),
        "tokenizer_config.json": _json_bytes(_tokenizer_config()),
        "special_tokens_map.json": _json_bytes(_special_tokens_map()),
    }


def _config() -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": VOCAB_SIZE,
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": INTERMEDIATE_SIZE,
        "num_hidden_layers": NUM_LAYERS,
        "num_attention_heads": NUM_HEADS,
        "num_key_value_heads": NUM_KV_HEADS,
        "head_dim": HIDDEN_SIZE // NUM_HEADS,
        "hidden_act": "silu",
        "max_position_embeddings": TINY_MAX_MODEL_LEN,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "torch_dtype": TINY_DTYPE,
        "use_cache": True,
    }


def _generation_config() -> dict[str, Any]:
    # No sampling defaults: vLLM applies generation_config values as request defaults, and a
    # benchmark wants the request's own parameters to rule.
    return {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}


def _special_tokens_map() -> dict[str, str]:
    return {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


def _tokenizer_config() -> dict[str, Any]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added_tokens_decoder(SPECIAL_TOKENS, first_id=0),
        **_special_tokens_map(),
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": TINY_MAX_MODEL_LEN,
        "padding_side": "left",
        "chat_template": CHAT_TEMPLATE,
    }


def added_tokens_decoder(tokens: Any, first_id: int) -> dict[str, dict[str, Any]]:
    """``tokenizer_config.json``'s ``added_tokens_decoder``: special ``tokens`` with ids from
    ``first_id`` on (the made models' tokenizers, tiny and shapes)."""
    flags = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    return {
        str(first_id + i): {"content": tok, **flags, "special": True}
        for i, tok in enumerate(tokens)
    }


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Specials, the 256 byte-level symbols, then pair merges up to VOCAB_SIZE."""
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in _byte_alphabet():
        vocab[ch] = len(vocab)
    chars = list(dict.fromkeys(_PAIR_CHARS))
    rank = {c: i for i, c in enumerate(chars)}
    pairs = sorted(
        ((a, b) for a in chars for b in chars), key=lambda p: (rank[p[0]] + rank[p[1]], rank[p[0]])
    )
    merges: list[tuple[str, str]] = []
    for a, b in pairs:
        if len(vocab) >= VOCAB_SIZE:
            break
        if a + b in vocab:
            continue
        vocab[a + b] = len(vocab)
        merges.append((a, b))
    if len(vocab) != VOCAB_SIZE:  # a bug in the constants above, not a user error
        raise RuntimeError(f"tiny tokenizer has {len(vocab)} tokens, expected {VOCAB_SIZE}")
    return vocab, merges


def _byte_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode table, in byte order (the alphabet of ByteLevel pre-tokenizing)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table: dict[int, str] = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return [table[b] for b in range(256)]


def _tokenizer_json() -> str:
    vocab, merges = _vocab_and_merges()
    return byte_level_bpe_json(vocab, merges, "<s>", BOS_ID, SPECIAL_TOKENS)


def byte_level_bpe_json(
    vocab: dict[str, int], merges: list[tuple[str, str]], bos: str, bos_id: int, special: Any
) -> str:
    """``tokenizer.json`` of a byte-level BPE (GPT-2/Llama-3 style pre-tokenizer and decoder)
    that puts ``bos`` before every sequence: the made models' tokenizers (tiny and shapes)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    return tok.to_str(pretty=True)


# ---------------------------------------------------------------- files
def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256(f"generator={GENERATOR_VERSION}\n".encode())
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()


def _is_empty(path: Path) -> bool:
    return not any(path.iterdir())


def _stamp_digest(target: Path) -> str | None:
    try:
        data = json.loads((target / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None
    value = data.get("sha256") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _swap_in(tmp: Path, target: Path) -> None:
    """Replace ``target`` by ``tmp``; tolerate another process finishing the same build first."""
    old: Path | None = None
    if target.exists():
        old = target.with_name(f".{target.name}.old.{os.getpid()}")
        try:
            target.rename(old)
        except FileNotFoundError:  # another process moved it away a moment ago
            old = None
    try:
        tmp.rename(target)
    except OSError:
        # Another process put its copy in place between our rename and ours; theirs is equal.
        if _stamp_digest(target) is None:
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
