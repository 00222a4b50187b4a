"""``infprof plan``: size a fleet (GPUs, nodes, interconnect, cost, energy) for a target load."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from profiler.cli import options
from profiler.errors import SpecError
from profiler.spec import TARGET_FRACTION

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "day": 86400.0,
    "d": 86400.0,
}


def parse_rate(text: str) -> float:
    """'10/day', '2/h', '0.5/min', '0.01/s' or a bare number (per second) -> requests/s."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*(?:/\s*([a-z]+))?\s*", text.lower())
    if not m or (m.group(2) and m.group(2).rstrip("s") not in _UNITS and m.group(2) not in _UNITS):
        raise SpecError(
            f"--rate-per-user: cannot read '{text}'", "write e.g. 10/day, 2/h, 0.5/min or 0.01/s"
        )
    unit = m.group(2) or "s"
    unit = unit if unit in _UNITS else unit.rstrip("s")
    value = float(m.group(1)) / _UNITS[unit]
    if value <= 0:
        raise SpecError("--rate-per-user must be positive", "e.g. 10/day")
    return value


# options passed to PlanRequest as given (the others are parsed or renamed below)
_AS_GIVEN = (
    "model", "workload", "input_len", "output_len", "n", "cached_prefix_len", "cache_hit_ratio",
    "cache_hit_from", "target_rps", "users", "peak_factor", "calibration", "calibration_gpu",
    "calibration_model", "calibration_layout", "engine", "concurrency", "disaggregated",
    "redundant_experts", "comm_overlap", "max_gpus_per_node", "max_gpus_per_replica",
    "weight_dtype", "kv_dtype", "gpu_memory_utilization", "max_num_seqs",
)  # fmt: skip


