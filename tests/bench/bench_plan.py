"""Wall time of ``infprof plan`` (fresh process each time, imports included) for the acceptance
commands and a larger multi-GPU plan. The budget is 5 s per answer."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from tests.bench.common import ROOT, md_table, write_result

REPEATS = 3
CASES: dict[str, list[str]] = {
    "llama-3.1-70b h100 10 rps": [
        "--model",
        "llama-3.1-70b",
        "--gpu",
        "h100",
        "--target-rps",
        "10",
    ],
    "deepseek-v3 h800 10 rps": ["--model", "deepseek-v3", "--gpu", "h800", "--target-rps", "10"],
    "deepseek-r1 h800+h100 1M users": [
        "--model",
        "deepseek-r1",
        "--gpu",
        "h800,h100",
        "--users",
        "1000000",
        "--rate-per-user",
        "10/day",
        "--peak-factor",
        "2",
        "--input-len",
        "1024",
        "--output-len",
        "4096",
        "--slo",
        "ttft=2,tpot=0.05",
    ],  # fmt: skip
    "llama-3.1-8b all GPUs": [
        "--model",
        "llama-3.1-8b",
        "--gpu",
        "h100,h800,h200,h20,a100,l40s,b200",
        "--target-rps",
        "100",
    ],
}


def main() -> None:
    rows = []
    data = {}
    for name, args in CASES.items():
        times = []
        for _ in range(REPEATS):
            t0 = time.monotonic()
            subprocess.run(
                [sys.executable, "-m", "profiler", "plan", *args, "--json"],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            times.append(time.monotonic() - t0)
        data[name] = {"wall_s": times, "median_s": statistics.median(times), "max_s": max(times)}
        rows.append([name, statistics.median(times), max(times), "yes" if max(times) < 5 else "NO"])
    write_result(
        "plan",
        data,
        "## infprof plan wall time (fresh process)\n\n"
        + md_table(["case", "median s", "max s", "< 5 s"], rows),
    )


if __name__ == "__main__":
    main()
