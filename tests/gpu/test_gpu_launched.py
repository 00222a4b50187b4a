"""``infprof run`` with no arguments on a GPU host, as ``make run`` starts it, with one seam
swapped: the launched "vLLM" is the OpenAI shim (tests/fakes/vllm_openai_shim.py) holding GPU
memory and running matmuls on cuda:0 (no vLLM on the GPU test machine). Everything else is the
product: the GPU default (shape chosen from NVML, made offline, the gpu-default workload), the
server launched with --load-format dummy and vLLM's GPU defaults, the GPU scope decided at the
end of the run from the GPUs NVML lists the server's processes on, and the server's GPU memory.

Needs the profiler's full dependencies (pydantic, ddsketch, httptools: carried as wheels on the
device machine); skipped without them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

for _mod in ("pydantic", "ddsketch", "httptools", "aiohttp", "yaml", "torch"):
    pytest.importorskip(_mod)

from tests.fakes.vllm_openai_shim import make_python_wrapper  # noqa: E402
from tests.gpu.gpu_checks import add_row  # noqa: E402
from tests.integration.faults_support import cli_env, launched_cmd, run_cli  # noqa: E402

HELD_GIB = 4.0


def test_default_run_on_a_gpu_host(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    cfg = request.config
    env = cli_env(tmp_path / "home", make_python_wrapper(tmp_path))
    res = run_cli(
        launched_cmd(
            "run",
            f"--serve-arg=--fake-gpu-gib={HELD_GIB}",
            "--serve-arg=--fake-itl-ms=2",
            "--num-requests",
            "512",
            "--out",
            str(tmp_path / "runs"),
            "--run-id",
            "default",
            "-q",
        ),  # fmt: skip
        env,
        timeout_s=240,
    )
    ok_rc = res.returncode == 0
    add_row(cfg, "default run: exit code", str(res.returncode), "0", ok_rc)
    assert ok_rc, res.stdout[-3000:] + res.stderr[-3000:]
    d = tmp_path / "runs" / "default"
    m = json.loads((d / "manifest.json").read_text())
    s = json.loads((d / "summary.json").read_text())
    dm = m.get("default_model") or {}
    ok_shape = dm.get("shape") == "llama-8b-shape"
    add_row(
        cfg,
        "default run: model shape",
        f"{dm.get('shape')}",
        "llama-8b-shape on an H100/H200",
        ok_shape,
    )
    argv = " ".join(str(a) for a in (m.get("server") or {}).get("argv") or [])
    ok_argv = "--load-format dummy" in argv and "--enforce-eager" not in argv
    add_row(
        cfg,
        "default run: server argv",
        "--load-format dummy" if ok_argv else argv[-300:],
        "dummy weights, no --enforce-eager",
        ok_argv,
    )
    scope = m["gpu_scope"]
    ok_scope = scope["method"] == "server_processes" and len(scope["gpus"]) == 1
    add_row(
        cfg,
        "default run: gpu_scope",
        f"{scope['method']} {scope['gpus']}: {scope.get('reason')}",
        "server_processes, 1 GPU",
        ok_scope,
    )
    mem = s["gpu"].get("process_memory_used_peak_bytes")
    ok_mem = mem is not None and HELD_GIB * 2**30 <= mem <= (HELD_GIB + 3) * 2**30
    add_row(
        cfg,
        "default run: server GPU memory (summary)",
        "absent" if mem is None else f"{mem / 2**30:.2f} GiB",
        f">= {HELD_GIB} GiB",
        ok_mem,
    )
    add_row(
        cfg,
        "default run: requests ok, output tok/s",
        f"{s['requests']['ok']}, {s['throughput']['output_tokens_per_s']:.0f}",
        "info",
    )
    assert ok_shape and ok_argv and ok_scope and ok_mem
