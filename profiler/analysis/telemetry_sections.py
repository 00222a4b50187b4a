"""The ``gpu``, ``host``, ``server`` and ``energy`` sections of summary.json, from the run's
telemetry samples (read as series by ``profiler.analysis.sample_series``).

Everything is computed over the measured window ``[window_start, window_end]`` on the run
clock (the same window as throughput), except ``memory_used_peak_bytes_run`` which covers the
whole sampled run (model load included). Counters of quantities (energy, NVLink, PCIe,
throttle times) give their increase over the window: each series is turned into a cumulative
increase that ignores resets, then interpolated at the window's edges. Counters of events
(vLLM's requests, tokens, preemptions, prefix-cache hits/queries) are counts, whole numbers:
the counter's own increase between the last scrape at or before the window start and the
first scrape at or after the window end (so they may include up to one scrape interval
beyond each edge), a drop counted as a restart from zero.
Energy comes from NVML's total-energy counter, never from integrating power. A section that
has no data says ``{"available": false, "reason": ...}``; it is never filled with zeros.

GPU scope: the ``gpu`` and ``energy`` sections cover the server's GPUs only, as recorded in
manifest.json ``gpu_scope`` (``profiler.telemetry.gpu_scope``: ``--gpus``, the server's
``CUDA_VISIBLE_DEVICES``, the GPUs holding the server's processes, or all); a scope still
pending (method ``server_processes``) is decided here from the process samples, and a run
without a recorded scope counts every GPU. Both sections say which under ``scope`` (with
``other_gpus``, the GPUs sampled but not the server's).

Across the server's GPUs: utilization means/peaks pool their samples; ``power_mean_watts`` and
the byte and energy totals are sums over them (the server's draw and traffic); per-GPU figures
are under ``per_gpu``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from profiler.analysis.sample_series import (
    SampleSeries,
    max_of,
    mean,
    peak,
    per_token,
    sum_all,
)
from profiler.sketches import Distribution
from profiler.telemetry.gpu_scope import GpuScope, decide_from_processes
from profiler.telemetry.sample import Sample

THROTTLE = (
    "power",
    "thermal",
    "sync_boost",
    "board_limit",
    "low_util",
    "reliability",
    "sw_thermal",
    "hw_thermal",
    "hw_power_brake",
)
GPM = ("sm_activity", "sm_occupancy", "tensor_activity", "dram_bandwidth")


def unavailable(reason: str) -> dict[str, Any]:
    """A section without data: it says why, and is never filled with zeros."""
    return {"available": False, "reason": reason}


def _gpu_bytes(
    d: SampleSeries, dev: str, kind: str, direction: str
) -> tuple[float | None, str | None]:
    """Bytes moved over the window on NVLink or PCIe, and how they were obtained."""
    got = d.increase("nvml", dev, f"{kind}_{direction}_bytes_total")
    if got is not None:
        return got, "counter"
    rate = mean(d.window("nvml", dev, f"{kind}_{direction}_bytes_per_second"))
    if rate is not None and kind == "pcie":  # NVML's spot rate (20 ms) times the window
        return rate * (d.end - d.start), "mean_rate_x_window"
    return None, None


def gpu_sections(
    d: SampleSeries, tokens: int, nvml_state: dict[str, Any], devices: list[str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``gpu`` and ``energy`` sections over ``devices`` (None: every GPU sampled)."""
    if not nvml_state.get("available", False):
        reason = str(nvml_state.get("reason") or "NVML unavailable")
        return unavailable(reason), unavailable(reason)
    if devices is not None and not devices:
        reason = "the server uses no GPU"
        return unavailable(reason), unavailable(reason)
    devs = d.devices("nvml") if devices is None else list(devices)
    if not devs or not any(
        d.window("nvml", g, "up").size or d.errors.get(("nvml", g)) for g in devs
    ):
        reason = "no NVML samples in the measured window"
        return unavailable(reason), unavailable(reason)
    per: dict[str, dict[str, Any]] = {}
    util_all: list[np.ndarray] = []
    power_means: list[float | None] = []
    traffic: dict[str, list[float | None]] = defaultdict(list)
    methods: set[str] = set()
    for g in devs:
        util = d.window("nvml", g, "utilization_ratio")
        util_all.append(util)
        power = mean(d.window("nvml", g, "power_watts"))
        power_means.append(power)
        row: dict[str, Any] = {
            "utilization_mean_ratio": mean(util),
            "utilization_peak_ratio": peak(util),
            "memory_used_peak_bytes": peak(d.window("nvml", g, "memory_used_bytes")),
            "memory_used_peak_bytes_run": peak(d.all("nvml", g, "memory_used_bytes")),
            "memory_total_bytes": peak(d.all("nvml", g, "memory_total_bytes")),
            # the server's own memory (its process tree), whole run: None when not known
            "process_memory_used_peak_bytes": peak(d.all("nvml", g, "process_memory_used_bytes")),
            "power_mean_watts": power,
            "temperature_peak_celsius": peak(d.window("nvml", g, "temperature_celsius")),
            "energy_joules": d.increase("nvml", g, "energy_joules_total"),
            "errors": len(d.errors.get(("nvml", g), [])),
        }
        for kind in ("nvlink", "pcie"):
            for direction in ("tx", "rx"):
                moved, how = _gpu_bytes(d, g, kind, direction)
                row[f"{kind}_{direction}_bytes"] = moved
                traffic[f"{kind}_{direction}"].append(moved)
                if how:
                    methods.add(f"{kind}:{how}")
        for name in GPM:
            row[f"gpm_{name}_mean_ratio"] = mean(d.window("nvml", g, f"gpm_{name}_ratio"))
        throttle = {k: d.increase("nvml", g, f"throttle_{k}_seconds_total") for k in THROTTLE}
        row["throttle_seconds"] = {k: v for k, v in throttle.items() if v is not None}
        if row["errors"]:
            row["last_error"] = d.errors[("nvml", g)][-1]
        per[g] = row
    util_cat = np.concatenate(util_all) if util_all else np.empty(0)
    gpu: dict[str, Any] = {
        "available": True,
        "count": len(devs),
        "utilization_mean_ratio": mean(util_cat),
        "utilization_peak_ratio": peak(util_cat),
        "utilization_ratio": Distribution.of(util_cat).to_dict(),
        "memory_used_peak_bytes": max_of(r["memory_used_peak_bytes"] for r in per.values()),
        "memory_used_peak_bytes_run": max_of(r["memory_used_peak_bytes_run"] for r in per.values()),
        "process_memory_used_peak_bytes": max_of(
            r["process_memory_used_peak_bytes"] for r in per.values()
        ),
        "process_memory_note": _process_memory_note(d, devs),
        "power_mean_watts": sum_all(power_means),
        "gpus_with_errors": [g for g, r in per.items() if r["errors"]],
        "traffic_methods": sorted(methods),
    }
    for key, per_dev in traffic.items():  # GPUs without the link (or counter) are left out
        known = [m for m in per_dev if m is not None]
        total = float(sum(known)) if known else None
        gpu[f"{key}_bytes"] = total
        gpu[f"{key}_bytes_per_output_token"] = per_token(total, tokens)
    for name in GPM:
        gpu[f"gpm_{name}_mean_ratio"] = mean(
            np.concatenate([d.window("nvml", g, f"gpm_{name}_ratio") for g in devs])
        )
    gpu["per_gpu"] = per
    return gpu, _energy_section(d, devs, per, tokens)


