"""Fleet sizing: enumerate parallel layouts per GPU, size replicas for the target load under the
SLOs, price them, test them against other fabrics, and pick the cheapest that meets the SLOs.

    replicas   = ceil(lambda_target / lambda_max(replica))
    gpus_total = replicas x tp x pp x dp_attention
    $/h        = gpus_total x price;   $/M tok = $/h / (output tok/s x 3600) x 1e6
    J/tok      = gpus_total x TDP / output tok/s   (upper bound; measured energy when present)
"""

from __future__ import annotations

from typing import Any

from profiler.capacity.candidates import evaluate, plan_layouts
from profiler.capacity.context import PlanContext, build_context
from profiler.capacity.disagg import plan_disaggregated
from profiler.capacity.result import ConfigResult, PlanRequest, PlanResult, Rejected
from profiler.capacity.scaling import test_time_scaling
from profiler.capacity.sessions import annotate

POOR_FIT_PCT = 25.0
UNCALIBRATED_UNCERTAINTY = 0.25  # the validation band's median target (docs/capacity.md)


def _rank_key(ctx: PlanContext) -> Any:
    if ctx.target_rps is None:
        return lambda c: (c.cost_per_million_output_tokens, c.gpus_total, c.tpot_s)
    return lambda c: (c.cost_per_hour, c.gpus_total, c.tpot_s)


def plan(req: PlanRequest) -> PlanResult:
    """Size a fleet for ``req``; the cheapest configuration meeting the SLOs is marked best."""
    ctx = build_context(req)
    configs: list[ConfigResult] = []
    rejected: list[Rejected] = []
    for g in ctx.gpus:
        for lay in plan_layouts(ctx, g):
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
