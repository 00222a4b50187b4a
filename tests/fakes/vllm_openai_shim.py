"""A stand-in for ``python -m vllm.entrypoints.openai.api_server`` that serves the OpenAI API
(the fake of ``tests/fakes/fake_openai.py``), for fault tests of the launched-server path.

The profiler starts ``[spec.python, "-m", "vllm.entrypoints.openai.api_server", ...]``; tests
point ``spec.python`` (or ``profiler.serving.vllm.server_python``) at the script
``make_python_wrapper`` writes, which execs this module with the same arguments. The flags
``build_argv`` emits are accepted; any other flag is refused the way vLLM refuses one
(argparse: ``error: unrecognized arguments``, exit 2). Extra ``--fake-*`` flags (passed as
``--serve-arg``/``extra_args``):

  --fake-ttft-ms MS / --fake-itl-ms MS   stream timing
  --fake-startup-s S                     seconds before it listens (model load)
  --fake-never-ready                     never listens (a model load that never ends)
  --fake-child                           spawn a child (like vLLM's engine core) in its group
  --fake-marker PATH                     write its pid to PATH when started
  --fake-env-out PATH                    write RAY_ADDRESS and CUDA_VISIBLE_DEVICES to PATH (JSON)
  --fake-gpu-gib G                       hold G GiB on cuda:0 from before it listens, and run bf16
                                         matmuls there while streams are in flight (tests/gpu)
Children print ``CHILD_PID <pid>`` to stdout (the server log).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.fakes.fake_openai import FakeConfig, FakeOpenAIServer

VLLM_MODULE = "vllm.entrypoints.openai.api_server"
ROOT = Path(__file__).resolve().parents[2]
CHILD = "import time\nwhile True: time.sleep(1)\n"


def make_python_wrapper(directory: Path) -> Path:
    """An executable that stands in for the interpreter that has vLLM installed."""
    path = directory / "fake-vllm-python"
    path.write_text(
        "#!/bin/sh\n"
        f'PYTHONPATH="{ROOT}${{PYTHONPATH:+:$PYTHONPATH}}" '
        f'exec "{sys.executable}" -m tests.fakes.vllm_openai_shim "$@"\n'
    )
    path.chmod(0o755)
    return path


def parse(argv: list[str]) -> argparse.Namespace:
    if argv[:2] == ["-m", VLLM_MODULE]:
        argv = argv[2:]
    ap = argparse.ArgumentParser(prog="vllm serve (fake)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--served-model-name")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    for flag in (
        "--tensor-parallel-size",
        "--pipeline-parallel-size",
        "--data-parallel-size",
        "--max-model-len",
        "--gpu-memory-utilization",
        "--max-num-seqs",
        "--max-num-batched-tokens",
        "--load-format",
        "--dtype",
        "--tokenizer",
        "--distributed-executor-backend",
    ):
        ap.add_argument(flag)
    ap.add_argument("--enable-expert-parallel", action="store_true")
    ap.add_argument("--enforce-eager", action="store_true")
    ap.add_argument("--fake-ttft-ms", type=float, default=0.0)
    ap.add_argument("--fake-itl-ms", type=float, default=5.0)
    ap.add_argument("--fake-startup-s", type=float, default=0.2)
    ap.add_argument("--fake-never-ready", action="store_true")
    ap.add_argument("--fake-child", action="store_true")
    ap.add_argument("--fake-marker")
    ap.add_argument("--fake-env-out")
    ap.add_argument("--fake-gpu-gib", type=float)
    return ap.parse_args(argv)


def gpu_work(gib: float) -> Callable[[FakeOpenAIServer], None]:
    """Hold ``gib`` GiB on cuda:0 now (as a model load would); the returned loop runs bf16
    matmuls while ``server`` has streams in flight."""
    import torch

    dev = torch.device("cuda:0")
    held = torch.empty(int(gib * 2**30), dtype=torch.uint8, device=dev)
    held.fill_(1)
    a = torch.randn(4096, 4096, device=dev, dtype=torch.bfloat16)
    torch.cuda.synchronize()

    def loop(server: FakeOpenAIServer) -> None:
        keep = [held]
        while keep:
            if server.counters.running > 0:
                for _ in range(8):
                    a @ a
                torch.cuda.synchronize()
            else:
                time.sleep(0.005)

    return loop


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    name = args.served_model_name or args.model
    print(f"fake vllm (OpenAI shim): model={args.model} name={name} port={args.port}", flush=True)
    if args.fake_marker:
        Path(args.fake_marker).write_text(str(os.getpid()))
    if args.fake_env_out:  # what a launcher handed the server (RAY_ADDRESS, CUDA_VISIBLE_DEVICES)
        keys = ("RAY_ADDRESS", "CUDA_VISIBLE_DEVICES")
        Path(args.fake_env_out).write_text(json.dumps({k: os.environ.get(k) for k in keys}))
    if args.fake_child:
        child = subprocess.Popen([sys.executable, "-c", CHILD])
        print(f"CHILD_PID {child.pid}", flush=True)
    work = gpu_work(args.fake_gpu_gib) if args.fake_gpu_gib else None
    time.sleep(args.fake_startup_s)
    if args.fake_never_ready:
        print("loading the model (forever)", flush=True)
        while True:
            time.sleep(1)

    cfg = FakeConfig(
        model=name,
        ttft_ms=args.fake_ttft_ms,
        itl_ms=args.fake_itl_ms,
        host=args.host,
        port=args.port,
    )

    async def serve() -> None:
        server = FakeOpenAIServer(cfg)
        if work is not None:
            threading.Thread(target=work, args=(server,), daemon=True).start()
        await server.start()
        print(f"listening on {server.url}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
