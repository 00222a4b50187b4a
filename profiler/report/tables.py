"""Every result table shown both on the console and in the report, built once as headers and
rows of formatted strings (``doc.Table``): the plan's candidates, interconnects, disaggregated
pools and test-time scaling, a sweep's configurations, points, knees and SLO searches, and the
comparison of two sides. ``cli/render.print_table`` draws them with rich; ``report/doc``
renders them to HTML and Markdown. Inputs are the JSON forms on disk (plan.json, index.json),
older layouts included."""

from __future__ import annotations

from typing import Any

from profiler.report.doc import Table
from profiler.report.fmt import ms, num, pct, value_range, with_unit
from profiler.sweep.spec import config_label, load_label

BOTTLENECK = {"memory_bandwidth": "memory BW", "kv_capacity": "KV capacity"}


def _yes(v: Any) -> str:
    return "yes" if v else "no"


# ------------------------------------------------------------------------------- a run
LATENCY_ROWS = (
    ("ttft_s", "TTFT"),
    ("tpot_s", "TPOT"),
    ("itl_s", "ITL"),
    ("e2e_s", "E2E"),
    ("ttft_from_intended_s", "TTFT from intended start"),
    ("e2e_from_intended_s", "E2E from intended start"),
)
_QUANTILES = ("mean", "p50", "p90", "p95", "p99", "max")


def run_latency(summary: dict[str, Any]) -> Table:
    """summary.json's latencies, then the client's dispatch lag and (an open loop under a
    concurrency cap) the wait for a slot."""
    latency = summary.get("latency") or {}
    named = [(latency.get(key, summary.get(key)), name) for key, name in LATENCY_ROWS]
    named.append((summary.get("dispatch_lag_s"), "dispatch lag"))
    wait = summary.get("queue_wait_s")
    if isinstance(wait, dict) and wait.get("count"):
        named.append((wait, "queue wait for a slot"))
    rows = [
        [name, str(d.get("count")), *(ms(d.get(q)) for q in _QUANTILES)]
        for d, name in named
        if isinstance(d, dict)
    ]
    return Table(["metric", "count", *_QUANTILES], rows, caption="latency (ms)")


# ------------------------------------------------------------------------------ the plan
def plan_source(c: dict[str, Any]) -> str:
    """measured, modelled, or modelled+cal (the model calibrated on measurements)."""
    if c.get("source") == "measured":
        return "measured"
    return "modelled+cal" if c.get("calibrated") else str(c.get("source") or "modelled")


def plan_configurations(plan: dict[str, Any], top: int) -> Table:
    configs = plan.get("configurations") or []
    rows = []
    for c in configs[:top]:
        par = f"tp{c.get('tp')} pp{c.get('pp')} dp{c.get('dp')} ep{c.get('ep')}"
        demand = c.get("demand_tokens_per_s_per_gpu", c.get("tokens_per_s_per_gpu"))
        cap = c.get("capacity_tokens_per_s_per_gpu", c.get("max_tokens_per_s_per_gpu"))
        rows.append(
            [("★ " if c.get("best") else "") + str(c.get("gpu")), str(c.get("parallelism", par)),
             num(c.get("gpus_per_replica"), "{:d}"), num(c.get("replicas"), "{:d}"), num(c.get("gpus_total"), "{:d}"),
             num(c.get("nodes"), "{:d}"), num(demand, "{:,.0f}"), num(cap, "{:,.0f}"),
             num(c.get("tokens_per_s_per_user"), "{:,.1f}"), ms(c.get("ttft_s")), ms(c.get("tpot_s")),
             num(c.get("cost_per_hour"), "{:,.0f}"), num(c.get("cost_per_million_output_tokens"), "{:,.2f}"),
             num(c.get("joules_per_output_token"), "{:.2f}"), BOTTLENECK.get(c.get("bottleneck") or "-", c.get("bottleneck") or "-"),
             _yes(c.get("meets_slo")), plan_source(c)]
        )  # fmt: skip
    headers = [
        "GPU", "parallelism", "GPUs/replica", "replicas", "GPUs", "nodes", "demand tok/s/GPU", "capacity tok/s/GPU",
        "tok/s/user", "TTFT ms", "TPOT ms", "$/h", "$/1M tok", "J/tok", "bottleneck", "meets SLO", "source",
    ]  # fmt: skip
    rejected = plan.get("rejected")
    why = (
        f"{len(configs)} feasible, {len(rejected)} rejected"
        if rejected is not None
        else f"{len(configs)} in all"
    )
    caption = f"Candidate configurations (cheapest first; {why}; ★ best)"
    return Table(headers, rows, caption=caption)


