"""build_argv against vLLM's own argument parser (the installed package), GPU-only flags included."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from profiler.serving.vllm_command import VLLM_MODULE, build_argv
from profiler.spec import ServeSpec


def argv_of(**kw: Any) -> list[str]:
    return build_argv(ServeSpec(**kw), 8123, "/opt/py/bin/python")


# ---------------------------------------------------------------- shape (no vLLM needed)
def test_minimal_argv() -> None:
    assert argv_of(model="org/m") == [
        "/opt/py/bin/python",
        "-m",
        VLLM_MODULE,
        "--model",
        "org/m",
        "--served-model-name",
        "org/m",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "--tensor-parallel-size",
        "1",
        "--pipeline-parallel-size",
        "1",
        "--data-parallel-size",
        "1",
    ]


def test_optional_flags_only_when_set_and_extra_args_last() -> None:
    argv = argv_of(
        model="org/m",
        enable_expert_parallel=True,
        enforce_eager=True,
        dtype="bfloat16",
        tokenizer="org/tok",
        extra_args=["--seed", "7"],
    )
    assert "--enable-expert-parallel" in argv and "--enforce-eager" in argv
    assert argv[argv.index("--dtype") + 1] == "bfloat16"
    assert argv[argv.index("--tokenizer") + 1] == "org/tok"
    assert argv[-2:] == ["--seed", "7"]
    for flag in ("--max-model-len", "--gpu-memory-utilization", "--max-num-seqs", "--load-format"):
        assert flag not in argv
    assert all(isinstance(a, str) for a in argv)


def test_names_with_spaces_stay_one_argument() -> None:
    argv = argv_of(model="/models/my model", served_model_name="a b")
    assert argv[argv.index("--model") + 1] == "/models/my model"
    assert argv[argv.index("--served-model-name") + 1] == "a b"


# ---------------------------------------------------------------- vLLM's parser
@pytest.fixture(scope="module")
def vllm_parser() -> argparse.ArgumentParser:
    pytest.importorskip("vllm")
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    try:  # where the api_server entry point takes it from (vLLM >= 0.3x)
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
    except ImportError:  # older releases
        from vllm.entrypoints.openai.cli_args import make_arg_parser  # type: ignore[no-redef]
    parser: argparse.ArgumentParser = make_arg_parser(
        FlexibleArgumentParser(description="vLLM OpenAI-Compatible RESTful API server.")
    )
    return parser


def test_every_flag_parses_in_vllm(vllm_parser: argparse.ArgumentParser) -> None:
    spec = ServeSpec(
        model="meta-llama/Llama-3.1-70B-Instruct",
        served_model_name="llama-70b",
        tokenizer="meta-llama/Llama-3.1-70B-Instruct",
        host="0.0.0.0",
        tensor_parallel_size=8,
        pipeline_parallel_size=2,
        data_parallel_size=2,
        enable_expert_parallel=True,
        max_model_len=8192,
        gpu_memory_utilization=0.92,
        max_num_seqs=256,
        max_num_batched_tokens=16384,
        load_format="dummy",
        dtype="bfloat16",
        enforce_eager=True,
        extra_args=["--seed", "7"],
    )
    argv = build_argv(spec, 9001, "python")
    assert argv[1:3] == ["-m", VLLM_MODULE]
    ns = vllm_parser.parse_args(argv[3:])
    _validate(ns)
    assert ns.model == "meta-llama/Llama-3.1-70B-Instruct"
    assert ns.served_model_name == ["llama-70b"]
    assert ns.tokenizer == "meta-llama/Llama-3.1-70B-Instruct"
    assert (ns.host, ns.port) == ("0.0.0.0", 9001)
    assert ns.tensor_parallel_size == 8
    assert ns.pipeline_parallel_size == 2
    assert ns.data_parallel_size == 2
    assert ns.enable_expert_parallel is True
    assert ns.max_model_len == 8192
    assert ns.gpu_memory_utilization == pytest.approx(0.92)
    assert ns.max_num_seqs == 256
    assert ns.max_num_batched_tokens == 16384
    assert ns.load_format == "dummy"
    assert ns.dtype == "bfloat16"
    assert ns.enforce_eager is True
    assert ns.seed == 7


def test_minimal_argv_parses_to_vllm_defaults(vllm_parser: argparse.ArgumentParser) -> None:
    ns = vllm_parser.parse_args(argv_of(model="org/m")[3:])
    defaults = vllm_parser.parse_args(["--model", "org/m"])
    assert ns.port == 8123 and ns.served_model_name == ["org/m"]
    for key in ("max_model_len", "gpu_memory_utilization", "max_num_seqs", "dtype", "load_format"):
        assert getattr(ns, key) == getattr(defaults, key), key
    assert ns.enforce_eager is False and ns.enable_expert_parallel is False
    with pytest.raises(SystemExit):  # the parser is strict, so the checks above mean something
        vllm_parser.parse_args(["--model", "org/m", "--tensor-paralel-size", "2"])


def test_tiny_model_cpu_argv_parses(vllm_parser: argparse.ArgumentParser, tmp_path: Any) -> None:
    from profiler.serving.tinymodel import TINY_DTYPE, TINY_LOAD_FORMAT, make_tiny_model

    model = make_tiny_model(tmp_path / "tiny")
    argv = argv_of(
        model=str(model),
        load_format=TINY_LOAD_FORMAT,
        dtype=TINY_DTYPE,
        enforce_eager=True,
        max_model_len=2048,
        max_num_seqs=64,
    )
    ns = vllm_parser.parse_args(argv[3:])
    _validate(ns)
    assert (ns.model, ns.load_format, ns.dtype) == (str(model), "dummy", TINY_DTYPE)
    assert (ns.max_model_len, ns.max_num_seqs) == (2048, 64)


def _validate(ns: argparse.Namespace) -> None:
    """vLLM's own pre-launch checks of the parsed args, where this version has them."""
    try:
        from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args
    except ImportError:
        return
    validate_parsed_serve_args(ns)


def test_gpu_default_argv_parses_to_vllm_gpu_defaults(
    vllm_parser: argparse.ArgumentParser, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`infprof run` on a GPU host (fake NVML, one H100): vLLM's own parser reads bf16, dummy
    weights, CUDA graphs on (no --enforce-eager), and everything else at vLLM's defaults."""
    from profiler.run_flags import RunOptions
    from profiler.run_options import build_run_spec
    from profiler.run_server import probe_host
    from tests.fakes.nvml import h100, install_fake_nvml

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("INFPROF_HOME", str(tmp_path / "home"))
    with install_fake_nvml([h100(0, memory_used=512 * 2**20)]):  # idle
        spec = build_run_spec(probe_host(), RunOptions(out=tmp_path))
    assert spec.serve is not None
    ns = vllm_parser.parse_args(build_argv(spec.serve, 8123, "python")[3:])
    _validate(ns)
    defaults = vllm_parser.parse_args(["--model", "org/m"])
    assert (ns.dtype, ns.load_format, ns.max_model_len) == ("bfloat16", "dummy", 8192)
    assert ns.enforce_eager is False and ns.served_model_name == ["llama-8b-shape"]
    for key in ("gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens"):
        assert getattr(ns, key) == getattr(defaults, key), key
