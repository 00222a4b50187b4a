"""Human rendering shared by commands: the run summary table and the progress on stderr (a
rich progress bar on a terminal, a line every few seconds otherwise)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from profiler.load.driver import Progress
from profiler.report import doc, tables
from profiler.report.fmt import client_health_rows, num
from profiler.store.schema import slo_attainment_of

_NUMBER = re.compile(r"[-+$\[]*[0-9]|-?$")  # a cell that reads as a number


def print_table(
    console: Console,
    table: doc.Table,
    style: Callable[[str, str], str | None] | None = None,
    title: str | None = None,
    no_wrap: bool = False,
) -> None:
    """Draw a result table of ``report.tables`` with rich: its caption as the title (or
    ``title``), a column of numbers right-aligned; ``style(header, cell)`` may colour a cell.
    Cells are plain text (no rich markup)."""
    t = Table(title=title if title is not None else table.caption)
    for i, h in enumerate(table.headers):
        numeric = any(r[i] not in ("", "-") for r in table.rows) and all(
            _NUMBER.match(r[i]) for r in table.rows
        )
        t.add_column(h, justify="right" if numeric else "left", no_wrap=no_wrap)
    for row in table.rows:
        t.add_row(
            *(
                Text(c, style=(style and style(h, c)) or "")
                for h, c in zip(table.headers, row, strict=True)
            )
        )
    console.print(t)


FROM = {"from_intended": "from the intended start", "from_send": "from the send"}


def _attainment(att: dict[str, Any]) -> str:
    """The headline figures, then the other measure's fraction (open loops have both)."""
    head = att.get("headline") or "from_send"
    text = (
        f"{num(att.get('fraction'), '{:.1%}')} of requests met every SLO {FROM[head]}, "
        f"{num(att.get('requests_per_s'), '{:.2f}')} req/s"
        f" ({'meets' if att.get('meets_target') else 'misses'} the target)"
    )
    other = att.get("from_send" if head == "from_intended" else "from_intended")
    if isinstance(other, dict):
        alt = "from_send" if head == "from_intended" else "from_intended"
        text += f"; {FROM[alt]}: {num(other.get('fraction'), '{:.1%}')}"
    return text


def render_summary(
    summary: dict[str, Any], run_dir: Path | None = None, console: Console | None = None
) -> None:
    console = console or Console()
    req, thr = summary["requests"], summary["throughput"]
    head = Table(title=f"infprof run {summary['run_id']}", show_header=False, box=None)
    head.add_row(
        "requests",
        f"{req['total']} total, {req['ok']} ok, {req['error']} error, {req['timeout']} timeout, {req['cancelled']} cancelled",
    )
    head.add_row("window", f"{summary['window']['seconds']:.2f} s")
    head.add_row(
        "throughput",
        f"{num(thr['requests_per_s'], '{:.2f}')} req/s, {num(thr['output_tokens_per_s'], '{:.1f}')} output tok/s, "
        f"{num(thr['total_tokens_per_s'], '{:.1f}')} total tok/s",
    )
    att = slo_attainment_of(summary)
    if att.get("slo"):
        head.add_row("SLO attainment", _attainment(att))
    console.print(head)
    print_table(console, tables.run_latency(summary))
    for line in error_lines(summary.get("errors")) + length_lines(summary.get("lengths")):
        console.print(line, highlight=False, markup=False)
    client = summary.get("client") or {}
    if client:
        health = Table(title="client health", show_header=False, box=None)
        for label, value in client_health_rows(client):
            health.add_row(label, value)
        console.print(health, highlight=False)
    if client.get("saturated"):
        console.print(
            f"[bold red]client saturated[/]: {client.get('reason')} (latencies include client delay)"
        )
    clock = summary.get("workers_clock") or {}
    if clock.get("warning"):
        console.print(f"[bold yellow]workers' clocks[/]: {clock['warning']}")
    for section in ("gpu", "energy"):
        s = summary.get(section)
        if isinstance(s, dict) and s.get("available") is False:
            console.print(f"{section}: not available ({s.get('reason')})")
    gpu = summary.get("gpu")
    if isinstance(gpu, dict) and gpu.get("available"):
        scope = gpu.get("scope") or {}
        which = ", ".join(scope.get("gpus") or []) or "all"
        console.print(
            f"gpu ({which}; {scope.get('method', 'all')}): "
            f"utilization mean {num(gpu.get('utilization_mean_ratio'), '{:.0%}')}, "
            f"peak memory {num((gpu.get('memory_used_peak_bytes') or 0) / 2**30, '{:.1f}')} GiB"
        )
    energy = summary.get("energy")
    if isinstance(energy, dict) and energy.get("available"):
        console.print(
            f"energy: {num(energy.get('joules'), '{:.0f}')} J, {num(energy.get('joules_per_output_token'), '{:.3f}')} J/token"
        )
    _render_nodes(summary.get("nodes"), console)
    for line in roofline_lines(summary.get("roofline")):
        console.print(line, highlight=False)
    if run_dir is not None:
        console.print(f"run directory: {run_dir}")


