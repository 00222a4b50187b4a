"""An OpenAI-compatible stand-in that does real GPU work, for ``tests/gpu`` only.

The fake server of ``tests/fakes/fake_openai.py`` streams the tokens; the GPU work is the vLLM
shim's (``tests/fakes/vllm_openai_shim.gpu_work``): this process holds ``--alloc-gib`` of GPU
memory for its whole life and runs bf16 matmuls on ``cuda:0`` while any stream is in flight,
so NVML sees a busy GPU and a server process with known memory. Prints
``READY <url> <pid>`` when it serves.

    python tests/gpu/gpu_server.py --alloc-gib 6 --itl-ms 4
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fakes.fake_openai import FakeConfig, serve_in_thread  # noqa: E402
from tests.fakes.vllm_openai_shim import gpu_work  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alloc-gib", type=float, default=6.0)
    ap.add_argument("--itl-ms", type=float, default=4.0)
    ap.add_argument("--ttft-ms", type=float, default=20.0)
    args = ap.parse_args()
    work = gpu_work(args.alloc_gib)
    with serve_in_thread(FakeConfig(ttft_ms=args.ttft_ms, itl_ms=args.itl_ms)) as server:
        print(f"READY {server.url} {os.getpid()}", flush=True)
        work(server)


if __name__ == "__main__":
    main()
