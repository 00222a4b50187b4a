"""A plan's request resolved once (``PlanContext``): the model, the workload shape, the GPUs and
their prices, the target load, each GPU's efficiency factors (an engine profile's, calibrated
on measurements where given), and the deployment of one layout on one GPU under it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profiler.capacity import calibrate as cal
from profiler.capacity.catalog import resolve_model
from profiler.capacity.deployment import (
    Deployment,
    Efficiency,
    Layout,
    default_kv_dtype,
    parse_layout,
)
from profiler.capacity.engines import EngineProfile, load_engines
from profiler.capacity.hardware import GpuSpec, HardwareCatalog, Interconnect, load_hardware
from profiler.capacity.importers import load_calibration
from profiler.capacity.measured import MeasuredPoint
from profiler.capacity.models import ModelSpec
from profiler.capacity.result import PlanRequest
from profiler.capacity.sessions import cache_shape
from profiler.capacity.sizing import WorkloadShape
from profiler.capacity.workload import resolve_shape
from profiler.errors import SpecError


@dataclass
class PlanContext:
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
    engine: EngineProfile
    redundant_experts: int = 0
    only_layouts: list[Layout] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def gpus_per_node(ctx: PlanContext, g: GpuSpec) -> int:
    return min(g.gpus_per_node, ctx.req.max_gpus_per_node or g.gpus_per_node)


def deployment(ctx: PlanContext, g: GpuSpec, lay: Layout) -> Deployment:
    """The deployment of ``lay`` on ``g`` with the engine's defaults and the plan's settings."""
    r, gpn = ctx.req, gpus_per_node(ctx, g)
    capped = r.max_gpus_per_node is not None and r.max_gpus_per_node < g.gpus_per_node
    return Deployment.on(
        ctx.model,
        g,
        lay,
        eff=ctx.effs[g.key],
        weight_dtype=ctx.weight_dtype,
        kv_dtype=ctx.kv_dtype,
        scale_up=ctx.up_override,
        scale_out=ctx.out_override,
        gpus_per_node=gpn,
        domain_gpus=gpn if capped else None,
        redundant_experts=ctx.redundant_experts,
        **ctx.engine.settings(
            g, r.max_num_seqs, r.max_num_batched_tokens, r.gpu_memory_utilization
        ),
    )


def _measured_points(req: PlanRequest, hw: Any) -> list[MeasuredPoint]:
    measured = list(req.measured_points)
    if req.calibration is not None:
        gkey = hw.gpu(req.calibration_gpu).key if req.calibration_gpu else None
        measured += load_calibration(
            req.calibration,
            gpu=gkey,
            model=req.calibration_model,
            layout=parse_layout(req.calibration_layout) if req.calibration_layout else None,
        )
        if not measured:
            raise SpecError(
                f"{req.calibration}: no finished runs to calibrate on", "finish the sweep first"
            )
    return measured


def _check_models(points: list[MeasuredPoint], where: Path | None) -> None:
    """Every calibration point's model must be one the planner can size: an unknown one is an
    error naming it, not a silently uncalibrated plan."""
    for name in dict.fromkeys(p.model for p in points):
        try:
            resolve_model(name)
        except SpecError as e:
            src = f"{where}: " if where is not None else ""
            raise SpecError(
                f"{src}calibration model '{name}' cannot be sized ({e.message})",
                "pass its config.json with --calibration-model PATH (or a catalog name)",
            ) from None


def build_context(req: PlanRequest) -> PlanContext:
    """Resolve a request: the model, workload shape, GPUs, target load, prices, efficiency
    factors (calibrated where measurements were given), layouts to try and notes."""
    hw = load_hardware()
    engines = load_engines()
    engine = engines.engine(req.engine)
    model = resolve_model(req.model)
    shape, label = resolve_shape(
        req.workload, req.input_len, req.output_len, req.n, req.cached_prefix_len
    )
    shape, label = cache_shape(req, shape, label)  # sessions: context growth, cache, idle KV
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
    weight_dtype = req.weight_dtype or model.weight_dtype
    kv_dtype = req.kv_dtype or default_kv_dtype(weight_dtype)
    ctx_notes: list[str] = []
    effs: dict[str, Efficiency] = {}
    for g in gpus:
        base = req.efficiency or engine.efficiency_for(g.key, weight_dtype)
        effs[g.key] = _apply_switches(base, req, engines.eplb_expert_skew)
        if req.efficiency is None and engine.calibration_for(g.key, weight_dtype) is None:
            ctx_notes.append(
                f"{engine.label} has no published-result calibration for {g.key} in "
                f"{weight_dtype}: its efficiency factors are priors (docs/capacity.md)."
            )
    measured = _measured_points(req, hw)
    _check_models(measured, req.calibration)
    calibrations: list[cal.Calibration] = []
    by_gpu: dict[str, list[MeasuredPoint]] = {}
    for p in measured:
        by_gpu.setdefault(
            req.calibration_gpu and hw.gpu(req.calibration_gpu).key or p.gpu or "?", []
        ).append(p)
    for gkey, pts in by_gpu.items():
        if gkey == "?":
            ctx_notes.append(
                f"{len(pts)} measured point(s) without a GPU were not used (pass --calibration-gpu)"
            )
            continue
        prior = effs.get(gkey) or _apply_switches(
            engine.efficiency_for(gkey, weight_dtype), req, engines.eplb_expert_skew
        )
        try:
            c = (
                cal.fit_one(pts[0], prior, gpu=gkey, engine=engine)
                if len(pts) == 1
                else cal.fit(pts, prior, gpu=gkey, engine=engine)
            )
        except SpecError as e:
            ctx_notes.append(f"calibration on {gkey} skipped: {e.message}")
            continue
        calibrations.append(c)
        if gkey in effs:
            effs[gkey] = c.fitted
    only = [parse_layout(x) for g in req.layouts for x in g.split(",") if x.strip()]
    redundant = req.redundant_experts
    if redundant is None:
        redundant = 0
    return PlanContext(
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
        engine=engine,
        redundant_experts=redundant,
        only_layouts=only,
        notes=ctx_notes,
    )


def _apply_switches(eff: Efficiency, req: PlanRequest, eplb_skew: float) -> Efficiency:
    """--eplb and --comm-overlap on top of an engine's (or a calibration's) factors."""
    update: dict[str, Any] = {}
    if req.eplb:
        update["expert_skew"] = eplb_skew
    if req.comm_overlap is not None:
        update["comm_overlap"] = req.comm_overlap
    return eff.model_copy(update=update) if update else eff
