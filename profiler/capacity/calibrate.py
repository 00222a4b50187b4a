"""Calibration: fit the model's efficiency factors to measured runs, and score it on held-out runs.

The decode step model is linear in its unknowns once each operator's regime is known:
    TPOT = xb / eta_B + xf / eta_F + n_coll alpha + t_overhead + comm_fixed
(xb: seconds of memory-bound traffic at peak bandwidth, xf: seconds of compute-bound work at peak
FLOP/s, n_coll: collectives per step, comm_fixed: bandwidth time of the transfers). The fit
alternates: assign regimes with the current factors, solve a least-squares problem in relative
error (numpy), repeat until the regimes settle. Factors the data cannot identify (no
collectives, no compute-bound point) stay at their defaults through a weak ridge prior (the
solver: profiler/capacity/lstsq.py). Held-out error is leave-one-out: refit without each
point, predict it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from profiler.capacity.catalog import resolve_model
from profiler.capacity.deployment import Deployment, Efficiency, Layout
from profiler.capacity.dtypes import resolve_weight_dtype
from profiler.capacity.engines import EngineProfile, load_engines
from profiler.capacity.hardware import load_hardware
from profiler.capacity.lstsq import BOUNDS, solve, unidentified
from profiler.capacity.measured import MeasuredPoint
from profiler.capacity.models import ModelSpec
from profiler.capacity.perf import StepCost, forward
from profiler.errors import InfprofError, SpecError

PARAMS = ("mem_bw_fraction", "compute_fraction", "collective_latency_s", "step_overhead_s")


class HeldOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_dir: str | None
    config: str
    batch: float
    tpot_measured_s: float
    tpot_predicted_s: float
    error_pct: float


class Calibration(BaseModel):
    """Fitted factors and how well they predict runs they were not fitted on."""

    model_config = ConfigDict(extra="forbid")

    gpu: str
    models: list[str]
    points: int
    fitted: Efficiency
    defaults: Efficiency
    identified: list[str] = Field(
        description="factors the data constrained (others stay at defaults)"
    )
    not_identified: list[str] = Field(
        default_factory=list,
        description="factors these points cannot separate from the others: they keep their priors",
    )
    fit_error_pct: float = Field(description="mean |error| of TPOT on the fitted points, %")
    heldout_error_pct: float | None = Field(description="leave-one-out mean |error| of TPOT, %")
    heldout_max_error_pct: float | None
    heldout: list[HeldOut]
    skipped: list[str] = Field(default_factory=list)
    notes: list[str] = Field(
        default_factory=list, description="what the points do and do not pin down"
    )


@dataclass
class _Row:
    point: MeasuredPoint
    dep: Deployment
    batch: float  # decoding streams per attention rank
    context: float
    prefill_tokens: float
    prefill_ctx: float

    def step(self, eff: Efficiency | None = None) -> StepCost:
        """The modelled step of this point (at ``eff``, default the row's own factors)."""
        dep = self.dep if eff is None else self.dep.with_(eff=eff)
        return forward(dep, self.batch, self.context, self.prefill_tokens, self.prefill_ctx)


def _theta(eff: Efficiency) -> np.ndarray:
    return np.array(
        [
            1 / eff.mem_bw_fraction,
            1 / eff.compute_fraction,
            eff.collective_latency_s,
            eff.step_overhead_s,
        ]
    )


def _eff(theta: np.ndarray, base: Efficiency) -> Efficiency:
    return base.model_copy(
        update={
            "mem_bw_fraction": float(1 / theta[0]),
            "compute_fraction": float(1 / theta[1]),
            "collective_latency_s": float(theta[2]),
            "step_overhead_s": float(theta[3]),
        }
    )


def deployment_for(
    p: MeasuredPoint,
    model: ModelSpec,
    gpu_key: str,
    eff: Efficiency,
    engine: EngineProfile | None = None,
) -> Deployment:
    """The deployment a measured point ran: its layout and the precisions it served with
    (recorded by the sweep: --quantization, --kv-cache-dtype, --dtype), the engine's limits
    where the point does not record them."""
    g = load_hardware().gpu(gpu_key)
    engine = engine or load_engines().engine(None)
    return Deployment.on(
        model,
        g,
        Layout(tp=p.tp, pp=p.pp, dp=p.dp, ep=p.ep),
        eff=eff,
        weight_dtype=resolve_weight_dtype(model.weight_dtype, p.weight_dtype, p.activation_dtype),
        kv_dtype=p.kv_dtype,
        **engine.settings(g, p.max_num_seqs, p.max_num_batched_tokens),
    )


def _rows(
    points: Sequence[MeasuredPoint],
    gpu: str | None,
    eff: Efficiency,
    engine: EngineProfile | None = None,
) -> tuple[list[_Row], list[str], str]:
    rows: list[_Row] = []
    skipped: list[str] = []
    gpu_key: str | None = gpu
    for p in points:
        key = gpu or p.gpu
        where = p.run_dir or p.label()
        if key is None:
            skipped.append(f"{where}: no GPU recorded (pass the hardware with --calibration-gpu)")
            continue
        if gpu_key is None:
            gpu_key = key
        if key != gpu_key:
            skipped.append(f"{where}: measured on {key}, calibrating {gpu_key}")
            continue
        if p.tpot_s is None or p.output_tokens_per_s is None or p.tpot_s <= 0:
            skipped.append(f"{where}: no TPOT/throughput measured")
            continue
        try:
            model = resolve_model(p.model)
        except InfprofError as e:
            skipped.append(f"{where}: {e.message}")
            continue
        streams = p.decoding_streams()
        b = max(streams / p.dp, 1.0)
        rows.append(
            _Row(
                point=p,
                dep=deployment_for(p, model, key, eff, engine),
                batch=b,
                context=p.input_len + p.output_len / 2,
                prefill_tokens=b * max(p.input_len, 1.0) / (p.n * max(p.output_len, 1.0)),
                prefill_ctx=p.input_len / 2,
            )
        )
    return rows, skipped, gpu_key or "unknown"


def _design(rows: list[_Row], eff: Efficiency) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    A = np.zeros((len(rows), 4))
    y = np.zeros(len(rows))
    obs = np.zeros(len(rows))
    for i, r in enumerate(rows):
        s = r.step(eff)
        A[i] = [float(s.xb), float(s.xf), float(s.n_coll), 1.0]
        assert r.point.tpot_s is not None
        obs[i] = r.point.tpot_s
        y[i] = r.point.tpot_s - float(s.comm_fixed_s)
    return A, y, obs


def _fit_rows(rows: list[_Row], base: Efficiency) -> tuple[Efficiency, np.ndarray]:
    """Alternate regime assignment and least squares until the regimes repeat; if they cycle,
    keep the visited solution with the smallest relative residual."""
    eff = base
    theta0 = _theta(base)
    seen: list[bytes] = []
    best: tuple[float, Efficiency, np.ndarray] | None = None
    for _ in range(30):
        A, y, obs = _design(rows, eff)
        key = (A[:, :2] > 0).tobytes()
        if key in seen:
            break
        seen.append(key)
        theta = solve(A, y, obs, theta0)
        cand = _eff(theta, base)
        resid = float(
            np.mean(np.abs([_pred(r, cand) / o - 1 for r, o in zip(rows, obs, strict=True)]))
        )
        if best is None or resid < best[0]:
            best = (resid, cand, A)
        eff = cand
    assert best is not None
    return best[1], best[2]


def predict_tpot(
    p: MeasuredPoint, eff: Efficiency, gpu: str | None = None, engine: EngineProfile | None = None
) -> float:
    rows, _, _ = _rows([p], gpu, eff, engine)
    if not rows:
        raise SpecError(
            f"cannot model point {p.label()}", "it needs a GPU, a known model and a TPOT"
        )
    r = rows[0]
    return float(r.step().t_s)


def fit_one(
    point: MeasuredPoint,
    base: Efficiency | None = None,
    gpu: str | None = None,
    engine: EngineProfile | None = None,
) -> Calibration:
    """A one-point calibration (one run directory): the measured TPOT fixes one factor, the
    efficiency of the part of the decode step that dominates at the measured batch (eta_B
    when the step is memory-bound, as decode is, else eta_F); every other factor keeps its
    default. Its notes say what one point cannot pin down."""
    base = base or Efficiency()
    rows, skipped, gpu_key = _rows([point], gpu, base, engine)
    if not rows:
        raise SpecError(
            "calibration needs a usable measured point" + (f" ({skipped[0]})" if skipped else ""),
            "pass a run directory with completed requests, a known GPU and a known model",
        )
    r = rows[0]
    assert r.point.tpot_s is not None
    s = r.step()
    xb, xf = float(s.xb), float(s.xf)
    fixed = float(s.comm_fixed_s) + float(s.n_coll) * base.collective_latency_s
    fixed += base.step_overhead_s
    which = 0 if xb >= xf else 1  # memory-bound step: eta_B; else eta_F
    other = xf / base.compute_fraction if which == 0 else xb / base.mem_bw_fraction
    left = r.point.tpot_s - fixed - other
    theta = _theta(base)
    lo, hi = BOUNDS[which]
    work = xb if which == 0 else xf
    raw = work and left / work or hi
    theta[which] = float(np.clip(raw, lo, hi)) if left > 0 else hi
    eff = _eff(theta, base)
    capped = left > 0 and raw < lo
    name = PARAMS[which]
    err = abs(_pred(r, eff) / r.point.tpot_s - 1) * 100
    notes = [
        f"One measured point ({r.point.run_dir or r.point.label()}): it fixes "
        f"{name} = {getattr(eff, name):.3f} at a batch of {r.batch:.1f} streams, "
        f"{r.context:.0f} tokens of context and the measured TPOT of "
        f"{r.point.tpot_s * 1e3:.2f} ms.",
        "It does not pin down "
        + (
            "prefill efficiency (eta_F), "
            if which == 0
            else "decode bandwidth efficiency (eta_B), "
        )
        + "the step overhead, collective latency, nor how TPOT grows with the batch: those "
        "keep their defaults, so predictions far from this batch, context or layout "
        "(TP/PP/EP) are extrapolations; sweep several load levels to fit them.",
    ]
    if capped:
        notes.append(
            f"The measured TPOT is shorter than this model allows at 100% of peak: {name} was "
            "held at 1.0 (the physical limit), so the model is slower than the measurement here."
        )
    if left <= 0:
        notes.append(
            f"The measured TPOT ({r.point.tpot_s * 1e3:.2f} ms) is below the default fixed costs "
            f"({(fixed + other) * 1e3:.2f} ms): {name} was set to its bound, and the fit is poor."
        )
    return Calibration(
        gpu=gpu_key,
        models=[r.dep.model.name],
        points=1,
        fitted=eff,
        defaults=base,
        identified=[name],
        not_identified=[p for p in PARAMS if p != name],
        fit_error_pct=err,
        heldout_error_pct=None,
        heldout_max_error_pct=None,
        heldout=[],
        skipped=skipped,
        notes=notes,
    )


def fit(
    points: Sequence[MeasuredPoint],
    base: Efficiency | None = None,
    gpu: str | None = None,
    engine: EngineProfile | None = None,
) -> Calibration:
    """Fit efficiency factors to ``points`` (one GPU type) and report leave-one-out error
    (one point alone: ``fit_one``). Factors the points cannot separate keep their priors
    (``not_identified``, with a note); fitted efficiencies never exceed 1."""
    base = base or Efficiency()
    rows, skipped, gpu_key = _rows(points, gpu, base, engine)
    if len(rows) < 2:
        raise SpecError(
            f"calibration needs at least 2 usable measured points, got {len(rows)}"
            + (f" ({skipped[0]})" if skipped else ""),
            "sweep at least two load levels or configurations",
        )
    eff, A = _fit_rows(rows, base)
    obs = np.array([r.point.tpot_s or 1.0 for r in rows])
    why = unidentified(A, obs)
    identified = [PARAMS[j] for j in range(4) if j not in why]
    notes = [
        f"{PARAMS[j]} keeps its prior ({getattr(base, PARAMS[j]):g}): {reason}."
        for j, reason in sorted(why.items())
        if j != 2 or reason != "no signal in these points"
    ]
    at_limit = [n for n in ("mem_bw_fraction", "compute_fraction") if getattr(eff, n) >= 1.0 - 1e-9]
    if at_limit and any(PARAMS.index(n) not in why for n in at_limit):
        notes.append(
            f"{', '.join(at_limit)} reached 1.0, the physical limit: the measurements are faster "
            "than this model allows at peak, so its byte or FLOP counts are too high here."
        )
    fitted_err = [abs(_pred(r, eff) / r.point.tpot_s - 1) * 100 for r in rows if r.point.tpot_s]
    held: list[HeldOut] = []
    if len(rows) >= 3:
        for i, r in enumerate(rows):
            eff_i, _ = _fit_rows(rows[:i] + rows[i + 1 :], base)
            pred = _pred(r, eff_i)
            assert r.point.tpot_s is not None
            held.append(
                HeldOut(
                    run_dir=r.point.run_dir,
                    config=r.point.label(),
                    batch=r.batch,
                    tpot_measured_s=r.point.tpot_s,
                    tpot_predicted_s=pred,
                    error_pct=(pred / r.point.tpot_s - 1) * 100,
                )
            )
    errs = [abs(h.error_pct) for h in held]
    return Calibration(
        gpu=gpu_key,
        models=sorted({r.dep.model.name for r in rows}),
        points=len(rows),
        fitted=eff,
        defaults=base,
        identified=identified,
        not_identified=[PARAMS[j] for j in sorted(why)],
        fit_error_pct=float(np.mean(fitted_err)),
        heldout_error_pct=float(np.mean(errs)) if errs else None,
        heldout_max_error_pct=float(np.max(errs)) if errs else None,
        heldout=held,
        skipped=skipped,
        notes=notes,
    )


def _pred(r: _Row, eff: Efficiency) -> float:
    return float(r.step(eff).t_s)
