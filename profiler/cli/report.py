"""``infprof report RUN_OR_SWEEP...``: one self-contained HTML file plus Markdown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from profiler.report.build import ComputedPlan


@click.command("report")
@click.argument(
    "inputs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (default: the input directory; with several inputs, the current one).",
)
@click.option(
    "--format", "formats", default="html,md", show_default=True, help="Comma-separated: html, md."
)
@click.option("--name", default="report", show_default=True, help="File name stem of the report.")
@click.option(
    "--plan-model", help="Add a capacity plan for this model (catalog name or config.json)."
)
@click.option("--plan-gpu", multiple=True, help="GPU(s) for the plan (repeatable; default h100).")
@click.option(
    "--plan-target-rps",
    type=click.FloatRange(min=0, min_open=True),
    help="Target load for the plan (req/s).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the written paths as JSON.")
def command(
    inputs: tuple[Path, ...],
    out: Path | None,
    formats: str,
    name: str,
    plan_model: str | None,
    plan_gpu: tuple[str, ...],
    plan_target_rps: float | None,
    as_json: bool,
) -> None:
    """Summarise run or sweep directories into an HTML report (plots embedded) and Markdown.

    A run that died is repaired first: its journals are compacted and its summary recomputed.
    A sweep that did not finish gets the knees of its finished points. A plan.json in an input
    directory, or --plan-model, adds the capacity plan. The report then reads and renders.

    \b
    Examples:
      infprof report runs/run-20250101-120000
      infprof report runs/demo-sweep --plan-model llama-3.1-8b --plan-gpu h100 --plan-gpu h200
      infprof report runs/a runs/b --out reports/ --format html
    """
    from profiler.analysis.repair import repair_inputs
    from profiler.errors import SpecError
    from profiler.report.build import stored_plan, write_report_files

    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise SpecError(
            f"--name {name!r}: a file name stem, not a path", "give the directory with --out"
        )

    fmts = [f.strip().lower() for f in formats.split(",") if f.strip()]
    # analysis and capacity first; the report only reads and renders their results
    notes = repair_inputs(inputs)  # a run that died: compacted and summarised, then read
    knees = _knees(inputs)
    plan = None
    if plan_model and stored_plan(inputs) is None:
        plan = _plan(inputs, plan_model, [g.lower() for g in plan_gpu], plan_target_rps)
    files = write_report_files(list(inputs), out, fmts, plan, name, notes, knees)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "html": str(files.html) if files.html else None,
                    "markdown": str(files.markdown) if files.markdown else None,
                    "figures": files.figures,
                    "seconds": round(files.seconds, 3),
                }
            )
        )
    else:
        click.echo(str(files.main))


def _knees(inputs: tuple[Path, ...]) -> dict[Path, list[dict[str, Any]]]:
    """Per sweep among ``inputs``: its knees (those a finished sweep stored, else those of its
    finished points so far)."""
    from profiler.analysis.knee import with_knees
    from profiler.store.rundir import is_sweep_dir
    from profiler.store.schema import SweepIndex

    return {p: with_knees(SweepIndex.load(p).to_dict())["knees"] for p in inputs if is_sweep_dir(p)}


def _plan(
    inputs: tuple[Path, ...], model: str, gpus: list[str], target_rps: float | None
) -> ComputedPlan:
    """The plan of --plan-model: the SLO of the first input when it is a run, calibrated by
    the first sweep among them."""
    from profiler.capacity.report_plan import report_plan
    from profiler.report.build import ComputedPlan
    from profiler.store.rundir import is_sweep_dir
    from profiler.store.schema import Manifest

    sweep = next((p for p in inputs if is_sweep_dir(p)), None)
    first = inputs[0]
    slo = None
    if not is_sweep_dir(first) and (first / Manifest.FILE).exists():
        slo = Manifest.load(first).recorded_spec().slo
    data = report_plan(model, gpus, target_rps, slo, sweep)
    origin = f"infprof plan --model {model} --gpu {','.join(gpus or ['h100'])}" + (
        f" --calibration {sweep}" if sweep else ""
    )
    return ComputedPlan(data, origin)
