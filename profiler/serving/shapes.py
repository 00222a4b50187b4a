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

Choosing the shape (``choose_shape``), per GPU the server uses (the first ``tp x pp`` GPUs,
or those ``CUDA_VISIBLE_DEVICES`` names):

    budget = min(free memory, u x total memory)     (NVML; u = vLLM's 0.9, or lower: see below)
    need   = weights / tp + reserve + KV cache for the run's batch
           = params x 2 bytes / tp
             + reserve_bytes (profiler/capacity/perf.py: 1 GiB + activations + logits)
             + batch x (prompt + output tokens) x KV bytes per token / tp
    8B shape when budget >= need(8B), else the 1B shape when budget >= weights + reserve + one
    sequence of max-model-len, else a SpecError (free the GPU or pass --model).

vLLM refuses to start when less than u x total memory is free, so when less than 90 % is free
(and ``--gpu-memory-utilization`` is not given) u is lowered to (free - 1 GiB) / total, rounded
down to 0.01, and passed to vLLM. The batch is the run's concurrency (its closed loop, or the cap of an open loop; 256
otherwise). With the GPU default workload (256 in flight, 1,024 + 256 tokens) the 8B shape
needs 56.8 GiB per GPU (15.0 GiB weights, 1.8 GiB reserve, 40.0 GiB KV cache): an 80 GB H100
or a 141 GB H200 holds it, a 24 GB L4 or a 48 GB L40S gets the 1B shape (13.8 GiB: 2.3 GiB
weights, 1.5 GiB reserve, 10.0 GiB KV cache).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler.errors import SpecError
from profiler.paths import models_dir
from profiler.serving import tinymodel

if TYPE_CHECKING:
    from profiler.capacity.models import ModelSpec

SHAPE_DTYPE = "bfloat16"
"""dtype the shapes are declared in and served with on a GPU."""
SHAPE_LOAD_FORMAT = tinymodel.TINY_LOAD_FORMAT
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default
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


LLAMA_8B = Shape(
    name="llama-8b-shape",
    architecture="Llama-3.1-8B",
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    rope_scaling_factor=8.0,
    tie_word_embeddings=False,
)
LLAMA_1B = Shape(
    name="llama-1b-shape",
    architecture="Llama-3.2-1B",
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    rope_scaling_factor=32.0,
    tie_word_embeddings=True,
)
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


def model_spec(shape: Shape) -> ModelSpec:
    """The shape as the capacity model sees it (parameters, KV bytes per token)."""
    from profiler.capacity.models import from_config_dict

    return from_config_dict(shape.config(), f"shape {shape.name}", default_name=shape.name)


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


# ---------------------------------------------------------------- choosing the shape
RULE = (
    "per GPU used: budget = min(free, u x total), u = --gpu-memory-utilization, else 0.9 "
    "(vLLM's default) lowered to (free - 1 GiB)/total where less is free; the 8B shape when "
    "budget >= weights/(tp pp) + reserve + batch x (prompt + output) x KV bytes per token/"
    "(tp pp), else "
    "the 1B shape when its weights + reserve + one max-model-len sequence fit"
)


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


def _need(shape: Shape, kv_tokens: float, tp: int, pp: int, max_num_seqs: int) -> dict[str, float]:
    from profiler.capacity.perf import reserve_bytes

    m = model_spec(shape)
    weights = m.params_total * 2.0 / (tp * pp)  # bf16
    reserve = reserve_bytes(m, tp=tp, max_num_seqs=max_num_seqs)
    kv = kv_tokens * m.kv_bytes_per_token("bf16", tp=tp) / pp
    return {
        "weights_bytes": weights,
        "reserve_bytes": reserve,
        "kv_cache_bytes": kv,
        "kv_cache_tokens": kv_tokens,
        "total_bytes": weights + reserve + kv,
    }


