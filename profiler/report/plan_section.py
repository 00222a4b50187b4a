"""The capacity plan in a report: candidate configurations, interconnect sensitivity and the
test-time scaling curve, from a PlanResult (``plan.json`` beside the runs, or computed with
``infprof report --plan-model/--plan-gpu``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from profiler.report.doc import Figure, Note, Section, Table, Text
from profiler.report.plotting import color, legend, new_figure, title, to_png
from profiler.report.session_section import plan_sessions_table

TOP_N = 15


def _f(v: Any, fmt: str = "{:.3g}") -> str:
    return "-" if v is None else fmt.format(v)


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v * 1000:.1f}"


def compute_plan(
    model: str,
    gpus: list[str],
    target_rps: float | None,
    slo: dict[str, Any] | None,
    calibration: Path | None,
) -> dict[str, Any]:
    """Run the planner; errors become a ``{"error": ...}`` dict so the report still renders."""
    from profiler.errors import InfprofError

    try:
        from profiler.capacity.planner import plan
        from profiler.capacity.result import PlanRequest
        from profiler.spec import SloSpec

        req = PlanRequest(
            model=model,
            gpus=gpus or ["h100"],
            target_rps=target_rps,
            slo=SloSpec.model_validate(slo or {}),
            calibration=calibration,
        )
        return plan(req).model_dump(mode="json")  # type: ignore[no-any-return]
    except InfprofError as e:
        return {"error": e.one_line()}
    except ValueError as e:  # pydantic validation
        return {"error": str(e).splitlines()[0]}


def plan_sections(plan: dict[str, Any], origin: str) -> list[Section]:
    sec = Section("plan", "Capacity plan")
    if "error" in plan:
        sec.add(Note(f"The capacity plan could not be computed: {plan['error']}"))
        return [sec]
    model = plan.get("model") or {}
    load = plan.get("load") or {}
    wl = plan.get("workload") or {}
    sec.add(
        Text(
            f"From {origin} (engine profile {plan.get('engine', 'vllm')}). Model "
            f"{model.get('name', model.get('id', '?'))}; workload: input "
            f"{_f(wl.get('input_len'), '{:g}')} tokens, output {_f(wl.get('output_len'), '{:g}')} tokens, n={_f(wl.get('n'), '{:g}')}; "
            f"load: {_f(load.get('target_rps'))} req/s. 'demand tok/s/GPU' is the target load "
            "spread over the GPUs deployed; 'capacity tok/s/GPU' what one replica sustains at "
            "its SLOs. Every number says whether it was measured or modelled (column 'source')."
        )
    )
    sessions = plan_sessions_table(plan)  # session workloads: what the prefix cache changes
    if sessions is not None:
        sec.add(sessions)
    configs = plan.get("configurations") or []
    rows = []
    for c in configs[:TOP_N]:
        rows.append(
            [
                ("★ " if c.get("best") else "") + str(c.get("gpu")),
                str(
                    c.get(
                        "parallelism",
                        f"tp{c.get('tp')} pp{c.get('pp')} dp{c.get('dp')} ep{c.get('ep')}",
                    )
                ),
                _f(c.get("gpus_per_replica"), "{:d}"),
                _f(c.get("replicas"), "{:d}"),
                _f(c.get("gpus_total"), "{:d}"),
                _f(c.get("nodes"), "{:d}"),
                _f(c.get("demand_tokens_per_s_per_gpu", c.get("tokens_per_s_per_gpu")), "{:.0f}"),
                _f(
                    c.get("capacity_tokens_per_s_per_gpu", c.get("max_tokens_per_s_per_gpu")),
                    "{:.0f}",
                ),
                _f(c.get("tokens_per_s_per_user"), "{:.1f}"),
                _ms(c.get("ttft_s")),
                _ms(c.get("tpot_s")),
                _f(c.get("cost_per_hour"), "{:.0f}"),
                _f(c.get("cost_per_million_output_tokens"), "{:.2f}"),
                _f(c.get("joules_per_output_token"), "{:.2f}"),
                str(c.get("bottleneck", "-")),
                "yes" if c.get("meets_slo") else "no",
                str(c.get("source", "-")),
            ]
        )
    if rows:
        sec.add(
            Table(
                [
                    "GPU",
                    "parallelism",
                    "GPUs/replica",
                    "replicas",
                    "GPUs",
                    "nodes",
                    "demand tok/s/GPU",
                    "capacity tok/s/GPU",
                    "tok/s/user",
                    "TTFT ms",
                    "TPOT ms",
                    "$/h",
                    "$/1M tok",
                    "J/tok",
                    "bottleneck",
                    "meets SLO",
                    "source",
                ],
                rows,
                caption=f"Candidate configurations ({len(configs)} in all; ★ best)",
            )  # fmt: skip
        )
    else:
        sec.add(Note("The planner found no configuration that fits."))
    out = [sec]
    best = plan.get("best") or next((c for c in configs if c.get("best")), None)
    if best and best.get("interconnects"):
        ic = Section("plan-interconnect", "Interconnect sensitivity", level=3)
        ic.add(
            Text(
                f"The best configuration ({best.get('gpu')} {best.get('parallelism')}) on each fabric: "
                f"required scale-up bandwidth {_f(best.get('required_scale_up_gb_per_s'))} GB/s per GPU, "
                f"scale-out {_f(best.get('required_scale_out_gb_per_s'))} GB/s."
            ),
            Table(
                [
                    "fabric",
                    "kind",
                    "GB/s per GPU",
                    "used",
                    "TTFT ms",
                    "TPOT ms",
                    "meets SLO",
                    "max req/s per replica",
                    "GPUs",
                    "source",
                ],
                [
                    [
                        str(x.get("label") or x.get("interconnect")),
                        str(x.get("kind")),
                        _f(x.get("gb_per_s"), "{:.0f}"),
                        "yes" if x.get("used") else "no",
                        _ms(x.get("ttft_s")),
                        _ms(x.get("tpot_s")),
                        "yes" if x.get("meets_slo") else "no",
                        _f(x.get("max_rps_per_replica")),
                        _f(x.get("gpus_total")),
                        str(x.get("source", "-")),
                    ]
                    for x in best["interconnects"]
                ],
            ),  # fmt: skip
        )
        out.append(ic)
    disagg = plan.get("disaggregated") or []
    if disagg:
        out.append(_disaggregated(disagg))
    tts = plan.get("test_time_scaling")
    if tts:
        out.append(_scaling(tts))
    notes = plan.get("notes") or []
    if notes:
        out.append(
            Section("plan-notes", "Planner notes", level=3).add(
                Text("\n\n".join(str(n) for n in notes))
            )
        )
    return out


def _disaggregated(rows: list[dict[str, Any]]) -> Section:
    sec = Section("plan-disaggregated", "Disaggregated prefill/decode", level=3)
    sec.add(
        Text(
            "Separate prefill and decode pools, each with its own layout, against the cheapest "
            "aggregated configuration on the same GPU; the prompt's KV moves from prefill to "
            "decode over the link named."
        ),
        Table(
            [
                "GPU",
                "prefill",
                "decode",
                "GPUs (P+D)",
                "decode/prefill",
                "capacity tok/s/GPU",
                "aggregated GPUs",
                "aggregated tok/s/GPU",
                "KV MB/request",
                "KV link",
                "GB/s per prefill GPU",
            ],
            [
                [
                    str(d.get("gpu")),
                    f"{d['prefill']['parallelism']} x {d['prefill']['replicas']}",
                    f"{d['decode']['parallelism']} x {d['decode']['replicas']}",
                    f"{d['prefill']['gpus_total']}+{d['decode']['gpus_total']}",
                    _f(d.get("decode_to_prefill_ratio"), "{:.2f}"),
                    _f(d.get("capacity_tokens_per_s_per_gpu"), "{:.0f}"),
                    _f(d.get("aggregated_gpus_total"), "{:d}"),
                    _f(d.get("aggregated_capacity_tokens_per_s_per_gpu"), "{:.0f}"),
                    _f(d["kv_transfer"]["bytes_per_request"] / 1e6, "{:.1f}"),
                    str(d["kv_transfer"]["interconnect"]),
                    _f(d["kv_transfer"]["gb_per_s_per_prefill_gpu"], "{:.2f}"),
                ]
                for d in rows
            ],
        ),
    )
    return sec


def _scaling(tts: dict[str, Any]) -> Section:
    sec = Section("plan-scaling", "Test-time scaling", level=3)
    sec.add(Text(str(tts.get("assumption") or "")))
    fig, axes = new_figure(1, 2, row_height=3.2)
    for ax, key, xname in ((axes[0, 0], "by_output_len", "output_len"), (axes[0, 1], "by_n", "n")):
        rows = tts.get(key) or []
        by_gpu: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_gpu.setdefault(r["gpu"], []).append(r)
        for i, (gpu, rs) in enumerate(sorted(by_gpu.items())):
            rs.sort(key=lambda r: r[xname])
            xs = [r[xname] for r in rs if r.get("gpus_per_1k_users") is not None]
            ys = [r["gpus_per_1k_users"] for r in rs if r.get("gpus_per_1k_users") is not None]
            ax.plot(xs, ys, marker="o", markersize=3.5, color=color(i), label=gpu)
            meas = [
                (r[xname], r["gpus_per_1k_users"])
                for r in rs
                if r.get("source") == "measured" and r.get("gpus_per_1k_users") is not None
            ]
            if meas:
                ax.scatter(
                    *zip(*meas, strict=True),
                    marker="s",
                    s=40,
                    facecolors="none",
                    edgecolors=color(i),
                )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(
            "output (reasoning) tokens per request"
            if xname == "output_len"
            else "samples per prompt (n)",
            fontsize=8,
        )
        title(ax, f"GPUs per 1k users vs {'reasoning length' if xname == 'output_len' else 'n'}")
        legend(ax, loc="upper left")
    sec.add(
        Figure(
            "plan-test-time-scaling",
            to_png(fig),
            "Test-time scaling: GPUs per 1k users vs reasoning length and n",
            "Modelled unless marked with a square (measured).",
        )
    )
    return sec
