"""``infprof exporter``: a per-node Prometheus exporter for GPU (NVML) and host metrics.

Long-running: samples every ``--interval`` seconds and serves ``/metrics`` until SIGINT or
SIGTERM (then exits 0). ``--once`` prints one exposition to stdout (or ``--textfile``) and
exits. Logs go to stderr.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from profiler.cli.options import shown
from profiler.metrics.node import NodeConfig


@click.command("exporter")
@shown(
    "--port",
    click.IntRange(0, 65535),
    9400,
    "Port for /metrics (0 picks a free one; 9400 is dcgm-exporter's).",
)
@shown("--host", None, "127.0.0.1", "Address to bind; 0.0.0.0 to let a remote Prometheus scrape.")
@shown("--interval", click.FloatRange(min=0.1), 1.0, "Sampling period in seconds.")
@click.option(
    "--dcgm-compatible",
    is_flag=True,
    help="Also expose dcgm-exporter's names and units (DCGM_FI_*).",
)
@shown(
    "--dcgm-hostname-label",
    click.Choice(["Hostname", "hostname"]),
    "Hostname",
    "Hostname label name on DCGM_FI_* series (dcgm-exporter renamed it in 2026).",
)
@click.option("--hostname", help="Value of the hostname label (default: this machine's hostname).")
@click.option("--per-core", is_flag=True, help="Also export CPU utilization per core.")
@click.option(
    "--textfile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the metrics to this .prom file every interval (node-exporter textfile collector).",
)
@click.option(
    "--once", is_flag=True, help="Take one reading, print it (or write --textfile) and exit."
)
@click.option(
    "--gpus",
    metavar="IDS",
    help="Export only these GPUs: NVML indices or UUIDs, comma separated (default: all).",
)
def command(
    port: int,
    host: str,
    interval: float,
    dcgm_compatible: bool,
    dcgm_hostname_label: str,
    hostname: str | None,
    per_core: bool,
    textfile: Path | None,
    once: bool,
    gpus: str | None,
) -> None:
    """Per-node Prometheus exporter for GPU and host metrics (no load)."""
    from profiler.metrics import node
    from profiler.telemetry.gpu_scope import parse_ids

    cfg = NodeConfig(
        host=host,
        port=port,
        interval_s=interval,
        dcgm_compatible=dcgm_compatible,
        dcgm_hostname_label=dcgm_hostname_label,
        hostname=hostname,
        per_core=per_core,
        textfile=textfile,
        gpus=None if gpus is None else tuple(parse_ids(gpus) or ()),
    )
    if once:
        text, nvml_reason = node.once(cfg)
        if nvml_reason is not None:
            click.echo(f"infprof exporter: no GPU metrics: {nvml_reason}", err=True)
        if textfile is None:
            sys.stdout.write(text.decode())
        return

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with node.NodeExporter(cfg) as exp:
            if exp.nvml_reason is not None:
                click.echo(
                    f"infprof exporter: no GPU metrics: {exp.nvml_reason}; serving host metrics only",
                    err=True,
                )
            exp.start()
            assert exp.handle is not None
            gpus = f"{exp.gpu_count} GPU(s)" if exp.nvml_reason is None else "no GPUs"
            click.echo(
                f"infprof exporter: serving {exp.handle.url} ({gpus}, hostname={exp.hostname}, every {interval:g} s)",
                err=True,
            )
            exp.run_until(stop)
            click.echo("infprof exporter: stopping", err=True)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