def _process_memory_note(d: SampleSeries, devs: list[str]) -> str | None:
    """Why the server's GPU memory is unknown (None when it is known on some GPU)."""
    if any(d.all("nvml", g, "process_memory_used_bytes").size for g in devs):
        return None
    listed = [d.all("nvml", g, "compute_processes") for g in devs]
    if any(v.size and v.max() > 0 for v in listed):
        return (
            "NVML lists compute processes but none is the server's (PID namespace? e.g. a "
            "container): the server's GPU memory is not known"
        )
    if any(v.size for v in listed):
        return (
            "NVML lists no compute process on these GPUs (processes it cannot see, or a server "
            "without GPU memory): the server's GPU memory is not known"
        )
    return "not sampled (no server process tree: an attached endpoint, or no server yet)"


def _energy_section(
    d: SampleSeries, devs: list[str], per: dict[str, dict[str, Any]], tokens: int
) -> dict[str, Any]:
    missing = [g for g in devs if per[g]["energy_joules"] is None]
    per_gpu = {g: per[g]["energy_joules"] for g in devs if per[g]["energy_joules"] is not None}
    if missing:
        out = unavailable(
            f"no energy counter readings across the window for GPU {', '.join(missing)} (not supported, or the GPU failed)"
        )
        out["per_gpu_joules"] = per_gpu
        return out
    joules = float(sum(per_gpu.values()))
    seconds = d.end - d.start
    return {
        "available": True,
        "method": "nvml_total_energy_counter",
        "joules": joules,
        "joules_per_output_token": per_token(joules, tokens),
        "mean_power_from_energy_watts": joules / seconds if seconds > 0 else None,
        "per_gpu_joules": per_gpu,
        "coverage_ratio": min(d.coverage("nvml", g, "energy_joules_total") for g in devs),
        "gpu_seconds": seconds * len(devs),
    }