def plan_interconnects(best: dict[str, Any]) -> Table:
    rows = [
        [str(x.get("label") or x.get("interconnect")), str(x.get("kind")), num(x.get("gb_per_s"), "{:g}"),
         _yes(x.get("used")), ms(x.get("ttft_s")), ms(x.get("tpot_s")), _yes(x.get("meets_slo")),
         num(x.get("max_rps_per_replica"), "{:.2f}"), num(x.get("gpus_total"), "{:,.0f}"), str(x.get("source", "-"))]
        for x in best.get("interconnects") or []
    ]  # fmt: skip
    headers = [
        "fabric", "kind", "GB/s per GPU", "used", "TTFT ms", "TPOT ms", "meets SLO", "max req/s per replica",
        "GPUs needed", "source",
    ]  # fmt: skip
    caption = (
        f"Interconnect sensitivity of the best configuration ({best.get('gpu')} "
        f"{best.get('parallelism')}, {best.get('replicas')} replicas; GB/s per direction)"
    )
    return Table(headers, rows, caption=caption)


def plan_disaggregated(plan: dict[str, Any]) -> Table:
    per_replica = not (plan.get("load") or {}).get("target_rps")
    rows = []
    for d in plan.get("disaggregated") or []:
        p, dec, kv = d["prefill"], d["decode"], d["kv_transfer"]
        gpus = "gpus_per_replica" if per_replica else "gpus_total"
        rows.append(
            [str(d.get("gpu")), f"{p['parallelism']} x {p['replicas']}", f"{dec['parallelism']} x {dec['replicas']}",
             f"{p.get(gpus)}+{dec.get(gpus)}", num(d.get("decode_to_prefill_ratio"), "{:.2f}"),
             num(d.get("capacity_tokens_per_s_per_gpu"), "{:,.0f}"), num(d.get("aggregated_gpus_total"), "{:,.0f}"),
             num(d.get("aggregated_capacity_tokens_per_s_per_gpu"), "{:,.0f}"), ms(p.get("ttft_s")), ms(dec.get("tpot_s")),
             num(kv["bytes_per_request"] / 1e6, "{:,.1f}"), str(kv["interconnect"]),
             num(kv["gb_per_s_per_prefill_gpu"], "{:,.2f}")]
        )  # fmt: skip
    headers = [
        "GPU", "prefill", "decode", "GPUs (P+D)", "decode/prefill", "capacity tok/s/GPU", "aggregated GPUs",
        "aggregated tok/s/GPU", "prefill TTFT ms", "decode TPOT ms", "KV MB/request", "KV link", "GB/s per prefill GPU",
    ]  # fmt: skip
    return Table(headers, rows, caption="aggregated vs disaggregated prefill/decode (per GPU type)")


def plan_scaling(rows: list[dict[str, Any]], what: str) -> Table:
    """One test-time scaling curve (by output length, or by n) of the plan."""
    body = [
        [str(r.get("gpu")), num(r.get("output_len"), "{:,}"), str(r.get("n")), num(r.get("gpus_per_1k_users"), "{:,.2f}"),
         r.get("parallelism") or "-", ms(r.get("tpot_s")), BOTTLENECK.get(r.get("bottleneck") or "-", r.get("bottleneck") or "-"),
         "measured" if r.get("source") == "measured" else "modelled"]
        for r in rows
    ]  # fmt: skip
    headers = [
        "GPU",
        "output tokens",
        "n",
        "GPUs/1k users",
        "parallelism",
        "TPOT ms",
        "bottleneck",
        "source",
    ]
    return Table(headers, body, caption=f"GPUs per 1k users by {what}")


# ----------------------------------------------------------------------------- a sweep
def sweep_configurations(index: dict[str, Any]) -> Table:
    rows = [
        [c["id"], c.get("label") or config_label(c["config"]), str(c.get("status")), num(c.get("startup_s")),
         str(c.get("server_log") or "-"), str(c.get("reason") or "")]
        for c in index.get("configs") or []
    ]  # fmt: skip
    headers = ["config", "settings", "status", "server start (s)", "server log", "reason"]
    return Table(headers, rows, caption="server configurations")


def _point_order(p: dict[str, Any]) -> tuple[int, str, float]:
    return int(str(p["config_id"]).lstrip("c") or 0), p["workload"], float(p["load"]["value"])


