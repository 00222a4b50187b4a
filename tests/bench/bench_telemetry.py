"""Telemetry sampling cost and tick jitter (``python -m tests.bench.bench_telemetry``).

1. Cost per tick: ``NvmlSampler`` over 8 fake GPUs (tests/fakes/nvml.py: H100-like, 18 NVLink
   links each, GPM, per-link NVLink detail, process memory read every tick), CPU time of the
   sampling thread (``time.thread_time``), with the fake as plain functions and as autospec
   mocks. The fake is Python (it builds pynvml structs per call), so both are upper bounds for
   the sampler's own cost; the NVML calls per tick are counted so real driver costs can be
   multiplied in (tests/gpu/run.sh measures a real tick). Also: ``HostSampler`` (real psutil)
   and parsing a vLLM /metrics text.
2. Jitter at 10 Hz over ~10 s: ``TelemetryRecorder`` running the 8-GPU sampler and the host
   sampler; tick start minus scheduled time, and the spacing between consecutive ticks.

Writes bench-results/telemetry.json and bench-results/telemetry.md.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from profiler.clock import RunClock
from profiler.sketches import Distribution
from profiler.telemetry.host import HostSampler
from profiler.telemetry.nvml_sampler import NvmlSampler
from profiler.telemetry.recorder import TelemetryRecorder
from profiler.telemetry.vllm_metrics import parse_metrics
from tests.fakes.nvml import FakeGpu, h100, install_fake_nvml

GPUS = 8
TICKS = 200
JITTER_S = float(os.environ.get("INFPROF_BENCH_JITTER_S", "10"))
OUT = Path("bench-results")

METRICS_TEXT = "".join(
    f'vllm:{name}{{engine="{e}",model_name="m"}} {e + 1}.0\n'
    for name in (
        "num_requests_running",
        "num_requests_waiting",
        "kv_cache_usage_perc",
        "num_preemptions_total",
        "prompt_tokens_total",
        "generation_tokens_total",
    )
    for e in range(4)
) + "".join(
    f'vllm:time_to_first_token_seconds_bucket{{engine="{e}",le="{le}",model_name="m"}} {i}.0\n'
    for e in range(4)
    for i, le in enumerate(("0.01", "0.05", "0.1", "0.5", "1.0", "5.0", "+Inf"))
)


def eight_gpus() -> list[FakeGpu]:
    gpus = []
    for i in range(GPUS):
        g = h100(i, peers=[(i + 1) % GPUS, (i + 2) % GPUS, (i + 3) % GPUS], links_per_peer=6)
        g.processes = [(1000 + i, 2**30), (2000, 2**29)]
        for link in g.links:
            link.tx_kib_per_s = link.rx_kib_per_s = 1e6
        gpus.append(g)
    return gpus


def nvml_cost(autospec: bool) -> dict[str, Any]:
    gpus = eight_gpus()
    with install_fake_nvml(gpus, autospec=autospec) as fake:
        s = NvmlSampler(
            process_pids=lambda: {1000, 1001, 2000}, process_interval_s=0.0, nvlink_per_link=True
        )
        s.sample(0.0)  # the probe tick
        fake.advance(0.1)
        calls0 = sum(sum(g.calls.values()) for g in gpus)
        cpu, wall, n_samples = [], [], 0
        for k in range(1, TICKS + 1):
            c0, w0 = time.thread_time(), time.perf_counter()
            out = s.sample(k * 0.1)
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
            n_samples += len(out)
            fake.advance(0.1)
        calls = sum(sum(g.calls.values()) for g in gpus) - calls0
        s.close()
    return {
        "cpu_per_tick_s": Distribution.of(cpu).to_dict(),
        "wall_per_tick_s": Distribution.of(wall).to_dict(),
        "samples_per_tick": n_samples / TICKS,
        "calls_per_tick": calls / TICKS,
    }


def cost_per_tick() -> dict[str, Any]:
    mocked, plain = nvml_cost(autospec=True), nvml_cost(autospec=False)
    host = HostSampler(server_pids=lambda: {os.getpid()})
    host.sample(0.0)
    host_cpu = []
    for k in range(1, 51):
        c0 = time.thread_time()
        host.sample(k * 0.1)
        host_cpu.append(time.thread_time() - c0)
    parse_cpu = []
    for _ in range(200):
        c0 = time.thread_time()
        parse_metrics(METRICS_TEXT)
        parse_cpu.append(time.thread_time() - c0)
    return {
        "gpus": GPUS,
        "ticks": TICKS,
        "nvml_cpu_per_tick_s": plain["cpu_per_tick_s"],
        "nvml_wall_per_tick_s": plain["wall_per_tick_s"],
        "nvml_autospec_cpu_per_tick_s": mocked["cpu_per_tick_s"],
        "nvml_samples_per_tick": plain["samples_per_tick"],
        "nvml_calls_per_tick": plain["calls_per_tick"],
        "nvml_calls_per_gpu_tick": plain["calls_per_tick"] / GPUS,
        "host_cpu_per_tick_s": Distribution.of(host_cpu).to_dict(),
        "vllm_parse_cpu_s": Distribution.of(parse_cpu).to_dict(),
    }


def jitter_at_10hz() -> dict[str, Any]:
    gpus = eight_gpus()
    with install_fake_nvml(gpus, autospec=False):
        clock = RunClock()
        samplers = [
            NvmlSampler(process_pids=lambda: {1000}, process_interval_s=2.0),
            HostSampler(server_pids=lambda: {os.getpid()}),
        ]
        rec = TelemetryRecorder(samplers, 0.1, clock, keep=True)
        c0 = time.process_time()
        rec.start()
        time.sleep(JITTER_S)
        rec.stop()
        process_cpu = time.process_time() - c0
    stats = rec.tick_stats()
    ticks = sorted(
        {
            s.t_s
            for s in rec.samples()
            if s.source == "nvml" and s.metric == "up" and s.device == "0"
        }
    )
    spacing = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    return {
        "seconds": JITTER_S,
        "interval_s": 0.1,
        "lanes": stats,
        "nvml_tick_spacing_s": Distribution.of(spacing).to_dict(),
        "process_cpu_fraction_of_one_core": process_cpu / JITTER_S,
    }


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.3f}"


def markdown(r: dict[str, Any]) -> str:
    c, j = r["cost"], r["jitter"]
    nv, host = j["lanes"]["nvml"], j["lanes"]["host"]
    lines = [
        "# Telemetry sampling cost and jitter",
        "",
        f"Machine: {r['machine']}. {c['gpus']} fake H100-like GPUs (18 NVLink links each, GPM, per-link",
        "detail, process memory every tick). The fake answers in Python (building pynvml structs),",
        "so these are upper bounds: a real NVML call is a C call. The jitter run uses the plain fake.",
        "",
        "| measure | mean | p50 | p99 | max |",
        "|---|---|---|---|---|",
    ]
    for key, label in (
        ("nvml_cpu_per_tick_s", f"NVML sampler CPU per tick, {c['gpus']} GPUs, plain fake (ms)"),
        ("nvml_wall_per_tick_s", "NVML sampler wall per tick, plain fake (ms)"),
        ("nvml_autospec_cpu_per_tick_s", "NVML sampler CPU per tick, autospec mocks (ms)"),
        ("host_cpu_per_tick_s", "host sampler CPU per tick (ms)"),
        ("vllm_parse_cpu_s", "vLLM /metrics parse, 4 engines (ms)"),
    ):
        d = c[key]
        lines.append(
            f"| {label} | {ms(d['mean'])} | {ms(d['p50'])} | {ms(d['p99'])} | {ms(d['max'])} |"
        )
    sp = j["nvml_tick_spacing_s"]
    lines += [
        f"| tick spacing at 10 Hz over {j['seconds']:.0f} s (ms) | {ms(sp['mean'])} | {ms(sp['p50'])} | {ms(sp['p99'])} | {ms(sp['max'])} |",
        "",
        f"- NVML calls per tick: {c['nvml_calls_per_tick']:.0f} ({c['nvml_calls_per_gpu_tick']:.1f} per GPU); samples per tick: {c['nvml_samples_per_tick']:.0f}",
        f"- 10 Hz jitter (tick start - schedule): NVML lane mean {ms(nv['jitter_mean_s'])} ms, max {ms(nv['jitter_max_s'])} ms, "
        f"{nv['ticks']} ticks, {nv['missed_ticks']} missed; host lane mean {ms(host['jitter_mean_s'])} ms, max {ms(host['jitter_max_s'])} ms",
        f"- CPU of the whole process while sampling at 10 Hz: {j['process_cpu_fraction_of_one_core']:.1%} of one core",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "cost": cost_per_tick(),
        "jitter": jitter_at_10hz(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "telemetry.json").write_text(json.dumps(result, indent=2))
    md = markdown(result)
    (OUT / "telemetry.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
