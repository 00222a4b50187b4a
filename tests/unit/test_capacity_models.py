"""Model and hardware catalogs: config-derived counts against hand-computed and published
numbers, Hugging Face config.json parsing, and one-line errors naming file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profiler.capacity.catalog import from_hf_config, load_models, resolve_model
from profiler.capacity.hardware import load_hardware, parse_hardware, parse_prices
from profiler.errors import SpecError


def test_kv_bytes_per_token_llama_8b_bf16() -> None:
    # 32 layers x 8 KV heads x 128 dims x 2 (K, V) x 2 bytes
    assert (
        resolve_model("llama-3.1-8b").kv_bytes_per_token("bf16") == 32 * 8 * 128 * 2 * 2 == 131_072
    )


def test_kv_bytes_per_token_deepseek_v3_mla_bf16() -> None:
    # 61 layers x (kv_lora_rank 512 + qk_rope_head_dim 64) x 2 bytes
    for name in ("deepseek-v3", "deepseek-r1"):
        assert resolve_model(name).kv_bytes_per_token("bf16") == 61 * (512 + 64) * 2 == 70_272


@pytest.mark.parametrize(
    ("name", "kv"),
    [("llama-3.1-70b", 327_680), ("qwen2.5-72b", 327_680), ("llama-3.1-405b", 516_096)],
)
def test_kv_bytes_other_models(name: str, kv: int) -> None:
    assert resolve_model(name).kv_bytes_per_token("bf16") == kv


def test_kv_sharding_under_tp() -> None:
    llama = resolve_model("llama-3.1-70b")  # 8 KV heads: TP8 -> 1 head per GPU, TP16 replicates
    assert llama.kv_bytes_per_token("bf16", tp=8) == 327_680 / 8
    assert llama.kv_bytes_per_token("bf16", tp=16) == 327_680 / 8
    ds = resolve_model("deepseek-v3")  # the MLA latent is not split by TP
    assert ds.kv_bytes_per_token("bf16", tp=8) == 70_272
    assert ds.kv_bytes_per_token("fp8") == 35_136


@pytest.mark.parametrize(
    "name", ["llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "qwen2.5-72b", "deepseek-v3"]
)
def test_params_match_published(name: str) -> None:
    m = resolve_model(name)
    assert m.published_params_b is not None
    assert m.params_total / 1e9 == pytest.approx(m.published_params_b, rel=0.01)
    if m.published_active_params_b:
        assert m.params_active / 1e9 == pytest.approx(m.published_active_params_b, rel=0.03)


def test_dense_active_equals_total() -> None:
    m = resolve_model("llama-3.1-8b")
    assert m.params_active == m.params_total == 8_030_261_248


def test_experts_touched_per_step() -> None:
    # E (1 - (1 - k/E)^B) for E=256, k=8 (capacity.md: 57, 163, 252 of 256)
    ds = resolve_model("deepseek-v3")
    assert round(ds.experts_touched(8)) == 57
    assert round(ds.experts_touched(32)) == 163
    assert round(ds.experts_touched(128)) == 252
    assert ds.experts_touched(1) == pytest.approx(8.0)
    assert resolve_model("llama-3.1-8b").experts_touched(64) == 0


def test_tiny_follows_tinymodel() -> None:
    from profiler.serving import tinymodel as t

    m = resolve_model("tiny")
    assert (m.hidden_size, m.num_hidden_layers, m.n_q, m.n_kv, m.vocab_size) == (
        t.HIDDEN_SIZE,
        t.NUM_LAYERS,
        t.NUM_HEADS,
        t.NUM_KV_HEADS,
        t.VOCAB_SIZE,
    )
    assert (
        m.kv_bytes_per_token("bf16")
        == 2 * t.NUM_LAYERS * t.NUM_KV_HEADS * (t.HIDDEN_SIZE // t.NUM_HEADS) * 2
    )


def test_aliases_and_hf_ids_resolve() -> None:
    assert resolve_model("meta-llama/Llama-3.1-70B-Instruct").key == "llama-3.1-70b"
    assert resolve_model("deepseek-ai/DeepSeek-R1").key == "deepseek-r1"
    assert (
        resolve_model("/somewhere/else/tiny-llama").key == "tiny"
    )  # a served path from another host


def _write(tmp_path: Path, cfg: dict[str, object]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def test_hf_config_llama_matches_catalog(tmp_path: Path) -> None:
    cfg = {
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "rope_theta": 500000.0,
    }
    m = resolve_model(str(_write(tmp_path, cfg)))
    assert m.params_total == resolve_model("llama-3.1-8b").params_total
    assert m.kv_bytes_per_token() == 131_072
    assert m.weight_dtype == "bf16"


def test_hf_config_deepseek_v3_fp8(tmp_path: Path) -> None:
    cfg = {
        "model_type": "deepseek_v3",
        "hidden_size": 7168,
        "intermediate_size": 18432,
        "moe_intermediate_size": 2048,
        "num_hidden_layers": 61,
        "first_k_dense_replace": 3,
        "num_attention_heads": 128,
        "num_key_value_heads": 128,
        "q_lora_rank": 1536,
        "kv_lora_rank": 512,
        "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 128,
        "v_head_dim": 128,
        "n_routed_experts": 256,
        "n_shared_experts": 1,
        "num_experts_per_tok": 8,
        "vocab_size": 129280,
        "quantization_config": {"quant_method": "fp8"},
        "num_nextn_predict_layers": 1,
    }
    m = from_hf_config(_write(tmp_path, cfg))
    assert m.weight_dtype == "fp8"
    assert m.params_total == resolve_model("deepseek-v3").params_total
    assert m.kv_bytes_per_token() == 70_272


def test_hf_config_qwen2_has_qkv_bias(tmp_path: Path) -> None:
    q = resolve_model("qwen2.5-72b")
    cfg = {
        "model_type": "qwen2",
        "hidden_size": 8192,
        "intermediate_size": 29568,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "vocab_size": 152064,
        "tie_word_embeddings": False,
    }
    assert from_hf_config(_write(tmp_path, cfg)).params_total == q.params_total


def test_hf_config_unsizable_architecture_names_what_is_missing(tmp_path: Path) -> None:
    # GPT-2 names its fields n_embd/n_layer/n_head: nothing the sizing needs is there, and the
    # one-line error says which fields are missing and which families are supported
    with pytest.raises(SpecError, match="cannot size model_type 'gpt2': missing hidden_size") as e:
        from_hf_config(_write(tmp_path, {"model_type": "gpt2", "n_embd": 768, "n_layer": 12}))
    assert "num_hidden_layers" in e.value.message and "vocab_size" in e.value.message
    assert "llama" in (e.value.fix or "") and "qwen3_moe" in (e.value.fix or "")


def test_hf_config_missing_field_names_it(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="hidden_size"):
        from_hf_config(_write(tmp_path, {"model_type": "llama", "num_hidden_layers": 2}))


def test_unknown_model_lists_catalog() -> None:
    with pytest.raises(SpecError) as e:
        resolve_model("gpt-5")
    assert "unknown model 'gpt-5'" in e.value.message
    assert "llama-3.1-70b" in (e.value.fix or "") and "deepseek-r1" in (e.value.fix or "")


def test_catalog_entries_all_valid() -> None:
    models = load_models()
    assert {
        "llama-3.1-8b",
        "llama-3.1-70b",
        "llama-3.1-405b",
        "qwen2.5-72b",
        "deepseek-v3",
        "deepseek-r1",
        "tiny",
    } <= set(models)


# ---------------------------------------------------------------- hardware
def test_hardware_catalog_facts() -> None:
    hw = load_hardware()
    assert {"h100", "h800", "h200", "h20", "a100", "l40s", "b200"} <= set(hw.gpus)
    h100, h800 = hw.gpu("h100"), hw.gpu("H800")
    assert h100.bf16_flops == 989e12 and h100.hbm_bytes_per_s == 3.35e12
    assert h100.default_scale_up() == "nvlink-900" and h800.default_scale_up() == "nvlink-400"
    assert hw.interconnect("nvlink-400").bytes_per_s == 200e9
    assert hw.interconnect("ib-400").bytes_per_s == 50e9
    assert hw.gpu("l40s").default_scale_up() == "pcie-gen4"
    assert hw.gpu("a100").peak_flops("fp8") == 312e12  # no FP8 tensor cores: BF16 rate


def test_gpu_aliases_and_nvml_names() -> None:
    hw = load_hardware()
    assert hw.gpu("H100-SXM").key == "h100"
    found = hw.gpu_for_nvml_name("NVIDIA H100 80GB HBM3")
    assert found is not None and found.key == "h100"
    pcie = hw.gpu_for_nvml_name("NVIDIA H100 PCIe")
    assert pcie is not None and pcie.key == "h100-pcie"
    assert hw.gpu_for_nvml_name("Some Unknown GPU") is None


def test_unknown_gpu_lists_available() -> None:
    with pytest.raises(SpecError) as e:
        load_hardware().gpu("v100")
    assert "unknown GPU 'v100'" in e.value.message
    assert "h100" in (e.value.fix or "") and "b200" in (e.value.fix or "")


def test_prices_parse_and_validate() -> None:
    assert parse_prices(["h100=2.1", "h800=1.5,b200=$6"]) == {"h100": 2.1, "h800": 1.5, "b200": 6.0}
    with pytest.raises(SpecError, match="--price"):
        parse_prices(["h100"])
    with pytest.raises(SpecError, match="not a number"):
        parse_prices(["h100=cheap"])
    with pytest.raises(SpecError, match="unknown GPU"):
        parse_prices(["v100=1"])


def test_bad_hardware_entry_names_file_and_field() -> None:
    data = {
        "gpus": {"x1": {"name": "X", "bf16_tflops": -1}},
        "interconnects": {},
        "sensitivity": [],
    }
    with pytest.raises(SpecError) as e:
        parse_hardware(data, "hw.yaml")
    assert "hw.yaml gpus.x1" in e.value.message and "bf16_tflops" in e.value.message
    data = {"gpus": {}, "interconnects": {}, "sensitivity": [], "colour": "red"}
    with pytest.raises(SpecError, match="colour"):
        parse_hardware(data, "hw.yaml")


# ---------------------------------------------------------------- families and attention kinds
FAMILY_CONFIGS = {
    # config.json fields as each family writes them (names differ per family)
    "qwen3-235b-a22b": {
        "model_type": "qwen3_moe",
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "moe_intermediate_size": 1536,
        "num_hidden_layers": 94,
        "num_attention_heads": 64,
        "num_key_value_heads": 4,
        "head_dim": 128,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "vocab_size": 151936,
        "tie_word_embeddings": False,
        "sliding_window": None,
        "use_sliding_window": False,
        "max_window_layers": 94,
        "torch_dtype": "bfloat16",
    },
    "mixtral-8x7b": {
        "model_type": "mixtral",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "vocab_size": 32000,
        "sliding_window": None,
    },
    "gpt-oss-20b": {
        "model_type": "gpt_oss",
        "hidden_size": 2880,
        "intermediate_size": 2880,
        "num_hidden_layers": 24,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "num_local_experts": 32,
        "num_experts_per_tok": 4,
        "experts_per_token": 4,
        "sliding_window": 128,
        "layer_types": ["sliding_attention", "full_attention"] * 12,
        "vocab_size": 201088,
        "attention_bias": True,
        "tie_word_embeddings": False,
        "quantization_config": {"quant_method": "mxfp4"},
    },
    "llama-4-maverick": {
        "model_type": "llama4",
        "text_config": {
            "model_type": "llama4_text",
            "hidden_size": 5120,
            "intermediate_size": 8192,
            "intermediate_size_mlp": 16384,
            "num_hidden_layers": 48,
            "num_attention_heads": 40,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "num_local_experts": 128,
            "num_experts_per_tok": 1,
            "interleave_moe_layer_step": 2,
            "attention_chunk_size": 8192,
            "no_rope_layers": [1, 1, 1, 0] * 12,
            "vocab_size": 202048,
        },
        "tie_word_embeddings": False,
    },
    "deepseek-v2": {
        "model_type": "deepseek_v2",
        "hidden_size": 5120,
        "intermediate_size": 12288,
        "moe_intermediate_size": 1536,
        "num_hidden_layers": 60,
        "first_k_dense_replace": 1,
        "num_attention_heads": 128,
        "num_key_value_heads": 128,
        "q_lora_rank": 1536,
        "kv_lora_rank": 512,
        "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 128,
        "v_head_dim": 128,
        "n_routed_experts": 160,
        "n_shared_experts": 2,
        "num_experts_per_tok": 6,
        "vocab_size": 102400,
    },
}


@pytest.mark.parametrize("name", sorted(FAMILY_CONFIGS))
def test_family_configs_size_like_the_catalog(tmp_path: Path, name: str) -> None:
    m = from_hf_config(_write(tmp_path, FAMILY_CONFIGS[name]))
    cat = resolve_model(name)
    assert m.params_total == cat.params_total and m.params_active == cat.params_active
    assert m.num_moe_layers == cat.num_moe_layers and m.local_layers == cat.local_layers
    if name == "gpt-oss-20b":
        assert m.weight_dtype == "mxfp4" and m.attention_kind == "gqa+local"


@pytest.mark.parametrize(
    "name",
    [
        "llama-2-70b",
        "llama-3.2-3b",
        "llama-3.3-70b",
        "llama-4-scout",
        "llama-4-maverick",
        "qwen2.5-7b",
        "qwen3-8b",
        "qwen3-32b",
        "qwen3-30b-a3b",
        "qwen3-235b-a22b",
        "mixtral-8x7b",
        "mixtral-8x22b",
        "deepseek-v2",
        "deepseek-v2-lite",
        "gpt-oss-20b",
        "gpt-oss-120b",
    ],
)
def test_catalog_families_match_published_totals(name: str) -> None:
    m = resolve_model(name)
    assert m.published_params_b is not None
    assert m.params_total / 1e9 == pytest.approx(m.published_params_b, rel=0.03)
    if m.published_active_params_b:
        # published active counts leave the input embedding out (or not): either is within 15%
        active = (m.params_active - m.embed_params) / 1e9
        assert active == pytest.approx(m.published_active_params_b, rel=0.15)


def test_sliding_window_caps_the_kv_of_local_layers() -> None:
    m = resolve_model("gpt-oss-120b")  # 18 full + 18 sliding (128) layers, 8 KV heads x 64
    per_layer = 2 * 8 * 64 * 2  # K and V, BF16
    assert m.kv_bytes_per_sequence(100) == pytest.approx(36 * 100 * per_layer)
    assert m.kv_bytes_per_sequence(4096) == pytest.approx((18 * 4096 + 18 * 128) * per_layer)
    # attention FLOPs likewise see at most the window on local layers
    full = m.attn_flops(1, 4096, "decode")
    assert full == pytest.approx(4 * 64 * 64 * (18 * 4096 + 18 * 128))
    scout = resolve_model("llama-4-scout")  # chunked attention (8,192) on 36 of 48 layers
    assert scout.local_layers == 36 and scout.kv_layer_tokens(32768) == 12 * 32768 + 36 * 8192


def test_generic_decoder_is_sized_and_says_so(tmp_path: Path) -> None:
    cfg = {
        "model_type": "granite",
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "vocab_size": 49152,
    }
    m = from_hf_config(_write(tmp_path, cfg))
    assert m.params_total > 1e9 and "generic decoder" in m.source


def test_new_gpus_and_scale_up_domains() -> None:
    hw = load_hardware()
    for key in ("b200", "gb200", "h20", "l4", "a10g"):
        g = hw.gpu(key)
        assert g.price_per_hour > 0 and g.source
    assert hw.gpu("gb200").domain_gpus == 72 and hw.gpu("gb200").gpus_per_node == 4
    assert hw.gpu("h100").domain_gpus == 8
    assert hw.gpu_for_nvml_name("NVIDIA A10G").key == "a10g"  # type: ignore[union-attr]
    assert hw.gpu_for_nvml_name("NVIDIA GB200").key == "gb200"  # type: ignore[union-attr]


def test_expert_parallel_inside_an_nvl72_rack_uses_no_nic() -> None:
    from profiler.capacity.deployment import Deployment, Layout
    from profiler.capacity.perf import decode_step

    hw = load_hardware()
    g = hw.gpu("gb200")
    dep = Deployment(
        model=resolve_model("deepseek-v3"),
        gpu=g,
        layout=Layout(dp=64, ep=64),
        scale_up=hw.interconnect(g.default_scale_up()),
        scale_out=hw.interconnect(g.default_scale_out()),
        gpus_per_node=g.gpus_per_node,
        weight_dtype="fp8",
    )
    s = decode_step(dep, 64, 2048.0)
    assert float(s.scale_out_bytes) == 0.0 and float(s.scale_up_bytes) > 0
    h = dep.with_(gpu=hw.gpu("h100"), gpus_per_node=8, scale_up=hw.interconnect("nvlink-900"))
    assert float(decode_step(h, 64, 2048.0).scale_out_bytes) > 0  # 8-GPU domains: NICs
