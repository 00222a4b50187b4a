"""Embedded GPU default models: real Llama shapes made offline, served with dummy weights.

On a GPU host ``infprof run`` without ``--model`` serves a model of a real size, so a run
says something about the GPU: the Llama-3.1-8B architecture (``llama-8b-shape``) or, when the
GPU cannot hold it with a useful KV cache, the Llama-3.2-1B architecture (``llama-1b-shape``).
Like the tiny model (profiler/serving/tinymodel.py, whose write machinery this module shares)
each directory holds ``config.json``, ``generation_config.json``, a ``tokenizer.json`` built
with ``tokenizers`` and its ``tokenizer_config.json``/``special_tokens_map.json``, and no
weights: vLLM serves it with ``--load-format dummy`` (random weights, real compute and memory
traffic). Nothing is downloaded.

The tokenizer has exactly the config's vocabulary, 128,256 entries, so every id a model with
random weights can generate decodes: 256 byte-level symbols, 127,744 BPE merges made in a fixed
order (every pair of symbols ranked by how common its characters are in English, then those
pairs extended by one more symbol), and Llama 3.1's 256 special tokens at ids 128,000-128,255
(``<|begin_of_text|>``, ``<|eot_id|>``, ...). Building it takes well under a second. Prompts
of a benchmark are token ids, so what the merges mean does not matter; what matters is the
vocabulary size (LM head, sampling, detokenization cost) and that decoding works.

Which shape a GPU host serves is chosen by profiler/capacity/shape_choice.py (it needs the
capacity model's memory arithmetic; this module only makes the shapes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from profiler.errors import SpecError
from profiler.paths import models_dir
from profiler.serving import tinymodel

SHAPE_DTYPE = "bfloat16"
"""dtype the shapes are declared in and served with on a GPU."""
SHAPE_LOAD_FORMAT = tinymodel.TINY_LOAD_FORMAT
DEFAULT_BATCH = 256  # in-flight target when the arrival process sets none
MAX_MODEL_LEN_FLOOR = 8192
"""--max-model-len of a shape: at least this, more when the workload needs it (both Llama
configs allow 131,072; serving that would only raise vLLM's startup check on the KV cache)."""

VOCAB_SIZE = 128256
N_REGULAR = 128000  # byte symbols + merges; the 256 special tokens follow
BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
EOT = "<|eot_id|>"
EOM = "<|eom_id|>"
_NAMED_SPECIALS = {
    0: BOS,
    1: EOS,
    4: "<|finetune_right_pad_id|>",
    6: "<|start_header_id|>",
    7: "<|end_header_id|>",
    8: EOM,
    9: EOT,
    10: "<|python_tag|>",
}

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


@dataclass(frozen=True)
class Shape:
    """One real architecture, by its Hugging Face config.json values."""

    name: str
    architecture: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rope_scaling_factor: float
    tie_word_embeddings: bool
    vocab_size: int = VOCAB_SIZE
    max_position_embeddings: int = 131072
    rope_theta: float = 500000.0

    def config(self) -> dict[str, Any]:
        """config.json, as Meta's Llama 3.1/3.2 configs spell it."""
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": N_REGULAR,
            "eos_token_id": [N_REGULAR + 1, N_REGULAR + 8, N_REGULAR + 9],
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "initializer_range": 0.02,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "mlp_bias": False,
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "num_key_value_heads": self.num_key_value_heads,
            "pretraining_tp": 1,
            "rms_norm_eps": 1e-5,
            "rope_scaling": {
                "factor": self.rope_scaling_factor,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192,
                "rope_type": "llama3",
            },
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": SHAPE_DTYPE,
            "use_cache": True,
            "vocab_size": self.vocab_size,
        }


# Shape(name, architecture, hidden_size, intermediate_size, num_hidden_layers,
#       num_attention_heads, num_key_value_heads, head_dim, rope_scaling_factor,
#       tie_word_embeddings), as Meta's config.json files give them
LLAMA_8B = Shape("llama-8b-shape", "Llama-3.1-8B", 4096, 14336, 32, 32, 8, 128, 8.0, False)
LLAMA_1B = Shape("llama-1b-shape", "Llama-3.2-1B", 2048, 8192, 16, 32, 8, 64, 32.0, True)
SHAPES: dict[str, Shape] = {s.name: s for s in (LLAMA_8B, LLAMA_1B)}
"""Largest first: ``choose_shape`` takes the first that fits."""


def get_shape(name: str) -> Shape:
    try:
        return SHAPES[name]
    except KeyError:
        raise SpecError(
            f"unknown model shape '{name}'", f"use one of: {', '.join(SHAPES)}"
        ) from None


