"""Figures of one run: latency distributions, load and GPU timelines on the run clock,
interconnect traffic, energy. Each returns a doc ``Figure`` or ``None`` when its data is
missing (the caller says why instead of drawing an empty plot)."""

from __future__ import annotations

from typing import Any

import numpy as np

from profiler.report.data import RunData
from profiler.report.doc import Figure
from profiler.report.plotting import cdf, color, empty, legend, new_figure, title, to_png, vline
from profiler.store.schema import slo_attainment_of

GIB = 2**30


def _slo(run: RunData) -> dict[str, Any]:
    slo = slo_attainment_of(run.summary).get("slo") or run.spec.get("slo") or {}
    return slo if isinstance(slo, dict) else {}


def latency_distributions(run: RunData, prefix: str) -> Figure:
    ok = run.ok()
    slo = _slo(run)
    fig, axes = new_figure(2, 2, row_height=3.0)
    specs = (
        (axes[0, 0], "ttft_s", "TTFT", slo.get("ttft_s")),
        (axes[0, 1], "tpot_s", "TPOT", slo.get("tpot_s")),
        (axes[1, 1], "e2e_s", "E2E latency", slo.get("e2e_s")),
    )
    for ax, key, name, limit in specs:
        v = run.req.get(key, np.empty(0))[ok] if key in run.req else np.empty(0)
        v = v[~np.isnan(v)] * 1000
        title(ax, f"{name} (ms), {v.size} successful requests")
        if v.size == 0:
            empty(ax, f"no {name} values")
            continue
        ax.hist(v, bins=min(60, max(10, int(np.sqrt(v.size)))), color=color(0), alpha=0.8)
        dist = run.summary.lat(key)
        for q, c in (("p50", "#2ca02c"), ("p99", "#ff7f0e")):
            if (at := getattr(dist, q)) is not None:
                vline(ax, at * 1000, f"{q} {at * 1000:.1f}", c=c, style="-")
        vline(ax, limit * 1000 if limit else None, f"SLO {limit * 1000:.0f}" if limit else "")
        ax.set_ylabel("requests", fontsize=8)
        legend(ax)
    ax = axes[1, 0]
    title(ax, f"ITL per token (ms), CDF of {run.itl.size} gaps")
    if run.itl.size:
        cdf(ax, run.itl, scale=1000, c=color(0))
        positive = run.itl[run.itl > 0]
        if positive.size and positive.max() / max(positive.min(), 1e-9) > 50:
            ax.set_xscale("log")
    else:
        empty(ax, "no inter-token gaps (single-chunk responses)")
    return Figure(
        f"{prefix}latency",
        to_png(fig),
        "Latency distributions: TTFT, TPOT, ITL, E2E",
        "Successful requests only. Dashed red lines: SLOs; green/orange: p50/p99.",
    )


def _inflight(run: RunData, t0: float) -> tuple[np.ndarray, np.ndarray]:
    send, end = run.req["send_s"], run.req["end_s"]
    m = ~np.isnan(send)
    ends = np.where(np.isnan(end[m]), np.nanmax(end) if np.any(~np.isnan(end)) else send[m], end[m])
    t = np.concatenate([send[m], ends]) - t0
    d = np.concatenate([np.ones(m.sum()), -np.ones(m.sum())])
    order = np.lexsort((d, t))  # at equal times, departures first
    return t[order], np.cumsum(d[order])


def load_span(run: RunData) -> tuple[float, float]:
    send, end = run.req["send_s"], run.req["end_s"]
    start = float(np.nanmin(send)) if np.any(~np.isnan(send)) else 0.0
    stop = float(np.nanmax(end)) if np.any(~np.isnan(end)) else start + 1.0
    return start, max(stop, start + 1e-3)


