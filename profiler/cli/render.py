"""Human rendering shared by commands: the run summary table and the stderr progress line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from profiler.load.driver import Progress


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.1f}"


def _num(v: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def render_summary(
    summary: dict[str, Any], run_dir: Path | None = None, console: Console | None = None
) -> None:
    console = console or Console()
    req, thr, lat = summary["requests"], summary["throughput"], summary["latency"]
    head = Table(title=f"infprof run {summary['run_id']}", show_header=False, box=None)
    head.add_row(
        "requests",
        f"{req['total']} total, {req['ok']} ok, {req['error']} error, {req['timeout']} timeout, {req['cancelled']} cancelled",
    )
    head.add_row("window", f"{summary['window']['seconds']:.2f} s")
    head.add_row(
        "throughput",
        f"{_num(thr['requests_per_s'])} req/s, {_num(thr['output_tokens_per_s'], '{:.1f}')} output tok/s, "
        f"{_num(thr['total_tokens_per_s'], '{:.1f}')} total tok/s",
    )
    gp = summary.get("goodput") or {}
    if gp.get("slo"):
        head.add_row(
            "goodput",
            f"{_num(gp['requests_per_s'])} req/s meeting the SLOs ({_num(gp['fraction'], '{:.1%}')})",
        )
    console.print(head)
    t = Table(title="latency (ms)")
    t.add_column("metric")
    for c in ("count", "mean", "p50", "p90", "p95", "p99", "max"):
        t.add_column(c, justify="right")
    for key, label in (
        ("ttft_s", "TTFT"),
        ("tpot_s", "TPOT"),
        ("itl_s", "ITL"),
        ("e2e_s", "E2E"),
        ("ttft_from_intended_s", "TTFT from intended start"),
    ):
        d = lat.get(key)
        if d is None:
            continue
        t.add_row(
            label,
            str(d["count"]),
            *(_ms(d[q]) for q in ("mean", "p50", "p90", "p95", "p99", "max")),
        )
    console.print(t)
    client = summary.get("client") or {}
    if client.get("saturated"):
        console.print(
            f"[bold red]client saturated[/]: {client.get('reason')} (latencies include client delay)"
        )
    for section in ("gpu", "energy"):
        s = summary.get(section)
        if isinstance(s, dict) and s.get("available") is False:
            console.print(f"{section}: not available ({s.get('reason')})")
    gpu = summary.get("gpu")
    if isinstance(gpu, dict) and gpu.get("available"):
        console.print(
            f"gpu: utilization mean {_num(gpu.get('utilization_mean_ratio'), '{:.0%}')}, "
            f"peak memory {_num((gpu.get('memory_used_peak_bytes') or 0) / 2**30, '{:.1f}')} GiB"
        )
    energy = summary.get("energy")
    if isinstance(energy, dict) and energy.get("available"):
        console.print(
            f"energy: {_num(energy.get('joules'), '{:.0f}')} J, {_num(energy.get('joules_per_output_token'), '{:.3f}')} J/token"
        )
    for line in roofline_lines(summary.get("roofline")):
        console.print(line, highlight=False)
    if run_dir is not None:
        console.print(f"run directory: {run_dir}")


def roofline_lines(r: Any) -> list[str]:
    """The roofline of summary.json in two lines (or why there is none)."""
    if not isinstance(r, dict):
        return []
    if not r.get("available"):
        return [f"roofline: not available ({r.get('reason')})"]
    hw, m, d, run, frac = r["hardware"], r["model"], r["decode"], r["run"], r["fraction"]
    placeholder = " (placeholder entry)" if hw.get("placeholder") else ""
    return [
        f"roofline: {m['name']} ({m['weight_dtype']}) on {hw['gpu']}{placeholder}, batch "
        f"{r['batch']:.1f}: decode <= {d['tokens_per_s_bound']:,.0f} tok/s "
        f"({hw['hbm_bytes_per_s'] / 1e12:g} TB/s over {d['bytes_per_step'] / 1e9:,.3g} GB per "
        f"step), run <= {run['output_tokens_per_s_bound']:,.0f} output tok/s ({run['bound_by']})",
        f"roofline: measured {_num(r['measured']['output_tokens_per_s'], '{:,.1f}')} output "
        f"tok/s = {_num(frac['run'], '{:.1%}')} of the run bound, "
        f"{_num(frac['decode'], '{:.1%}')} of the decode bound",
    ]


def progress_printer(planned: int | None) -> Callable[[Progress], None]:
    """A callback printing one progress line to stderr."""

    def show(p: Progress) -> None:
        tok_s = p.output_tokens / p.elapsed_s if p.elapsed_s > 0 else 0.0
        total = f"/{planned}" if planned else ""
        click.echo(
            f"[{p.elapsed_s:7.1f}s] {p.done}{total} done, {p.inflight} in flight, "
            f"{p.failed} failed, {tok_s:,.0f} output tok/s",
            err=True,
        )

    return show
