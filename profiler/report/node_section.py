"""The report's per-node section: summary.json ``nodes`` (the series pulled with
``--prometheus-url``) as a table per node and per node x GPU, and the per-node timeline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from profiler.report import run_plots
from profiler.report.data import RunData
from profiler.report.doc import Note, Section, Table
from profiler.report.fmt import gb, gib, num, pct
from profiler.store.schema import Nodes

NODE_HEADERS = [
    "node", "GPUs", "util mean", "util peak", "memory peak", "power mean", "energy",
    "energy per output token", "NVLink tx / rx", "PCIe tx / rx", "host CPU mean",
]  # fmt: skip
GPU_HEADERS = [
    "node", "GPU", "util mean", "memory peak", "memory total", "power mean", "energy",
    "NVLink tx / rx", "PCIe tx / rx", "errors",
]  # fmt: skip


def _bytes(r: dict[str, Any], kind: str) -> str:
    return f"{gb(r.get(f'{kind}_tx_bytes'))} / {gb(r.get(f'{kind}_rx_bytes'))}"


# One cell per column of the per-GPU and per-node tables (summary.json ``gpu.per_gpu``,
# ``nodes.per_node`` and their ``gpus``: one dict of figures per GPU or node)
CELLS: dict[str, Callable[[dict[str, Any]], str]] = {
    "GPUs": lambda r: str(r.get("gpu_count")),
    "util mean": lambda r: pct(r.get("utilization_mean_ratio")),
    "util peak": lambda r: pct(r.get("utilization_peak_ratio")),
    "memory peak": lambda r: gib(r.get("memory_used_peak_bytes")),
    "memory total": lambda r: gib(r.get("memory_total_bytes")),
    "power mean": lambda r: f"{num(r.get('power_mean_watts'), '{:,.0f}')} W",
    "energy": lambda r: f"{num(r.get('energy_joules'), '{:,.0f}')} J",
    "energy per output token": lambda r: f"{num(r.get('energy_joules_per_output_token'))} J",
    "NVLink tx / rx": lambda r: _bytes(r, "nvlink"),
    "PCIe tx / rx": lambda r: _bytes(r, "pcie"),
    "server memory peak": lambda r: gib(r.get("process_memory_used_peak_bytes")),
    "errors": lambda r: str(r.get("errors", 0)),
}


def cells(r: dict[str, Any], headers: list[str]) -> list[str]:
    """``r``'s figures under ``headers`` (keys of ``CELLS``)."""
    return [CELLS[h](r) for h in headers]


def _node_row(name: str, r: dict[str, Any]) -> list[str]:
    host = r.get("host") or {}
    cpu = pct(host.get("cpu_utilization_mean_ratio")) if host.get("available") else "-"
    if not r.get("available"):
        return [name, "0", *["-"] * 8, cpu]
    return [name, *cells(r, NODE_HEADERS[1:-1]), cpu]


def node_section(run: RunData, prefix: str = "") -> Section | None:
    """None for a run without ``--prometheus-url`` (nothing beyond this machine to show)."""
    nodes = run.summary.nodes or Nodes()
    if not nodes.available and not run.manifest.recorded_spec().prometheus_url:
        return None
    sec = Section(f"{prefix}nodes", "Nodes (from Prometheus)")
    if not nodes.available:
        reason = nodes.reason or "not in this run's summary"
        sec.add(Note(f"Per-node telemetry is not available: {reason}."))
        return sec
    per = nodes.per_node or {}
    rows = [_node_row(n, r) for n, r in per.items()]
    if (nodes.node_count or 0) > 1:
        rows.append(_node_row("all nodes", {**nodes.to_dict(), "host": None}))
    sec.add(
        Table(
            NODE_HEADERS,
            rows,
            caption="per node over the measured window (power, energy and bytes: sums over the "
            "node's GPUs; per output token: of the whole run's output tokens)",
        )
    )
    missing = [f"{n}: {r.get('reason')}" for n, r in per.items() if not r.get("available")]
    if missing:
        sec.add(Note("No GPU data from " + "; ".join(missing) + "."))
    gpu_rows = [
        [n, g, *cells(x, GPU_HEADERS[2:])]
        for n, r in per.items()
        for g, x in (r.get("gpus") or {}).items()
    ]
    if gpu_rows:
        sec.add(Table(GPU_HEADERS, gpu_rows, caption="per node and GPU over the measured window"))
    fig = run_plots.node_timeline(run, prefix)
    if fig:
        sec.add(fig)
    return sec
