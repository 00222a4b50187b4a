"""The planner against published serving measurements (``profiler/data/published.yaml``).

For each row the planner runs with the row's conditions (model, GPU, layout, precisions,
lengths, engine profile, EPLB, overlap) and returns the figure the source published: capacity
in output tokens/s per GPU (offline: no latency constraint; concurrency: a closed loop of that
many streams per replica; decode: the decode pool of a disaggregated plan), or prompt tokens/s
per GPU for a prefill pool. ``python -m profiler.capacity.validation`` prints the table that
docs/capacity.md carries; tests/unit/test_capacity_validation.py keeps the rows marked
``band: true`` inside the stated band.
"""

from __future__ import annotations

import math
import statistics
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from profiler.capacity.candidates import evaluate
from profiler.capacity.deployment import parse_layout
from profiler.capacity.disagg import plan_disaggregated
from profiler.capacity.engines import load_engines
from profiler.capacity.result import ConfigResult, PlanRequest
from profiler.errors import SpecError

PUBLISHED_FILE = "published.yaml"
BAND_MEDIAN = 1.25  # median of max(ratio, 1/ratio) over the band rows must stay within this
BAND_WORST = 2.0  # and every band row within this


class Published(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    source: str
    engine: str
    model: str
    gpu: str
    layout: str
    weight_dtype: str
    kv_dtype: str
    input_len: float
    output_len: float
    mode: Literal["offline", "concurrency", "decode", "prefill"]
    concurrency: float | None = Field(default=None, description="streams per replica")
    batch_per_gpu: float | None = None
    eplb: bool = False
    redundant_experts: int = 0
    comm_overlap: float | Literal["two-batch"] | None = None
    published: float = Field(gt=0)
    band: bool
    unit: str = "output tokens/s per GPU"
    note: str = ""


@dataclass
class Check:
    row: Published
    source: str
    planned: float
    bottleneck: str

    @property
    def ratio(self) -> float:
        """planner / published."""
        return self.planned / self.row.published

    @property
    def error(self) -> float:
        """max(ratio, 1/ratio): how far off, either way."""
        r = self.ratio
        return max(r, 1 / r) if r > 0 else math.inf


@lru_cache(maxsize=1)
def load_published() -> tuple[dict[str, str], list[Published]]:
    data = yaml.safe_load(resources.files("profiler").joinpath("data", PUBLISHED_FILE).read_text())
    sources = dict(data["sources"])
    rows = [Published.model_validate(r) for r in data["rows"]]
    for r in rows:
        if r.source not in sources:
            raise SpecError(f"published.yaml row {r.id}: unknown source {r.source}", "add it")
    return sources, rows


def request_for(row: Published) -> PlanRequest:
    """The plan request that reproduces ``row``'s conditions."""
    lay = parse_layout(row.layout)
    engine = load_engines().engine(row.engine)
    overlap = row.comm_overlap
    if overlap == "two-batch":
        overlap = engine.overlap_when_on
    conc = row.concurrency
    if row.batch_per_gpu is not None:
        conc = row.batch_per_gpu * lay.gpus / lay.pp
    return PlanRequest(
        model=row.model,
        gpus=[row.gpu],
        engine=engine.key,
        layouts=[row.layout],
        input_len=row.input_len,
        output_len=row.output_len,
        weight_dtype=row.weight_dtype,  # type: ignore[arg-type]
        kv_dtype=row.kv_dtype,  # type: ignore[arg-type]
        concurrency=conc,
        eplb=row.eplb or None,
        redundant_experts=row.redundant_experts or None,
        comm_overlap=overlap,  # type: ignore[arg-type]
        max_gpus_per_replica=max(lay.gpus, 1),
        disaggregated=row.mode in ("decode", "prefill"),
        scaling=False,
    )


def check(row: Published) -> Check:
    from profiler.capacity.context import build_context

    req = request_for(row)
    ctx = build_context(req)
    g = ctx.gpus[0]
    lay = parse_layout(row.layout)
    if row.mode in ("offline", "concurrency"):
        r = evaluate(ctx, g, lay, checks=False)
        if not isinstance(r, ConfigResult):
            raise SpecError(
                f"{row.id}: the planner rejects this layout ({r.reason})", "fix the row"
            )
        return Check(row, row.source, r.capacity_tokens_per_s_per_gpu, r.bottleneck)
    d = plan_disaggregated(ctx, [])
    if not d:
        raise SpecError(f"{row.id}: no feasible disaggregated plan", "fix the row")
    pool = d[0].decode if row.mode == "decode" else d[0].prefill
    return Check(row, row.source, pool.capacity_tokens_per_s_per_gpu, pool.bottleneck)


def check_all(band_only: bool = False) -> list[Check]:
    _, rows = load_published()
    return [check(r) for r in rows if r.band or not band_only]


def band_summary(checks: list[Check]) -> dict[str, Any]:
    band = [c for c in checks if c.row.band]
    errors = [c.error for c in band]
    return {
        "rows": len(band),
        "median_error": statistics.median(errors) if errors else None,
        "worst_error": max(errors) if errors else None,
        "median_ratio": statistics.median([c.ratio for c in band]) if band else None,
    }


def markdown(checks: list[Check], held: dict[str, float] | None = None) -> str:
    """The table: published figure, the planner's (shipped engine calibration), the ratio, and
    the ratio the row gets from a calibration fitted without it (held out)."""
    sources, _ = load_published()
    held = held or {}
    head = (
        "| id | engine | model | GPU | layout | precision (W/KV) | in / out | conditions | "
        "published | planner | ratio | held out |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|--:|--:|--:|--:|"]
    for c in checks:
        r = c.row
        if r.mode == "offline":
            cond = "max throughput"
        elif r.mode == "concurrency":
            cond = f"concurrency {r.concurrency or 0:g}"
        elif r.mode == "decode":
            cond = "decode pool" + (f", {r.batch_per_gpu:g} streams/GPU" if r.batch_per_gpu else "")
        else:
            cond = "prefill pool (prompt tok/s)"
        if r.eplb:
            cond += ", EPLB"
        if r.comm_overlap is not None:
            cond += ", TBO"
        ho = f"{held[r.id]:.2f}" if r.id in held else "-"
        lines.append(
            f"| {r.id}{'' if r.band else ' (not in band)'} | {r.engine} | {r.model} | {r.gpu} | "
            f"{r.layout} | {r.weight_dtype}/{r.kv_dtype} | {r.input_len:,.0f} / {r.output_len:,.0f} "
            f"| {cond} | {r.published:,.0f} | {c.planned:,.0f} | {c.ratio:.2f} | {ho} |"
        )
    s = band_summary(checks)
    lines.append("")
    lines.append(
        f"Band rows: {s['rows']}; median error {s['median_error']:.2f}x, worst "
        f"{s['worst_error']:.2f}x (error = max(ratio, 1/ratio)); median ratio "
        f"{s['median_ratio']:.2f}."
    )
    band_held = [max(v, 1 / v) for k, v in held.items() if v > 0]
    if band_held:
        lines.append(
            f"Held out (each fitted row predicted by a calibration fitted without it): median "
            f"error {statistics.median(band_held):.2f}x, worst {max(band_held):.2f}x over "
            f"{len(band_held)} rows."
        )
    lines.append("")
    for key, text in sources.items():
        lines.append(f"- `{key}`: {text}")
    return "\n".join(lines) + "\n"


def calibrations_yaml(fits: list[ScopeFit]) -> str:
    """profiler/data/engine_calibrations.yaml: the engine calibrations these fits give, with
    the rows each was fitted on and every row's in-sample and held-out ratio."""
    out: dict[str, list[dict[str, Any]]] = {}
    for f in fits:
        out.setdefault(f.scope.engine, []).append(
            {
                "gpus": list(f.scope.gpus),
                "weight_dtypes": list(f.scope.weight_dtypes),
                "efficiency": f.best,
                "fitted_on": f.rows,
                "source": "grid fit to the published rows listed (profiler/data/published.yaml); "
                "ratios planner/published: in-sample "
                + ", ".join(f"{r} {f.in_sample[r]:.2f}" for r in f.rows)
                + (
                    "; held out "
                    + ", ".join(f"{r} {f.held_out[r]:.2f}" for r in f.rows if r in f.held_out)
                    if f.held_out
                    else ""
                ),
            }
        )
    head = (
        "# Engine calibrations fitted to published results. Generated by\n"
        "#   python -m profiler.capacity.validation --fit --write profiler/data/"
        + CALIBRATIONS_FILE
        + "\n# (profiler/capacity/engines.py merges them into profiler/data/engines.yaml's profiles;\n"
        "# tests/unit/test_capacity_validation.py checks a refit reproduces them).\n"
    )
    return head + yaml.safe_dump(out, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    """``python -m profiler.capacity.validation [--fit]``: the table of docs/capacity.md, or
    (``--fit``) the engine calibrations refitted to the published rows, with leave-one-out
    ratios, as the YAML profiler/data/engines.yaml carries."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m profiler.capacity.validation")
    ap.add_argument("--fit", action="store_true", help="refit the engine calibrations")
    ap.add_argument("--write", type=Path, help="with --fit: write the calibrations file here")
    args = ap.parse_args(argv)
    if args.fit:
        fits = fit_all()
        for f in fits:
            sys.stdout.write(f"# {f.scope.engine} {','.join(f.scope.weight_dtypes)}: {f.best}\n")
            for r in f.rows:
                h = f.held_out.get(r)
                sys.stdout.write(
                    f"#   {r}: in-sample {f.in_sample[r]:.2f}"
                    + (f", held out {h:.2f}" if h is not None else "")
                    + "\n"
                )
        text = calibrations_yaml(fits)
        if args.write:
            args.write.write_text(text)
        else:
            sys.stdout.write(text)
        return 0
    checks = check_all()
    held = {r: f.held_out[r] for f in fit_all() for r in f.held_out}
    sys.stdout.write(markdown(checks, held))
    return 0


# ---------------------------------------------------------------- engine calibrations
@dataclass(frozen=True)
class Scope:
    """Which published rows one engine calibration is fitted to: an engine on some GPUs in
    some weight precisions (profiler/data/engines.yaml carries the result)."""

    engine: str
    gpus: tuple[str, ...]
    weight_dtypes: tuple[str, ...]
    params: tuple[str, ...] = ("compute_fraction", "moe_gemm_fraction")
    inherit: int | None = None  # index in SCOPES whose fitted values this scope starts from

    def covers(self, row: Published) -> bool:
        return (
            row.band
            and load_engines().engine(row.engine).key == self.engine
            and row.gpu in self.gpus
            and row.weight_dtype in self.weight_dtypes
        )


HOPPER = ("h100", "h200", "h800", "h20", "h100-pcie")
BLACKWELL = ("b200", "gb200")
SCOPES = (
    Scope("tensorrt-llm", HOPPER, ("fp8", "bf16", "fp16", "int8")),
    # weight-only formats on Hopper: only MoE models published (gpt-oss), whose dense part is
    # too small to pin eta_F: it stays the FP8 fit's, the MoE efficiency is this scope's
    Scope("tensorrt-llm", HOPPER, ("mxfp4", "nvfp4", "int4"), ("moe_gemm_fraction",), 0),
    Scope("tensorrt-llm", BLACKWELL, ("nvfp4", "mxfp4", "fp8", "bf16", "int4")),
    # SGLang: DeepSeek decode pools only; they cannot separate eta_F from the MoE efficiency,
    # which keeps its prior
    Scope(
        "sglang",
        HOPPER + BLACKWELL,
        ("fp8", "bf16", "fp16", "nvfp4", "mxfp4"),
        ("compute_fraction",),
    ),
)
GRID = tuple(round(0.1 + 0.05 * i, 2) for i in range(19))  # 0.10 .. 1.00
CALIBRATIONS_FILE = "engine_calibrations.yaml"


def _ratio_with(row: Published, update: dict[str, float]) -> float:
    from profiler.capacity.context import build_context
    from profiler.capacity.deployment import Efficiency

    req = request_for(row)
    engine = load_engines().engine(row.engine)
    # priors + the engine-wide factors (never the shipped calibrations) + the candidate values
    prior = Efficiency().model_copy(
        update={"comm_overlap": engine.comm_overlap, **dict(engine.efficiency), **update}
    )
    req = req.model_copy(update={"efficiency": prior})
    ctx = build_context(req)
    g, lay = ctx.gpus[0], parse_layout(row.layout)
    if row.mode in ("offline", "concurrency"):
        r = evaluate(ctx, g, lay, checks=False)
        if not isinstance(r, ConfigResult):
            return math.inf
        return r.capacity_tokens_per_s_per_gpu / row.published
    d = plan_disaggregated(ctx, [])
    if not d:
        return math.inf
    pool = d[0].decode if row.mode == "decode" else d[0].prefill
    return pool.capacity_tokens_per_s_per_gpu / row.published


@dataclass
class ScopeFit:
    scope: Scope
    rows: list[str]
    best: dict[str, float]
    in_sample: dict[str, float]  # row id -> ratio with the fitted values
    held_out: dict[str, float]  # row id -> ratio with values fitted without that row


def fit_scope(scope: Scope, fixed: dict[str, float] | None = None) -> ScopeFit | None:
    """Grid search (GRID per parameter) for the values minimising the summed squared log
    ratio over the scope's rows, and leave-one-out ratios from the same grid. ``fixed``:
    values inherited from another scope's fit."""
    import functools
    import itertools

    _, rows = load_published()
    mine = [r for r in rows if scope.covers(r)]
    if not mine:
        return None
    fixed = dict(fixed or {})
    points = list(itertools.product(GRID, repeat=len(scope.params)))
    table = {
        p: [_ratio_with(r, {**fixed, **dict(zip(scope.params, p, strict=True))}) for r in mine]
        for p in points
    }

    def loss(p: tuple[float, ...], skip: int | None = None) -> float:
        return sum(
            math.log(x) ** 2 if 0 < x < math.inf else 1e9
            for i, x in enumerate(table[p])
            if i != skip
        )

    best = min(points, key=loss)
    held: dict[str, float] = {}
    for i, r in enumerate(mine):
        if len(mine) > 1:
            p_i = min(points, key=functools.partial(loss, skip=i))
            held[r.id] = table[p_i][i]
    return ScopeFit(
        scope,
        [r.id for r in mine],
        {**fixed, **dict(zip(scope.params, best, strict=True))},
        {r.id: table[best][i] for i, r in enumerate(mine)},
        held,
    )


def fit_all() -> list[ScopeFit]:
    fits: list[ScopeFit | None] = []
    for s in SCOPES:
        parent = fits[s.inherit] if s.inherit is not None else None
        fits.append(fit_scope(s, parent.best if parent is not None else None))
    return [f for f in fits if f is not None]


if __name__ == "__main__":
    raise SystemExit(main())
