"""A model's architecture in canonical field names (Hugging Face config.json names where one
exists), and the counts derived from it: parameters, active parameters, KV-cache bytes,
attention FLOPs. Where a ModelSpec comes from (the catalog, a config.json, an embedded shape)
is profiler/capacity/catalog.py. Attention kinds: GQA/MHA, MLA (DeepSeek) and sliding-window
or chunked local attention (a local layer holds at most ``sliding_window`` tokens of KV per
sequence).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    def mla_dims(self) -> tuple[int, int, int, int]:
        """(kv_lora_rank, qk_rope_head_dim, qk_nope_head_dim, v_head_dim) of an MLA model (the
        validator makes sure it has all four)."""
        dims = (self.kv_lora_rank, self.qk_rope_head_dim, self.qk_nope_head_dim, self.v_head_dim)
        r_kv, d_rope, d_nope, d_v = dims
        assert r_kv and d_rope and d_nope and d_v, "not an MLA model"
        return r_kv, d_rope, d_nope, d_v

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
            r_kv, d_rope, d_nope, d_v = self.mla_dims
            qk = d_nope + d_rope
            if self.q_lora_rank:
                q = h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * nq * qk
            else:
                q = h * nq * qk
            kv_a = h * (r_kv + d_rope) + r_kv
            kv_b = r_kv * nq * (d_nope + d_v)
            o = nq * d_v * h
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
            r_kv, d_rope, _, _ = self.mla_dims
            return float(r_kv + d_rope)
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
            r_kv, d_rope, d_nope, d_v = self.mla_dims
            if phase == "decode":
                return 2.0 * L * nq * (2 * r_kv + d_rope)
            return 2.0 * L * nq * (d_nope + d_rope + d_v)
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
