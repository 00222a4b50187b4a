"""Fleet sizing: enumerate parallel layouts per GPU, size replicas for the target load under the
SLOs, price them, test them against other fabrics, and pick the cheapest that meets the SLOs.

    replicas   = ceil(lambda_target / lambda_max(replica))
    gpus_total = replicas x tp x pp x dp_attention
    $/h        = gpus_total x price;   $/M tok = $/h / (output tok/s x 3600) x 1e6
    J/tok      = gpus_total x TDP / output tok/s   (upper bound; measured energy when present)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from profiler.capacity import calibrate as cal
from profiler.capacity.hardware import GpuSpec, HardwareCatalog, Interconnect, load_hardware
from profiler.capacity.measured import MeasuredPoint, load_sweep
from profiler.capacity.models import ModelSpec, resolve_model
from profiler.capacity.perf import GIB, Deployment, Efficiency, Layout
from profiler.capacity.result import (
    DEFAULT_RATE_PER_USER_PER_S,
    ConfigResult,
    InterconnectCheck,
    PlanRequest,
    PlanResult,
    Rejected,
    ScalingRow,
    StepBreakdown,
    TestTimeScaling,
)
from profiler.capacity.sizing import (
    WorkloadShape,
    as_float,
    capacity,
    operating_point,
    required_bandwidth,
)
from profiler.capacity.workload import resolve_shape
from profiler.errors import SpecError

__all__ = ["PlanRequest", "PlanResult", "plan", "test_time_scaling", "layouts"]

MEASURED_FIELDS = (
    "max_rps_per_replica",
    "replicas",
    "gpus_total",
    "nodes",
    "rps_per_replica",
    "tokens_per_s_per_gpu",
    "max_tokens_per_s_per_gpu",
    "tokens_per_s_per_user",
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "cost_per_hour",
    "cost_per_million_output_tokens",
)
SHAPE_TOLERANCE = 0.25


@dataclass
class _Ctx:
    req: PlanRequest
    hw: HardwareCatalog
    model: ModelSpec
    shape: WorkloadShape
    label: str
    gpus: list[GpuSpec]
    target_rps: float | None
    prices: dict[str, float]
    effs: dict[str, Efficiency]
    calibrations: list[cal.Calibration]
    measured: list[MeasuredPoint]
    up_override: Interconnect | None
    out_override: Interconnect | None
    weight_dtype: str
    kv_dtype: str
    notes: list[str] = field(default_factory=list)


def layouts(model: ModelSpec, gpus_per_node: int, max_gpus: int) -> list[Layout]:
    """TP in {1,2,4,8} (inside a node, dividing the heads) x PP in {1,2,4,8,16}; for MoE also
    attention-DP x expert-parallel groups (ep = tp x dp) up to ``max_gpus`` per replica."""
    tps = [t for t in (1, 2, 4, 8) if t <= gpus_per_node and model.n_q % t == 0]
    out = [
        Layout(tp=t, pp=p)
        for t in tps
        for p in (1, 2, 4, 8, 16)
        if p <= model.num_hidden_layers and t * p <= max_gpus
    ]
    if model.is_moe:
        for t in tps:
            for d in (1, 2, 4, 8, 16, 32, 64, 128):
                ep = t * d
                if ep >= 2 and ep <= max_gpus and model.n_routed_experts % ep == 0:
                    out.append(Layout(tp=t, pp=1, dp=d, ep=ep))
    return out


def _defaults_for(gpu: GpuSpec) -> tuple[int, int]:
    """vLLM's defaults (engine/arg_utils.py): max_num_seqs 1024 and batched tokens 8192 on
    >= 70 GiB non-A100 GPUs (16384 at >= 160 GiB), else 256 and 2048."""
    mem = gpu.memory_bytes
    if mem >= 160 * GIB:
        return 1024, 16384
    if mem >= 70 * GIB and not gpu.key.startswith("a100"):
        return 1024, 8192
    return 256, 2048


def _context(req: PlanRequest) -> _Ctx:
    hw = load_hardware()
    model = resolve_model(req.model)
    shape, label = resolve_shape(
        req.workload, req.input_len, req.output_len, req.n, req.cached_prefix_len
    )
    names = [x.strip() for g in req.gpus for x in g.split(",") if x.strip()]
    gpus: list[GpuSpec] = []
    for name in names:
        g = hw.gpu(name)
        if g not in gpus:
            gpus.append(g)
    if not gpus:
        raise SpecError("no GPU given", "pass --gpu h100 (or several)")
    target = req.target_rps
    if req.users is not None:
        assert req.rate_per_user_per_s is not None
        target = req.users * req.rate_per_user_per_s * req.peak_factor
    up = out = None
    for name in req.interconnect:
        for part in name.split(","):
            if part.strip():
                net = hw.interconnect(part)
                if net.kind == "scale_up":
                    up = net
                else:
                    out = net
    prices = {g.key: req.prices.get(g.key, g.price_per_hour) for g in gpus}
    measured = list(req.measured_points)
    if req.calibration is not None:
        gkey = hw.gpu(req.calibration_gpu).key if req.calibration_gpu else None
        measured += load_sweep(req.calibration, gpu=gkey)
        if not measured:
            raise SpecError(
                f"{req.calibration}: no finished runs to calibrate on", "finish the sweep first"
            )
    base = req.efficiency or Efficiency()
    effs = {g.key: base for g in gpus}
    calibrations: list[cal.Calibration] = []
    by_gpu: dict[str, list[MeasuredPoint]] = {}
    for p in measured:
        by_gpu.setdefault(
            req.calibration_gpu and hw.gpu(req.calibration_gpu).key or p.gpu or "?", []
        ).append(p)
    ctx_notes: list[str] = []
    for gkey, pts in by_gpu.items():
        if gkey == "?":
            ctx_notes.append(
                f"{len(pts)} measured point(s) without a GPU were not used (pass --calibration-gpu)"
            )
            continue
        try:
            c = cal.fit(pts, base, gpu=gkey)
        except SpecError as e:
            ctx_notes.append(f"calibration on {gkey} skipped: {e.message}")
            continue
        calibrations.append(c)
        if gkey in effs:
            effs[gkey] = c.fitted
    weight_dtype = req.weight_dtype or model.weight_dtype
    kv_dtype = req.kv_dtype or ("fp32" if weight_dtype == "fp32" else "bf16")
    return _Ctx(
        req=req,
        hw=hw,
        model=model,
        shape=shape,
        label=label,
        gpus=gpus,
        target_rps=target,
        prices=prices,
        effs=effs,
        calibrations=calibrations,
        measured=measured,
        up_override=up,
        out_override=out,
        weight_dtype=weight_dtype,
        kv_dtype=kv_dtype,
        notes=ctx_notes,
    )


def _deployment(ctx: _Ctx, g: GpuSpec, lay: Layout) -> Deployment:
    seqs, tokens = _defaults_for(g)
    gpn = min(g.gpus_per_node, ctx.req.max_gpus_per_node or g.gpus_per_node)
    return Deployment(
        model=ctx.model,
        gpu=g,
        layout=lay,
        scale_up=ctx.up_override or ctx.hw.interconnect(g.default_scale_up()),
        scale_out=ctx.out_override or ctx.hw.interconnect(g.default_scale_out()),
        gpus_per_node=gpn,
        eff=ctx.effs[g.key],
        weight_dtype=ctx.weight_dtype,
        kv_dtype=ctx.kv_dtype,
        gpu_memory_utilization=ctx.req.gpu_memory_utilization,
        max_num_seqs=ctx.req.max_num_seqs or seqs,
        max_num_batched_tokens=ctx.req.max_num_batched_tokens or tokens,
    )


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


def _measured_for(ctx: _Ctx, g: GpuSpec, lay: Layout) -> list[MeasuredPoint]:
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


def _meets_measured(p: MeasuredPoint, ctx: _Ctx) -> bool:
    slo = ctx.req.slo
    f = slo.target_fraction
    checks = [(slo.ttft_s, p.latency_at("ttft", f)), (slo.tpot_s, p.latency_at("tpot", f))]
    return all(lim is None or (v is not None and v <= lim) for lim, v in checks)


def _checks(ctx: _Ctx, dep: Deployment, rps_rep: float, b_op: float) -> list[InterconnectCheck]:
    out: list[InterconnectCheck] = []
    slo, shape = ctx.req.slo, ctx.shape
    lay = dep.layout
    uses_up = lay.tp > 1 or lay.ep > 1 or (lay.pp > 1 and not dep.spans_nodes)
    for key in ctx.hw.sensitivity:
        net = ctx.hw.interconnect(key)
        used = uses_up if net.kind == "scale_up" else dep.spans_nodes
        d2 = dep.with_(**{net.kind: net})
        cap2 = capacity(d2, shape, slo)
        tpot = ttft = None
        meets = False
        if cap2.feasible:
            meets = rps_rep <= cap2.rps_max * (1 + 1e-9)
            op2 = operating_point(d2, shape, cap2, min(rps_rep, cap2.rps_max))
            tpot, ttft = op2.tpot_s, op2.ttft_s
        gpus = None
        if cap2.feasible and ctx.target_rps is not None:
            gpus = math.ceil(ctx.target_rps / cap2.rps_max - 1e-9) * lay.gpus
        out.append(
            InterconnectCheck(
                interconnect=key,
                label=net.label,
                kind=net.kind,
                gb_per_s=net.gb_per_s,
                used=used,
                tpot_s=tpot,
                ttft_s=ttft,
                meets_slo=meets,
                max_rps_per_replica=cap2.rps_max if cap2.feasible else None,
                gpus_total=gpus,
            )
        )
    return out


def _candidate(ctx: _Ctx, g: GpuSpec, lay: Layout, checks: bool = True) -> ConfigResult | Rejected:
    dep = _deployment(ctx, g, lay)
    shape, slo = ctx.shape, ctx.req.slo
    if lay.tp > dep.gpus_per_node:
        return Rejected(
            gpu=g.key,
            parallelism=lay.label(),
            gpus_per_replica=lay.gpus,
            reason="TP group larger than a node",
        )
    cap = capacity(dep, shape, slo)
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
    req_up = required_bandwidth(dep, op, slo, "scale_up")
    req_out = required_bandwidth(dep, op, slo, "scale_out")
    kv_gpu = max(
        dep.gpu.memory_bytes * dep.gpu_memory_utilization
        - dep.weight_bytes_per_gpu()
        - dep.reserve_bytes(),
        0.0,
    )
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
        tokens_per_s_per_gpu=out_tps / gpus_total,
        max_tokens_per_s_per_gpu=rps_max * shape.n * shape.output_len / lay.gpus,
        tokens_per_s_per_user=1.0 / tpot,
        ttft_s=ttft,
        tpot_s=tpot,
        e2e_s=e2e,
        cost_per_hour=cost,
        cost_per_million_output_tokens=cost / (out_tps * 3600) * 1e6,
        joules_per_output_token=energy_meas
        if energy_meas is not None
        else gpus_total * g.tdp_w / out_tps,
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
        interconnects=_checks(ctx, dep, rps_rep, op.b) if checks else [],
        bottleneck=bottleneck,  # type: ignore[arg-type]
        limit=cap.limit,
        meets_slo=True,
        source="measured" if measured else "modelled",
        calibrated=any(c.gpu == g.key for c in ctx.calibrations),
        sources=sources,  # type: ignore[arg-type]
    )


def _rank_key(ctx: _Ctx) -> Any:
    if ctx.target_rps is None:
        return lambda c: (c.cost_per_million_output_tokens, c.gpus_total, c.tpot_s)
    return lambda c: (c.cost_per_hour, c.gpus_total, c.tpot_s)


def plan(req: PlanRequest) -> PlanResult:
    """Size a fleet for ``req``; the cheapest configuration meeting the SLOs is marked best."""
    ctx = _context(req)
    configs: list[ConfigResult] = []
    rejected: list[Rejected] = []
    for g in ctx.gpus:
        gpn = min(g.gpus_per_node, req.max_gpus_per_node or g.gpus_per_node)
        for lay in layouts(ctx.model, gpn, req.max_gpus_per_replica):
            r = _candidate(ctx, g, lay)
            (configs if isinstance(r, ConfigResult) else rejected).append(r)  # type: ignore[arg-type]
    key = _rank_key(ctx)
    configs.sort(key=key)
    best = None
    if configs:
        configs[0].best = True
        best = configs[0]
        seen: set[str] = set()
        for c in configs:
            if c.gpu not in seen:
                c.best_for_gpu = True
                seen.add(c.gpu)
    scaling = test_time_scaling(req, ctx=ctx) if req.scaling else None
    return PlanResult(
        model=ctx.model.summary(),
        workload={
            "name": ctx.label,
            "input_len": ctx.shape.input_len,
            "output_len": ctx.shape.output_len,
            "n": ctx.shape.n,
            "cached_prefix_len": ctx.shape.cached_prefix_len,
            "weight_dtype": ctx.weight_dtype,
            "kv_dtype": ctx.kv_dtype,
        },
        load={
            "target_rps": ctx.target_rps,
            "users": req.users,
            "rate_per_user_per_s": req.rate_per_user_per_s,
            "peak_factor": req.peak_factor if req.users is not None else None,
            "output_tokens_per_s": None
            if ctx.target_rps is None
            else ctx.target_rps * ctx.shape.n * ctx.shape.output_len,
        },
        slo=req.slo,
        gpus=[g.key for g in ctx.gpus],
        prices=ctx.prices,
        interconnect_overrides=[
            n.key for n in (ctx.up_override, ctx.out_override) if n is not None
        ],
        efficiency=ctx.effs,
        calibration=ctx.calibrations,
        configurations=configs,
        best=best.model_copy() if best else None,
        rejected=rejected,
        test_time_scaling=scaling,
        notes=ctx.notes + _notes(ctx, configs),
    )


def _notes(ctx: _Ctx, configs: list[ConfigResult]) -> list[str]:
    notes = [
        "SLOs are checked against modelled means (measured points use the percentile matching the SLO's target fraction).",
        "Communication is not overlapped with compute; expert routing is assumed uniform.",
        "Prices are illustrative defaults unless set with --price; energy assumes board power at TDP (an upper bound).",
    ]
    if ctx.target_rps is None:
        notes.append("No target load given: each configuration is one replica at its SLO capacity.")
    if not configs:
        notes.append(
            "No configuration meets the SLOs: relax them, add GPUs per replica, or use a larger GPU."
        )
    if not ctx.calibrations:
        notes.append(
            "Uncalibrated: efficiency factors are defaults; pass --calibration SWEEP_DIR to fit them."
        )
    return notes


def _fractional_best(ctx: _Ctx, g: GpuSpec, shape: WorkloadShape, rate: float) -> ScalingRow:
    sub = _Ctx(**{**ctx.__dict__, "shape": shape, "target_rps": None})
    gpn = min(g.gpus_per_node, ctx.req.max_gpus_per_node or g.gpus_per_node)
    best: tuple[float, ConfigResult] | None = None
    for lay in layouts(ctx.model, gpn, ctx.req.max_gpus_per_replica):
        r = _candidate(sub, g, lay, checks=False)
        if isinstance(r, ConfigResult):
            per_rps = r.gpus_per_replica / r.max_rps_per_replica
            if best is None or per_rps < best[0]:
                best = (per_rps, r)
    o, n = int(round(shape.output_len)), int(round(shape.n))
    if best is None:
        return ScalingRow(
            gpu=g.key,
            output_len=o,
            n=n,
            gpus_per_1k_users=None,
            gpus_per_rps=None,
            parallelism=None,
            tpot_s=None,
            bottleneck=None,
            source="modelled",
        )
    per_rps, c = best
    return ScalingRow(
        gpu=g.key,
        output_len=o,
        n=n,
        gpus_per_1k_users=per_rps * rate * 1000,
        gpus_per_rps=per_rps,
        parallelism=c.parallelism,
        tpot_s=c.tpot_s,
        bottleneck=c.bottleneck,
        source=c.source,
    )


def test_time_scaling(
    req: PlanRequest,
    output_lens: list[int] | None = None,
    ns: list[int] | None = None,
    *,
    ctx: _Ctx | None = None,
) -> TestTimeScaling:
    """GPUs needed per 1k users as reasoning output length grows and with n samples per prompt,
    each point the cheapest configuration per GPU type (fractional replicas, so the curve shows
    the trend rather than rounding)."""
    ctx = ctx or _context(req)
    if req.users is not None and req.rate_per_user_per_s is not None:
        rate = req.rate_per_user_per_s * req.peak_factor
        assumption = f"{rate * 86400:g} requests per user per day at peak (rate x peak factor)"
    else:
        rate = DEFAULT_RATE_PER_USER_PER_S
        assumption = "1,000 active users each sending one request per minute (no --users given)"
    base = ctx.shape
    rows_o: list[ScalingRow] = []
    rows_n: list[ScalingRow] = []
    for g in ctx.gpus:
        for o in output_lens or req.scaling_output_lens:
            rows_o.append(
                _fractional_best(
                    ctx,
                    g,
                    WorkloadShape(base.input_len, float(o), base.n, base.cached_prefix_len),
                    rate,
                )
            )
        for n in ns or req.scaling_ns:
            rows_n.append(
                _fractional_best(
                    ctx,
                    g,
                    WorkloadShape(
                        base.input_len, base.output_len, float(n), base.cached_prefix_len
                    ),
                    rate,
                )
            )
    return TestTimeScaling(
        rate_per_user_per_s=rate,
        assumption=assumption,
        input_len=base.input_len,
        by_output_len=rows_o,
        by_n=rows_n,
    )
