"""The ``gpu``, ``host``, ``server`` and ``energy`` sections of summary.json, from samples.

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
from collections.abc import Iterable
from typing import Any

import numpy as np

from profiler.analysis.stats import Distribution
from profiler.telemetry.gpu_scope import GpuScope, decide_from_processes
from profiler.telemetry.sample import Sample

Series = tuple[np.ndarray, np.ndarray]  # (t_s, value), sorted by t_s
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


class _Data:
    """Samples grouped by (source, device, metric); errors counted separately."""

    def __init__(self, samples: Iterable[Sample], start: float, end: float) -> None:
        self.start, self.end = start, end
        raw: dict[tuple[str, str, str], tuple[list[float], list[float]]] = defaultdict(
            lambda: ([], [])
        )
        self.errors: dict[tuple[str, str], list[str]] = defaultdict(list)
        for s in samples:
            if s.error is not None:
                if start <= s.t_s <= end:
                    self.errors[(s.source, s.device)].append(s.error)
                continue
            if s.value is None or s.value != s.value:  # None or NaN
                continue
            ts, vs = raw[(s.source, s.device, s.metric)]
            ts.append(s.t_s)
            vs.append(s.value)
        self.series: dict[tuple[str, str, str], Series] = {}
        for key, (ts, vs) in raw.items():
            t, v = np.asarray(ts, dtype=np.float64), np.asarray(vs, dtype=np.float64)
            order = np.argsort(t, kind="stable")
            self.series[key] = (t[order], v[order])

    def devices(self, source: str) -> list[str]:
        devs = {d for (s, d, _) in self.series if s == source} | {
            d for (s, d) in self.errors if s == source
        }
        return sorted((d for d in devs if "/" not in d), key=lambda d: (len(d), d))

    def window(self, source: str, device: str, metric: str) -> np.ndarray:
        t, v = self.series.get((source, device, metric), (np.empty(0), np.empty(0)))
        return v[(t >= self.start) & (t <= self.end)]

    def all(self, source: str, device: str, metric: str) -> np.ndarray:
        return self.series.get((source, device, metric), (np.empty(0), np.empty(0)))[1]

    def increase(self, source: str, device: str, metric: str) -> float | None:
        """Increase of a counter over the window (resets ignored); None without coverage."""
        t, v = self.series.get((source, device, metric), (np.empty(0), np.empty(0)))
        if t.size < 2 or t[-1] < self.start or t[0] > self.end:
            return None
        cum = np.concatenate(([0.0], np.cumsum(np.clip(np.diff(v), 0.0, None))))
        a, b = max(self.start, t[0]), min(self.end, t[-1])
        if b <= a:
            return None
        return float(np.interp(b, t, cum) - np.interp(a, t, cum))

    def count(self, source: str, device: str, metric: str) -> int | None:
        """A counter's own increase between the last scrape at or before the window start and
        the first scrape at or after the window end (the nearest scrapes inside when the series
        starts or stops within the window), as a whole number. After a drop (a restart) the new
        value counts as increase, as Prometheus' ``increase`` does. None without two scrapes."""
        t, v = self.series.get((source, device, metric), (np.empty(0), np.empty(0)))
        if t.size < 2 or t[-1] < self.start or t[0] > self.end:
            return None
        first = max(int(np.searchsorted(t, self.start, side="right")) - 1, 0)
        last = min(int(np.searchsorted(t, self.end, side="left")), t.size - 1)
        if last <= first:
            return None
        seg = v[first : last + 1]
        step = np.diff(seg)
        return int(round(float(np.where(step >= 0, step, seg[1:]).sum())))

    def coverage(self, source: str, device: str, metric: str) -> float:
        """Fraction of the window the series spans."""
        t = self.series.get((source, device, metric), (np.empty(0), np.empty(0)))[0]
        span = self.end - self.start
        if t.size == 0 or span <= 0:
            return 0.0
        return float(max(0.0, min(self.end, t[-1]) - max(self.start, t[0])) / span)


def _mean(v: np.ndarray) -> float | None:
    return float(v.mean()) if v.size else None


def _max(v: np.ndarray) -> float | None:
    return float(v.max()) if v.size else None


def _max_of(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _sum(values: Iterable[float | None]) -> float | None:
    vals = list(values)
    if not vals or any(x is None for x in vals):
        return None
    return float(sum(x for x in vals if x is not None))


def _per_token(x: float | None, tokens: int) -> float | None:
    return x / tokens if x is not None and tokens > 0 else None


def _unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason}