def _process(d: SampleSeries, name: str) -> dict[str, Any] | None:
    cpu = d.window("host", name, "process_cpu_ratio")
    rss = d.window("host", name, "process_rss_bytes")
    if not cpu.size and not rss.size:
        return None
    return {
        "cpu_cores": Distribution.of(cpu).to_dict(),
        "cpu_mean_cores": mean(cpu),
        "cpu_peak_cores": peak(cpu),
        "rss_peak_bytes": peak(rss),
    }


def host_section(d: SampleSeries) -> dict[str, Any]:
    cpu = d.window("host", "", "cpu_utilization_ratio")
    mem = d.window("host", "", "memory_used_bytes")
    if not cpu.size and not mem.size:
        return unavailable("no host samples in the measured window")
    network = {}
    for nic in d.devices("host"):
        tx = d.increase("host", nic, "network_tx_bytes_total")
        rx = d.increase("host", nic, "network_rx_bytes_total")
        if tx is not None or rx is not None:
            network[nic] = {"tx_bytes": tx, "rx_bytes": rx}
    return {
        "available": True,
        "cpu_utilization_mean_ratio": mean(cpu),
        "cpu_utilization_peak_ratio": peak(cpu),
        "cpu_utilization_ratio": Distribution.of(cpu).to_dict(),
        "memory_used_mean_bytes": mean(mem),
        "memory_used_peak_bytes": peak(mem),
        "memory_total_bytes": peak(d.all("host", "", "memory_total_bytes")),
        "processes": {"client": _process(d, "client"), "server": _process(d, "server")},
        "network": network,
    }


def _server_section(d: SampleSeries) -> dict[str, Any]:
    up = d.window("vllm", "", "up")
    errors = d.errors.get(("vllm", ""), [])
    if not up.size:
        if errors:
            return unavailable(f"every /metrics scrape in the window failed: {errors[-1]}")
        return unavailable("no /metrics samples in the measured window (not scraped)")
    kv = d.window("vllm", "", "kv_cache_usage_ratio")
    running = d.window("vllm", "", "num_requests_running")
    waiting = d.window("vllm", "", "num_requests_waiting")
    hits = d.count("vllm", "", "prefix_cache_hits_total")
    queries = d.count("vllm", "", "prefix_cache_queries_total")

    def last(metric: str) -> float | None:
        v = d.window("vllm", "", metric)
        return float(v[-1]) if v.size else None

    return {
        "available": True,
        "scrapes": int(up.size),
        "scrape_errors": len(errors),
        "kv_cache_usage_mean_ratio": mean(kv),
        "kv_cache_usage_peak_ratio": peak(kv),
        "kv_cache_usage_ratio": Distribution.of(kv).to_dict(),
        "num_requests_running_mean": mean(running),
        "num_requests_running_peak": peak(running),
        "num_requests_waiting_mean": mean(waiting),
        "num_requests_waiting_peak": peak(waiting),
        # counts: the counters' own increases between the scrapes around the window (ints)
        "preemptions": d.count("vllm", "", "num_preemptions_total"),
        "prompt_tokens": d.count("vllm", "", "prompt_tokens_total"),
        "generation_tokens": d.count("vllm", "", "generation_tokens_total"),
        "requests_finished": d.count("vllm", "", "request_success_total"),
        "prefix_cache_hits": hits,
        "prefix_cache_queries": queries,
        "prefix_cache_hit_ratio": hits / queries if hits is not None and queries else None,
        # server-side histogram means are cumulative since the server started
        "cumulative_means_s": {
            m: last(f"{m}_seconds_mean") for m in ("ttft", "itl", "e2e", "queue")
        },
    }


