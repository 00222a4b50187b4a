"""Scrape cost: rendering /metrics for 8 GPUs with every metric.

Timed: what the endpoint runs per scrape (``exposition.Renderer.render``: the registry's
collectors plus text rendering, byte-identical to prometheus_client's ``generate_latest``);
prometheus_client's own ``generate_latest`` on the same registry is reported for reference.

The registry is what ``infprof run --metrics-port`` serves: ``TelemetryCollector`` over a
snapshot with every GPU, host and server field set for 8 GPUs, plus ``RunMetrics`` with every
histogram populated (1,000 requests). A second case adds the ``--dcgm-compatible`` names, as
``infprof exporter --dcgm-compatible`` serves them. Also reported: the driver-side cost of
``RunMetrics.on_record`` per request (100 output tokens), which runs on the load loop.

Target: rendering under 5 ms.

    python -m tests.bench.bench_scrape
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from profiler.metrics.collector import GpuIdentity, TelemetryCollector
from profiler.metrics.dcgm import DcgmCollector
from profiler.metrics.exposition import Renderer
from profiler.metrics.run_metrics import RunMetrics
from profiler.spec import SloSpec
from profiler.store.record import RequestRecord
from tests.bench.common import md_table, write_result
from tests.fakes.nvml_exporter_fake import every_metric_latest

N_GPUS = 8
TARGET_MS = 5.0
REPEATS = 300


def _record(i: int, tokens: int = 100) -> RequestRecord:
    send = float(i)
    times = [send + 0.05 + 0.01 * (k + 1) * (1 + (i % 7) / 10) for k in range(tokens)]
    return RequestRecord(
        id=i,
        workload="bench",
        scenario="s",
        intended_start_s=send,
        send_s=send + 0.0002,
        first_token_s=times[0],
        last_token_s=times[-1],
        end_s=times[-1],
        prompt_tokens=512,
        output_tokens=tokens,
        chunks=tokens,
        chunk_times_s=times,
        chunk_tokens=[1] * tokens,
    )


def build(dcgm: bool) -> tuple[CollectorRegistry, RunMetrics]:
    snap = every_metric_latest(N_GPUS)
    gpus = {
        str(i): GpuIdentity(
            f"GPU-{i:08d}-0000-0000-0000-000000000000",
            "NVIDIA H100 80GB HBM3",
            f"00000000:{0x18 + i:02X}:00.0",
        )
        for i in range(N_GPUS)
    }
    reg = CollectorRegistry(auto_describe=False)
    labels = {
        "hostname": "gpu-node-1",
        "run_id": "run-20250101-000000",
        "workload": "chat",
        "model": "meta-llama/Llama-3.1-8B-Instruct",
    }
    reg.register(TelemetryCollector(lambda: snap, labels, gpus=gpus))
    if dcgm:
        reg.register(DcgmCollector(lambda: snap, "gpu-node-1", gpus=gpus))
    m = RunMetrics(
        reg,
        run_id=labels["run_id"],
        workload="chat",
        model=labels["model"],
        hostname="gpu-node-1",
        slo=SloSpec.parse("ttft=0.5,tpot=0.05"),
    )
    m.on_target_rate(10.0)
    m.on_client_health(0.001, 0.3, False)
    return reg, m


def _timed(fn: Callable[[], bytes], repeats: int) -> tuple[list[float], list[float], bytes]:
    """Wall and thread-CPU milliseconds per call, sorted."""
    for _ in range(20):  # warm-up (fills the label caches)
        body = fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        body = fn()
        cpu.append((time.thread_time() - c0) * 1000)
        wall.append((time.perf_counter() - t0) * 1000)
    return sorted(wall), sorted(cpu), body


def time_render(reg: CollectorRegistry, repeats: int = REPEATS) -> dict[str, Any]:
    times, cpu, body = _timed(Renderer(reg).render, repeats)
    ref, _, ref_body = _timed(lambda: generate_latest(reg), max(repeats // 3, 20))
    assert body == ref_body, "the endpoint's rendering differs from prometheus_client's"
    return {
        "p50_ms": statistics.median(times),
        "cpu_p50_ms": statistics.median(cpu),
        "p95_ms": times[int(0.95 * (len(times) - 1))],
        "max_ms": times[-1],
        "generate_latest_p50_ms": statistics.median(ref),
        "bytes": len(body),
        "series": sum(
            1 for line in body.decode().splitlines() if line and not line.startswith("#")
        ),
    }


def main() -> int:
    cases: dict[str, dict[str, Any]] = {}
    for name, dcgm in (("infprof names (run endpoint)", False), ("with --dcgm-compatible", True)):
        reg, m = build(dcgm)
        records = [_record(i) for i in range(1000)]
        t0 = time.perf_counter()
        for rec in records:
            m.on_send()
            m.on_record(rec)
        per_record_us = (time.perf_counter() - t0) / len(records) * 1e6
        del records
        gc.collect()  # the records are garbage now; do not time their collection
        res = time_render(reg)
        res["on_record_us_per_request_100_tokens"] = per_record_us
        cases[name] = res
    ok = all(c["p50_ms"] < TARGET_MS for c in cases.values())
    rows = [
        [
            name,
            c["series"],
            c["bytes"],
            c["p50_ms"],
            c["cpu_p50_ms"],
            c["p95_ms"],
            c["max_ms"],
            c["generate_latest_p50_ms"],
            c["on_record_us_per_request_100_tokens"],
        ]
        for name, c in cases.items()
    ]
    md = "\n".join(
        [
            f"# Scrape cost: /metrics for {N_GPUS} GPUs with every metric",
            "",
            f"One scrape as the endpoint serves it (`exposition.Renderer`), {REPEATS} renders after warm-up; "
            f"target < {TARGET_MS:g} ms (median). Histograms populated by 1,000 requests of 100 tokens. "
            "`generate_latest` is prometheus_client's renderer on the same registry (same bytes).",
            "",
            md_table(
                [
                    "registry",
                    "series",
                    "bytes",
                    "p50 ms",
                    "CPU p50 ms",
                    "p95 ms",
                    "max ms",
                    "generate_latest p50 ms",
                    "on_record µs/request",
                ],
                rows,
            ),
            "",
            f"Result: {'PASS' if ok else 'FAIL'} (median under {TARGET_MS:g} ms).",
        ]
    )
    write_result(
        "scrape",
        {"n_gpus": N_GPUS, "target_ms": TARGET_MS, "repeats": REPEATS, "pass": ok, "cases": cases},
        md,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