@click.command("plan")
@click.option(
    "--model",
    required=True,
    help="Catalog name (llama-3.1-70b, deepseek-r1, tiny, ...) or a config.json path.",
)
@click.option(
    "--gpu", "gpus", multiple=True, help="GPU to consider; repeat or comma-separate (default h100)."
)
@click.option(
    "--workload", help="Workload name (workloads/NAME.yaml) or YAML file: mean lengths and n."
)
@click.option("--input-len", type=float, help="Mean prompt tokens (overrides the workload).")
@click.option(
    "--output-len", type=float, help="Mean output tokens per sample (overrides the workload)."
)
@click.option("--n", type=click.IntRange(1, 64), help="Parallel samples per prompt.")
@click.option("--cached-prefix-len", type=float, help="Prompt tokens served from the prefix cache.")
@click.option(
    "--cache-hit-ratio",
    type=click.FloatRange(0, 1),
    help="Assumed prefix-cache hit ratio (cached share of prompt tokens); a session workload "
    "defaults to every earlier turn cached.",
)
@click.option(
    "--cache-hit-from",
    type=click.Path(path_type=Path),
    help="Run directory whose measured prefix-cache hit ratio (summary.json) to plan with.",
)
@click.option("--target-rps", type=float, help="Target load in requests/s.")
@click.option("--users", type=float, help="Number of users (with --rate-per-user).")
@click.option("--rate-per-user", help="Requests per user: 10/day, 2/h, 0.5/min, 0.01/s.")
@click.option(
    "--peak-factor",
    type=float,
    default=1.0,
    show_default=True,
    help="Peak over average load (with --users).",
)
@click.option(
    "--slo",
    callback=options.parse_slo,
    help=f"ttft=SECONDS,tpot=SECONDS,e2e=SECONDS[,fraction={TARGET_FRACTION:g}]",
)
@click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    help="Sweep directory to calibrate on, one run directory (a one-point calibration: it "
    "fixes decode efficiency at that batch, not prefill or how TPOT grows with the batch), or "
    "a vllm bench serve / GuideLLM / AIPerf result JSON.",
)
@click.option("--calibration-gpu", help="GPU the measurements ran on, when they do not say.")
@click.option(
    "--calibration-model", help="Model of the measurements (catalog name or config.json path)."
)
@click.option(
    "--calibration-layout", help="Layout of a result file's server, e.g. tp2 (default tp1)."
)
@click.option(
    "--engine",
    type=click.Choice(["vllm", "sglang", "tensorrt-llm", "trtllm"]),
    help="Serving engine whose profile to plan with (default vllm).",
)
@click.option(
    "--layout",
    "layouts",
    multiple=True,
    help="Only these layouts: tp8, tp4xpp2, dp8xep8, tp2xdp4xep8 (repeat or comma-separate).",
)
@click.option(
    "--concurrency",
    type=click.FloatRange(min=1),
    help="Streams in flight per replica (a closed loop): plan at that batch.",
)
@click.option(
    "--disaggregated",
    is_flag=True,
    help="Also plan separate prefill and decode pools and the KV transfer between them.",
)
@click.option("--eplb", is_flag=True, help="Experts are load-balanced (EPLB).")
@click.option(
    "--redundant-experts",
    type=click.IntRange(0),
    help="EPLB expert replicas beside the routed experts (e.g. 32 for DeepSeek).",
)
@click.option(
    "--comm-overlap",
    type=click.FloatRange(0, 1),
    help="Share of communication hidden behind compute (two-batch overlap: ~0.6).",
)
@click.option(
    "--max-gpus-per-node",
    type=click.IntRange(1, 64),
    help="Cap GPUs per node (e.g. 4 for small PCIe servers).",
)
@click.option(
    "--max-gpus-per-replica", type=click.IntRange(1, 1024), default=128, show_default=True
)
@click.option(
    "--interconnect",
    multiple=True,
    help="Force a fabric: nvlink-900, nvlink-400, pcie-gen5, pcie-gen4, ib-400, ib-200, roce-400 ...",
)
@click.option("--price", multiple=True, help="GPU=$/hour, e.g. h100=2.1 (repeatable).")
@click.option(
    "--weight-dtype",
    type=click.Choice(["bf16", "fp16", "fp8", "int8", "int4", "nvfp4", "mxfp4", "fp32"]),
    help="Default: the model's.",
)
@click.option(
    "--kv-dtype",
    type=click.Choice(["bf16", "fp16", "fp8", "fp32"]),
    help="KV cache dtype (default bf16).",
)
@click.option(
    "--gpu-memory-utilization",
    type=click.FloatRange(0.05, 1.0),
    help="Share of GPU memory for the server (default: the engine's; TensorRT-LLM's is of "
    "the memory left after weights).",
)
@click.option(
    "--max-num-seqs",
    type=click.IntRange(1),
    help="Per-rank batch cap (default: vLLM's for the GPU).",
)
@click.option("--no-scaling", is_flag=True, help="Skip the test-time scaling section.")
@click.option(
    "--top", type=click.IntRange(1), default=10, show_default=True, help="Rows in the table."
)
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def command(**kw: Any) -> None:
    """Size a fleet for a model and a load: GPUs, nodes, interconnect, cost and energy per
    configuration (modelled, or measured where --calibration has the configuration)."""
    from profiler.capacity.hardware import parse_prices
    from profiler.capacity.planner import plan
    from profiler.capacity.result import PlanRequest

    if kw["users"] is not None and kw["rate_per_user"] is None:
        raise SpecError(
            "--users needs --rate-per-user", "e.g. --users 1000000 --rate-per-user 10/day"
        )
    if kw["rate_per_user"] is not None and kw["users"] is None:
        raise SpecError(
            "--rate-per-user needs --users", "e.g. --users 1000000 --rate-per-user 10/day"
        )
    if kw["target_rps"] is not None and kw["users"] is not None:
        raise SpecError("--target-rps and --users both given", "use one way to state the load")
    try:
        req = PlanRequest(
            **{k: kw[k] for k in _AS_GIVEN},
            gpus=list(kw["gpus"]) or ["h100"],
            rate_per_user_per_s=parse_rate(kw["rate_per_user"]) if kw["rate_per_user"] else None,
            slo=kw["slo"],
            layouts=list(kw["layouts"]),
            eplb=kw["eplb"] or None,
            interconnect=list(kw["interconnect"]),
            prices=parse_prices(kw["price"]),
            scaling=not kw["no_scaling"],
        )
    except ValidationError as e:
        raise SpecError.from_validation(
            e, "plan: {field}{msg}", "check the flags (infprof plan --help)"
        ) from None
    result = plan(req)
    if kw["as_json"]:
        click.echo(json.dumps(result.model_dump(mode="json"), indent=2))
        return
    render(result, top=kw["top"])