def default_dir(name: str) -> Path:
    return models_dir() / name


def make_shape_model(name: str, out_dir: Path | None = None) -> Path:
    """Create (or reuse) the directory of shape ``name`` and return its path (idempotent,
    swapped in whole; see ``tinymodel.write_model_dir``)."""
    shape = get_shape(name)
    target = Path(out_dir) if out_dir is not None else default_dir(name)
    return tinymodel.write_model_dir(target, render_files(shape), "an embedded model directory")


# ---------------------------------------------------------------- files
def render_files(shape: Shape) -> dict[str, bytes]:
    j = tinymodel._json_bytes
    return {
        "config.json": j(shape.config()),
        "generation_config.json": j(
            {"bos_token_id": N_REGULAR, "eos_token_id": shape.config()["eos_token_id"]}
        ),
        "tokenizer.json": _tokenizer_json().encode(),
        "tokenizer_config.json": j(_tokenizer_config()),
        "special_tokens_map.json": j({"bos_token": BOS, "eos_token": EOT}),
    }


def special_tokens() -> list[str]:
    """Llama 3.1's 256 special tokens, in id order from 128,000."""
    out: list[str] = []
    reserved = 0
    for i in range(VOCAB_SIZE - N_REGULAR):
        if i in _NAMED_SPECIALS:
            out.append(_NAMED_SPECIALS[i])
        else:
            out.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    return out


def _tokenizer_config() -> dict[str, Any]:
    from profiler.serving.tinymodel import added_tokens_decoder

    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added_tokens_decoder(special_tokens(), first_id=N_REGULAR),
        "bos_token": BOS,
        "eos_token": EOT,
        "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "chat_template": CHAT_TEMPLATE,
    }


def vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The 128,000 regular tokens: 256 byte symbols, then merges in a fixed order. Level 1:
    every ordered pair of symbols, by the sum of the two symbols' ranks (common English
    characters first). Level 2: a level-1 token extended by one symbol, enumerated along the
    same rank diagonals, until the vocabulary is full."""
    alphabet = tinymodel._byte_alphabet()
    preferred = list(dict.fromkeys(tinymodel._PAIR_CHARS))
    order = preferred + [c for c in alphabet if c not in preferred]
    rank = {c: i for i, c in enumerate(order)}
    vocab: dict[str, int] = {c: i for i, c in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []

    def add(a: str, b: str) -> None:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
            merges.append((a, b))

    pairs = sorted(
        ((a, b) for a in order for b in order), key=lambda p: (rank[p[0]] + rank[p[1]], rank[p[0]])
    )
    for a, b in pairs:
        if len(vocab) >= N_REGULAR:
            break
        add(a, b)
    level1 = [a + b for a, b in merges]
    diagonal = 0
    while len(vocab) < N_REGULAR:
        for i in range(min(diagonal + 1, len(level1))):
            j = diagonal - i
            if j < len(order):
                add(level1[i], order[j])
                if len(vocab) >= N_REGULAR:
                    break
        diagonal += 1
    if len(vocab) != N_REGULAR:  # a bug in the constants above, not a user error
        raise RuntimeError(f"shape tokenizer has {len(vocab)} regular tokens, not {N_REGULAR}")
    return vocab, merges


@lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    from profiler.serving.tinymodel import byte_level_bpe_json

    vocab, merges = vocab_and_merges()
    return byte_level_bpe_json(vocab, merges, BOS, N_REGULAR, special_tokens())


# ---------------------------------------------------------------- the GPUs a server uses
def serving_gpus(
    gpus: list[dict[str, Any]], count: int, visible: str | None = None, order: str | None = None
) -> list[dict[str, Any]]:
    """The GPUs a launched vLLM server uses: those ``visible`` (``CUDA_VISIBLE_DEVICES``:
    indices or UUIDs, in its order, resolved as ``profiler.telemetry.gpu_scope`` does; default
    this process's variable), else the first ``count`` NVML sees."""
    from profiler.telemetry.gpu_scope import GpuInfo, from_cuda_visible_devices

    if visible is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        order = os.environ.get("CUDA_DEVICE_ORDER")
    if visible is not None and visible.strip():
        indices, _note = from_cuda_visible_devices(
            visible, GpuInfo.from_inventory(gpus), device_order=order
        )
        by_index = {g.get("index"): g for g in gpus}
        picked = [by_index[i] for i in indices or [] if i in by_index]
        if picked:
            return picked[:count]
    return gpus[:count]
