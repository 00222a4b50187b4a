"""Model catalog: architecture facts from Hugging Face configs, and the counts derived from them
(parameters, active parameters, KV-cache bytes per token).

Catalog entries live in ``profiler/data/models.yaml`` using config.json field names; any local
config.json (llama, mistral, qwen2/qwen3, deepseek_v2/deepseek_v3 style) works the same way.
"""

from __future__ import annotations

import json
import os
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from profiler.errors import SpecError

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # safe either way; C is faster
MODELS_FILE = "models.yaml"
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
}
Dtype = Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4"]
DENSE_TYPES = ("llama", "mistral", "qwen2", "qwen3")
MLA_TYPES = ("deepseek_v2", "deepseek_v3")


class ModelSpec(BaseModel):
    """Architecture of one model (config.json names). Derived counts are properties."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = ""
    hf_id: str | None = None
    aliases: list[str] = Field(default_factory=list)
    model_type: Literal["llama", "mistral", "qwen2", "qwen3", "deepseek_v2", "deepseek_v3"]
    hidden_size: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)
    num_hidden_layers: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_key_value_heads: int | None = Field(default=None, ge=1)
    head_dim: int | None = Field(default=None, ge=1)
    vocab_size: int = Field(ge=1)
    tie_word_embeddings: bool = False
    attention_bias: bool = False
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
    first_k_dense_replace: int = Field(default=0, ge=0)
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
        return self

    # ------------------------------------------------------------ structure
    @property
    def name(self) -> str:
        return self.key or self.hf_id or "model"

    @property
    def is_mla(self) -> bool:
        return self.model_type in MLA_TYPES

    @property
    def is_moe(self) -> bool:
        return self.n_routed_experts > 0

    @property
    def n_q(self) -> int:
        return self.num_attention_heads

    @property
    def n_kv(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def d_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def num_moe_layers(self) -> int:
        return self.num_hidden_layers - self.first_k_dense_replace if self.is_moe else 0

    @property
    def num_dense_layers(self) -> int:
        return self.num_hidden_layers - self.num_moe_layers

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
        """One routed (or shared) expert: a SwiGLU MLP of moe_intermediate_size."""
        return 3 * self.hidden_size * (self.moe_intermediate_size or 0)

    @property
    def moe_nonrouted_params_per_layer(self) -> int:
        """Shared experts plus the router of one MoE layer."""
        return self.n_shared_experts * self.expert_params + self.n_routed_experts * self.hidden_size

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
        """KV_tok = 2 L n_kv d b_kv (GQA) or L (r_kv + d_rope) b_kv (MLA)."""
        n_layers = self.num_hidden_layers if layers is None else layers
        return n_layers * self.kv_elems_per_token_per_layer(tp) * DTYPE_BYTES[kv_dtype]

    def attn_flops_per_token_per_ctx(self, phase: Literal["prefill", "decode"]) -> float:
        """Attention FLOPs per token per cached token of context, all layers (QK^T and AV).
        GQA: 4 L n_q d. MLA decode (absorbed): 2 L n_q (2 r_kv + d_rope); MLA prefill:
        2 L n_q (d_nope + d_rope + d_v)."""
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
            "params_b": round(self.params_total / 1e9, 3),
            "active_params_b": round(self.params_active / 1e9, 3),
            "layers": self.num_hidden_layers,
            "hidden_size": self.hidden_size,
            "heads": self.n_q,
            "kv_heads": self.n_kv,
            "attention": "mla" if self.is_mla else "gqa",
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
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        field = f" field '{loc}'" if loc else ""
        raise SpecError(
            f"{where}:{field} {err['msg']}", f"correct{field or ' the entry'} in {where}"
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


_HF_FIELDS = set(ModelSpec.model_fields) - {"key", "hf_id", "aliases", "weight_dtype", "source"}
_HF_FIELDS -= {"published_params_b", "published_active_params_b"}


def from_hf_config(path: Path) -> ModelSpec:
    """Read a Hugging Face config.json (llama/mistral/qwen2/qwen3/deepseek_v2/deepseek_v3)."""
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


def from_config_dict(cfg: dict[str, Any], where: str, default_name: str = "model") -> ModelSpec:
    """A Hugging Face config (the parsed config.json) as a ModelSpec; ``where`` names it in
    errors. Used for files and for the configs profiler/serving/shapes.py makes."""
    mtype = cfg.get("model_type")
    if mtype not in DENSE_TYPES + MLA_TYPES:
        raise SpecError(
            f"{where}: model_type '{mtype}' is not supported",
            f"supported: {', '.join(DENSE_TYPES + MLA_TYPES)}",
        )
    data: dict[str, Any] = {k: cfg[k] for k in _HF_FIELDS if cfg.get(k) is not None}
    if mtype in MLA_TYPES:
        data.setdefault("first_k_dense_replace", cfg.get("first_k_dense_replace", 0))
    quant = cfg.get("quantization_config") or {}
    qmethod = str(quant.get("quant_method", "")).lower()
    if qmethod == "fp8":
        dtype: str = "fp8"
    elif qmethod in ("awq", "gptq"):
        dtype = "int4" if int(quant.get("bits", 4)) == 4 else "int8"
    else:
        dtype = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(
            str(cfg.get("torch_dtype") or cfg.get("dtype")), "bf16"
        )
    name = cfg.get("_name_or_path") or default_name
    return _validate(
        {**data, "key": str(name), "hf_id": str(name), "weight_dtype": dtype, "source": where},
        where,
    )
