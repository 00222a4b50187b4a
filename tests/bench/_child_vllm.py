"""Child: one ``vllm bench serve`` load (imported from the vllm package, in-process);
prints the CPU seconds of the benchmark call and per-request TTFT/ITL figures.

Usage: python tests/bench/_child_vllm.py URL MODEL TOKENIZER NUM CONCURRENCY INPUT OUTPUT
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main() -> None:
    url, model, tokenizer, num, conc, inp, outp = sys.argv[1:8]
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main

    p = argparse.ArgumentParser()
    add_cli_args(p)
    args = p.parse_args(
        [
            "--backend", "openai",
            "--base-url", url,
            "--endpoint", "/v1/completions",
            "--model", model,
            "--tokenizer", tokenizer,
            "--dataset-name", "random",
            "--random-input-len", inp,
            "--random-output-len", outp,
            "--random-range-ratio", "0",
            "--num-prompts", num,
            "--max-concurrency", conc,
            "--request-rate", "inf",
            "--ignore-eos",
            "--disable-tqdm",
            "--save-detailed",
            "--ready-check-timeout-sec", "0",
            "--percentile-metrics", "ttft,tpot,itl,e2el",
        ]
    )  # fmt: skip
    c0 = time.process_time()
    t0 = time.perf_counter()
    res = bench_main(args)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    ttft = [t for t in res.get("ttfts", []) if t]
    itl = [x for lst in res.get("itls", []) for x in lst]
    print(
        json.dumps(
            {
                "cpu_s": cpu,
                "wall_s": wall,
                "tokens": int(res.get("total_output_tokens", 0)),
                "ok": int(res.get("completed", 0)),
                "ttft_p50": float(np.median(ttft)) if ttft else None,
                "ttft_p99": float(np.percentile(ttft, 99)) if ttft else None,
                "itl_p50": float(np.median(itl)) if itl else None,
                "itl_p99": float(np.percentile(itl, 99)) if itl else None,
                "tpot_p50": (res.get("median_tpot_ms") or 0) / 1000,
                "output_tokens_per_s": res.get("output_throughput"),
            }
        )
    )


if __name__ == "__main__":
    main()
