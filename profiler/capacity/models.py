"""Model catalog: architecture facts from Hugging Face configs, and the counts derived from them
(parameters, active parameters, KV-cache bytes, attention FLOPs).

Catalog entries live in ``profiler/data/models.yaml`` in this module's canonical field names
(Hugging Face config.json names where one exists). Any local config.json works the same way:
``from_config_dict`` maps each family's names onto the canonical ones (Llama 2/3.x/4, Mistral,
Mixtral, Qwen2/2.5, Qwen3 dense and MoE, DeepSeek-V2/V3/R1, gpt-oss) and sizes an unknown
``model_type`` as a generic decoder when it has the standard fields, naming what is missing
when it has not. Attention kinds: GQA/MHA, MLA (DeepSeek) and sliding-window or chunked local
attention (a local layer holds at most ``sliding_window`` tokens of KV per sequence).
"""

from __future__ import annotations

import json
import os
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from profiler.errors import SpecError

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # safe either way; C is faster
MODELS_FILE = "models.yaml"
# Bytes per element as stored, block scales included: NVFP4 keeps one FP8 (E4M3) scale per 16
# FP4 values, MXFP4 one E8M0 scale per 32 (OCP MX spec); int4 is AWQ/GPTQ with one FP16 scale
# per group of 128 weights (docs/capacity.md, "Precision").
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5 + 2.0 / 128,
    "nvfp4": 0.5 + 1.0 / 16,
    "mxfp4": 0.5 + 1.0 / 32,
}
Dtype = Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4", "nvfp4", "mxfp4"]
KvDtype = Literal["fp32", "bf16", "fp16", "fp8"]
DENSE_TYPES = ("llama", "mistral", "qwen2", "qwen3")
MOE_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe", "gpt_oss", "llama4", "llama4_text")
MLA_TYPES = ("deepseek_v2", "deepseek_v3")
KNOWN_TYPES = DENSE_TYPES + MOE_TYPES + MLA_TYPES


