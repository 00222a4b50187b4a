"""``infprof sweep``: a grid of server configurations x load levels x workloads (or an SLO
search per configuration), one run directory per point, resumable."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import click

from profiler.cli import options
from profiler.errors import SpecError
from profiler.spec import TARGET_FRACTION


def _list(kind: type, name: str, text: str | None) -> list[Any] | None:
    if text is None:
        return None
    out: list[Any] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(kind(part))
        except ValueError:
            raise SpecError(
                f"{name}: '{part}' is not a {kind.__name__}", f"e.g. {name} 1,2,4"
            ) from None
    if not out:
        raise SpecError(f"{name}: no values", f"e.g. {name} 1,2,4")
    return out


def _ep_list(text: str | None) -> list[bool] | None:
    if text is None:
        return None
    words = {"on": True, "off": False, "1": True, "0": False, "true": True, "false": False}
    out = []
    for part in text.split(","):
        if part.strip().lower() not in words:
            raise SpecError(f"--ep: '{part}' is not on/off", "e.g. --ep off,on")
        out.append(words[part.strip().lower()])
    return out


@click.command("sweep")
@options.model
@click.option(
    "--endpoint", help="Sweep loads against this running server (no relaunch; grid flags ignored)."
)
@options.endpoint
@click.option("--tp", help="Tensor-parallel sizes, e.g. 1,2.")
@click.option("--pp", help="Pipeline-parallel sizes.")
@click.option("--dp", help="Data-parallel sizes.")
@click.option("--ep", help="Expert parallelism: off, on or off,on.")
@click.option("--max-num-seqs", help="vLLM --max-num-seqs values, e.g. 8,16.")
@click.option("--max-num-batched-tokens", help="vLLM --max-num-batched-tokens values.")
@options.serve_arg
@click.option("--concurrency", help="Closed-loop load levels, e.g. 1,4,16.")
@click.option("--rate", help="Open-loop load levels in requests/s, e.g. 1,2,4.")
@options.shown("--arrival", click.Choice(["constant", "poisson", "gamma"]), "poisson")
@click.option(
    "--workload",
    "workloads",
    multiple=True,
    help="Workload name or YAML file (repeatable; default: default).",
)
@options.load
@options.slo
@click.option(
    "--search",
    type=click.Choice(["slo"]),
    help="Search the goodput per configuration: the highest rate meeting the SLOs (needs --slo).",
)
@click.option(
    "--target-fraction",
    type=click.FloatRange(0, 1, min_open=True),
    default=TARGET_FRACTION,
    show_default=True,
    callback=options.given_only,
    help="Share of requests that must meet the SLOs (as fraction= in --slo).",
)
@options.shown("--start-rate", options.POSITIVE, 1.0)
@options.shown("--tolerance", click.FloatRange(0, 1, min_open=True, max_open=True), 0.05)
@options.shown("--max-probes", click.IntRange(min=2), 12)
@click.option("--max-rate", type=options.POSITIVE, help="Never probe above this rate.")
@options.window
@options.server
@options.timeouts
@options.telemetry
@click.option(
    "--gpus",
    metavar="IDS",
    help="The servers' GPUs: NVML indices or UUIDs, comma separated (as `infprof run --gpus`).",
)
@options.seed
@options.shown(
    "--repeat",
    options.COUNT,
    1,
    "Runs per point (runs/<point>/rep-01..); the index keeps each and their median and spread.",
)
@options.out_dir("Sweep directory (default runs/sweep-<time>).")
@click.option(
    "--resume",
    type=click.Path(path_type=Path, file_okay=False),
    help="Continue an interrupted sweep.",
)
@click.option("--retry-failed", is_flag=True, help="On resume, rerun failed points too.")
@options.executor(
    "Where points run: here, one after another (local), or as Ray tasks on a Ray "
    "cluster, in parallel as its GPUs allow, each launching its server on its node (ray)."
)
@options.ray_address
@options.shown(
    "--max-node-retries",
    click.IntRange(min=0),
    2,
    "With --executor ray: reruns of a point whose node was lost mid-run.",
)
@options.output
@click.option("--json", "as_json", is_flag=True, help="Print index.json at the end.")
@options.quiet
def command(**o: Any) -> None:
    """Run a grid of server configurations x loads x workloads, or an SLO search.

    Each point is one run: the load, SLO, server and telemetry options mean what they mean
    for `infprof run`, for every point.

    \b
    Examples:
      infprof sweep --max-num-seqs 4,16 --concurrency 1,4,16 --num-requests 40
      infprof sweep --model meta-llama/Llama-3.1-8B-Instruct --tp 1,2 --rate 1,2,4,8 --duration 60
      infprof sweep --endpoint http://127.0.0.1:8000 --search slo --slo ttft=0.5,tpot=0.05
      infprof sweep --resume runs/sweep-20250101-120000
      infprof sweep --executor ray --ray-address HEAD:6379 --tp 1,2 --rate 1,2,4 --duration 60
    """
    from profiler.sweep.execute import SweepHooks, run_sweep
    from profiler.sweep.sweep_dir import prepare_sweep_dir

    resume: Path | None = o["resume"]
    if o["executor"] == "ray" and o["gpus"] is not None:
        raise SpecError(
            "--gpus cannot be used with --executor ray (Ray gives each point its GPUs)",
            "drop --gpus, or use --executor local",
        )
    spec = spec_from_params(o)
    sweep_dir = resume or o["out"] or Path("runs") / spec.sweep_id
    quiet = o["quiet"]
    status = None if quiet else (lambda m: click.echo(f"infprof: {m}", err=True))
    from profiler.sweep.ray_executor import make_executor

    # the cluster is joined first: without one, nothing is written
    executor = make_executor(
        o["executor"], sweep_dir, o["ray_address"], o["max_node_retries"], status
    )
    spec = prepare_sweep_dir(spec, sweep_dir, resume=resume is not None)
    if status and resume is not None:
        status(f"resuming sweep {sweep_dir}")
    hooks = SweepHooks(on_status=status, before_point=_arm_sigterm, executor=executor)
    _arm_sigterm()
    data = run_sweep(spec, sweep_dir, hooks, retry_failed=o["retry_failed"])
    if o["as_json"]:
        click.echo(json.dumps(data, indent=2))
    else:
        render_index(data, sweep_dir)
    if o["write_report"]:
        from profiler.report import write_html_and_markdown

        click.echo(f"report: {write_html_and_markdown([sweep_dir])}")


# options a SweepSpec field takes as they are: by the same name, or with its unit
_SAME_NAME = (
    "model",
    "endpoint",
    "api_key_env",
    "arrival",
    "num_requests",
    "input_len",
    "output_len",
    "search",
    "start_rate",
    "tolerance",
    "max_probes",
    "max_rate",
    "seed",
    "repeat",
    "max_model_len",
    "gpu_memory_utilization",
    "load_format",
    "dtype",
)
_SECONDS = {
    "duration": "duration_s",
    "warmup": "warmup_s",
    "cooldown": "cooldown_s",
    "request_timeout": "request_timeout_s",
    "ready_timeout": "ready_timeout_s",
}


def spec_from_params(o: dict[str, Any]) -> Any:
    """The SweepSpec of ``infprof sweep``'s parsed options."""
    from pydantic import ValidationError

    from profiler.sweep.spec import SweepGrid, SweepSpec

    if o["resume"] is not None:  # the saved spec is used; a placeholder passes validation
        return SweepSpec(sweep_id=Path(o["resume"]).name, loads=[1])
    conc, rate = _list(int, "--concurrency", o["concurrency"]), _list(float, "--rate", o["rate"])
    if conc and rate:
        raise SpecError(
            "--concurrency and --rate are both given", "sweep one kind of load at a time"
        )
    grid_flags = {
        "tp": _list(int, "--tp", o["tp"]),
        "pp": _list(int, "--pp", o["pp"]),
        "dp": _list(int, "--dp", o["dp"]),
        "ep": _ep_list(o["ep"]),
        "max_num_seqs": _list(int, "--max-num-seqs", o["max_num_seqs"]),
        "max_num_batched_tokens": _list(
            int, "--max-num-batched-tokens", o["max_num_batched_tokens"]
        ),
    }
    grid: dict[str, Any] = {k: v for k, v in grid_flags.items() if v is not None}
    if o["endpoint"] and (grid or o["serve_arg"]):
        click.echo("infprof: --endpoint given: server configuration flags are ignored", err=True)
        grid = {}
    sweep_id = (o["out"].name if o["out"] else None) or f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    gpus = None
    if o["gpus"] is not None:  # a GPU this host lacks fails now, not at the first point
        from profiler.telemetry.gpu_scope import check_here, parse_ids

        check_here(o["gpus"])
        gpus = parse_ids(o["gpus"])
    tokenizer = None
    if o["tokenizer"]:
        from profiler.run_server import check_tokenizer

        tokenizer = check_tokenizer(o["tokenizer"])
    try:
        return SweepSpec(
            **{k: o[k] for k in _SAME_NAME},
            **{field: o[k] for k, field in _SECONDS.items()},
            sweep_id=sweep_id,
            tokenizer=tokenizer,
            grid=SweepGrid(**grid),
            serve_args=list(o["serve_arg"]) if not o["endpoint"] else [],
            load_kind="rate" if rate else "concurrency",
            loads=[float(v) for v in (rate or conc or [])],
            workloads=list(o["workloads"]) or ["default"],
            slo=_slo(o["slo"], o["target_fraction"]),
            sample_interval_s=None if o["no_telemetry"] else o["sample_interval"],
            gpus=gpus,
        )
    except ValidationError as e:
        raise SpecError.from_validation(
            e, "sweep options: {field}{reason}", "see `infprof sweep --help`"
        ) from None


