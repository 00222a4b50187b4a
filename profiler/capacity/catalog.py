"""Where a ModelSpec comes from: the shipped catalog (``profiler/data/models.yaml``), a
Hugging Face config.json on disk or in this machine's hub cache, or an embedded shape
(profiler/serving/shapes.py). Catalog entries are written in ModelSpec's canonical field
names; ``from_config_dict`` maps each family's config.json names onto them (Llama 2/3.x/4,
Mistral, Mixtral, Qwen2/2.5, Qwen3 dense and MoE, DeepSeek-V2/V3/R1, gpt-oss) and sizes an
unknown ``model_type`` as a generic decoder when it has the standard fields, naming what is
missing when it has not.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from profiler.capacity.dtypes import QUANTIZATION_DTYPES
from profiler.capacity.models import KNOWN_TYPES, MLA_TYPES, ModelSpec
from profiler.errors import SpecError
from profiler.serving import tinymodel

if TYPE_CHECKING:
    from profiler.serving.shapes import Shape

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # safe either way; C is faster
MODELS_FILE = "models.yaml"


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
    t = tinymodel
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


def shape_spec(shape: Shape) -> ModelSpec:
    """An embedded shape as the capacity model sees it (parameters, KV bytes per token)."""
    return from_config_dict(shape.config(), f"shape {shape.name}", default_name=shape.name)