def _where(p: dict[str, Any]) -> list[str]:
    """Node (with its Ray id's start, as several nodes may share a host), GPUs, seconds run;
    a point that lost attempts says how many."""
    node = p.get("node") or "-"
    if p.get("node_id"):
        node = f"{node}:{str(p['node_id'])[:8]}"
    if p.get("lost_attempts"):
        node += f" ({p['lost_attempts']} lost)"
    wall = (p.get("timing") or {}).get("wall_s")
    return [node, ",".join(p.get("gpus") or []) or "-", num(wall, "{:.1f}")]


def sweep_points(index: dict[str, Any]) -> Table:
    """One row per point in configuration, workload and load order; a sweep run on a Ray
    cluster adds where each point ran."""
    points = index.get("points") or []
    remote = any(p.get("node_id") for p in points)
    rows = []
    for p in sorted(points, key=_point_order):
        k = p.get("summary") or {}
        reason = str(p.get("reason") or "") if p.get("status") != "done" else ""
        rows.append(
            [p["id"], p["workload"], load_label(p["load"]), p.get("status", "-"), num(k.get("requests_per_s")),
             num(k.get("output_tokens_per_s"), "{:.1f}"), ms(k.get("ttft_p50_s")), ms(k.get("ttft_p99_s")),
             ms(k.get("tpot_p50_s")), ms(k.get("tpot_p99_s")), ms(k.get("e2e_p50_s")), pct(k.get("error_rate")),
             pct(k.get("slo_attainment")), *(_where(p) if remote else []), reason]
        )  # fmt: skip
    headers = [
        "point", "workload", "load", "status", "req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99",
        "E2E p50", "errors", "SLO met", *(["node", "GPUs", "wall s"] if remote else []), "reason",
    ]  # fmt: skip
    caption = (
        "latencies in ms; SLO met: share of requests meeting every SLO (from the intended start "
        "for an open loop); run directories under runs/<point>"
    )
    return Table(headers, rows, caption=caption)


def sweep_knees(knees: list[dict[str, Any]]) -> Table:
    rows = [
        [k["config_id"], k["workload"], load_label(k["load"]) if k.get("load") else "-", num(k.get("x"), "{:.1f}"),
         ms(k.get("y")), k.get("reason") or ""]
        for k in knees
    ]  # fmt: skip
    headers = ["config", "workload", "knee at", "output tok/s", "E2E p50 ms", "note"]
    return Table(headers, rows, caption="knee of the throughput-latency curve (Kneedle)")


def sweep_searches(searches: list[dict[str, Any]], caption: str | None = None) -> Table:
    rows = [
        [s["config_id"] + " " + str(s.get("label", "")), s["workload"], num(s.get("best_rate")),
         num(s.get("failed_rate")), num(s.get("slo_met_rps_at_best")), num(s.get("output_tokens_per_s_at_best"), "{:.1f}"),
         str(len(s.get("probes") or [])), str(s.get("stopped"))]
        for s in searches
    ]  # fmt: skip
    headers = [
        "config", "workload", "goodput (highest rate meeting the SLOs)", "lowest failing", "SLO-met req/s there",
        "output tok/s there", "probes", "stopped",
    ]  # fmt: skip
    return Table(headers, rows, caption=caption or "SLO search per configuration")


def versions(items: dict[str, Any], caption: str) -> Table:
    """The manifest's component versions."""
    rows = [[k, str(v) if v is not None else "-"] for k, v in items.items()]
    return Table(["component", "version"], rows, caption=caption)


# ----------------------------------------------------------------------------- compare
def comparison(result: Any) -> Table:
    """Per-metric B against A (a ``CompareResult``); with several runs a side, each side's
    range across runs."""
    spread = len(result.runs_a) > 1 or len(result.runs_b) > 1
    headers = ["metric", "A", "B", "B - A", f"{result.confidence:.0%} CI of B - A", "verdict"]
    if spread:
        headers[3:3] = ["A runs", "B runs"]
    rows = []
    for d in result.metrics:
        ci = (
            "-"
            if d.ci_low is None
            else f"[{with_unit(d.ci_low, d.unit)}, {with_unit(d.ci_high, d.unit)}]"
        )
        delta = with_unit(d.delta, d.unit)
        if d.relative is not None:
            delta += f" ({d.relative:+.1%})"
        name = f"{d.name} (gate {d.threshold:g})" if d.gated and d.threshold is not None else d.name
        row = [name, with_unit(d.a, d.unit), with_unit(d.b, d.unit), delta, ci, d.verdict]
        if spread:
            row[3:3] = [value_range(d.a_per_run, d.unit), value_range(d.b_per_run, d.unit)]
        rows.append(row)
    return Table(headers, rows)