def choose_shape(
    gpus: list[dict[str, Any]],
    *,
    batch: int,
    seq_tokens: int,
    max_model_len: int,
    gpu_memory_utilization: float | None = None,
    tp: int = 1,
    pp: int = 1,
) -> dict[str, Any]:
    """The shape to serve on ``gpus`` (NVML ``device_memory`` records of the GPUs the server
    uses) for a run with ``batch`` sequences of ``seq_tokens`` in flight, and why: a record for
    the manifest. Raises SpecError when not even the 1B shape fits."""
    known = [
        (float(g["memory_total_bytes"]), float(g["memory_free_bytes"]), g)
        for g in gpus
        if g.get("memory_total_bytes") and g.get("memory_free_bytes") is not None
    ]
    if not known:
        raise SpecError(
            "NVML reports no memory for the GPUs the server would use",
            "pass --model (and --max-model-len) to choose the model yourself",
        )
    # vLLM refuses to start when less than utilization x total is free: lower it to what is
    # free (less 1 GiB for its CUDA context), unless --gpu-memory-utilization says otherwise
    util = gpu_memory_utilization or min(
        [DEFAULT_GPU_MEMORY_UTILIZATION]
        + [math.floor(100 * max(free - 2.0**30, 0.0) / total) / 100 for total, free, _ in known]
    )
    lowered = gpu_memory_utilization is None and util < DEFAULT_GPU_MEMORY_UTILIZATION
    budget, tightest = min(
        ((min(free, util * total), g) for total, free, g in known), key=lambda b: b[0]
    )
    seqs = max(batch, 1)
    needs = {
        LLAMA_8B.name: _need(LLAMA_8B, seqs * seq_tokens, tp, pp, seqs),
        LLAMA_1B.name: _need(LLAMA_1B, seqs * seq_tokens, tp, pp, seqs),
    }
    minimal_1b = _need(LLAMA_1B, max_model_len, tp, pp, seqs)
    gib = 2.0**30
    where = f"GPU {tightest.get('index')} ({tightest.get('name')})"
    n8, n1 = needs[LLAMA_8B.name], needs[LLAMA_1B.name]
    batch_text = f"{seqs} sequences of {seq_tokens} tokens"
    util_text = (
        f" (--gpu-memory-utilization lowered to {util:.2f}: vLLM refuses to start when less than "
        f"{DEFAULT_GPU_MEMORY_UTILIZATION:g} of the memory is free)"
        if lowered
        else ""
    )
    if budget >= n8["total_bytes"]:
        shape = LLAMA_8B
        reason = (
            f"{where} can use {budget / gib:.1f} GiB: enough for the 8B shape's weights "
            f"({n8['weights_bytes'] / gib:.1f} GiB), reserve ({n8['reserve_bytes'] / gib:.1f} GiB) "
            f"and the KV cache of {batch_text} ({n8['kv_cache_bytes'] / gib:.1f} GiB), "
            f"{n8['total_bytes'] / gib:.1f} GiB in all{util_text}"
        )
    elif budget >= minimal_1b["total_bytes"]:
        shape = LLAMA_1B
        full = "holds" if budget >= n1["total_bytes"] else "does not hold"
        reason = (
            f"{where} can use {budget / gib:.1f} GiB, less than the 8B shape needs with the KV "
            f"cache of {batch_text} ({n8['total_bytes'] / gib:.1f} GiB); the 1B shape needs "
            f"{n1['total_bytes'] / gib:.1f} GiB for the same batch, so the budget {full} its "
            f"whole batch{util_text}"
        )
    else:
        raise SpecError(
            f"{where} has {budget / gib:.1f} GiB usable; even the 1B default model needs "
            f"{minimal_1b['total_bytes'] / gib:.1f} GiB",
            "free GPU memory (nvidia-smi shows who holds it), or pass --model / --endpoint",
        )
    return {
        "shape": shape.name,
        "architecture": shape.architecture,
        "dtype": SHAPE_DTYPE,
        "reason": reason,
        "rule": RULE,
        "gpu": {
            "index": tightest.get("index"),
            "name": tightest.get("name"),
            "memory_total_bytes": tightest.get("memory_total_bytes"),
            "memory_free_bytes": tightest.get("memory_free_bytes"),
        },
        "gpus_considered": len(known),
        "gpu_memory_utilization": util,
        "gpu_memory_utilization_lowered": lowered,
        "budget_bytes": budget,
        "batch": seqs,
        "seq_tokens": seq_tokens,
        "tp": tp,
        "pp": pp,
        "needs": needs,
    }
