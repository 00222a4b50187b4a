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

from profiler.errors import SpecError


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
@click.option("--model", help="Model to serve (default on a CPU machine: the tiny model).")
@click.option(
    "--endpoint", help="Sweep loads against this running server (no relaunch; grid flags ignored)."
)
@click.option(
    "--api-key-env", metavar="NAME", help="Environment variable holding the endpoint's API key."
)
@click.option(
    "--tokenizer",
    metavar="PATH",
    help="tokenizer.json (or a model directory holding one) to count streamed tokens with when "
    "the server reports no per-chunk usage (default: the launched model's own, if local).",
)
@click.option("--tp", help="Tensor-parallel sizes, e.g. 1,2.")
@click.option("--pp", help="Pipeline-parallel sizes.")
@click.option("--dp", help="Data-parallel sizes.")
@click.option("--ep", help="Expert parallelism: off, on or off,on.")
@click.option("--max-num-seqs", help="vLLM --max-num-seqs values, e.g. 8,16.")
@click.option("--max-num-batched-tokens", help="vLLM --max-num-batched-tokens values.")
@click.option(
    "--serve-arg", multiple=True, help="Extra vLLM argument for every configuration (repeatable)."
)
@click.option("--concurrency", help="Closed-loop load levels, e.g. 1,4,16.")
@click.option("--rate", help="Open-loop load levels in requests/s, e.g. 1,2,4.")
@click.option(
    "--arrival",
    type=click.Choice(["constant", "poisson", "gamma"]),
    default="poisson",
    show_default=True,
)
@click.option(
    "--workload",
    "workloads",
    multiple=True,
    help="Workload name or YAML file (repeatable; default: default).",
)
@click.option("--num-requests", type=click.IntRange(min=1), help="Requests per point.")
@click.option(
    "--duration", type=click.FloatRange(min=0, min_open=True), help="Seconds of load per point."
)
@click.option("--input-len", type=click.IntRange(min=1), help="Fixed prompt length in tokens.")
@click.option("--output-len", type=click.IntRange(min=1), help="Fixed output length in tokens.")
@click.option(
    "--slo",
    help="SLOs in seconds, e.g. ttft=0.5,tpot=0.05 (SLO attainment per point; needed by --search slo).",
)
@click.option(
    "--search",
    type=click.Choice(["slo"]),
    help="Search the goodput per configuration: the highest rate meeting the SLOs.",
)
@click.option(
    "--target-fraction", type=click.FloatRange(0, 1, min_open=True), default=0.9, show_default=True
)
@click.option(
    "--start-rate", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True
)
@click.option(
    "--tolerance",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
)
@click.option("--max-probes", type=click.IntRange(min=2), default=12, show_default=True)
@click.option(
    "--max-rate", type=click.FloatRange(min=0, min_open=True), help="Never probe above this rate."
)
@click.option(
    "--warmup",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds excluded at the start of each point.",
)
@click.option(
    "--cooldown",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds excluded at the end of each point.",
)
@click.option("--max-model-len", type=click.IntRange(min=1))
@click.option("--gpu-memory-utilization", type=click.FloatRange(0, 1, min_open=True))
@click.option("--load-format", help="vLLM --load-format.")
@click.option("--dtype", help="vLLM --dtype.")
@click.option("--ready-timeout", type=click.FloatRange(min=1), default=600.0, show_default=True)
@click.option("--request-timeout", type=click.FloatRange(min=0.1), default=600.0, show_default=True)
@click.option("--sample-interval", type=click.FloatRange(min=0.01), default=0.5, show_default=True)
@click.option("--no-telemetry", is_flag=True, help="Sample nothing.")
@click.option(
    "--gpus",
    metavar="IDS",
    help="The servers' GPUs: NVML indices or UUIDs, comma separated (as `infprof run --gpus`).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Runs per point (runs/<point>/rep-01..); the index keeps each and their median and spread.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), help="Sweep directory (default runs/sweep-<time>)."
)
@click.option(
    "--resume",
    type=click.Path(path_type=Path, file_okay=False),
    help="Continue an interrupted sweep.",
)
@click.option("--retry-failed", is_flag=True, help="On resume, rerun failed points too.")
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where points run: here, one after another (local), or as Ray tasks on a Ray "
    "cluster, in parallel as its GPUs allow, each launching its server on its node (ray).",
)
@click.option(
    "--ray-address",
    metavar="HOST:PORT",
    help="The Ray cluster to join (default: RAY_ADDRESS, else the cluster this node joined).",
)
@click.option(
    "--max-node-retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="With --executor ray: reruns of a point whose node was lost mid-run.",
)
@click.option(
    "--report", "write_report", is_flag=True, help="Write the HTML/Markdown report at the end."
)
@click.option("--json", "as_json", is_flag=True, help="Print index.json at the end.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def command(**o: Any) -> None:
    """Run a grid of server configurations x loads x workloads, or an SLO search.

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
    spec = _spec(o)
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


def _spec(o: dict[str, Any]) -> Any:
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
        from profiler.runspec import check_tokenizer

        tokenizer = check_tokenizer(o["tokenizer"])
    try:
        return SweepSpec(
            sweep_id=sweep_id,
            model=o["model"],
            endpoint=o["endpoint"],
            api_key_env=o["api_key_env"],
            tokenizer=tokenizer,
            grid=SweepGrid(**grid),
            serve_args=list(o["serve_arg"]) if not o["endpoint"] else [],
            load_kind="rate" if rate else "concurrency",
            loads=[float(v) for v in (rate or conc or [])],
            arrival=o["arrival"],
            workloads=list(o["workloads"]) or ["default"],
            num_requests=o["num_requests"],
            duration_s=o["duration"],
            input_len=o["input_len"],
            output_len=o["output_len"],
            slo=o["slo"],
            search=o["search"],
            target_fraction=o["target_fraction"],
            start_rate=o["start_rate"],
            tolerance=o["tolerance"],
            max_probes=o["max_probes"],
            max_rate=o["max_rate"],
            warmup_s=o["warmup"],
            cooldown_s=o["cooldown"],
            seed=o["seed"],
            repeat=o["repeat"],
            sample_interval_s=None if o["no_telemetry"] else o["sample_interval"],
            request_timeout_s=o["request_timeout"],
            ready_timeout_s=o["ready_timeout"],
            max_model_len=o["max_model_len"],
            gpu_memory_utilization=o["gpu_memory_utilization"],
            load_format=o["load_format"],
            dtype=o["dtype"],
            gpus=gpus,
        )
    except ValidationError as e:
        raise SpecError.from_validation(
            e, "sweep options: {field}{reason}", "see `infprof sweep --help`"
        ) from None


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
