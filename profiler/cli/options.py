"""The options ``infprof run`` and ``infprof sweep`` share, declared once (a sweep point is one
run: these options mean the same for each point). Each group is a decorator; ``--slo`` is
parsed here, at the CLI edge, into a ``SloSpec`` (also compare's and plan's)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]

POSITIVE = click.FloatRange(min=0, min_open=True)
SECONDS = click.FloatRange(min=0)
COUNT = click.IntRange(min=1)


def group(*options: Decorator[Any]) -> Decorator[F]:
    """One decorator applying ``options`` in the order given (as stacked, top first)."""

    def apply(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


def shown(name: str, type_: Any, default: Any, help_text: str | None = None) -> Decorator[Any]:
    """An option whose default ``--help`` shows."""
    return click.option(name, type=type_, default=default, show_default=True, help=help_text)


def executor(help_text: str) -> Decorator[Any]:
    """``--executor``: where a run's (a sweep's points') work runs."""
    return shown("--executor", click.Choice(["local", "ray"]), "local", help_text)


def given_only(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """The value when given on the command line (or the environment), else ``None``: the
    default ``--help`` shows is then applied where it is defined."""
    from click.core import ParameterSource

    source = ctx.get_parameter_source(param.name or "")
    return None if source in (None, ParameterSource.DEFAULT) else value


def parse_slo(_ctx: click.Context, _param: click.Parameter, text: str | None) -> Any:
    """``--slo`` as a ``SloSpec`` (unset: no SLO); a bad value fails in one line. The one
    parser of every command's ``--slo``."""
    from profiler.spec import SloSpec

    return SloSpec.parse(text)


def parse_slo_if_given(ctx: click.Context, param: click.Parameter, text: str | None) -> Any:
    """``parse_slo``, but None when --slo is not given (the command then takes the SLO from
    elsewhere: compare, from A's run spec)."""
    return parse_slo(ctx, param, text) if text else None


MODEL_HELP = (
    "Model path or name to serve (default: an embedded model made offline, served with "
    "dummy weights: the tiny model on a CPU machine, the Llama-3.1-8B or -3.2-1B shape on a GPU)."
)

model = click.option("--model", help=MODEL_HELP)

endpoint: Decorator[Any] = group(
    click.option(
        "--api-key-env", metavar="NAME", help="Environment variable holding the endpoint's API key."
    ),
    click.option(
        "--tokenizer",
        metavar="PATH",
        help="tokenizer.json (or a model directory holding one) to count streamed tokens with "
        "when the server reports no per-chunk usage (default: the launched model's own, if local).",
    ),
)

load: Decorator[Any] = group(
    click.option("--num-requests", type=COUNT, help="Requests to send."),
    click.option("--duration", type=POSITIVE, help="Seconds of load (stops dispatching after)."),
    click.option("--input-len", type=COUNT, help="Fixed prompt length in tokens."),
    click.option("--output-len", type=COUNT, help="Fixed output length in tokens."),
)

slo = click.option(
    "--slo",
    callback=parse_slo,
    help="Latency SLOs in seconds, e.g. ttft=0.5,tpot=0.05,e2e=10.",
)

window: Decorator[Any] = group(
    click.option("--warmup", type=SECONDS, default=0.0, help="Seconds excluded at the start."),
    click.option("--cooldown", type=SECONDS, default=0.0, help="Seconds excluded at the end."),
)

server: Decorator[Any] = group(
    click.option("--max-model-len", type=COUNT),
    click.option("--gpu-memory-utilization", type=click.FloatRange(0, 1, min_open=True)),
    click.option("--load-format", help="vLLM --load-format (e.g. dummy for random weights)."),
    click.option("--dtype", help="vLLM --dtype."),
)

serve_arg = click.option(
    "--serve-arg",
    multiple=True,
    help="Extra vLLM argument, repeatable (e.g. --serve-arg=--enable-prefix-caching).",
)

timeouts: Decorator[Any] = group(
    shown("--ready-timeout", click.FloatRange(min=1), 600.0),
    shown("--request-timeout", click.FloatRange(min=0.1), 600.0),
)

telemetry: Decorator[Any] = group(
    shown("--sample-interval", click.FloatRange(min=0.01), 0.5, "Telemetry period in seconds."),
    click.option(
        "--no-telemetry", is_flag=True, help="Sample nothing (no NVML, host or /metrics)."
    ),
)

seed = shown("--seed", int, 0)

ray_address = click.option(
    "--ray-address",
    metavar="HOST:PORT",
    help="The Ray cluster to join (default: RAY_ADDRESS, else the cluster this node joined).",
)

output: Decorator[Any] = group(
    click.option(
        "--report", "write_report", is_flag=True, help="Write the HTML/Markdown report at the end."
    ),
)

quiet = click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")


def out_dir(help_text: str, default: Path | None = None) -> Decorator[Any]:
    """``--out``: run ``runs/`` by default, a sweep ``runs/sweep-<time>``."""
    return click.option(
        "--out",
        type=click.Path(path_type=Path),
        default=default,
        show_default=default is not None,
        help=help_text,
    )
