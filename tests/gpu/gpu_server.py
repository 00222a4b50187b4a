"""An OpenAI-compatible stand-in that does real GPU work, for ``tests/gpu`` only.

The fake server of ``tests/fakes/fake_openai.py`` streams the tokens; while any stream is in
flight this process runs bf16 matmuls on ``cuda:0``, and it holds ``--alloc-gib`` of GPU
memory for its whole life, so NVML sees a busy GPU and a server process with known memory.
Prints ``READY <url> <pid>`` when it serves.

    python tests/gpu/gpu_server.py --alloc-gib 6 --itl-ms 4
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fakes.fake_openai import FakeConfig, serve_in_thread  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alloc-gib", type=float, default=6.0)
    ap.add_argument("--itl-ms", type=float, default=4.0)
    ap.add_argument("--ttft-ms", type=float, default=20.0)
    ap.add_argument("--matmul-n", type=int, default=4096)
    args = ap.parse_args()

    import torch

    dev = torch.device("cuda:0")
    held = torch.empty(int(args.alloc_gib * 2**30), dtype=torch.uint8, device=dev)
    held.fill_(1)
    a = torch.randn(args.matmul_n, args.matmul_n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(args.matmul_n, args.matmul_n, device=dev, dtype=torch.bfloat16)
    torch.cuda.synchronize()
    config = FakeConfig(ttft_ms=args.ttft_ms, itl_ms=args.itl_ms)
    with serve_in_thread(config) as server:
        print(f"READY {server.url} {os.getpid()}", flush=True)
        while True:
            if server.counters.running > 0:
                for _ in range(8):
                    a @ b
                torch.cuda.synchronize()
            else:
                time.sleep(0.005)


if __name__ == "__main__":
    main()
