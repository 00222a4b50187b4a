"""Fleet sizing: enumerate parallel layouts per GPU, size replicas for the target load under the
SLOs, price them, test them against other fabrics, and pick the cheapest that meets the SLOs.

    replicas   = ceil(lambda_target / lambda_max(replica))
    gpus_total = replicas x tp x pp x dp_attention
    $/h        = gpus_total x price;   $/M tok = $/h / (output tok/s x 3600) x 1e6
    J/tok      = gpus_total x TDP / output tok/s   (upper bound; measured energy when present)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from profiler.capacity import calibrate as cal
from profiler.capacity.candidates import (
    PlanContext,
    deployment,
    evaluate,
    gpus_per_node,
    layouts,
)
from profiler.capacity.catalog import resolve_model
from profiler.capacity.deployment import Efficiency, parse_layout
from profiler.capacity.disagg import plan_disaggregated
from profiler.capacity.engines import load_engines
from profiler.capacity.hardware import GpuSpec, load_hardware
from profiler.capacity.importers import load_calibration
from profiler.capacity.measured import MeasuredPoint
from profiler.capacity.result import (
    DEFAULT_RATE_PER_USER_PER_S,
    ConfigResult,
    PlanRequest,
    PlanResult,
    Rejected,
    ScalingRow,
    TestTimeScaling,
)
from profiler.capacity.sessions import annotate, cache_shape
from profiler.capacity.sizing import WorkloadShape, capacity
from profiler.capacity.workload import resolve_shape
from profiler.errors import SpecError

POOR_FIT_PCT = 25.0
UNCALIBRATED_UNCERTAINTY = 0.25  # the validation band's median target (docs/capacity.md)

__all__ = ["PlanRequest", "PlanResult", "plan", "test_time_scaling", "layouts"]


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


def _context(req: PlanRequest) -> PlanContext:
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
    kv_dtype = req.kv_dtype or ("fp32" if weight_dtype == "fp32" else "bf16")
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


def _rank_key(ctx: PlanContext) -> Any:
    if ctx.target_rps is None:
        return lambda c: (c.cost_per_million_output_tokens, c.gpus_total, c.tpot_s)
    return lambda c: (c.cost_per_hour, c.gpus_total, c.tpot_s)


def plan(req: PlanRequest) -> PlanResult:
    """Size a fleet for ``req``; the cheapest configuration meeting the SLOs is marked best."""
    ctx = _context(req)
    configs: list[ConfigResult] = []
    rejected: list[Rejected] = []
    for g in ctx.gpus:
        for lay in _layouts(ctx, g):
            r = evaluate(ctx, g, lay)
            (configs if isinstance(r, ConfigResult) else rejected).append(r)  # type: ignore[arg-type]
    key = _rank_key(ctx)
    configs.sort(key=key)
    best = None
    if configs:
        best = _prefer_measured(ctx, configs, key)
        best.best = True
        seen: set[str] = set()
        for c in configs:
            if c.gpu not in seen:
                c.best_for_gpu = True
                seen.add(c.gpu)
    scaling = test_time_scaling(req, ctx=ctx) if req.scaling else None
    disagg = plan_disaggregated(ctx, configs) if req.disaggregated else None
    return annotate(req, plan, PlanResult(
        engine=ctx.engine.key,
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
        disaggregated=disagg,
        notes=ctx.notes + _notes(ctx, configs, best),
    ))  # fmt: skip


def _layouts(ctx: PlanContext, g: GpuSpec) -> list[Any]:
    return layouts(
        ctx.model,
        gpus_per_node(ctx, g),
        ctx.req.max_gpus_per_replica,
        ctx.redundant_experts,
        only=ctx.only_layouts or None,
    )


def model_uncertainty(ctx: PlanContext, gpu: str) -> float:
    """Relative uncertainty of a modelled capacity on ``gpu``: the calibration's held-out
    (else in-sample) error where one exists, else the planner's validated band on published
    measurements (docs/capacity.md, "Checked against the world")."""
    for c in ctx.calibrations:
        if c.gpu == gpu:
            err = c.heldout_error_pct if c.heldout_error_pct is not None else c.fit_error_pct
            return max(err / 100.0, 0.05)
    return UNCALIBRATED_UNCERTAINTY


def _prefer_measured(ctx: PlanContext, configs: list[ConfigResult], key: Any) -> ConfigResult:
    """The cheapest configuration, except that a measured one wins over a cheaper modelled one
    when the modelled one's advantage is within the model's stated uncertainty."""
    best = configs[0]
    if best.source == "measured":
        return best
    u = model_uncertainty(ctx, best.gpu)
    best_cost = key(best)[0]
    for c in configs:
        if c.source == "measured" and key(c)[0] <= best_cost * (1 + u):
            ctx.notes.append(
                f"{c.gpu} {c.parallelism} was measured and costs within the model's uncertainty "
                f"({u:.0%}) of the cheapest modelled configuration ({best.gpu} "
                f"{best.parallelism}): the measured one is marked best."
            )
            return c
    return best


def _notes(
    ctx: PlanContext, configs: list[ConfigResult], best: ConfigResult | None = None
) -> list[str]:
    eff = ctx.effs[best.gpu] if best is not None else next(iter(ctx.effs.values()))
    notes = [
        "SLOs are checked against modelled means (measured points use the percentile matching the SLO's target fraction).",
        f"Engine {ctx.engine.label}: {eff.comm_overlap:.0%} of communication overlaps compute "
        + (
            "(--comm-overlap); "
            if ctx.req.comm_overlap is not None
            else f"({ctx.engine.overlap_flag} raises it: --comm-overlap "
            f"{ctx.engine.overlap_when_on:g}); "
        )
        + f"expert routing skew {eff.expert_skew:g} over random balance"
        + (" (EPLB)" if ctx.req.eplb else f" (no EPLB: --eplb if {ctx.engine.eplb_flag} is on)")
        + ".",
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
            f"Not calibrated on your hardware: efficiency factors are the {ctx.engine.label} "
            "profile's (fitted to its published results where the note above does not say "
            "otherwise); pass --calibration SWEEP_DIR, one RUN_DIR, or a vllm bench serve / "
            "GuideLLM / AIPerf result file to fit them."
        )
    for c in ctx.calibrations:
        notes.extend(c.notes)
        err = c.heldout_error_pct if c.heldout_error_pct is not None else c.fit_error_pct
        if err > POOR_FIT_PCT:
            notes.append(
                f"Calibration on {c.gpu} fits poorly ({err:.0f}% error on held-out points): the "
                "model does not explain these measurements; trust measured rows over modelled ones."
            )
    return notes


def _fractional_best(ctx: PlanContext, g: GpuSpec, shape: WorkloadShape, rate: float) -> ScalingRow:
    """The layout with the fewest GPUs per req/s for ``shape`` (capacity only: no replicas, no
    fabric checks, so the 13-point sweep stays cheap)."""
    sub = PlanContext(**{**ctx.__dict__, "shape": shape, "target_rps": None})
    # (GPUs per req/s, layout, TPOT at capacity, bottleneck, source)
    best: tuple[Any, ...] | None = None
    for lay in _layouts(ctx, g):
        if ctx.measured:  # measured capacity may replace the model's: take the full path
            r = evaluate(sub, g, lay, checks=False)
            if not isinstance(r, ConfigResult):
                continue
            cand: tuple[Any, ...] = (
                r.gpus_per_replica / r.max_rps_per_replica,
                r.parallelism,
                r.tpot_s,
                r.bottleneck,
                r.source,
            )
        else:
            cap = capacity(deployment(sub, g, lay), shape, ctx.req.slo, ctx.req.concurrency)
            if not cap.feasible or cap.curve is None:
                continue
            i = int(np.searchsorted(cap.curve.b, cap.b_star))
            cand = (
                lay.gpus / cap.rps_max,
                lay.label(),
                float(cap.curve.tpot_s[i]),
                cap.bottleneck,
                "modelled",
            )
        if best is None or cand[0] < best[0]:
            best = cand
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
    per_rps, label, tpot, bottleneck, source = best
    return ScalingRow(
        gpu=g.key,
        output_len=o,
        n=n,
        gpus_per_1k_users=per_rps * rate * 1000,
        gpus_per_rps=per_rps,
        parallelism=label,
        tpot_s=tpot,
        bottleneck=bottleneck,
        source=source,  # type: ignore[arg-type]
    )


def test_time_scaling(
    req: PlanRequest,
    output_lens: list[int] | None = None,
    ns: list[int] | None = None,
    *,
    ctx: PlanContext | None = None,
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


test_time_scaling.__test__ = False  # type: ignore[attr-defined]  # a planner API, not a pytest test