def timeline(run: RunData, prefix: str, gpu: bool) -> Figure:
    """Requests in flight and output tokens/s over the run, with GPU utilization, memory and
    power below on the same clock (seconds since the first request was sent)."""
    t0, t1 = load_span(run)
    rows = 2 + (3 if gpu else 0)
    fig, axes = new_figure(rows, 1, row_height=1.9, sharex=True)
    ax = axes[0, 0]
    t, n = _inflight(run, t0)
    ax.step(t, n, where="post", color=color(0), linewidth=1, label="in flight (client)")
    for i, metric in enumerate(("num_requests_running", "num_requests_waiting")):
        for _dev, (ts, vs) in run.samples.series("vllm", metric).items():
            ax.plot(
                ts - t0,
                vs,
                color=color(i + 1),
                linewidth=1,
                drawstyle="steps-post",
                label=metric.replace("num_requests_", "server "),
            )
    title(ax, "requests in flight")
    legend(ax, loc="upper right")
    ax = axes[1, 0]
    width = max((t1 - t0) / 100, 0.1)
    bins = np.arange(0, (t1 - t0) + width, width)
    if run.chunk_t_s.size and bins.size > 1:  # tokens as they streamed in
        hist, edges = np.histogram(run.chunk_t_s - t0, bins=bins, weights=run.chunk_tokens)
        what = "tokens streamed"
    else:  # no chunk times: tokens of requests as they completed
        ok = run.ok()
        end = run.req["end_s"][ok] - t0
        hist, edges = np.histogram(
            end, bins=bins, weights=np.nan_to_num(run.req["output_tokens"][ok])
        )
        what = "completions"
    ax.step(edges[:-1], hist / width, where="post", color=color(2), linewidth=1)
    title(ax, f"output tokens/s ({what}, {width:.2g} s bins)")
    if gpu:
        for ax, metric, scale, name in (
            (axes[2, 0], "utilization_ratio", 100.0, "GPU utilization (%)"),
            (axes[3, 0], "memory_used_bytes", 1 / GIB, "GPU memory used (GiB)"),
            (axes[4, 0], "power_watts", 1.0, "GPU power (W)"),
        ):
            series = run.samples.series("nvml", metric)
            for i, (dev, (ts, vs)) in enumerate(series.items()):
                mine = run.server_gpu(dev)  # the others: dotted, and labelled as such
                ax.plot(ts - t0, vs * scale, color=color(i), linewidth=1 if mine else 0.8,
                        linestyle="-" if mine else ":", alpha=1.0 if mine else 0.6,
                        label=f"GPU {dev}" if mine else f"GPU {dev} (not the server's)")  # fmt: skip
            title(ax, name)
            if not series:
                empty(ax, f"no {metric} samples")
            elif len(series) <= 8:
                legend(ax, loc="upper right", ncols=min(len(series), 4))
    _time_axis(axes, run, t0, t1)
    return Figure(
        f"{prefix}timeline",
        to_png(fig),
        "Load and GPU timeline",
        "All series on the run clock. Shaded: the measured window when warm-up/cool-down is set. "
        "Dotted GPU lines: GPUs that are not the server's (left out of every GPU figure).",
    )


def interconnect(run: RunData, prefix: str) -> Figure | None:
    t0, _ = load_span(run)
    panels = []
    for kind in ("nvlink", "pcie"):
        series = {
            d: {
                dev: v
                for dev, v in run.samples.series("nvml", f"{kind}_{d}_bytes_per_second").items()
                if run.server_gpu(dev)
            }
            for d in ("tx", "rx")
        }
        if any(series.values()):
            panels.append((kind, series))
    if not panels:
        return None
    fig, axes = new_figure(len(panels), 1, row_height=2.3, sharex=True)
    for ax, (kind, series) in zip(axes[:, 0], panels, strict=True):
        for j, (direction, by_dev) in enumerate(series.items()):
            for i, (dev, (ts, vs)) in enumerate(by_dev.items()):
                ax.plot(ts - t0, vs / 1e9, color=color(i), linewidth=1, linestyle="-" if j == 0 else ":",
                        label=f"GPU {dev} {direction}")  # fmt: skip
        title(ax, f"{'NVLink' if kind == 'nvlink' else 'PCIe'} traffic (GB/s; solid tx, dotted rx)")
        if sum(len(v) for v in series.values()) <= 8:
            legend(ax, loc="upper right", ncols=4)
    axes[-1, 0].set_xlabel("seconds since the first request was sent", fontsize=8)
    return Figure(
        f"{prefix}interconnect", to_png(fig), f"NVLink and PCIe traffic per GPU ({_gpus_text(run)})"
    )