def gpu_scope_of(
    d: SampleSeries, recorded: dict[str, Any] | None, gpus: list[dict[str, Any]] | None = None
) -> GpuScope:
    """The server's GPUs for this run: the manifest's record, a pending method-3 record decided
    from the process samples, or every GPU sampled when nothing was recorded (an older run)."""
    uuid_of = {
        str(g["index"]): g.get("uuid") for g in gpus or [] if isinstance(g, dict) and "index" in g
    }
    sampled = d.devices("nvml") or sorted(uuid_of, key=lambda x: (len(x), x))
    scope = GpuScope.from_dict(recorded)
    if scope is None:
        return GpuScope(
            tuple(sampled),
            tuple(uuid_of.get(g) for g in sampled),
            "all",
            "no GPU scope recorded in manifest.json (a run from before infprof recorded one): "
            "every GPU is counted",
        )
    if not scope.pending:
        return scope
    server = [
        g
        for g in sampled
        if (d.all("nvml", g, "server_compute_processes") > 0).any()
        or (d.all("nvml", g, "process_memory_used_bytes") > 0).any()
    ]
    return decide_from_processes(scope, server, sampled, _process_memory_note(d, sampled), uuid_of)


def summarize_telemetry(
    samples: list[Sample],
    window_start: float | None,
    window_end: float | None,
    output_tokens: int,
    nvml_state: dict[str, Any],
    gpu_scope: dict[str, Any] | None = None,
    gpus: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``{"gpu": ..., "host": ..., "server": ..., "energy": ...}`` for summary.json.
    ``gpu_scope`` is manifest.json's record (None: every GPU, said so); ``gpus`` its GPU
    inventory (for the UUIDs)."""
    if window_start is None or window_end is None or window_end <= window_start:
        reason = "no measured window (no completed requests)"
        out = {k: unavailable(reason) for k in ("gpu", "host", "server", "energy")}
        if nvml_state.get("available", False):  # the scope is still known (for the manifest)
            d = SampleSeries(samples, 0.0, 0.0)
            recorded = _scope_dict(gpu_scope_of(d, gpu_scope, gpus), d.devices("nvml"))
            out["gpu"]["scope"] = out["energy"]["scope"] = recorded
        return out
    d = SampleSeries(samples, float(window_start), float(window_end))
    scope = gpu_scope_of(d, gpu_scope, gpus)
    devices = None if scope.method == "all" and not scope.gpus else list(scope.gpus or ())
    gpu, energy = gpu_sections(d, int(output_tokens or 0), nvml_state, devices)
    if nvml_state.get("available", False):
        gpu["scope"] = energy["scope"] = _scope_dict(scope, d.devices("nvml"))
    return {"gpu": gpu, "host": host_section(d), "server": _server_section(d), "energy": energy}


def _scope_dict(scope: GpuScope, sampled: list[str]) -> dict[str, Any]:
    mine = set(scope.gpus or ())
    return {**scope.as_dict(), "other_gpus": [g for g in sampled if g not in mine]}
