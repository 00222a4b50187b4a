"""``infprof compare A B`` / ``infprof compare A1 A2 A3 --vs B1 B2 B3``: per-metric deltas of
B against baseline A, with hierarchical bootstrap confidence intervals; exit 7 when a gated
metric regresses beyond its threshold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from profiler.cli import options
from profiler.errors import RegressionDetected, SpecError

if TYPE_CHECKING:
    from profiler.spec import SloSpec

METRIC_HELP = (
    "Gate on a metric: NAME[:THRESHOLD], repeatable. THRESHOLD is relative to A (0.1 or 10%; "
    "default 5%), absolute for error_rate. Names: ttft_p50, ttft_p99, tpot_p50, tpot_p99, "
    "itl_p50, e2e_p50, e2e_p99, output_tokens_per_s, requests_per_s, error_rate, slo_met_rps "
    "(alias goodput, goodput_rps), slo_attainment (alias goodput_fraction)."
)
EPILOG = (
    "Each side is a run directory, a directory of repeats (infprof run --repeat N), or, with "
    "--vs, several of them: the intervals then resample runs, then requests within each run "
    "(a hierarchical bootstrap), so they cover run-to-run variance. With one run on a side "
    "they cover only within-run noise, and a gated metric becomes a regression only beyond "
    "--min-effect.\n\n"
    "Exit codes: 0 no gated metric regressed (also when one run a side and no --min-effect: "
    "nothing is gated then); 7 a gated metric regressed (CI of the delta excludes 0 and the "
    "change exceeds its threshold and --min-effect); 2 bad input; 5 unreadable run."
)


class _VsCommand(click.Command):
    """``--vs B1 B2 B3`` takes every path up to the next option (click options take one
    value each, so it is rewritten to ``--vs B1 --vs B2 --vs B3`` before parsing)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        taking = False
        for arg in [*args, ""]:
            if taking and out[-1] == "--vs" and (not arg or arg.startswith("-")):
                raise click.UsageError("--vs: give B's runs after it, e.g. --vs runs/b1 runs/b2")
            if arg == "--vs":
                taking = True
                out.append(arg)
            elif taking and arg and not arg.startswith("-"):
                out.extend([arg] if out[-1] == "--vs" else ["--vs", arg])
            else:
                taking = False
                out.append(arg)
        return super().parse_args(ctx, out[:-1])


_RUN = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command("compare", cls=_VsCommand, epilog=EPILOG)
@click.argument("runs", nargs=-1, required=True, type=_RUN)
@click.option(
    "--vs",
    "vs",
    multiple=True,
    type=_RUN,
    metavar="B...",
    help="B's runs (every path after --vs); the arguments before it are A's runs.",
)
@click.option("--metric", "metrics", multiple=True, metavar="NAME[:THRESHOLD]", help=METRIC_HELP)
@click.option(
    "--min-effect",
    metavar="FRACTION",
    help="Smallest change that counts as a regression (10% or 0.1; absolute for error_rate). "
    "Needed to gate a comparison with one run on a side.",
)
@click.option(
    "--slo",
    callback=options.parse_slo_if_given,
    help="SLO for slo_met_rps and slo_attainment, ttft=S,tpot=S,e2e=S (default: A's run spec).",
)
@click.option("--resamples", default=1000, show_default=True, help="Bootstrap resamples.")
@click.option(
    "--confidence", default=0.95, show_default=True, help="Confidence level of the intervals."
)
@click.option("--seed", default=0, show_default=True, help="Bootstrap seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def command(
    runs: tuple[Path, ...],
    vs: tuple[Path, ...],
    metrics: tuple[str, ...],
    min_effect: str | None,
    slo: SloSpec | None,
    resamples: int,
    confidence: float,
    seed: int,
    as_json: bool,
) -> None:
    """Compare B against baseline A, metric by metric.

    \b
    Examples:
      infprof compare runs/base runs/cand --metric ttft_p99:10%
      infprof compare runs/base-rep runs/cand-rep --metric tpot_p50:5%   # directories of repeats
      infprof compare runs/a1 runs/a2 runs/a3 --vs runs/b1 runs/b2 runs/b3
      infprof compare runs/base runs/cand --metric ttft_p50:5% --min-effect 10%   # one run each
    """
    from profiler.analysis.compare import compare_runs
    from profiler.analysis.compare_metrics import parse_fraction, parse_metric_options

    if vs:
        side_a, side_b = list(runs), list(vs)
    elif len(runs) == 2:
        side_a, side_b = [runs[0]], [runs[1]]
    else:
        raise SpecError(
            f"compare takes A and B, got {len(runs)} path{'' if len(runs) == 1 else 's'} "
            "without --vs",
            "infprof compare A B, or infprof compare A1 A2 --vs B1 B2",
        )
    gates = parse_metric_options(metrics)
    result = compare_runs(
        side_a,
        side_b,
        gates=gates,
        resamples=resamples,
        confidence=confidence,
        seed=seed,
        slo=slo,
        min_effect=parse_fraction("--min-effect", min_effect) if min_effect is not None else None,
    )
    if as_json:
        click.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        _render(result)
    if result.regressions:
        details = ", ".join(_describe(result, name) for name in result.regressions)
        raise RegressionDetected(
            f"regression in {details}", "investigate B, or relax the --metric threshold"
        )


def _describe(result: Any, name: str) -> str:
    d = next(m for m in result.metrics if m.name == name)
    rel = f"{d.relative:+.1%}" if d.relative is not None else f"{d.delta:+.4g}"
    return f"{name} {rel} (threshold {max(d.threshold, result.min_effect or 0.0):g})"


_STYLE = {"regression": "bold red", "worse": "yellow", "better": "green"}


def _verdict_style(header: str, cell: str) -> str | None:
    return _STYLE.get(cell) if header == "verdict" else None


def _render(result: Any) -> None:
    from rich.console import Console
    from rich.markup import escape

    from profiler.cli.render import print_table
    from profiler.report import tables

    console = Console()
    if not console.is_terminal:
        console = Console(width=180)
    na, nb = len(result.runs_a), len(result.runs_b)
    console.print(
        f"A (baseline): {escape(result.a)} ({na} run{'s' if na > 1 else ''})\n"
        f"B:            {escape(result.b)} ({nb} run{'s' if nb > 1 else ''})"
    )
    print_table(console, tables.comparison(result), _verdict_style, no_wrap=True)
    if result.slo is None:
        console.print("slo_met_rps, slo_attainment: no SLO in A's or B's spec (pass --slo)")
    if result.interval == "hierarchical":
        how = (
            f"hierarchical bootstrap ({na} runs of A, {nb} of B drawn with replacement, then "
            "requests within each run): the intervals cover run-to-run and within-run noise"
        )
    else:
        how = (
            "within-run bootstrap (requests of one run): the intervals cover within-run noise only"
        )
    console.print(f"intervals: {how}; {result.resamples} resamples, seed {result.seed}")
    if result.note:
        console.print(f"[yellow]note:[/] {escape(result.note)}")
