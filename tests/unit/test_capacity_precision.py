"""Precision is first-class: weight/KV dtypes with their stored bytes, each GPU's peak per
precision (none where the GPU lacks it), and sweeps that record the precisions they served with
so calibration fits an FP8 sweep as FP8."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from profiler.capacity.calibrate import deployment_for
from profiler.capacity.catalog import resolve_model
from profiler.capacity.deployment import Efficiency
from profiler.capacity.dtypes import resolve_weight_dtype, served_dtypes
from profiler.capacity.hardware import load_hardware
from profiler.capacity.measured import MeasuredPoint, read_points
from profiler.capacity.models import DTYPE_BYTES
from profiler.spec import RunSpec, ServeSpec
from profiler.sweep.execute import SweepHooks, run_sweep
from profiler.sweep.spec import SweepGrid, SweepSpec
from profiler.sweep.sweep_dir import prepare_sweep_dir
from tests.fakes.synthetic_runs import make_run, make_sweep


def test_dtype_bytes_include_block_scales() -> None:
    # NVFP4: 4-bit values with one FP8 scale per 16; MXFP4: one E8M0 scale per 32
    assert DTYPE_BYTES["nvfp4"] == 0.5 + 1 / 16
    assert DTYPE_BYTES["mxfp4"] == 0.5 + 1 / 32
    assert DTYPE_BYTES["int4"] == pytest.approx(0.5 + 2 / 128)
    assert DTYPE_BYTES["fp8"] == DTYPE_BYTES["int8"] == 1.0


@pytest.mark.parametrize(
    ("gpu", "dtype", "tensor_path", "tflops"),
    [
        ("h100", "bf16", "bf16", 989),
        ("h100", "fp8", "fp8", 1979),
        ("h100", "int8", "int8", 1979),
        ("h100", "nvfp4", "bf16", 989),  # Hopper has no FP4 tensor cores: weight-only
        ("h100", "int4", "bf16", 989),  # W4A16 dequantizes to BF16
        ("a100", "fp8", "bf16", 312),  # Ampere has no FP8: weight-only FP8 (Marlin)
        ("a100", "int8", "int8", 624),
        ("a10g", "fp8", "bf16", 125),
        ("l4", "fp8", "fp8", 242.5),
        ("b200", "nvfp4", "fp4", 9000),
        ("b200", "mxfp4", "fp4", 9000),
        ("b200", "fp8", "fp8", 4500),
        ("gb200", "nvfp4", "fp4", 10000),
        ("h20", "fp8", "fp8", 296),
        ("h200", "fp32", "tf32", 989 / 2),
    ],
)
def test_peak_flops_per_precision(gpu: str, dtype: str, tensor_path: str, tflops: float) -> None:
    g = load_hardware().gpu(gpu)
    assert g.compute_dtype(dtype) == tensor_path
    assert g.peak_flops(dtype) == pytest.approx(tflops * 1e12)


def test_gpus_without_a_precision_list_none() -> None:
    hw = load_hardware()
    for key in ("a100", "a10g", "cpu"):
        assert hw.gpu(key).fp8_tflops is None
    for key in ("h100", "h200", "h800", "h20", "a100", "l40s", "l4", "a10g", "h100-pcie"):
        assert hw.gpu(key).fp4_tflops is None, key
    assert hw.gpu("b200").fp4_tflops and hw.gpu("gb200").fp4_tflops


def test_weight_bytes_follow_the_precision() -> None:
    from profiler.capacity.deployment import Deployment, Layout

    hw = load_hardware()
    m = resolve_model("deepseek-r1")

    def per_gpu(dtype: str) -> float:
        g = hw.gpu("b200")
        return Deployment(
            model=m,
            gpu=g,
            layout=Layout(dp=8, ep=8),
            scale_up=hw.interconnect("nvlink-1800"),
            scale_out=hw.interconnect("ib-400"),
            gpus_per_node=8,
            weight_dtype=dtype,
        ).weight_bytes_per_gpu()

    assert per_gpu("nvfp4") / per_gpu("fp8") == pytest.approx(0.5625)
    assert per_gpu("bf16") / per_gpu("fp8") == pytest.approx(2.0)


def test_served_dtypes_read_the_vllm_flags() -> None:
    serve = {
        "dtype": "bfloat16",
        "extra_args": ["--quantization", "fp8", "--kv-cache-dtype=fp8_e4m3"],
    }
    assert served_dtypes(serve) == {"weight": "fp8", "kv": "fp8", "dtype": "bf16"}
    assert served_dtypes({"extra_args": ["--quantization=modelopt_fp4"]})["weight"] == "nvfp4"
    assert served_dtypes({"extra_args": ["-q", "awq"]})["weight"] == "int4"
    assert served_dtypes(None) == {"weight": None, "kv": None, "dtype": None}
    # a quantized checkpoint keeps its precision whatever --dtype says
    assert resolve_weight_dtype("fp8", None, "bf16") == "fp8"
    assert resolve_weight_dtype("bf16", "fp8", "bf16") == "fp8"
    assert resolve_weight_dtype("bf16", None, "fp16") == "fp16"


class _Server:
    def __init__(self, serve: ServeSpec, log_path: Path) -> None:
        self.serve, self.log_path = serve, log_path

    def start(self) -> None:
        self.log_path.write_text("fake\n")

    def wait_ready(self) -> float:
        return 0.01

    @property
    def url(self) -> str:
        return "http://127.0.0.1:9/"

    def alive(self) -> bool:
        return True

    def stop(self) -> None:
        pass


def _runner(spec: RunSpec) -> Any:
    assert spec.run_id
    path = make_run(spec.out_dir, spec.run_id, gpu=False, n=20, rate=2.0)
    return SimpleNamespace(
        run_dir=path,
        summary=json.loads((path / "summary.json").read_text()),
        ended="completed",
        reason=None,
    )


def test_sweep_records_the_precisions_it_served_with(tmp_path: Path) -> None:
    spec = SweepSpec(
        sweep_id="fp8",
        model="llama-3.1-8b",
        grid=SweepGrid(max_num_seqs=[8]),
        loads=[1],
        num_requests=20,
        serve_args=["--quantization", "fp8", "--kv-cache-dtype", "fp8"],
        dtype="bfloat16",
    )
    d = tmp_path / "sw"
    prepare_sweep_dir(spec, d, resume=False)
    data = run_sweep(spec, d, SweepHooks(run_point=_runner, server_factory=_Server))
    assert data["configs"][0]["dtypes"] == {"weight": "fp8", "kv": "fp8", "dtype": "bf16"}


def test_calibration_fits_an_fp8_sweep_as_fp8(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, configs=1, loads=(1, 4))
    index = json.loads((sweep / "index.json").read_text())
    index["configs"][0]["dtypes"] = {"weight": "fp8", "kv": "fp8", "dtype": "bf16"}
    (sweep / "index.json").write_text(json.dumps(index))
    points = read_points(sweep, gpu="h100")
    assert points and all(p.weight_dtype == "fp8" and p.kv_dtype == "fp8" for p in points)
    dep = deployment_for(
        points[0].model_copy(update={"model": "llama-3.1-8b"}),
        resolve_model("llama-3.1-8b"),
        "h100",
        Efficiency(),
    )
    assert dep.weight_dtype == "fp8" and dep.kv_dtype == "fp8"


def test_a_run_directory_reads_its_precisions_from_the_manifest(tmp_path: Path) -> None:
    from profiler.capacity.measured import point_from_run

    run = make_run(tmp_path, "r1", gpu=False, n=20, rate=2.0)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.setdefault("spec", {})["serve"] = {
        "model": "llama-3.1-8b",
        "extra_args": ["--quantization", "fp8"],
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    p = point_from_run(run, gpu="h100")
    assert isinstance(p, MeasuredPoint) and p.weight_dtype == "fp8" and p.kv_dtype is None