def _slo(slo: Any, target_fraction: float | None) -> Any:
    """``--slo`` with ``--target-fraction`` (given once: in either, or the same in both)."""
    if target_fraction is None:
        return slo
    if "target_fraction" in slo.model_fields_set and slo.target_fraction != target_fraction:
        raise SpecError(
            f"--target-fraction {target_fraction:g} and --slo fraction={slo.target_fraction:g} "
            "disagree",
            "give the fraction once: --target-fraction F, or fraction=F in --slo",
        )
    return slo.model_copy(update={"target_fraction": target_fraction})


def _raise_interrupt(_sig: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _arm_sigterm() -> None:
    """SIGTERM stops the sweep like Ctrl-C (servers stopped, index saved). The runner swaps
    in its own handler during a load and restores the default after, so re-arm per point."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)


def _failed_in_red(header: str, cell: str) -> str | None:
    return "red" if header == "status" and cell not in ("done", "-") else None


def render_index(data: dict[str, Any], sweep_dir: Path) -> None:
    """The sweep's configurations, points, SLO searches and knees (report.tables' tables, the
    same the report shows)."""
    from rich.console import Console

    from profiler.cli.render import print_table
    from profiler.report import tables

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(f"sweep {data.get('sweep_id')} ({data.get('status')})")
    if data.get("configs"):
        print_table(console, tables.sweep_configurations(data))
    print_table(console, tables.sweep_points(data), _failed_in_red)
    reps = max((len(p.get("repeats") or []) for p in data["points"]), default=0)
    if reps > 1:
        console.print(
            f"points run {reps} times: figures are the median across repeats "
            "(index.json keeps each repeat and the spread under across_repeats)"
        )
    if data.get("searches"):
        print_table(console, tables.sweep_searches(data["searches"]))
    if data.get("knees"):
        print_table(console, tables.sweep_knees(data["knees"]))
    console.print(f"sweep directory: {sweep_dir}")