def error_lines(errors: Any) -> list[str]:
    """The most frequent error messages of summary.json with their counts."""
    top = (errors or {}).get("top") if isinstance(errors, dict) else None
    if not top:
        return []
    more = errors.get("distinct", len(top)) - len(top)
    lines = ["errors (most frequent first):"]
    lines += [f"  {e['count']:>6}x  {e['message']}" for e in top]
    if more > 0:
        lines.append(f"  ... and {more} other messages (requests.parquet, column error)")
    return lines


def length_lines(lengths: Any) -> list[str]:
    """Requested against achieved prompt and output lengths, when they differ or were not
    enforced (a run whose lengths came out exactly as asked prints nothing)."""
    if not isinstance(lengths, dict):
        return []
    lines = []
    for key, label in (("prompt_tokens", "prompt"), ("output_tokens", "output")):
        p = lengths.get(key) or {}
        if not p.get("requests") or p.get("exact") == p.get("requests"):
            continue
        lines.append(
            f"{label} tokens: requested mean {num(p['requested_mean'], '{:.1f}')}, achieved "
            f"mean {num(p['achieved_mean'], '{:.1f}')} ({p['exact']} of {p['requests']} exact)"
        )
    if lengths.get("not_enforced_requests"):
        lines.append(
            f"output lengths not enforced for {lengths['not_enforced_requests']} requests: the "
            "server refuses ignore_eos/min_tokens, so max_tokens only bounds them"
        )
    return lines


def _render_nodes(nodes: Any, console: Console) -> None:
    """The per-node lines of a --prometheus-url run (nothing for a single-machine run)."""
    from profiler.analysis.node_summary import NO_URL

    if not isinstance(nodes, dict) or nodes.get("reason") == NO_URL:
        return
    if not nodes.get("available"):
        console.print(f"nodes: not available ({nodes.get('reason')})")
        return
    src = "a sampler on each Ray node" if nodes.get("source") == "ray" else "Prometheus"
    t = Table(title=f"nodes (from {src})")
    t.add_column("node")
    for c in ("GPUs", "util mean", "power W", "energy J", "J/token"):
        t.add_column(c, justify="right")
    for name, r in (nodes.get("per_node") or {}).items():
        t.add_row(
            name,
            str(r.get("gpu_count", 0)),
            num(r.get("utilization_mean_ratio"), "{:.0%}"),
            num(r.get("power_mean_watts"), "{:,.0f}"),
            num(r.get("energy_joules"), "{:,.0f}"),
            num(r.get("energy_joules_per_output_token"), "{:.3f}"),
        )
    console.print(t)


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
        f"roofline: measured {num(r['measured']['output_tokens_per_s'], '{:,.1f}')} output "
        f"tok/s = {num(frac['run'], '{:.1%}')} of the run bound, "
        f"{num(frac['decode'], '{:.1%}')} of the decode bound",
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


