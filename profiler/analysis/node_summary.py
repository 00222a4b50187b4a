"""The ``nodes`` section of summary.json: every node's GPUs and host from the series
``infprof run --prometheus-url`` pulled back from Prometheus (``source == "prometheus"``), or
that a sampler actor on every node of a Ray cluster sent (``source == "ray"``, same shape:
``profiler.telemetry.ray_nodes``).

``profiler.metrics.prom_query`` stores an exporter's ``infprof_gpu_<field>`` series as metric
``gpu_<field>`` on device ``"<node>/<gpu>"`` and ``infprof_host_<field>`` as ``host_<field>`` on
``"<node>"`` or ``"<node>/<device>"``, where ``<field>`` is the name the local samplers write
(``profiler.telemetry.fields``; the exporter serves exactly those). So each node's points are
turned back into the local samplers' shape (source ``nvml``, device the GPU index, metric the
field name; source ``host``) and summarised by the same code as the local GPUs and host
(``telemetry_sections``): one computation serves both. Per-link NVLink series keep their
``"<gpu>/link=<n>"`` device and stay out of the GPU list, as local per-link samples do; any
other label prom_query appended (``/<label>=<value>``, e.g. a Kubernetes ``pod``) is dropped,
so a relabelled scrape still lands on its node's GPU.

Per node: ``gpu_count``, the GPU figures of the ``gpu`` section (utilization pooled over the
node's GPUs, power and bytes summed over them), ``energy_joules`` from each GPU's NVML energy
counter, byte and energy figures per output token of the whole run (the node's share of what
a token costs), ``gpus`` (per GPU, as ``gpu.per_gpu``), ``energy`` (as the ``energy`` section)
and ``host`` (as the ``host`` section). A node seen only through host series (the load
generator's machine, say) says ``available: false`` with the reason and keeps its ``host``.
At the top: totals over the nodes with GPU data. vLLM series (``vllm:*``) name an instance,
not a node, and are not summarised here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from profiler.analysis.sample_series import SampleSeries, max_of, per_token, sum_all
from profiler.analysis.telemetry_sections import gpu_sections, host_section, unavailable
from profiler.metrics.prom_query import SOURCE
from profiler.telemetry.ray_nodes import SOURCE as RAY_SOURCE
from profiler.telemetry.sample import Sample

GPU_PREFIX = "gpu_"
HOST_PREFIX = "host_"
TRAFFIC = ("nvlink_tx", "nvlink_rx", "pcie_tx", "pcie_rx")
_LINK = "link="
NO_URL = "no --prometheus-url given (only this machine was sampled)"
# node series come from Prometheus (--prometheus-url) or from a sampler actor on every node of
# a Ray cluster (``profiler.telemetry.ray_nodes``, --executor ray), in the same shape
NODE_SOURCES = (SOURCE, RAY_SOURCE)


def gpu_device(device: str) -> tuple[str, str] | None:
    """``(node, gpu)`` of a prometheus GPU series' device ``"<node>/<gpu>[/<label>=<v>...]"``,
    the GPU as the local sampler names it (``"0"``, or ``"0/<link>"`` for a per-link series);
    None when the device names no GPU."""
    node, _, rest = device.partition("/")
    gpu, *extra = rest.split("/")
    if not node or not gpu or "=" in gpu:
        return None
    links = [e.removeprefix(_LINK) for e in extra if e.startswith(_LINK)]
    return node, "/".join([gpu, *links])


def host_device(device: str) -> tuple[str, str] | None:
    """``(node, device)`` of a prometheus host series' ``"<node>[/<device>][/<label>=<v>...]"``
    (device ``""`` for the host totals, else the core, interface or process tree)."""
    node, *rest = device.split("/")
    if not node:
        return None
    named = [r for r in rest if "=" not in r]
    return node, named[0] if named else ""


def per_node_samples(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    """Each node's prometheus GPU and host points in the local samplers' shape (source
    ``nvml``/``host``, device as the local samplers name it, metric the field name)."""
    out: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        if s.source not in NODE_SOURCES:
            continue
        if s.metric.startswith(GPU_PREFIX):
            where = gpu_device(s.device)
            source, metric = "nvml", s.metric.removeprefix(GPU_PREFIX)
        elif s.metric.startswith(HOST_PREFIX):
            where = host_device(s.device)
            source, metric = "host", s.metric.removeprefix(HOST_PREFIX)
        else:
            continue
        if where is None:
            continue
        node, dev = where
        out[node].append(Sample(s.t_s, source, dev, metric, s.value, s.error))
    return dict(out)


def _node_section(d: SampleSeries, tokens: int) -> dict[str, Any]:
    host = host_section(d)
    gpu, energy = gpu_sections(d, tokens, {"available": True})
    if not gpu.get("available"):
        seen = any(source == "nvml" for source, _, _ in d.series) or any(
            source == "nvml" for source, _ in d.errors
        )
        reason = (
            "no GPU samples from this node in the measured window"
            if seen
            else "no infprof_gpu_* series from this node (no infprof exporter, or its GPUs are not scraped)"
        )
        return {**unavailable(reason), "gpu_count": 0, "gpus": {}, "host": host}
    node: dict[str, Any] = {"available": True, "gpu_count": gpu["count"]}
    node.update((k, v) for k, v in gpu.items() if k not in ("available", "count", "per_gpu"))
    ok = bool(energy.get("available"))
    node["energy_joules"] = energy["joules"] if ok else None
    node["energy_joules_per_output_token"] = energy["joules_per_output_token"] if ok else None
    node["energy"] = energy
    node["gpus"] = gpu["per_gpu"]
    node["host"] = host
    return node


def _totals(per_node: dict[str, dict[str, Any]], tokens: int) -> dict[str, Any]:
    """Figures over every node with GPU data: utilization pooled over all their GPUs' samples,
    power, energy and bytes summed (energy None when a node lacks its counter)."""
    rows = [r for r in per_node.values() if r["available"]]
    dists = [r["utilization_ratio"] for r in rows if r["utilization_ratio"].get("count")]
    n = sum(int(x["count"]) for x in dists)
    out: dict[str, Any] = {
        "node_count": len(rows),
        "gpu_count": sum(int(r["gpu_count"]) for r in rows),
        "utilization_mean_ratio": (
            sum(float(x["mean"]) * int(x["count"]) for x in dists) / n if n else None
        ),
        "utilization_peak_ratio": max_of(r["utilization_peak_ratio"] for r in rows),
        "memory_used_peak_bytes": max_of(r["memory_used_peak_bytes"] for r in rows),
        "power_mean_watts": sum_all(r["power_mean_watts"] for r in rows) if rows else None,
    }
    energy = sum_all(r["energy_joules"] for r in rows) if rows else None
    out["energy_joules"] = energy
    out["energy_joules_per_output_token"] = per_token(energy, tokens)
    for key in TRAFFIC:
        known = [r[f"{key}_bytes"] for r in rows if r[f"{key}_bytes"] is not None]
        total = float(sum(known)) if known else None
        out[f"{key}_bytes"] = total
        out[f"{key}_bytes_per_output_token"] = per_token(total, tokens)
    return out


def summarize_nodes(
    samples: Iterable[Sample],
    window_start: float | None,
    window_end: float | None,
    output_tokens: int,
    prometheus_url: str | None,
) -> dict[str, Any]:
    """``summary["nodes"]``: per node (hostname) over the measured window, from the series
    pulled with ``--prometheus-url``; ``{"available": false, "reason": ...}`` without them."""
    samples = list(samples)
    by_node = per_node_samples(samples)
    if not by_node:
        if not prometheus_url:
            return unavailable(NO_URL)
        return unavailable(
            "Prometheus (--prometheus-url) returned no infprof_gpu_* or infprof_host_* series "
            "for the run window (is infprof exporter running on every node, and scraped?)"
        )
    if window_start is None or window_end is None or window_end <= window_start:
        return unavailable("no measured window (no completed requests)")
    tokens = int(output_tokens or 0)
    per_node = {
        node: _node_section(SampleSeries(rows, float(window_start), float(window_end)), tokens)
        for node, rows in sorted(by_node.items())
    }
    sources = sorted({s.source for s in samples if s.source in NODE_SOURCES})
    return {
        "available": True,
        "source": sources[0] if len(sources) == 1 else "+".join(sources),
        **_totals(per_node, tokens),
        "per_node": per_node,
    }