def _gpus_text(run: RunData) -> str:
    gpus = run.gpu_scope().get("gpus")
    return "all GPUs" if gpus is None else f"the server's GPUs: {', '.join(gpus) or 'none'}"


def energy(run: RunData, prefix: str) -> Figure | None:
    """Joules per output token over time: energy counter increase / tokens completed per bin."""
    series = {
        dev: v
        for dev, v in run.samples.series("nvml", "energy_joules_total").items()
        if run.server_gpu(dev)
    }
    if not series:
        return None
    t0, t1 = load_span(run)
    width = max((t1 - t0) / 30, 1.0)
    edges = np.arange(t0, t1 + width, width)
    if edges.size < 2:
        return None
    joules = np.zeros(edges.size - 1)
    for ts, vs in series.values():
        at = np.interp(edges, ts, vs, left=np.nan, right=np.nan)
        joules += np.nan_to_num(np.diff(at))
    ok = run.ok()
    toks, _ = np.histogram(
        run.req["end_s"][ok], bins=edges, weights=np.nan_to_num(run.req["output_tokens"][ok])
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        jpt = np.where(toks > 0, joules / toks, np.nan)
    fig, axes = new_figure(1, 2, row_height=2.8)
    ax = axes[0, 0]
    ax.step(edges[:-1] - t0, jpt, where="post", color=color(3))
    title(ax, f"joules per output token ({width:.2g} s bins, {_gpus_text(run)})")
    ax.set_xlabel("seconds since the first request was sent", fontsize=8)
    ax = axes[0, 1]
    power = run.samples.series("nvml", "power_watts").items()
    for i, (dev, (ts, vs)) in enumerate((d, v) for d, v in power if run.server_gpu(d)):
        ax.plot(ts - t0, vs, color=color(i), linewidth=1, label=f"GPU {dev}")
    title(ax, "power (W)")
    ax.set_xlim(0, t1 - t0)
    legend(ax, loc="upper right", ncols=2)
    return Figure(f"{prefix}energy", to_png(fig), "Energy per output token and power over the run")


def server_kv(run: RunData, prefix: str) -> Figure | None:
    series = run.samples.series("vllm", "kv_cache_usage_ratio")
    if not series:
        return None
    t0, t1 = load_span(run)
    fig, axes = new_figure(1, 1, row_height=2.2)
    ax = axes[0, 0]
    for i, (_dev, (ts, vs)) in enumerate(series.items()):
        ax.plot(ts - t0, vs * 100, color=color(i), linewidth=1)
    ax.set_xlim(0, t1 - t0)
    ax.set_ylim(0, 105)
    title(ax, "vLLM KV-cache usage (%)")
    ax.set_xlabel("seconds since the first request was sent", fontsize=8)
    return Figure(f"{prefix}kv", to_png(fig), "vLLM KV-cache usage over the run")


NODE_PANELS = (  # (metrics, how the node's GPUs combine, scale, title); dotted = second metric
    (("gpu_utilization_ratio",), "mean", 100.0, "GPU utilization (%, mean of the node's GPUs)"),
    (("gpu_memory_used_bytes",), "sum", 1 / GIB, "GPU memory used (GiB, node total)"),
    (("gpu_power_watts",), "sum", 1.0, "GPU power (W, node total)"),
    (
        ("gpu_nvlink_tx_bytes_per_second", "gpu_nvlink_rx_bytes_per_second"),
        "sum",
        1e-9,
        "NVLink traffic (GB/s, node total; solid tx, dotted rx)",
    ),
    (
        ("gpu_pcie_tx_bytes_per_second", "gpu_pcie_rx_bytes_per_second"),
        "sum",
        1e-9,
        "PCIe traffic (GB/s, node total; solid tx, dotted rx)",
    ),
)
MAX_NODE_LEGEND = 12


def node_series(run: RunData, metric: str, how: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{node: (t_s, value)} of a per-GPU series pulled from Prometheus (``gpu_<field>``),
    the node's GPUs combined by ``how`` (``mean`` or ``sum``) at every time any of them has
    a point; NaN where a GPU's series does not reach."""
    from profiler.analysis.node_summary import SOURCE, gpu_device

    grouped: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for dev, (ts, vs) in run.samples.series(SOURCE, metric).items():
        where = gpu_device(dev)
        if where is None or "/" in where[1]:  # per-link series are in the GPU's total
            continue
        grouped.setdefault(where[0], []).append((ts, vs))
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for node in sorted(grouped):
        t = np.unique(np.concatenate([ts for ts, _ in grouped[node]]))
        at = np.vstack(
            [np.interp(t, ts, vs, left=np.nan, right=np.nan) for ts, vs in grouped[node]]
        )
        out[node] = (t, at.mean(axis=0) if how == "mean" else at.sum(axis=0))
    return out


def node_timeline(run: RunData, prefix: str) -> Figure | None:
    """Per-node GPU utilization, memory, power and NVLink/PCIe rates from the series pulled
    with ``--prometheus-url``, one line per node (hostname), on the load timeline's clock."""
    panels = []
    for metrics, how, scale, name in NODE_PANELS:
        series = [node_series(run, m, how) for m in metrics]
        if any(series):
            panels.append((series, scale, name))
    if not panels:
        return None
    nodes = sorted({n for series, _, _ in panels for s in series for n in s})
    colors = {n: color(i) for i, n in enumerate(nodes)}
    t0, t1 = load_span(run)
    fig, axes = new_figure(len(panels), 1, row_height=1.9, sharex=True)
    for ax, (series, scale, name) in zip(axes[:, 0], panels, strict=True):
        labelled: set[str] = set()  # each node once, on its first line (tx may be missing)
        for j, by_node in enumerate(series):
            for node, (ts, vs) in by_node.items():
                ax.plot(ts - t0, vs * scale, color=colors[node], linewidth=1,
                        linestyle="-" if j == 0 else ":", label=None if node in labelled else node)  # fmt: skip
                labelled.add(node)
        title(ax, name)
        if len(nodes) <= MAX_NODE_LEGEND:
            legend(ax, loc="upper right", ncols=min(len(nodes), 4))
    _time_axis(axes, run, t0, t1)
    shown = ", ".join(nodes[:MAX_NODE_LEGEND])
    more = f" and {len(nodes) - MAX_NODE_LEGEND} more" if len(nodes) > MAX_NODE_LEGEND else ""
    return Figure(
        f"{prefix}node-timeline",
        to_png(fig),
        f"Per-node GPU timeline (Prometheus): {shown}{more}",
        "One line per node (hostname), from the series pulled with --prometheus-url, on the run "
        "clock. Shaded: the measured window when warm-up/cool-down is set.",
    )


def _time_axis(axes: Any, run: RunData, t0: float, t1: float) -> None:
    """The shared time axis of a timeline: the measured window shaded when warm-up or
    cool-down cut it, seconds since the first request was sent."""
    win = run.summary.window
    for ax in axes[:, 0]:
        if (
            win
            and (win.warmup_s or win.cooldown_s)
            and win.start is not None
            and win.end is not None
        ):
            ax.axvspan(win.start - t0, win.end - t0, color="#2ca02c", alpha=0.06)
    margin = 0.02 * (t1 - t0)
    axes[-1, 0].set_xlim(-margin, t1 - t0 + margin)
    axes[-1, 0].set_xlabel("seconds since the first request was sent", fontsize=8)