# ---------------------------------------------------------------- human rendering
def _head(result: Any) -> Any:
    """The inputs: model, requests, load, SLO, engine and each calibration, as key-value rows."""
    from rich.table import Table

    m, w, load, slo = result.model, result.workload, result.load, result.slo
    head = Table(show_header=False, box=None, title="infprof plan")
    head.add_row(
        "model",
        f"{m['name']}: {m['params_b']:g}B params ({m['active_params_b']:g}B active), "
        f"{m['attention']} KV {m['kv_bytes_per_token_bf16']:,.0f} B/token (bf16), weights {w['weight_dtype']}",
    )
    head.add_row(
        "requests",
        f"{w['name']}: input {w['input_len']:,.0f}, output {w['output_len']:,.0f} tokens, n={w['n']:g}",
    )
    if load["target_rps"] is None:
        head.add_row("load", "none given: one replica at its SLO capacity")
    else:
        users = (
            f" ({load['users']:,.0f} users x {load['rate_per_user_per_s'] * 86400:g}/day x peak {load['peak_factor']:g})"
            if load["users"]
            else ""
        )
        head.add_row(
            "load",
            f"{load['target_rps']:,.2f} req/s{users} = {load['output_tokens_per_s']:,.0f} output tok/s",
        )
    slo_txt = ", ".join(
        f"{k}<={v:g}s"
        for k, v in (("TTFT", slo.ttft_s), ("TPOT", slo.tpot_s), ("E2E", slo.e2e_s))
        if v
    )
    head.add_row("SLO", slo_txt or "none")
    head.add_row("engine", f"{result.engine}, KV cache {w['kv_dtype']}")
    for c in result.calibration:
        held = (
            f", held-out error {c.heldout_error_pct:.1f}% (max {c.heldout_max_error_pct:.1f}%)"
            if c.heldout_error_pct is not None
            else ""
        )
        head.add_row(
            "calibration",
            f"{c.gpu}: {c.points} points, eta_B {c.fitted.mem_bw_fraction:.2f}, eta_F "
            f"{c.fitted.compute_fraction:.2f}, alpha {c.fitted.collective_latency_s * 1e6:.1f} us, "
            f"overhead {c.fitted.step_overhead_s * 1e3:.2f} ms; fit error {c.fit_error_pct:.1f}%{held}",
        )
    return head


def _no_in_red(header: str, cell: str) -> str | None:
    return "red" if header == "meets SLO" and cell == "no" else None


def render(result: Any, top: int = 10, console: Any = None) -> None:
    """Rich tables: inputs, top configurations, the best one's interconnect sensitivity,
    test-time scaling and notes. ``result`` is a PlanResult; the tables are report.tables'."""
    import sys

    from rich.console import Console

    from profiler.cli.render import print_table
    from profiler.report import tables
    from profiler.report.fmt import num

    console = console or Console(width=None if sys.stdout.isatty() else 200)
    console.print(_head(result))
    data = result.model_dump(mode="json")
    print_table(console, tables.plan_configurations(data, top), _no_in_red)
    b = result.best
    if b is None:
        console.print("[bold red]no configuration meets the SLOs[/]")
        for r in result.rejected[:top]:
            console.print(f"  {r.gpu} {r.parallelism}: {r.reason}")
    else:
        console.print(
            f"best: {b.gpus_total} x {b.gpu} ({b.parallelism} x {b.replicas} replicas) on {b.nodes} node(s), "
            f"${b.cost_per_hour:,.2f}/h; limited by {b.limit}; bottleneck {b.bottleneck}. Needs per GPU: "
            f"scale-up {num(b.required_scale_up_gb_per_s, '{:.1f}')} GB/s, scale-out {num(b.required_scale_out_gb_per_s, '{:.1f}')} GB/s "
            f"(using {b.scale_up} + {b.scale_out})"
        )
        print_table(console, tables.plan_interconnects(data["best"]), _no_in_red)
    if result.disaggregated:
        print_table(console, tables.plan_disaggregated(data))
    tts = data["test_time_scaling"]
    if tts is not None:
        console.print(f"test-time scaling: GPUs per 1k users ({tts['assumption']})")
        for key, what in (("by_output_len", "output length"), ("by_n", "n, samples per prompt")):
            print_table(console, tables.plan_scaling(tts[key], what))
    for note in result.notes:
        console.print(f"note: {note}")
