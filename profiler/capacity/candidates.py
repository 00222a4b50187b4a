"""Evaluate one candidate configuration (GPU x parallel layout) for a plan: size its replicas
for the target load, price it, check it against other fabrics, and prefer measured numbers
where a calibration sweep ran exactly this configuration."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from profiler.capacity.catalog import resolve_model
from profiler.capacity.context import PlanContext, deployment, gpus_per_node
from profiler.capacity.deployment import Deployment, Layout
from profiler.capacity.hardware import GpuSpec
from profiler.capacity.measured import MeasuredPoint
from profiler.capacity.models import ModelSpec
from profiler.capacity.result import (
    ConfigResult,
    InterconnectCheck,
    Rejected,
    StepBreakdown,
)
from profiler.capacity.sizing import (
    Capacity,
    OperatingPoint,
    as_float,
    capacity,
    latency_at_batch,
    operating_point,
    required_bandwidth,
)
from profiler.errors import SpecError

MEASURED_FIELDS = (
    "max_rps_per_replica",
    "replicas",
    "gpus_total",
    "nodes",
    "rps_per_replica",
    "demand_tokens_per_s_per_gpu",
    "capacity_tokens_per_s_per_gpu",
    "tokens_per_s_per_user",
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "cost_per_hour",
    "cost_per_million_output_tokens",
)
SHAPE_TOLERANCE = 0.25


def layouts(
    model: ModelSpec,
    gpus_per_node: int,
    max_gpus: int,
    redundant_experts: int = 0,
    only: list[Layout] | None = None,
) -> list[Layout]:
    """TP in {1,2,4,8} (inside a node, dividing the heads) x PP in {1,2,4,8,16}; for MoE also
    attention-DP x expert-parallel groups (ep = tp x dp, dividing the routed experts plus any
    EPLB replicas) up to ``max_gpus`` per replica. ``only``: exactly these layouts."""
    if only:
        return list(dict.fromkeys(only))
    tps = [t for t in (1, 2, 4, 8) if t <= gpus_per_node and model.n_q % t == 0]
    out = [
        Layout(tp=t, pp=p)
        for t in tps
        for p in (1, 2, 4, 8, 16)
        if p <= model.num_hidden_layers and t * p <= max_gpus
    ]
    if model.is_moe:
        experts = model.n_routed_experts + redundant_experts
        for t in tps:
            for d in (1, 2, 4, 8, 16, 32, 64, 128):
                ep = t * d
                if ep >= 2 and ep <= max_gpus and experts % ep == 0:
                    out.append(Layout(tp=t, pp=1, dp=d, ep=ep))
    return out


def plan_layouts(ctx: PlanContext, g: GpuSpec) -> list[Layout]:
    """The layouts a plan tries on ``g`` (``layouts`` under the plan's limits)."""
    return layouts(
        ctx.model,
        gpus_per_node(ctx, g),
        ctx.req.max_gpus_per_replica,
        ctx.redundant_experts,
        only=ctx.only_layouts or None,
    )


def unfit(ctx: PlanContext, dep: Deployment) -> str | None:
    """Why the deployment's layout cannot run at all (None: it can)."""
    lay, m = dep.layout, ctx.model
    if lay.tp > dep.domain:
        return "TP group larger than a scale-up domain"
    if lay.ep > 1 and (m.n_routed_experts + ctx.redundant_experts) % lay.ep:
        return (
            f"EP{lay.ep} does not divide {m.n_routed_experts} experts"
            + (f" + {ctx.redundant_experts} redundant" if ctx.redundant_experts else "")
            + " (give --redundant-experts)"
        )
    return None


def _nodes(gpus_per_replica: int, replicas: int, gpn: int) -> int:
    if gpus_per_replica >= gpn:
        return replicas * math.ceil(gpus_per_replica / gpn)
    return math.ceil(replicas / (gpn // gpus_per_replica))


def _fingerprint(m: ModelSpec) -> dict[str, Any]:
    skip = {
        "key",
        "hf_id",
        "aliases",
        "source",
        "published_params_b",
        "published_active_params_b",
        "weight_dtype",
    }
    return m.model_dump(exclude=skip)


def _measured_for(ctx: PlanContext, g: GpuSpec, lay: Layout) -> list[MeasuredPoint]:
    """Measured points of this exact configuration and (within 25%) request shape."""
    out = []
    fp = _fingerprint(ctx.model)
    s = ctx.shape
    for p in ctx.measured:
        if p.gpu != g.key or (p.tp, p.pp, p.dp, p.ep) != (lay.tp, lay.pp, lay.dp, lay.ep):
            continue
        close = all(
            abs(a / b - 1) <= SHAPE_TOLERANCE
            for a, b in ((p.input_len, s.input_len), (p.output_len, s.output_len))
        )
        if not close or abs(p.n - s.n) > 1e-6 or p.requests_per_s is None:
            continue
        try:
            if _fingerprint(resolve_model(p.model)) != fp:
                continue
        except SpecError:
            continue
        out.append(p)
    return out


def _meets_measured(p: MeasuredPoint, ctx: PlanContext) -> bool:
    slo = ctx.req.slo
    f = slo.target_fraction
    checks = [(slo.ttft_s, p.latency_at("ttft", f)), (slo.tpot_s, p.latency_at("tpot", f))]
    return all(lim is None or (v is not None and v <= lim) for lim, v in checks)


def _replicas_gpus(ctx: PlanContext, rps_max: float, lay: Layout) -> int | None:
    """GPUs of the replicas the target load needs at ``rps_max`` per replica (no target: None)."""
    if ctx.target_rps is None:
        return None
    return math.ceil(ctx.target_rps / rps_max - 1e-9) * lay.gpus


def _on_fabric(ctx: PlanContext, dep: Deployment, rps_rep: float, b_op: float) -> dict[str, Any]:
    """The InterconnectCheck figures of ``dep`` at the base configuration's load per replica;
    where it cannot carry that load, its latencies at the base configuration's batch (what
    this fabric does to the same work)."""
    shape = ctx.shape
    cap = capacity(dep, shape, ctx.req.slo, ctx.req.concurrency)
    meets = cap.feasible and rps_rep <= cap.rps_max * (1 + 1e-9)
    if meets:  # at the target load, same replica count
        op = operating_point(dep, shape, cap, rps_rep)
        lat = (op.tpot_s, op.ttft_s)
    else:
        lat = latency_at_batch(dep, shape, b_op)
    tpot, ttft = (v if math.isfinite(v) else None for v in lat)
    return {
        "tpot_s": tpot,
        "ttft_s": ttft,
        "meets_slo": meets,
        "max_rps_per_replica": cap.rps_max if cap.feasible else None,
        "gpus_total": _replicas_gpus(ctx, cap.rps_max, dep.layout) if cap.feasible else None,
    }


def _checks(
    ctx: PlanContext, dep: Deployment, rps_rep: float, cap: Capacity, op: OperatingPoint
) -> list[InterconnectCheck]:
    """The same layout and replica count on each fabric of the sensitivity list (modelled)."""
    out: list[InterconnectCheck] = []
    lay = dep.layout
    base = {
        "tpot_s": op.tpot_s,
        "ttft_s": op.ttft_s,
        "meets_slo": rps_rep <= cap.rps_max * (1 + 1e-9),
        "max_rps_per_replica": cap.rps_max,
        "gpus_total": _replicas_gpus(ctx, cap.rps_max, lay),
    }
    uses_up = lay.tp > 1 or lay.ep > 1 or (lay.pp > 1 and not dep.spans_nodes)
    for key in ctx.hw.sensitivity:
        net = ctx.hw.interconnect(key)
        used = uses_up if net.kind == "scale_up" else dep.spans_nodes
        changes = used and net.key != getattr(dep, net.kind).key  # else: reuse the base
        figures = _on_fabric(ctx, dep.with_(**{net.kind: net}), rps_rep, op.b) if changes else base
        out.append(
            InterconnectCheck(
                interconnect=key,
                label=net.label,
                kind=net.kind,
                gb_per_s=net.gb_per_s,
                used=used,
                **figures,
            )
        )
    return out


def _utilization(cap: Capacity) -> tuple[float, float]:
    """(HBM, compute) share of peak the capacity point's step uses."""
    assert cap.curve is not None
    i = int(np.searchsorted(cap.curve.b, cap.b_star))
    i = min(i, len(cap.curve.b) - 1)
    s = cap.curve.step
    return (
        float(np.asarray(s.hbm_utilization).reshape(-1)[i]),
        float(np.asarray(s.compute_utilization).reshape(-1)[i]),
    )


def evaluate(
    ctx: PlanContext, g: GpuSpec, lay: Layout, checks: bool = True
) -> ConfigResult | Rejected:
    dep = deployment(ctx, g, lay)
    shape, slo = ctx.shape, ctx.req.slo
    why = unfit(ctx, dep)
    if why is not None:
        return Rejected(gpu=g.key, parallelism=lay.label(), gpus_per_replica=lay.gpus, reason=why)
    cap = capacity(dep, shape, slo, ctx.req.concurrency)
    if not cap.feasible:
        return Rejected(
            gpu=g.key, parallelism=lay.label(), gpus_per_replica=lay.gpus, reason=cap.reason
        )
    rps_max = cap.rps_max
    meas = _measured_for(ctx, g, lay)
    meas_ok = [p for p in meas if _meets_measured(p, ctx)]
    measured = bool(meas_ok)
    if measured:
        rps_max = max(p.requests_per_s or 0.0 for p in meas_ok)
    target = ctx.target_rps
    replicas = max(math.ceil(target / rps_max - 1e-9), 1) if target else 1
    rps_rep = target / replicas if target else rps_max
    op = operating_point(dep, shape, cap, min(rps_rep, cap.rps_max))
    ttft, tpot, e2e, batch = op.ttft_s, op.tpot_s, op.e2e_s, op.b * lay.dp
    energy_meas: float | None = None
    bottleneck = cap.bottleneck
    if measured:
        above = sorted(
            (p for p in meas_ok if (p.requests_per_s or 0) >= rps_rep * (1 - 1e-9)),
            key=lambda p: p.requests_per_s or 0,
        )
        pm = above[0] if above else max(meas_ok, key=lambda p: p.requests_per_s or 0)
        ttft = pm.ttft_s if pm.ttft_s is not None else ttft
        tpot = pm.tpot_s if pm.tpot_s is not None else tpot
        e2e = ttft + (shape.output_len - 1) * tpot
        batch = pm.decoding_streams()
        energy_meas = pm.energy_j_per_token
        if pm.dispatch_lag_p90_s is not None and pm.dispatch_lag_p90_s > 0.05:
            bottleneck = "client"
    gpus_total = replicas * lay.gpus
    total_rps = replicas * rps_rep
    out_tps = total_rps * shape.n * shape.output_len
    price = ctx.prices[g.key]
    cost = gpus_total * price
    step = op.step
    breakdown = StepBreakdown(
        memory_s=as_float(step.mem_s),
        compute_s=as_float(step.compute_s),
        network_s=as_float(step.comm_s),
        overhead_s=step.overhead_s,
    )
    req_up = required_bandwidth(dep, shape, op, slo, "scale_up") if checks else None
    req_out = required_bandwidth(dep, shape, op, slo, "scale_out") if checks else None
    kv_gpu = dep.kv_free_bytes()
    util = _utilization(cap)
    sources = {
        k: "measured" if measured and k in MEASURED_FIELDS else "modelled"
        for k in ConfigResult.model_fields
    }
    sources["joules_per_output_token"] = "measured" if energy_meas is not None else "modelled"
    for k in (
        "best",
        "best_for_gpu",
        "source",
        "calibrated",
        "sources",
        "gpu",
        "gpu_name",
        "parallelism",
    ):
        sources.pop(k, None)
    return ConfigResult(
        gpu=g.key,
        gpu_name=g.name,
        parallelism=lay.label(),
        tp=lay.tp,
        pp=lay.pp,
        dp=lay.dp * replicas,
        ep=lay.ep,
        attention_dp=lay.dp,
        gpus_per_replica=lay.gpus,
        replicas=replicas,
        gpus_total=gpus_total,
        nodes=_nodes(lay.gpus, replicas, dep.gpus_per_node),
        gpus_per_node=dep.gpus_per_node,
        scale_up=dep.scale_up.key,
        scale_out=dep.scale_out.key,
        max_rps_per_replica=rps_max,
        rps_per_replica=rps_rep,
        batch_per_replica=batch,
        max_batch_per_replica=cap.b_star * lay.dp,
        demand_tokens_per_s_per_gpu=out_tps / gpus_total if target else None,
        capacity_tokens_per_s_per_gpu=rps_max * shape.n * shape.output_len / lay.gpus,
        tokens_per_s_per_user=1.0 / tpot,
        ttft_s=ttft,
        tpot_s=tpot,
        e2e_s=e2e,
        cost_per_hour=cost,
        cost_per_million_output_tokens=cost / (out_tps * 3600) * 1e6,
        joules_per_output_token=energy_meas
        if energy_meas is not None
        else gpus_total * g.tdp_w / out_tps,
        hbm_utilization=util[0],
        compute_utilization=util[1],
        weights_gb_per_gpu=dep.weight_bytes_per_gpu() / 1e9,
        kv_cache_gb_per_gpu=kv_gpu / 1e9,
        kv_capacity_tokens_per_replica=dep.kv_capacity_tokens() * lay.dp,
        step=breakdown,
        network_bytes_per_gpu_per_step={
            "scale_up": as_float(step.scale_up_bytes),
            "scale_out": as_float(step.scale_out_bytes),
        },
        required_scale_up_gb_per_s=None if req_up is None else req_up / 1e9,
        required_scale_out_gb_per_s=None if req_out is None else req_out / 1e9,
        interconnects=_checks(ctx, dep, rps_rep, cap, op) if checks else [],
        bottleneck=bottleneck,  # type: ignore[arg-type]
        limit=cap.limit,
        meets_slo=True,
        source="measured" if measured else "modelled",
        calibrated=any(c.gpu == g.key for c in ctx.calibrations),
        sources=sources,  # type: ignore[arg-type]
    )