def _rate(p: Progress) -> str:
    tok_s = p.output_tokens / p.elapsed_s if p.elapsed_s > 0 else 0.0
    return f"{p.inflight} in flight, {p.failed} failed, {tok_s:,.0f} output tok/s"


class ProgressBar:
    """A rich progress bar on stderr, one per load run (a run of ``--repeat`` starts a new bar
    when the elapsed time goes back); ``close`` leaves the last state on the terminal."""

    def __init__(self, planned: int | None, console: Console | None = None) -> None:
        from rich import progress as rp

        self.planned = planned
        self.bar = rp.Progress(
            rp.TextColumn("load"),
            rp.BarColumn(),
            rp.MofNCompleteColumn(),
            rp.TimeElapsedColumn(),
            rp.TextColumn("{task.fields[detail]}"),
            console=console or Console(stderr=True),
        )
        self._task: Any = None
        self._elapsed_s = 0.0

    def __call__(self, p: Progress) -> None:
        if self._task is None:
            self.bar.start()
        if self._task is None or p.elapsed_s < self._elapsed_s:
            self._task = self.bar.add_task("load", total=self.planned or p.planned, detail="")
        self._elapsed_s = p.elapsed_s
        self.bar.update(self._task, completed=p.done, detail=_rate(p))

    def close(self) -> None:
        if self._task is not None:
            self.bar.stop()


@contextmanager
def progress_on_stderr(
    planned: int | None, quiet: bool = False, stream: IO[str] | None = None
) -> Iterator[Callable[[Progress], None] | None]:
    """The progress callback of a run: none when quiet, a rich bar when stderr is a terminal,
    else the periodic lines of ``progress_printer`` (logs and pipes keep plain lines)."""
    if quiet:
        yield None
        return
    stream = stream if stream is not None else sys.stderr
    if not stream.isatty():
        yield progress_printer(planned)
        return
    bar = ProgressBar(planned, Console(file=stream))
    try:
        yield bar
    finally:
        bar.close()


REPEAT_COLUMNS = (
    ("req/s", "requests_per_s", 1.0, "{:.2f}"),
    ("out tok/s", "output_tokens_per_s", 1.0, "{:.1f}"),
    ("TTFT p50 ms", "ttft_p50_s", 1000.0, "{:.1f}"),
    ("TPOT p50 ms", "tpot_p50_s", 1000.0, "{:.2f}"),
    ("E2E p50 ms", "e2e_p50_s", 1000.0, "{:.1f}"),
    ("E2E p99 ms", "e2e_p99_s", 1000.0, "{:.1f}"),
)


def render_repeats(data: dict[str, Any], parent: Path, console: Console | None = None) -> None:
    """``infprof run --repeat``: one row per repeat, then the median and the range across
    repeats (``repeats.json``)."""
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=120)
    t = Table(
        title=f"infprof run {data['run_id']}: {len(data['runs'])} of {data['repeat']} repeats"
    )
    t.add_column("repeat")
    t.add_column("ended")
    for label, *_ in REPEAT_COLUMNS:
        t.add_column(label, justify="right")
    for r in data["runs"]:
        k = r["summary"] or {}
        t.add_row(
            r["run_dir"],
            r["ended"],
            *(num(None if k.get(f) is None else k[f] * s, fmt) for _, f, s, fmt in REPEAT_COLUMNS),
        )
    across = data.get("across_repeats") or {}
    for row, stat in (("median", "median"), ("min", "min"), ("max", "max")):
        cells = []
        for _, f, s, fmt in REPEAT_COLUMNS:
            v = (across.get(f) or {}).get(stat)
            cells.append(num(None if v is None else v * s, fmt))
        t.add_row(row, "", *cells)
    console.print(t)
    if data.get("server"):
        console.print(f"one server for every repeat; log: {parent / data['server']['log']}")
    console.print(f"repeats: {parent} (compare with `infprof compare {parent} OTHER`)")
