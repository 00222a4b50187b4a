"""``infprof compare A B``: per-metric deltas of run B against baseline A, with bootstrap
confidence intervals; exit 7 when a gated metric regresses beyond its threshold."""

from __future__ import annotations

import json
from pathlib import Path

import click

from profiler.errors import RegressionDetected

METRIC_HELP = (
    "Gate on a metric: NAME[:THRESHOLD], repeatable. THRESHOLD is relative to A (0.1 or 10%; "
    "default 5%), absolute for error_rate. Names: ttft_p50, ttft_p99, tpot_p50, tpot_p99, "
    "itl_p50, e2e_p50, e2e_p99, output_tokens_per_s, requests_per_s, error_rate, goodput_rps, "
    "goodput_fraction."
)


@click.command(
    "compare",
    epilog="Exit codes: 0 no gated metric regressed; 7 a gated metric regressed (CI of the "
    "delta excludes 0 and the change exceeds the threshold); 2 bad input; 5 unreadable run.",
)
@click.argument("a", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("b", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--metric", "metrics", multiple=True, metavar="NAME[:THRESHOLD]", help=METRIC_HELP)
@click.option(
    "--slo", default=None, help="SLO for goodput, ttft=S,tpot=S,e2e=S (default: A's run spec)."
)
@click.option("--resamples", default=1000, show_default=True, help="Bootstrap resamples.")
@click.option(
    "--confidence", default=0.95, show_default=True, help="Confidence level of the intervals."
)
@click.option("--seed", default=0, show_default=True, help="Bootstrap seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def command(
    a: Path,
    b: Path,
    metrics: tuple[str, ...],
    slo: str | None,
    resamples: int,
    confidence: float,
    seed: int,
    as_json: bool,
) -> None:
    """Compare run B against baseline run A, metric by metric."""
    from profiler.analysis.compare import compare_runs, parse_metric_options
    from profiler.spec import SloSpec

    gates = parse_metric_options(metrics)
    result = compare_runs(
        a,
        b,
        gates=gates,
        resamples=resamples,
        confidence=confidence,
        seed=seed,
        slo=SloSpec.parse(slo) if slo else None,
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


def _describe(result: object, name: str) -> str:
    from profiler.analysis.compare import CompareResult

    assert isinstance(result, CompareResult)
    d = next(m for m in result.metrics if m.name == name)
    rel = f"{d.relative:+.1%}" if d.relative is not None else f"{d.delta:+.4g}"
    return f"{name} {rel} (threshold {d.threshold:g})"


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "s":
        return f"{v * 1000:.1f} ms" if abs(v) < 1 else f"{v:.3f} s"
    if unit == "":
        return f"{v:.2%}"
    return f"{v:.4g} {unit}"


def _render(result: object) -> None:
    from rich.console import Console
    from rich.table import Table

    from profiler.analysis.compare import CompareResult

    assert isinstance(result, CompareResult)
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    console.print(f"A (baseline): {result.a}\nB:            {result.b}")
    table = Table()
    for col in ("metric", "A", "B", "B - A", f"{result.confidence:.0%} CI of B - A", "verdict"):
        table.add_column(
            col, justify="left" if col in ("metric", "verdict") else "right", no_wrap=True
        )
    style = {"regression": "bold red", "worse": "yellow", "better": "green"}
    for d in result.metrics:
        ci = "-" if d.ci_low is None else f"[{_fmt(d.ci_low, d.unit)}, {_fmt(d.ci_high, d.unit)}]"
        delta = _fmt(d.delta, d.unit)
        if d.relative is not None:
            delta += f" ({d.relative:+.1%})"
        name = f"{d.name} (gate {d.threshold:g})" if d.gated and d.threshold is not None else d.name
        verdict = f"[{style[d.verdict]}]{d.verdict}[/]" if d.verdict in style else d.verdict
        table.add_row(name, _fmt(d.a, d.unit), _fmt(d.b, d.unit), delta, ci, verdict)
    console.print(table)
    if result.slo is None:
        console.print("goodput: no SLO in A's or B's spec (pass --slo ttft=..,tpot=..)")
    console.print(f"bootstrap: {result.resamples} resamples, seed {result.seed}")
