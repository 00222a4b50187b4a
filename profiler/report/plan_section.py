"""The capacity plan in a report: candidate configurations, interconnect sensitivity,
disaggregated pools and the test-time scaling curve, from a plan's JSON form (``plan.json``
beside the runs, or computed before the report by ``capacity.report_plan``). The tables are
``report.tables``', the same the console shows."""

from __future__ import annotations

from typing import Any

from profiler.report import tables
from profiler.report.doc import Figure, Note, Section, Text
from profiler.report.fmt import num
from profiler.report.plotting import color, legend, new_figure, title, to_png
from profiler.report.session_section import plan_sessions_table

TOP_N = 15


def plan_sections(plan: dict[str, Any], origin: str) -> list[Section]:
    sec = Section("plan", "Capacity plan")
    if "error" in plan:
        sec.add(Note(f"The capacity plan could not be computed: {plan['error']}"))
        return [sec]
    sec.add(_intro(plan, origin))
    sessions = plan_sessions_table(plan)  # session workloads: what the prefix cache changes
    if sessions is not None:
        sec.add(sessions)
    configs = plan.get("configurations") or []
    if configs:
        sec.add(tables.plan_configurations(plan, TOP_N))
    else:
        sec.add(Note("The planner found no configuration that fits."))
    out = [sec]
    best = plan.get("best") or next((c for c in configs if c.get("best")), None)
    if best and best.get("interconnects"):
        out.append(_interconnects(best))
    if plan.get("disaggregated"):
        out.append(_disaggregated(plan))
    tts = plan.get("test_time_scaling")
    if tts:
        out.append(_scaling(tts))
    notes = plan.get("notes") or []
    if notes:
        text = Text("\n\n".join(str(n) for n in notes))
        out.append(Section("plan-notes", "Planner notes", level=3).add(text))
    return out


def _intro(plan: dict[str, Any], origin: str) -> Text:
    model, load, wl = plan.get("model") or {}, plan.get("load") or {}, plan.get("workload") or {}
    return Text(
        f"From {origin} (engine profile {plan.get('engine', 'vllm')}). Model "
        f"{model.get('name', model.get('id', '?'))}; workload: input "
        f"{num(wl.get('input_len'), '{:g}')} tokens, output {num(wl.get('output_len'), '{:g}')} tokens, n={num(wl.get('n'), '{:g}')}; "
        f"load: {num(load.get('target_rps'))} req/s. 'demand tok/s/GPU' is the target load "
        "spread over the GPUs deployed; 'capacity tok/s/GPU' what one replica sustains at "
        "its SLOs. Every number says whether it was measured or modelled (column 'source')."
    )


def _interconnects(best: dict[str, Any]) -> Section:
    return Section("plan-interconnect", "Interconnect sensitivity", level=3).add(
        Text(
            f"The best configuration ({best.get('gpu')} {best.get('parallelism')}) on each fabric: "
            f"required scale-up bandwidth {num(best.get('required_scale_up_gb_per_s'))} GB/s per GPU, "
            f"scale-out {num(best.get('required_scale_out_gb_per_s'))} GB/s."
        ),
        tables.plan_interconnects(best),
    )


def _disaggregated(plan: dict[str, Any]) -> Section:
    return Section("plan-disaggregated", "Disaggregated prefill/decode", level=3).add(
        Text(
            "Separate prefill and decode pools, each with its own layout, against the cheapest "
            "aggregated configuration on the same GPU; the prompt's KV moves from prefill to "
            "decode over the link named."
        ),
        tables.plan_disaggregated(plan),
    )


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