class ModelSpec(BaseModel):
    """Architecture of one model in canonical names. Derived counts are properties.

    ``intermediate_size`` is the dense MLP width; ``moe_intermediate_size`` one routed expert's.
    MoE layers are the layers ``i >= first_k_dense_replace`` with ``(i - first_k_dense_replace
    + 1) % moe_layer_step == 0`` (Llama-4 Maverick interleaves: step 2). ``num_local_layers``
    of the layers use local attention over ``sliding_window`` tokens (all layers when None)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = ""
    hf_id: str | None = None
    aliases: list[str] = Field(default_factory=list)
    model_type: str = Field(min_length=1)
    hidden_size: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)
    num_hidden_layers: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_key_value_heads: int | None = Field(default=None, ge=1)
    head_dim: int | None = Field(default=None, ge=1)
    vocab_size: int = Field(ge=1)
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    # local attention (Mistral/gpt-oss sliding window, Llama-4 chunked attention)
    sliding_window: int | None = Field(default=None, ge=1)
    num_local_layers: int | None = Field(default=None, ge=0)
    # MLA (DeepSeek-V2/V3)
    q_lora_rank: int | None = Field(default=None, ge=1)
    kv_lora_rank: int | None = Field(default=None, ge=1)
    qk_rope_head_dim: int | None = Field(default=None, ge=1)
    qk_nope_head_dim: int | None = Field(default=None, ge=1)
    v_head_dim: int | None = Field(default=None, ge=1)
    # MoE
    n_routed_experts: int = Field(default=0, ge=0)
    n_shared_experts: int = Field(default=0, ge=0)
    num_experts_per_tok: int = Field(default=0, ge=0)
    moe_intermediate_size: int | None = Field(default=None, ge=1)
    shared_expert_intermediate_size: int | None = Field(default=None, ge=1)
    first_k_dense_replace: int = Field(default=0, ge=0)
    moe_layer_step: int = Field(default=1, ge=1)
    weight_dtype: Dtype = "bf16"
    published_params_b: float | None = None
    published_active_params_b: float | None = None
    source: str = ""

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.is_mla:
            missing = [
                k
                for k in ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
                if getattr(self, k) is None
            ]
            if missing:
                raise ValueError(f"model_type {self.model_type} needs {', '.join(missing)}")
        if self.n_routed_experts:
            if not self.num_experts_per_tok or self.moe_intermediate_size is None:
                raise ValueError("MoE models need num_experts_per_tok and moe_intermediate_size")
            if self.num_experts_per_tok > self.n_routed_experts:
                raise ValueError("num_experts_per_tok is larger than n_routed_experts")
        if self.first_k_dense_replace > self.num_hidden_layers:
            raise ValueError("first_k_dense_replace is larger than num_hidden_layers")
        if self.num_local_layers is not None and self.num_local_layers > self.num_hidden_layers:
            raise ValueError("num_local_layers is larger than num_hidden_layers")
        return self

    # ------------------------------------------------------------ structure
    @property
    def name(self) -> str:
        return self.key or self.hf_id or "model"

    @property
    def is_mla(self) -> bool:
        return self.model_type in MLA_TYPES or self.kv_lora_rank is not None

    @property
    def is_moe(self) -> bool:
        return self.n_routed_experts > 0

    @property
    def attention_kind(self) -> str:
        base = "mla" if self.is_mla else "gqa" if self.n_kv < self.n_q else "mha"
        return base + ("+local" if self.sliding_window and self.local_layers else "")

    @property
    def n_q(self) -> int:
        return self.num_attention_heads

    @property
    def n_kv(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def d_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @cached_property
    def num_moe_layers(self) -> int:
        if not self.is_moe:
            return 0
        start, step = self.first_k_dense_replace, self.moe_layer_step
        return sum(1 for i in range(start, self.num_hidden_layers) if (i - start + 1) % step == 0)

    @property
    def num_dense_layers(self) -> int:
        return self.num_hidden_layers - self.num_moe_layers

    @property
    def local_layers(self) -> int:
        """Layers with local (sliding-window or chunked) attention."""
        if not self.sliding_window:
            return 0
        return self.num_hidden_layers if self.num_local_layers is None else self.num_local_layers

    @property
    def global_layers(self) -> int:
        return self.num_hidden_layers - self.local_layers

    def kv_layer_tokens(self, context: Any) -> Any:
        """Sum over layers of the KV tokens one sequence of ``context`` tokens keeps (a local
        layer keeps at most ``sliding_window``). Floats or numpy arrays."""
        ctx = np.asarray(context, dtype=float)
        out = self.global_layers * ctx
        if self.local_layers:
            assert self.sliding_window
            out = out + self.local_layers * np.minimum(ctx, float(self.sliding_window))
        return out if out.ndim else float(out)

    # ------------------------------------------------------------ parameters
    @cached_property
    def attn_params_per_layer(self) -> int:
        h, nq = self.hidden_size, self.n_q
        if self.is_mla:
            assert (
                self.kv_lora_rank
                and self.qk_rope_head_dim
                and self.qk_nope_head_dim
                and self.v_head_dim
            )
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            if self.q_lora_rank:
                q = h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * nq * qk
            else:
                q = h * nq * qk
            kv_a = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
            kv_b = self.kv_lora_rank * nq * (self.qk_nope_head_dim + self.v_head_dim)
            o = nq * self.v_head_dim * h
            return q + kv_a + kv_b + o
        d, nkv = self.d_head, self.n_kv
        bias = (nq + 2 * nkv) * d if self.attention_bias or self.model_type == "qwen2" else 0
        return h * nq * d + 2 * h * nkv * d + nq * d * h + bias

    @property
    def dense_mlp_params(self) -> int:
        """One SwiGLU MLP of a dense layer (gate, up, down)."""
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def expert_params(self) -> int:
        """One routed expert: a SwiGLU MLP of moe_intermediate_size."""
        return 3 * self.hidden_size * (self.moe_intermediate_size or 0)

    @property
    def shared_expert_params(self) -> int:
        width = self.shared_expert_intermediate_size or self.moe_intermediate_size or 0
        return 3 * self.hidden_size * width

    @property
    def moe_nonrouted_params_per_layer(self) -> int:
        """Shared experts plus the router of one MoE layer."""
        return (
            self.n_shared_experts * self.shared_expert_params
            + self.n_routed_experts * self.hidden_size
        )

    @property
    def embed_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def head_params(self) -> int:
        """LM head weights (shared with the embedding when tied; the FLOPs are the same)."""
        return self.vocab_size * self.hidden_size

    @cached_property
    def routed_params(self) -> int:
        return self.num_moe_layers * self.n_routed_experts * self.expert_params

    @cached_property
    def params_total(self) -> int:
        h, L = self.hidden_size, self.num_hidden_layers
        per_layer = self.attn_params_per_layer + 2 * h
        total = self.embed_params + (0 if self.tie_word_embeddings else self.head_params) + h
        total += L * per_layer + self.num_dense_layers * self.dense_mlp_params
        total += self.num_moe_layers * self.moe_nonrouted_params_per_layer + self.routed_params
        return total

    @cached_property
    def params_active(self) -> int:
        """Parameters used by one token (routed experts: top-k of E)."""
        idle = (
            self.num_moe_layers
            * (self.n_routed_experts - self.num_experts_per_tok)
            * self.expert_params
        )
        return self.params_total - idle

    @cached_property
    def nonrouted_params(self) -> int:
        """Everything but routed experts: replicated on every rank under expert parallelism."""
        return self.params_total - self.routed_params

    @cached_property
    def body_params(self) -> int:
        """Non-routed parameters a token multiplies through, without embedding and LM head."""
        head = 0 if self.tie_word_embeddings else self.head_params
        return self.nonrouted_params - self.embed_params - head

    @cached_property
    def flops_per_token_linear(self) -> int:
        """2 x active parameters in matrix multiplies (embedding lookup excluded, LM head in)."""
        routed = self.num_moe_layers * self.num_experts_per_tok * self.expert_params
        return 2 * (self.body_params + self.head_params + routed)

    # ------------------------------------------------------------ KV cache
    def kv_elems_per_token_per_layer(self, tp: int = 1) -> float:
        """Cached elements per token per layer on one GPU. GQA: K and V for max(n_kv/tp, 1)
        heads; MLA: the latent (kv_lora_rank + qk_rope_head_dim), which TP does not split."""
        if self.is_mla:
            assert self.kv_lora_rank and self.qk_rope_head_dim
            return float(self.kv_lora_rank + self.qk_rope_head_dim)
        return 2.0 * max(self.n_kv / tp, 1.0) * self.d_head

    def kv_bytes_per_token(
        self, kv_dtype: str = "bf16", tp: int = 1, layers: int | None = None
    ) -> float:
        """KV_tok = 2 L n_kv d b_kv (GQA) or L (r_kv + d_rope) b_kv (MLA), every layer counted
        (a local-attention layer stops growing at its window: ``kv_bytes_per_sequence``)."""
        n_layers = self.num_hidden_layers if layers is None else layers
        return n_layers * self.kv_elems_per_token_per_layer(tp) * DTYPE_BYTES[kv_dtype]

    def kv_bytes_per_sequence(self, context: Any, kv_dtype: str = "bf16", tp: int = 1) -> Any:
        """KV bytes one sequence of ``context`` tokens holds on one GPU (local layers capped at
        their window)."""
        per = self.kv_elems_per_token_per_layer(tp) * DTYPE_BYTES[kv_dtype]
        return self.kv_layer_tokens(context) * per

    def attn_flops_per_token_per_ctx(self, phase: Literal["prefill", "decode"]) -> float:
        """Attention FLOPs per token per cached token of context, per layer-average, all layers
        (QK^T and AV). GQA: 4 L n_q d. MLA decode (absorbed): 2 L n_q (2 r_kv + d_rope); MLA
        prefill: 2 L n_q (d_nope + d_rope + d_v). Local layers see at most their window:
        ``attn_flops(tokens, context)`` applies it."""
        L, nq = self.num_hidden_layers, self.n_q
        if self.is_mla:
            assert (
                self.kv_lora_rank
                and self.qk_rope_head_dim
                and self.qk_nope_head_dim
                and self.v_head_dim
            )
            if phase == "decode":
                return 2.0 * L * nq * (2 * self.kv_lora_rank + self.qk_rope_head_dim)
            return 2.0 * L * nq * (self.qk_nope_head_dim + self.qk_rope_head_dim + self.v_head_dim)
        return 4.0 * L * nq * self.d_head

    def attn_flops(self, tokens: Any, context: Any, phase: Literal["prefill", "decode"]) -> Any:
        """Attention FLOPs of ``tokens`` tokens each attending to ``context`` tokens."""
        per = self.attn_flops_per_token_per_ctx(phase) / self.num_hidden_layers
        return np.asarray(tokens, dtype=float) * self.kv_layer_tokens(context) * per

    def experts_touched(self, tokens: Any) -> Any:
        """Expected distinct routed experts hit per MoE layer by ``tokens`` tokens under uniform
        routing: E (1 - (1 - k/E)^B). Works on floats and numpy arrays."""
        E, k = self.n_routed_experts, self.num_experts_per_tok
        if not E:
            return tokens * 0.0
        return E * (1.0 - (1.0 - k / E) ** tokens)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "hf_id": self.hf_id,
            "model_type": self.model_type,
            "params_b": round(self.params_total / 1e9, 3),
            "active_params_b": round(self.params_active / 1e9, 3),
            "layers": self.num_hidden_layers,
            "hidden_size": self.hidden_size,
            "heads": self.n_q,
            "kv_heads": self.n_kv,
            "attention": self.attention_kind,
            "sliding_window": self.sliding_window if self.local_layers else None,
            "local_layers": self.local_layers,
            "experts": self.n_routed_experts,
            "top_k": self.num_experts_per_tok,
            "weight_dtype": self.weight_dtype,
            "kv_bytes_per_token_bf16": self.kv_bytes_per_token("bf16"),
        }


# ---------------------------------------------------------------- catalog and config.json
def _validate(data: dict[str, Any], where: str) -> ModelSpec:
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as e:
        loc = ".".join(str(p) for p in e.errors()[0]["loc"])
        named = f" field '{loc}'" if loc else ""
        raise SpecError.from_validation(
            e,
            "{where}:{named} {msg}",
            "correct{entry} in {where}",
            where=where,
            named=named,
            entry=named or " the entry",
        ) from None


@lru_cache(maxsize=1)
def load_models() -> dict[str, ModelSpec]:
    where = f"profiler/data/{MODELS_FILE}"
    data = yaml.load(  # _LOADER is a safe loader
        resources.files("profiler").joinpath("data", MODELS_FILE).read_text(),
        Loader=_LOADER,
    )
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise SpecError(f"{where}: expected 'models:' mapping", "see the shipped file")
    entries = dict(data["models"])
    if "tiny" in entries:
        entries["tiny"] = {**entries["tiny"], **_tiny_facts()}
    return {k: _validate({**v, "key": k}, f"{where} models.{k}") for k, v in entries.items()}


def _tiny_facts() -> dict[str, Any]:
    """The embedded model's numbers straight from profiler/serving/tinymodel.py, so the
    catalog cannot drift from what ``infprof model tiny`` writes."""
    try:
        from profiler.serving import tinymodel as t
    except ImportError:
        return {}
    facts: dict[str, Any] = {
        "hidden_size": getattr(t, "HIDDEN_SIZE", None),
        "intermediate_size": getattr(t, "INTERMEDIATE_SIZE", None),
        "num_hidden_layers": getattr(t, "NUM_LAYERS", None),
        "num_attention_heads": getattr(t, "NUM_HEADS", None),
        "num_key_value_heads": getattr(t, "NUM_KV_HEADS", None),
        "vocab_size": getattr(t, "VOCAB_SIZE", None),
        "weight_dtype": {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(
            getattr(t, "TINY_DTYPE", "")
        ),
    }
    if facts["hidden_size"] and facts["num_attention_heads"]:
        facts["head_dim"] = facts["hidden_size"] // facts["num_attention_heads"]
    return {k: v for k, v in facts.items() if v is not None}


def _norm(s: str) -> str:
    return s.strip().lower().replace("_", "-")


def resolve_model(name: str) -> ModelSpec:
    """A catalog key, alias or Hugging Face id; or a path to a config.json (or its folder)."""
    models = load_models()
    key = _norm(name)
    for m in models.values():
        if (
            key == m.key
            or key in (_norm(a) for a in m.aliases)
            or (m.hf_id and key == _norm(m.hf_id))
        ):
            return m
    path = Path(name).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return from_hf_config(path)
    cached = hf_cache_config(name)
    if cached is not None:
        return from_hf_config(cached).model_copy(update={"key": name, "hf_id": name})
    base = _norm(Path(name).name)  # a served model path from another machine: match its folder name
    for m in models.values():
        if base and (base == m.key or base in (_norm(a) for a in m.aliases)):
            return m
    raise SpecError(
        f"unknown model '{name}'",
        f"use one of: {', '.join(models)}; or a path to a Hugging Face config.json",
    )


def hf_cache_config(model_id: str) -> Path | None:
    """The config.json of a Hugging Face id (``org/name``) in this machine's hub cache, where
    vLLM downloaded it (newest snapshot); None when the id is not cached."""
    if model_id.count("/") != 1 or model_id.startswith((".", "/", "~")):
        return None
    hf_home = os.environ.get("HF_HOME")
    roots = [
        os.environ.get("HF_HUB_CACHE"),
        os.environ.get("HUGGINGFACE_HUB_CACHE"),
        str(Path(hf_home) / "hub") if hf_home else None,
        str(Path.home() / ".cache" / "huggingface" / "hub"),
    ]
    folder = "models--" + model_id.replace("/", "--")
    for root in roots:
        if not root:
            continue
        snaps = Path(root).expanduser() / folder / "snapshots"
        try:
            found = sorted(snaps.glob("*/config.json"), key=lambda p: p.stat().st_mtime)
        except OSError:
            continue
        if found:
            return found[-1]
    return None


def quant_dtype(quant: dict[str, Any]) -> str | None:
    """The weight dtype a config.json ``quantization_config`` stores (None: not quantized or
    a method not listed). compressed-tensors configs say it in their config groups."""
    method = str(quant.get("quant_method", "")).lower()
    if method in ("awq", "gptq") and int(quant.get("bits", 4)) == 8:
        return "int8"
    if method == "modelopt":
        algo = str(quant.get("quant_algo", "")).upper()
        return "nvfp4" if "FP4" in algo else "fp8"
    if method == "compressed-tensors":
        for group in (quant.get("config_groups") or {}).values():
            w = (group or {}).get("weights") or {}
            bits, kind = int(w.get("num_bits", 16)), str(w.get("type", ""))
            if bits == 8:
                return "fp8" if kind == "float" else "int8"
            if bits == 4:
                return "nvfp4" if kind == "float" else "int4"
        return None
    from profiler.capacity.dtypes import QUANTIZATION_DTYPES

    return QUANTIZATION_DTYPES.get(method)


def _first(cfg: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return None


def _canonical(cfg: dict[str, Any], mtype: str) -> dict[str, Any]:
    """Map one family's config.json names onto ModelSpec's. Every family's fields are read
    by name; what a family lacks stays unset."""
    out: dict[str, Any] = {"model_type": mtype}
    plain = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "vocab_size",
        "tie_word_embeddings",
        "attention_bias",
        "q_lora_rank",
        "kv_lora_rank",
        "qk_rope_head_dim",
        "qk_nope_head_dim",
        "v_head_dim",
        "first_k_dense_replace",
    )
    for k in plain:
        if cfg.get(k) is not None:
            out[k] = cfg[k]
    experts = _first(cfg, "n_routed_experts", "num_local_experts", "num_experts")
    top_k = _first(cfg, "num_experts_per_tok", "experts_per_token", "num_experts_per_token")
    inter = cfg.get("intermediate_size")
    if experts:
        out["n_routed_experts"] = int(experts)
        out["num_experts_per_tok"] = int(top_k) if top_k is not None else None
        if mtype in ("mixtral", "gpt_oss"):  # every layer MoE; intermediate_size is the expert's
            out["moe_intermediate_size"] = _first(cfg, "moe_intermediate_size", "intermediate_size")
        elif mtype in ("llama4", "llama4_text"):  # experts: intermediate_size; dense MLP: _mlp
            out["moe_intermediate_size"] = inter
            inter = cfg.get("intermediate_size_mlp") or inter
            out["n_shared_experts"] = 1
            out["moe_layer_step"] = int(cfg.get("interleave_moe_layer_step") or 1)
        else:
            out["moe_intermediate_size"] = cfg.get("moe_intermediate_size")
        shared = cfg.get("n_shared_experts")
        if shared is not None:
            out["n_shared_experts"] = int(shared)
        if cfg.get("shared_expert_intermediate_size"):  # Qwen2-MoE: one wider shared expert
            out["n_shared_experts"] = 1
            out["shared_expert_intermediate_size"] = cfg["shared_expert_intermediate_size"]
        step = cfg.get("decoder_sparse_step")
        if step:
            out["moe_layer_step"] = int(step)
        dense = cfg.get("mlp_only_layers") or []
        if dense and isinstance(dense, list) and sorted(dense) == list(range(len(dense))):
            out["first_k_dense_replace"] = len(dense)  # leading dense layers (Qwen-MoE)
    out["intermediate_size"] = inter or out.get("moe_intermediate_size")
    if mtype == "gpt_oss":
        out["attention_bias"] = True
    window = _first(cfg, "sliding_window", "attention_chunk_size")
    use_window = cfg.get("use_sliding_window", True) is not False
    if window and use_window:
        out["sliding_window"] = int(window)
        types = cfg.get("layer_types")
        if isinstance(types, list) and types:
            out["num_local_layers"] = sum(
                1 for t in types if "sliding" in str(t) or "chunked" in str(t)
            )
        elif cfg.get("no_rope_layers"):  # Llama-4: chunked attention where RoPE is on
            out["num_local_layers"] = sum(1 for t in cfg["no_rope_layers"] if t)
        elif cfg.get("max_window_layers") is not None and mtype.startswith("qwen"):
            out["num_local_layers"] = max(
                int(cfg["num_hidden_layers"]) - int(cfg["max_window_layers"]), 0
            )
    return out


_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def from_config_dict(cfg: dict[str, Any], where: str, default_name: str = "model") -> ModelSpec:
    """A Hugging Face config (the parsed config.json) as a ModelSpec; ``where`` names it in
    errors. Used for files and for the configs profiler/serving/shapes.py makes. Multimodal
    configs are read from their ``text_config``."""
    if isinstance(cfg.get("text_config"), dict):
        text = dict(cfg["text_config"])
        text.setdefault("model_type", cfg.get("model_type"))
        for k in ("quantization_config", "torch_dtype", "_name_or_path", "tie_word_embeddings"):
            if k in cfg and k not in text:
                text[k] = cfg[k]
        cfg = text
    mtype = str(cfg.get("model_type") or "")
    missing = [k for k in _REQUIRED if cfg.get(k) is None]
    if cfg.get("intermediate_size") is None and cfg.get("moe_intermediate_size") is None:
        missing.append("intermediate_size")
    if missing:
        kind = f"model_type '{mtype}'" if mtype else "a config without model_type"
        raise SpecError(
            f"{where}: cannot size {kind}: missing {', '.join(missing)}",
            "pass a decoder-only config.json with these fields (supported families: "
            + ", ".join(KNOWN_TYPES)
            + ")",
        )
    data = _canonical(cfg, mtype)
    if mtype in MLA_TYPES:
        data.setdefault("first_k_dense_replace", cfg.get("first_k_dense_replace", 0))
    quant = cfg.get("quantization_config") or {}
    dtype = quant_dtype(quant) if isinstance(quant, dict) and quant else None
    if dtype is None:
        dtype = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(
            str(cfg.get("torch_dtype") or cfg.get("dtype")), "bf16"
        )
    name = cfg.get("_name_or_path") or default_name
    notes = "" if mtype in KNOWN_TYPES else f" (model_type '{mtype}' sized as a generic decoder)"
    return _validate(
        {
            **data,
            "key": str(name),
            "hf_id": str(name),
            "weight_dtype": dtype,
            "source": where + notes,
        },
        where,
    )


def from_hf_config(path: Path) -> ModelSpec:
    """Read a Hugging Face config.json (any family ``from_config_dict`` knows)."""
    where = str(path)
    try:
        cfg = json.loads(path.read_text())
    except OSError as e:
        raise SpecError(f"{where}: cannot read ({e.strerror})", "check the path") from None
    except json.JSONDecodeError as e:
        raise SpecError(f"{where}: line {e.lineno} is not valid JSON", "fix the file") from None
    if not isinstance(cfg, dict):
        raise SpecError(f"{where}: expected a JSON object", "pass a Hugging Face config.json")
    return from_config_dict(cfg, where, default_name=path.parent.name)
