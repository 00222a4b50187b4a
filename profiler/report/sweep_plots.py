"""Figures of a sweep: each configuration (and workload) is one line over its load levels."""

from __future__ import annotations

from typing import Any

from profiler.report.data import SweepData, point_latencies
from profiler.report.doc import Figure
from profiler.report.plotting import (
    cdf,
    color,
    empty,
    hline,
    legend,
    log_x_if_wide,
    new_figure,
    title,
    to_png,
    vline,
)
from profiler.sweep.spec import config_label

GIB = 2**30
MAX_CDF_CURVES = 16


def groups(sweep: SweepData) -> list[tuple[str, list[dict[str, Any]]]]:
    """[(label, points sorted by load)] per configuration and workload, finished points only."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in sweep.done_points():
        by.setdefault((p["config_id"], p["workload"]), []).append(p)
    workloads = {w for _, w in by}
    out = []
    for (cfg, workload), pts in sorted(
        by.items(), key=lambda kv: (int(kv[0][0].lstrip("c") or 0), kv[0][1])
    ):
        pts.sort(key=lambda p: float(p["load"]["value"]))
        label = f"{cfg} {config_label(pts[0]['config'])}" + (
            f" / {workload}" if len(workloads) > 1 else ""
        )
        out.append((label, pts))
    return out


def _v(p: dict[str, Any], key: str, scale: float = 1.0) -> float | None:
    v = p["summary"].get(key)
    return None if v is None else float(v) * scale


def _load_kind(sweep: SweepData) -> str:
    kinds = {p["load"]["kind"] for p in sweep.done_points()}
    return (
        "offered rate (req/s)"
        if kinds == {"rate"}
        else "concurrency"
        if kinds == {"concurrency"}
        else "load"
    )


def _xy(
    pts: list[dict[str, Any]], xkey: str | None, ykey: str, yscale: float = 1.0
) -> tuple[list[float], list[float], list[int]]:
    xs, ys, idx = [], [], []
    for i, p in enumerate(pts):
        x = float(p["load"]["value"]) if xkey is None else _v(p, xkey)
        y = _v(p, ykey, yscale)
        if x is not None and y is not None:
            xs.append(x)
            ys.append(y)
            idx.append(i)
    return xs, ys, idx


def latency_throughput(sweep: SweepData, slo: dict[str, Any], knee_points: set[str]) -> Figure:
    gs = groups(sweep)
    fig, axes = new_figure(3, 2, row_height=2.9)
    panels = (
        ("ttft_p50_s", "TTFT p50", "ttft_s"), ("ttft_p99_s", "TTFT p99", "ttft_s"),
        ("tpot_p50_s", "TPOT p50", "tpot_s"), ("tpot_p99_s", "TPOT p99", "tpot_s"),
        ("e2e_p50_s", "E2E p50", "e2e_s"), ("e2e_p99_s", "E2E p99", "e2e_s"),
    )  # fmt: skip
    for ax, (key, name, slo_key) in zip(axes.flat, panels, strict=True):
        for i, (label, pts) in enumerate(gs):
            xs, ys, idx = _xy(pts, "output_tokens_per_s", key, 1000)
            ax.plot(xs, ys, marker="o", markersize=3.5, color=color(i), linewidth=1.2, label=label)
            for x, y, j in zip(xs, ys, idx, strict=True):
                ax.annotate(f"{pts[j]['load']['value']:g}", (x, y), fontsize=6.5, color="#57606a",
                            xytext=(3, 3), textcoords="offset points")  # fmt: skip
                if pts[j]["id"] in knee_points:
                    ax.plot(
                        [x],
                        [y],
                        marker="*",
                        markersize=12,
                        color=color(i),
                        markeredgecolor="black",
                        linestyle="none",
                    )
        limit = slo.get(slo_key)
        hline(ax, limit * 1000 if limit else None, f"SLO {limit * 1000:.0f} ms" if limit else "")
        title(ax, f"{name} (ms) vs output tokens/s")
        top = max(
            (y for _, pts in gs for y in _xy(pts, "output_tokens_per_s", key, 1000)[1]), default=1.0
        )
        ax.set_ylim(0, max(top * 1.12, (limit or 0) * 1000 * 1.12, 1e-3))
    legend(axes[0, 0], loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("achieved output tokens/s", fontsize=8)
    return Figure(
        "sweep-latency-throughput",
        to_png(fig),
        "Latency vs throughput per configuration",
        "Each line is one configuration over its load levels (labels: the load). Dashed red: SLOs. "
        "Star: the knee of the throughput-latency curve.",
    )


def slo_attainment_vs_load(
    sweep: SweepData, target_fraction: float | None, has_slo: bool
) -> Figure:
    gs = groups(sweep)
    fig, axes = new_figure(1, 3, row_height=3.1)
    panels = (
        (axes[0, 0], "requests_per_s", 1.0, "achieved requests/s"),
        (axes[0, 1], "slo_attainment", 100.0, "requests meeting every SLO (%)"),
        (axes[0, 2], "slo_met_rps", 1.0, "requests/s meeting every SLO"),
    )
    loads = [float(p["load"]["value"]) for _, pts in gs for p in pts]
    for ax, key, scale, name in panels:
        title(ax, name)
        if key.startswith("slo") and not has_slo:
            empty(ax, "no SLO set (pass --slo to the sweep)")
            continue
        for i, (label, pts) in enumerate(gs):
            xs, ys, _ = _xy(pts, None, key, scale)
            ax.plot(xs, ys, marker="o", markersize=3.5, color=color(i), linewidth=1.2, label=label)
        if key == "slo_attainment" and target_fraction is not None:
            hline(ax, target_fraction * 100, f"target {target_fraction:.0%}")
            ax.set_ylim(0, 105)
        log_x_if_wide(ax, loads)
        ax.set_xlabel(_load_kind(sweep), fontsize=8)
    legend(axes[0, 0], loc="upper left")
    return Figure("sweep-slo-attainment", to_png(fig), "Throughput and SLO attainment vs load")


def search_probes(sweep: SweepData) -> Figure | None:
    searches = sweep.index.get("searches") or []
    if not searches:
        return None
    fig, axes = new_figure(1, 1, row_height=3.2)
    ax = axes[0, 0]
    for i, s in enumerate(searches):
        probes = sorted(s.get("probes") or [], key=lambda p: p["rate"])
        label = f"{s['config_id']} {s.get('label', '')} / {s['workload']}"
        xs = [p["rate"] for p in probes]
        ys = [(p["fraction"] or 0.0) * 100 for p in probes]
        ax.plot(xs, ys, color=color(i), linewidth=0.8, alpha=0.6)
        ax.scatter([x for x, p in zip(xs, probes, strict=True) if p["passed"]],
                   [y for y, p in zip(ys, probes, strict=True) if p["passed"]], marker="o", color=color(i), label=label)  # fmt: skip
        ax.scatter([x for x, p in zip(xs, probes, strict=True) if not p["passed"]],
                   [y for y, p in zip(ys, probes, strict=True) if not p["passed"]], marker="x", color=color(i))  # fmt: skip
        vline(ax, s.get("best_rate"), "", c=color(i), style=":")
    hline(ax, (searches[0].get("target_fraction") or 0) * 100, "target")
    log_x_if_wide(ax, [p["rate"] for s in searches for p in s.get("probes") or []])
    ax.set_ylim(0, 105)
    ax.set_xlabel("offered rate (req/s)", fontsize=8)
    title(
        ax,
        "SLO search probes: share of requests meeting the SLOs (o pass, x fail; dotted: the goodput, the highest passing rate)",
    )
    legend(ax, loc="lower left")
    return Figure("sweep-slo-search", to_png(fig), "SLO search probes per configuration")


def distributions(sweep: SweepData) -> Figure | None:
    pts = [p for _, g in groups(sweep) for p in g]
    if not pts:
        return None
    if len(pts) > MAX_CDF_CURVES:  # keep the lowest, middle and highest loads of each group
        keep: list[dict[str, Any]] = []
        for _, g in groups(sweep):
            keep += [g[0], g[len(g) // 2], g[-1]] if len(g) > 3 else g
        pts = list({p["id"]: p for p in keep}.values())[:MAX_CDF_CURVES]
    fig, axes = new_figure(2, 2, row_height=3.0)
    keys = (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL per token"), ("e2e_s", "E2E"))
    drawn = 0
    for i, p in enumerate(pts):
        lat = point_latencies(sweep.path, p)
        if lat is None:
            continue
        drawn += 1
        label = f"{p['config_id']} {p['load']['value']:g}"
        for ax, (key, _) in zip(axes.flat, keys, strict=True):
            cdf(ax, lat[key], scale=1000, label=label, c=color(i))
    if not drawn:
        return None
    for ax, (_, name) in zip(axes.flat, keys, strict=True):
        title(ax, f"{name} CDF (ms)")
        ax.set_xlabel("ms", fontsize=8)
    legend(axes[0, 0], loc="lower right", ncols=2)
    return Figure(
        "sweep-distributions",
        to_png(fig),
        "TTFT, TPOT, ITL and E2E distributions per point",
        "Legend: configuration id and load level.",
    )


def _per_load(
    sweep: SweepData, name: str, panels: list[tuple[str, float, str]], alt: str
) -> Figure | None:
    gs = groups(sweep)
    present = [
        (k, s, n) for k, s, n in panels if any(_v(p, k) is not None for _, pts in gs for p in pts)
    ]
    if not present:
        return None
    fig, axes = new_figure(1, len(present), row_height=3.0)
    loads = [float(p["load"]["value"]) for _, pts in gs for p in pts]
    for ax, (key, scale, label) in zip(axes[0], present, strict=True):
        for i, (glabel, pts) in enumerate(gs):
            xs, ys, _ = _xy(pts, None, key, scale)
            ax.plot(xs, ys, marker="o", markersize=3.5, color=color(i), linewidth=1.2, label=glabel)
        title(ax, label)
        log_x_if_wide(ax, loads)
        ax.set_xlabel(_load_kind(sweep), fontsize=8)
        top = max((y for _, pts in gs for y in _xy(pts, None, key, scale)[1]), default=1.0)
        ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    legend(axes[0, 0], loc="best")
    return Figure(name, to_png(fig), alt)


def gpu_vs_load(sweep: SweepData) -> Figure | None:
    return _per_load(
        sweep,
        "sweep-gpu",
        [
            ("gpu_utilization_mean_ratio", 100.0, "GPU utilization, mean (%)"),
            ("gpu_memory_used_peak_bytes", 1 / GIB, "GPU memory used, peak (GiB)"),
            ("gpu_power_mean_watts", 1.0, "GPU power, mean, all GPUs (W)"),
        ],
        "GPU utilization, memory and power vs load",
    )


def energy_vs_load(sweep: SweepData) -> Figure | None:
    return _per_load(
        sweep,
        "sweep-energy",
        [("joules_per_output_token", 1.0, "joules per output token (all GPUs)")],
        "Energy per output token vs load",
    )


def interconnect_vs_load(sweep: SweepData) -> Figure | None:
    return _per_load(
        sweep,
        "sweep-interconnect",
        [
            ("nvlink_tx_bytes_per_output_token", 1 / 1e6, "NVLink tx per output token (MB)"),
            ("pcie_tx_bytes_per_output_token", 1 / 1e6, "PCIe tx per output token (MB)"),
        ],
        "NVLink and PCIe traffic per output token vs load",
    )


def knee_ids(sweep: SweepData) -> set[str]:
    return {k["point"] for k in sweep.index.get("knees") or [] if k.get("point")}
