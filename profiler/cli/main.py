"""The ``infprof`` Click group. Commands live one per module in ``profiler.cli`` and are
imported only when invoked, so ``infprof --help`` stays fast and nothing heavy loads early."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

from profiler import __version__
from profiler.errors import EXIT_INTERNAL, InfprofError

# every option can also come from INFPROF_<COMMAND>_<OPTION> (INFPROF_RUN_NUM_REQUESTS=50)
ENV_PREFIX = "INFPROF"

# command name -> module under profiler.cli exposing ``command``
COMMANDS: dict[str, str] = {
    "run": "run",
    "workloads": "workloads",
    "model": "model",
    "gpus": "gpus",
    "exporter": "exporter",
    "report": "report",
    "compare": "compare",
    "sweep": "sweep",
    "plan": "plan",
}

HELP = {
    "run": "Run one load test against a vLLM server it launches, or an endpoint.",
    "workloads": "List the shipped workloads.",
    "model": "Make the embedded default model (tiny Llama) offline.",
    "gpus": "Show GPU inventory and topology (NVML).",
    "exporter": "Per-node Prometheus exporter for GPU and host metrics.",
    "report": "Summarise runs or sweeps into HTML + Markdown reports.",
    "compare": "Compare two runs metric by metric; gate regressions.",
    "sweep": "Run a grid of server configurations x loads, or an SLO search.",
    "plan": "Size a fleet: GPUs, nodes and interconnect for a target load.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        mod = COMMANDS.get(name)
        if mod is None:
            return None
        return importlib.import_module(f"profiler.cli.{mod}").command  # type: ignore[no-any-return]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, HELP.get(name, "")) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InfprofError as e:
            click.echo(f"infprof: error: {e.one_line()}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("infprof: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="infprof")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """infprof: measure LLM inference throughput, latency, GPUs and interconnect; plan fleets."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    if os.environ.get("INFPROF_LOG"):
        level = getattr(logging, os.environ["INFPROF_LOG"].upper(), level)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )


def main() -> None:
    try:
        cli.main(prog_name="infprof", standalone_mode=True, auto_envvar_prefix=ENV_PREFIX)
    except SystemExit:
        raise
    except Exception as e:  # a bug: one line, and the traceback only with -vv
        if os.environ.get("INFPROF_DEBUG"):
            raise
        click.echo(
            f"infprof: internal error: {type(e).__name__}: {e} (rerun with INFPROF_DEBUG=1 for the traceback)",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)