def _gpu_bytes(d: _Data, dev: str, kind: str, direction: str) -> tuple[float | None, str | None]:
    """Bytes moved over the window on NVLink or PCIe, and how they were obtained."""
    got = d.increase("nvml", dev, f"{kind}_{direction}_bytes_total")
    if got is not None:
        return got, "counter"
    rate = _mean(d.window("nvml", dev, f"{kind}_{direction}_bytes_per_second"))
    if rate is not None and kind == "pcie":  # NVML's spot rate (20 ms) times the window
        return rate * (d.end - d.start), "mean_rate_x_window"
    return None, None


def _gpu_section(
    d: _Data, tokens: int, nvml_state: dict[str, Any], devices: list[str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``gpu`` and ``energy`` sections over ``devices`` (None: every GPU sampled)."""
    if not nvml_state.get("available", False):
        reason = str(nvml_state.get("reason") or "NVML unavailable")
        return _unavailable(reason), _unavailable(reason)
    if devices is not None and not devices:
        reason = "the server uses no GPU"
        return _unavailable(reason), _unavailable(reason)
    devs = d.devices("nvml") if devices is None else list(devices)
    if not devs or not any(
        d.window("nvml", g, "up").size or d.errors.get(("nvml", g)) for g in devs
    ):
        reason = "no NVML samples in the measured window"
        return _unavailable(reason), _unavailable(reason)
    per: dict[str, dict[str, Any]] = {}
    util_all: list[np.ndarray] = []
    power_means: list[float | None] = []
    traffic: dict[str, list[float | None]] = defaultdict(list)
    methods: set[str] = set()
    for g in devs:
        util = d.window("nvml", g, "utilization_ratio")
        util_all.append(util)
        power = _mean(d.window("nvml", g, "power_watts"))
        power_means.append(power)
        row: dict[str, Any] = {
            "utilization_mean_ratio": _mean(util),
            "utilization_peak_ratio": _max(util),
            "memory_used_peak_bytes": _max(d.window("nvml", g, "memory_used_bytes")),
            "memory_used_peak_bytes_run": _max(d.all("nvml", g, "memory_used_bytes")),
            "memory_total_bytes": _max(d.all("nvml", g, "memory_total_bytes")),
            # the server's own memory (its process tree), whole run: None when not known
            "process_memory_used_peak_bytes": _max(d.all("nvml", g, "process_memory_used_bytes")),
            "power_mean_watts": power,
            "temperature_peak_celsius": _max(d.window("nvml", g, "temperature_celsius")),
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
            row[f"gpm_{name}_mean_ratio"] = _mean(d.window("nvml", g, f"gpm_{name}_ratio"))
        throttle = {k: d.increase("nvml", g, f"throttle_{k}_seconds_total") for k in THROTTLE}
        row["throttle_seconds"] = {k: v for k, v in throttle.items() if v is not None}
        if row["errors"]:
            row["last_error"] = d.errors[("nvml", g)][-1]
        per[g] = row
    util_cat = np.concatenate(util_all) if util_all else np.empty(0)
    gpu: dict[str, Any] = {
        "available": True,
        "count": len(devs),
        "utilization_mean_ratio": _mean(util_cat),
        "utilization_peak_ratio": _max(util_cat),
        "utilization_ratio": Distribution.of(util_cat).to_dict(),
        "memory_used_peak_bytes": _max_of(r["memory_used_peak_bytes"] for r in per.values()),
        "memory_used_peak_bytes_run": _max_of(
            r["memory_used_peak_bytes_run"] for r in per.values()
        ),
        "process_memory_used_peak_bytes": _max_of(
            r["process_memory_used_peak_bytes"] for r in per.values()
        ),
        "process_memory_note": _process_memory_note(d, devs),
        "power_mean_watts": _sum(power_means),
        "gpus_with_errors": [g for g, r in per.items() if r["errors"]],
        "traffic_methods": sorted(methods),
    }
    for key, per_dev in traffic.items():  # GPUs without the link (or counter) are left out
        known = [m for m in per_dev if m is not None]
        total = float(sum(known)) if known else None
        gpu[f"{key}_bytes"] = total
        gpu[f"{key}_bytes_per_output_token"] = _per_token(total, tokens)
    for name in GPM:
        gpu[f"gpm_{name}_mean_ratio"] = _mean(
            np.concatenate([d.window("nvml", g, f"gpm_{name}_ratio") for g in devs])
        )
    gpu["per_gpu"] = per
    return gpu, _energy_section(d, devs, per, tokens)


def _process_memory_note(d: _Data, devs: list[str]) -> str | None:
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
    d: _Data, devs: list[str], per: dict[str, dict[str, Any]], tokens: int
) -> dict[str, Any]:
    missing = [g for g in devs if per[g]["energy_joules"] is None]
    per_gpu = {g: per[g]["energy_joules"] for g in devs if per[g]["energy_joules"] is not None}
    if missing:
        out = _unavailable(
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
        "joules_per_output_token": _per_token(joules, tokens),
        "mean_power_from_energy_watts": joules / seconds if seconds > 0 else None,
        "per_gpu_joules": per_gpu,
        "coverage_ratio": min(d.coverage("nvml", g, "energy_joules_total") for g in devs),
        "gpu_seconds": seconds * len(devs),
    }


def _process(d: _Data, name: str) -> dict[str, Any] | None:
    cpu = d.window("host", name, "process_cpu_ratio")
    rss = d.window("host", name, "process_rss_bytes")
    if not cpu.size and not rss.size:
        return None
    return {
        "cpu_cores": Distribution.of(cpu).to_dict(),
        "cpu_mean_cores": _mean(cpu),
        "cpu_peak_cores": _max(cpu),
        "rss_peak_bytes": _max(rss),
    }


def _host_section(d: _Data) -> dict[str, Any]:
    cpu = d.window("host", "", "cpu_utilization_ratio")
    mem = d.window("host", "", "memory_used_bytes")
    if not cpu.size and not mem.size:
        return _unavailable("no host samples in the measured window")
    network = {}
    for nic in d.devices("host"):
        tx = d.increase("host", nic, "network_tx_bytes_total")
        rx = d.increase("host", nic, "network_rx_bytes_total")
        if tx is not None or rx is not None:
            network[nic] = {"tx_bytes": tx, "rx_bytes": rx}
    return {
        "available": True,
        "cpu_utilization_mean_ratio": _mean(cpu),
        "cpu_utilization_peak_ratio": _max(cpu),
        "cpu_utilization_ratio": Distribution.of(cpu).to_dict(),
        "memory_used_mean_bytes": _mean(mem),
        "memory_used_peak_bytes": _max(mem),
        "memory_total_bytes": _max(d.all("host", "", "memory_total_bytes")),
        "processes": {"client": _process(d, "client"), "server": _process(d, "server")},
        "network": network,
    }


def _server_section(d: _Data) -> dict[str, Any]:
    up = d.window("vllm", "", "up")
    errors = d.errors.get(("vllm", ""), [])
    if not up.size:
        if errors:
            return _unavailable(f"every /metrics scrape in the window failed: {errors[-1]}")
        return _unavailable("no /metrics samples in the measured window (not scraped)")
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
        "kv_cache_usage_mean_ratio": _mean(kv),
        "kv_cache_usage_peak_ratio": _max(kv),
        "kv_cache_usage_ratio": Distribution.of(kv).to_dict(),
        "num_requests_running_mean": _mean(running),
        "num_requests_running_peak": _max(running),
        "num_requests_waiting_mean": _mean(waiting),
        "num_requests_waiting_peak": _max(waiting),
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
    d: _Data, recorded: dict[str, Any] | None, gpus: list[dict[str, Any]] | None = None
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
        out = {k: _unavailable(reason) for k in ("gpu", "host", "server", "energy")}
        if nvml_state.get("available", False):  # the scope is still known (for the manifest)
            d = _Data(samples, 0.0, 0.0)
            recorded = _scope_dict(gpu_scope_of(d, gpu_scope, gpus), d.devices("nvml"))
            out["gpu"]["scope"] = out["energy"]["scope"] = recorded
        return out
    d = _Data(samples, float(window_start), float(window_end))
    scope = gpu_scope_of(d, gpu_scope, gpus)
    devices = None if scope.method == "all" and not scope.gpus else list(scope.gpus or ())
    gpu, energy = _gpu_section(d, int(output_tokens or 0), nvml_state, devices)
    if nvml_state.get("available", False):
        gpu["scope"] = energy["scope"] = _scope_dict(scope, d.devices("nvml"))
    return {"gpu": gpu, "host": _host_section(d), "server": _server_section(d), "energy": energy}


def _scope_dict(scope: GpuScope, sampled: list[str]) -> dict[str, Any]:
    mine = set(scope.gpus or ())
    return {**scope.as_dict(), "other_gpus": [g for g in sampled if g not in mine]}
