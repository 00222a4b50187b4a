"""`infprof run` with no --model on a GPU host (fake NVML): a real shape with dummy weights, the
GPU default workload, vLLM's GPU defaults, and the choice recorded in the manifest. The CPU
default stays as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tokenizers import Tokenizer

from profiler.capacity.catalog import shape_spec
from profiler.clock import RunClock
from profiler.errors import SpecError
from profiler.run_flags import RunOptions
from profiler.run_options import build_run_spec
from profiler.run_server import probe_host
from profiler.serving import shapes
from profiler.serving.vllm import VllmServer
from profiler.serving.vllm_command import build_argv, server_env
from profiler.spec import RunSpec
from profiler.store.manifest import initial_manifest
from tests.fakes.nvml import h100, install_fake_nvml, pcie_gpu

GIB = 2**30
# ---- hand computation of the shapes (bf16: 2 bytes per weight and per KV element)
# Llama-3.1-8B: embedding and untied LM head 128256 x 4096 each; per layer: q and o 4096 x 4096,
# k and v 4096 x (8 x 128), gate/up/down 3 x 4096 x 14336, two RMSNorms of 4096; final norm 4096.
P8 = (
    2 * 128256 * 4096
    + 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096)
    + 4096
)
# Llama-3.2-1B: tied embedding 128256 x 2048; per layer q, o 2048 x 2048, k, v 2048 x 512,
# MLP 3 x 2048 x 8192, two norms; final norm.
P1 = 128256 * 2048 + 16 * (2 * 2048 * 2048 + 2 * 2048 * 512 + 3 * 2048 * 8192 + 2 * 2048) + 2048
KV8 = 2 * 32 * 8 * 128 * 2  # K and V, 32 layers, 8 KV heads of 128, bf16: bytes per token
KV1 = 2 * 16 * 8 * 64 * 2
# reserve (profiler/capacity/perf.py): 1 GiB + 8192 batched tokens x (4h + 2I) x 2 bytes +
# 256 sequences x vocab x 4 bytes of logits
RES8 = GIB + 8192 * (4 * 4096 + 2 * 14336) * 2 + 256 * 128256 * 4
RES1 = GIB + 8192 * (4 * 2048 + 2 * 8192) * 2 + 256 * 128256 * 4
BATCH_TOKENS = 256 * (1024 + 256)  # the GPU default workload, all in flight
NEED8 = 2 * P8 + RES8 + BATCH_TOKENS * KV8
NEED1 = 2 * P1 + RES1 + BATCH_TOKENS * KV1


def test_hand_numbers_are_the_published_ones() -> None:
    assert P8 == 8_030_261_248 and P1 == 1_235_814_400  # 8.03B and 1.24B parameters
    assert NEED8 == 60_953_468_928  # 56.8 GiB
    assert NEED1 == 14_816_776_192  # 13.8 GiB


def _run_spec(tmp_path: Path, **kw: object) -> RunSpec:
    return build_run_spec(probe_host(), RunOptions(out=tmp_path / "runs", **kw))  # type: ignore[arg-type]


def test_h100_serves_the_8b_shape_with_vllm_gpu_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with install_fake_nvml([h100(0, memory_used=512 * 2**20)]):  # 80 GiB, idle
        spec = _run_spec(tmp_path)
    s = spec.serve
    assert s is not None and spec.endpoint is None
    assert Path(s.model).name == "llama-8b-shape" and s.served_model_name == "llama-8b-shape"
    assert (s.dtype, s.load_format, s.enforce_eager) == ("bfloat16", "dummy", False)
    assert s.max_model_len == 8192 and s.cpus is None and s.gpu_memory_utilization is None
    assert not any(k.startswith("VLLM_CPU") for k in s.env)
    argv = build_argv(s, 8000, "/py")
    assert argv[argv.index("--dtype") + 1] == "bfloat16"
    assert argv[argv.index("--load-format") + 1] == "dummy"
    assert "--enforce-eager" not in argv and "--gpu-memory-utilization" not in argv
    monkeypatch.setattr("profiler.serving.vllm_command._has_nvidia_device", lambda: True)
    env = server_env(s, base={"PATH": "/usr/bin"})
    assert not any(k.startswith("VLLM_CPU") for k in env)
    # the GPU default workload
    assert spec.workload.name == "gpu-default" and spec.num_requests == 1000
    assert spec.arrival.kind == "concurrency" and spec.arrival.concurrency == 256
    sc = spec.workload.scenarios[0]
    assert (sc.input.value, sc.output.value, sc.ignore_eos) == (1024, 256, True)
    # the choice and its numbers: budget = min(free 79.5 GiB, 0.9 x 80 GiB) = 72 GiB
    choice = s.default_model
    assert choice is not None and choice["shape"] == "llama-8b-shape"
    assert choice["budget_bytes"] == pytest.approx(72 * GIB)
    assert choice["gpu_memory_utilization_lowered"] is False
    assert choice["needs"]["llama-8b-shape"]["total_bytes"] == NEED8
    assert choice["needs"]["llama-1b-shape"]["total_bytes"] == NEED1
    assert "56.8 GiB" in choice["reason"] and "72.0 GiB" in choice["reason"]
    # the manifest records it
    manifest = initial_manifest(spec, "r", RunClock()).to_dict()
    assert manifest["default_model"]["shape"] == "llama-8b-shape"
    assert manifest["spec"]["serve"]["default_model"]["reason"] == choice["reason"]
    json.dumps(manifest)  # JSON-serialisable


def test_less_free_memory_lowers_gpu_memory_utilization_as_vllm_requires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM refuses to start when less than utilization x total is free: with 70 of 80 GiB free
    the run passes (70 - 1) / 80 = 0.8625, rounded down to 0.86; the budget is 0.86 x 80 GiB."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with install_fake_nvml([h100(0)]):  # 10 GiB in use
        spec = _run_spec(tmp_path)
    s = spec.serve
    assert s is not None and s.served_model_name == "llama-8b-shape"
    assert s.gpu_memory_utilization == 0.86
    argv = build_argv(s, 8000, "/py")
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.86"
    choice = s.default_model
    assert choice is not None and choice["gpu_memory_utilization_lowered"] is True
    assert choice["budget_bytes"] == pytest.approx(0.86 * 80 * GIB)
    assert "lowered to 0.86" in choice["reason"]
    with install_fake_nvml([h100(0)]):  # the user's value rules
        given = _run_spec(tmp_path, gpu_memory_utilization=0.8)
    assert given.serve is not None and given.serve.gpu_memory_utilization == 0.8
    assert given.serve.default_model is not None
    assert given.serve.default_model["gpu_memory_utilization_lowered"] is False


def test_l4_serves_the_1b_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with install_fake_nvml([pcie_gpu(0, memory_used=300 * 2**20)]):  # L4, 24 GiB, idle
        spec = _run_spec(tmp_path)
    s = spec.serve
    assert s is not None and Path(s.model).name == "llama-1b-shape"
    assert (s.dtype, s.load_format, s.enforce_eager, s.env) == ("bfloat16", "dummy", False, {})
    choice = s.default_model
    assert choice is not None and choice["gpu"]["name"] == "NVIDIA L4"
    # budget = min(free 23.7 GiB, 0.9 x 24 GiB = 21.6 GiB) < NEED8; NEED1 fits the whole batch
    assert choice["budget_bytes"] == pytest.approx(0.9 * 24 * GIB)
    assert NEED1 < choice["budget_bytes"] < NEED8
    assert "holds its whole batch" in choice["reason"]


def test_an_h100_mostly_in_use_gets_the_1b_shape_and_a_full_one_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with install_fake_nvml([h100(0, memory_used=60 * GIB)]):  # 20 GiB free
        spec = _run_spec(tmp_path)
    assert spec.serve is not None and spec.serve.served_model_name == "llama-1b-shape"
    with install_fake_nvml([h100(0, memory_used=78 * GIB)]), pytest.raises(SpecError) as e:
        _run_spec(tmp_path)
    assert "even the 1B default model needs" in e.value.message
    assert "--model" in (e.value.fix or "")


def test_cuda_visible_devices_picks_the_gpu_that_is_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpus = [h100(0, memory_used=60 * GIB), h100(1, memory_used=1 * GIB)]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with install_fake_nvml(gpus):
        first = _run_spec(tmp_path).serve
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with install_fake_nvml(gpus):
        second = _run_spec(tmp_path).serve
    assert first is not None and first.default_model is not None
    assert second is not None and second.default_model is not None
    assert (first.default_model["gpu"]["index"], first.served_model_name) == (0, "llama-1b-shape")
    assert (second.default_model["gpu"]["index"], second.served_model_name) == (
        1,
        "llama-8b-shape",
    )


def test_the_rule_sizes_the_kv_cache_for_the_run_actually_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit small workload (16 in flight, 128 + 128 tokens) needs little KV cache: the 8B
    shape fits an L4's 21.6 GiB (15.0 GiB weights + 1.8 GiB reserve + 0.5 GiB KV)."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with install_fake_nvml([pcie_gpu(0, memory_used=300 * 2**20)]):
        spec = _run_spec(tmp_path, workload="default")
    assert spec.workload.name == "default" and spec.arrival.concurrency == 16
    assert spec.serve is not None and spec.serve.served_model_name == "llama-8b-shape"
    assert spec.serve.default_model is not None
    need = spec.serve.default_model["needs"]["llama-8b-shape"]
    assert need["kv_cache_bytes"] == 16 * 256 * KV8


def test_model_or_endpoint_on_a_gpu_host_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with install_fake_nvml([h100(0)]):
        given = _run_spec(tmp_path, model="org/some-model")
        attached = _run_spec(tmp_path, endpoint="http://127.0.0.1:1")
    assert given.serve is not None and given.serve.model == "org/some-model"
    assert given.serve.default_model is None and given.serve.dtype is None
    assert given.workload.name == "gpu-default"  # a launch on a GPU host loads the GPU
    assert attached.endpoint is not None and attached.workload.name == "default"


def test_cpu_default_is_exactly_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "profiler.telemetry.nvml.nvml_state", lambda: {"available": False, "reason": "test"}
    )
    spec = _run_spec(tmp_path)
    s = spec.serve
    assert s is not None and s.served_model_name == "tiny-llama"
    assert (s.dtype, s.load_format, s.enforce_eager) == ("float32", "dummy", True)
    assert s.env == {"VLLM_CPU_KVCACHE_SPACE": "1"} and s.default_model is None
    assert spec.workload.name == "default" and spec.num_requests == 200
    assert spec.arrival.concurrency == 16 and s.max_model_len == 2048


# ---------------------------------------------------------------- the made models
@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shapes")
    return {n: shapes.make_shape_model(n, root / n) for n in shapes.SHAPES}


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        (
            "llama-8b-shape",
            dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=8, intermediate_size=14336, head_dim=128,
                 tie_word_embeddings=False),
        ),
        (
            "llama-1b-shape",
            dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                 num_key_value_heads=8, intermediate_size=8192, head_dim=64,
                 tie_word_embeddings=True),
        ),
    ],
)  # fmt: skip
def test_made_config_has_the_real_shape(
    made: dict[str, Path], name: str, expect: dict[str, object]
) -> None:
    cfg = json.loads((made[name] / "config.json").read_text())
    for k, v in expect.items():
        assert cfg[k] == v, k
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert cfg["vocab_size"] == 128256 and cfg["rope_theta"] == 500000.0
    assert cfg["max_position_embeddings"] == 131072 and cfg["torch_dtype"] == "bfloat16"
    assert cfg["rope_scaling"]["rope_type"] == "llama3"
    assert not any(p.suffix in (".safetensors", ".bin") for p in made[name].iterdir())
    spec = shape_spec(shapes.get_shape(name))
    assert spec.params_total == (P8 if name == "llama-8b-shape" else P1)


def test_tokenizer_vocabulary_is_the_configs_and_every_id_decodes(made: dict[str, Path]) -> None:
    for d in made.values():
        cfg = json.loads((d / "config.json").read_text())
        tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        assert tok.get_vocab_size() == cfg["vocab_size"] == 128256
        assert tok.token_to_id("<|begin_of_text|>") == cfg["bos_token_id"] == 128000
        assert tok.token_to_id("<|eot_id|>") == 128009 and tok.token_to_id("<|eom_id|>") == 128008
        assert tok.token_to_id("<|reserved_special_token_247|>") == 128255
        for i in range(cfg["vocab_size"]):  # every id a random model can sample maps to a token
            assert tok.id_to_token(i) is not None, i
        assert isinstance(tok.decode(list(range(128256)), skip_special_tokens=False), str)
        text = "The quick brown fox, 42 times.\nÜnïcödé ✓ works"
        enc = tok.encode(text)
        assert enc.ids[0] == 128000 and tok.decode(enc.ids) == text
        assert len(enc.ids) < len(text.encode())


def test_shape_files_are_deterministic_and_cached(tmp_path: Path) -> None:
    a = shapes.make_shape_model("llama-1b-shape", tmp_path / "a")
    b = shapes.make_shape_model("llama-1b-shape", tmp_path / "b")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    mtime = (a / "tokenizer.json").stat().st_mtime_ns
    assert shapes.make_shape_model("llama-1b-shape", a) == a
    assert (a / "tokenizer.json").stat().st_mtime_ns == mtime


def test_transformers_loads_the_shape(made: dict[str, Path]) -> None:
    transformers = pytest.importorskip("transformers")
    d = made["llama-1b-shape"]
    tok = transformers.AutoTokenizer.from_pretrained(str(d))
    assert len(tok) == 128256 and tok.bos_token_id == 128000 and tok.eos_token_id == 128009
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>")
    cfg = transformers.AutoConfig.from_pretrained(str(d))
    assert cfg.vocab_size == len(tok) and cfg.num_key_value_heads == 8


def test_a_shape_needs_dummy_weights(made: dict[str, Path], tmp_path: Path) -> None:
    from profiler.spec import ServeSpec

    with pytest.raises(SpecError, match="has no weights"):
        VllmServer(ServeSpec(model=str(made["llama-8b-shape"])), tmp_path / "l").start()


def test_cli_model_makes_each_shape(tmp_path: Path) -> None:
    from profiler.cli.model import command

    runner = CliRunner()
    for name, arch in (("llama-8b-shape", "Llama-3.1-8B"), ("llama-1b-shape", "Llama-3.2-1B")):
        out = tmp_path / name
        res = runner.invoke(command, [name, "--out", str(out)])
        assert res.exit_code == 0, res.output
        assert res.output.strip() == str(out) and (out / "tokenizer.json").is_file()
        res = runner.invoke(command, [name, "--out", str(out), "--json"])
        info = json.loads(res.output)
        assert info["architecture"] == arch and info["load_format"] == "dummy"
        assert info["params"] == (P8 if name == "llama-8b-shape" else P1)
    res = runner.invoke(command, ["tiny", "--out", str(tmp_path / "tiny")])
    assert res.exit_code == 0, res.output


def test_device_memory_reads_free_memory_through_the_nvml_chokepoint() -> None:
    import pynvml

    from profiler.telemetry.nvml import device_memory

    with install_fake_nvml([h100(0), pcie_gpu(1, memory_used=GIB)]) as fake:
        mem = device_memory()
        fake.gpus[1].lost = True
        after_loss = device_memory()
    assert [(g["index"], g["name"]) for g in mem] == [
        (0, "NVIDIA H100 80GB HBM3"),
        (1, "NVIDIA L4"),
    ]
    assert mem[0]["memory_total_bytes"] == 80 * GIB and mem[0]["memory_free_bytes"] == 70 * GIB
    assert mem[1]["memory_free_bytes"] == 23 * GIB
    assert [g["index"] for g in after_loss] == [0]  # a GPU that stopped answering is left out
    with install_fake_nvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND):
        assert device_memory() == []
