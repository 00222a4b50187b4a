"""The sections of a sweep's report."""

from __future__ import annotations

import json
from typing import Any

from profiler.report import sweep_plots
from profiler.report.data import SweepData
from profiler.report.doc import Code, Note, Section, Table, Text
from profiler.report.fmt import ms, num, pct, pretty_json, slo_text
from profiler.spec import SloSpec
from profiler.sweep.knees import knees as compute_knees
from profiler.sweep.spec import config_label, load_label


def _slo(sweep: SweepData) -> dict[str, Any]:
    text = sweep.spec.get("slo")
    if text:
        try:
            return SloSpec.parse(text).model_dump()
        except Exception:  # a hand-edited sweep.json: fall back to the points' SLO
            pass
    for p in sweep.done_points():
        manifest = sweep.path / p["run_dir"] / "manifest.json"
        try:
            slo = json.loads(manifest.read_text()).get("spec", {}).get("slo")
        except (OSError, json.JSONDecodeError):
            continue
        if slo:
            return dict(slo)
    return {}


def sweep_sections(sweep: SweepData, prefix: str = "", heading: str | None = None) -> list[Section]:
    idx, spec = sweep.index, sweep.spec
    points = idx["points"]
    if not idx.get("knees") or idx.get("status") != "complete":
        idx["knees"] = compute_knees(points)
    slo = _slo(sweep)
    has_slo = any(slo.get(k) for k in ("ttft_s", "tpot_s", "e2e_s"))
    target = slo.get("target_fraction", spec.get("target_fraction"))
    out: list[Section] = []

    ov = Section(f"{prefix}overview", heading or "Sweep overview")
    for note in sweep.notes:
        ov.add(Note(note))
    done = sum(1 for p in points if p.get("status") == "done")
    loads = spec.get("loads") or []
    kind = spec.get("load_kind", "concurrency")
    what = (
        f"SLO search (start {spec.get('start_rate')} req/s, tolerance {pct(spec.get('tolerance'))}, target {pct(target)})"
        if spec.get("search")
        else f"{kind} levels {', '.join(f'{v:g}' for v in loads)}"
    )
    ov.add(
        Table(
            ["", ""],
            [
                ["sweep", sweep.sweep_id],
                ["status", str(idx.get("status"))],
                [
                    "model",
                    str(
                        spec.get("model")
                        or (
                            "endpoint " + str(spec.get("endpoint"))
                            if spec.get("endpoint")
                            else "default (tiny model)"
                        )
                    ),
                ],
                ["configurations", str(len(idx.get("configs") or []) or "-")],
                ["loads", what],
                ["workloads", ", ".join(spec.get("workloads") or ["-"])],
                [
                    "requests per point",
                    str(
                        spec.get("num_requests")
                        or (f"{spec['duration_s']} s" if spec.get("duration_s") else "default")
                    ),
                ],
                ["SLO", slo_text(slo)],
                ["points", f"{len(points)} ({done} done, {len(points) - done} failed)"],
            ],
        )  # fmt: skip
    )
    configs = idx.get("configs") or []
    if configs:
        ov.add(
            Table(
                ["config", "settings", "status", "server start (s)", "server log", "reason"],
                [
                    [
                        c["id"],
                        c.get("label") or config_label(c["config"]),
                        str(c.get("status")),
                        num(c.get("startup_s")),
                        str(c.get("server_log") or "-"),
                        str(c.get("reason") or ""),
                    ]
                    for c in configs
                ],
                caption="server configurations",
            )  # fmt: skip
        )
    out.append(ov)

    pts = Section(f"{prefix}points", "Points")
    rows = []
    for p in sorted(
        points,
        key=lambda p: (
            int(str(p["config_id"]).lstrip("c") or 0),
            p["workload"],
            float(p["load"]["value"]),
        ),
    ):
        k = p.get("summary") or {}
        rows.append(
            [p["id"], p["workload"], load_label(p["load"]), p.get("status", "-"), num(k.get("requests_per_s")),
             num(k.get("output_tokens_per_s"), "{:.1f}"), ms(k.get("ttft_p50_s")), ms(k.get("ttft_p99_s")), ms(k.get("tpot_p50_s")),
             ms(k.get("tpot_p99_s")), ms(k.get("e2e_p50_s")), pct(k.get("error_rate")), pct(k.get("slo_attainment")),
             str(p.get("reason") or "") if p.get("status") != "done" else ""]
        )  # fmt: skip
    pts.add(
        Table(
            [
                "point",
                "workload",
                "load",
                "status",
                "req/s",
                "out tok/s",
                "TTFT p50",
                "TTFT p99",
                "TPOT p50",
                "TPOT p99",
                "E2E p50",
                "errors",
                "SLO met",
                "reason",
            ],
            rows,
            caption="latencies in ms; SLO met: share of requests meeting every SLO (from the intended start for an open loop); run directories under runs/<point>",
        )  # fmt: skip
    )
    out.append(pts)
    if not sweep.done_points():
        out.append(
            Section(f"{prefix}curves", "Curves").add(
                Note("No finished points yet: nothing to plot.")
            )
        )
        return out

    lt = Section(f"{prefix}latency-throughput", "Latency vs throughput")
    lt.add(sweep_plots.latency_throughput(sweep, slo, sweep_plots.knee_ids(sweep)))
    knee_rows = [
        [k["config_id"], k["workload"], load_label(k["load"]) if k.get("load") else "-", num(k.get("x"), "{:.1f}"),
         ms(k.get("y")), k.get("reason") or ""]
        for k in idx["knees"]
    ]  # fmt: skip
    lt.add(
        Table(["config", "workload", "knee at", "output tok/s", "E2E p50 (ms)", "note"], knee_rows, caption="knee of the throughput-latency curve (Kneedle)"),
        Text("The knee is the point farthest below the chord of the normalised throughput-latency curve "
             "(Kneedle, see docs/reports.md): past it, more load buys little throughput and much latency."),
    )  # fmt: skip
    out.append(lt)
    out.append(
        Section(f"{prefix}slo-attainment", "Throughput and SLO attainment vs load").add(
            sweep_plots.slo_attainment_vs_load(sweep, target, has_slo)
        )
    )

    searches = idx.get("searches") or []
    if searches:
        ss = Section(f"{prefix}slo-search", "SLO search")
        ss.add(
            Table(
                [
                    "config",
                    "workload",
                    "goodput (highest rate meeting the SLOs)",
                    "lowest failing",
                    "SLO-met req/s there",
                    "output tok/s there",
                    "probes",
                    "stopped",
                ],
                [
                    [
                        s["config_id"] + " " + str(s.get("label", "")),
                        s["workload"],
                        num(s.get("best_rate")),
                        num(s.get("failed_rate")),
                        num(s.get("slo_met_rps_at_best")),
                        num(s.get("output_tokens_per_s_at_best"), "{:.1f}"),
                        str(len(s.get("probes") or [])),
                        str(s.get("stopped")),
                    ]
                    for s in searches
                ],
                caption=f"per configuration: target {pct(target)} of requests within {slo_text({k: v for k, v in slo.items() if k != 'target_fraction'})}",
            )  # fmt: skip
        )
        fig = sweep_plots.search_probes(sweep)
        if fig:
            ss.add(fig)
        out.append(ss)

    dist = sweep_plots.distributions(sweep)
    ds = Section(f"{prefix}distributions", "Latency distributions per point")
    out.append(
        ds.add(dist)
        if dist
        else ds.add(Note("No request records found under the points' run directories."))
    )

    for sid, name, fig, missing in (
        ("gpu", "GPU utilization, memory and power vs load", sweep_plots.gpu_vs_load(sweep), "GPU telemetry is not available for these runs"),
        ("energy", "Energy per output token vs load", sweep_plots.energy_vs_load(sweep), "energy is not available for these runs"),
        ("interconnect", "NVLink and PCIe traffic vs load", sweep_plots.interconnect_vs_load(sweep), "no NVLink/PCIe traffic was measured in these runs"),
    ):  # fmt: skip
        sec = Section(f"{prefix}{sid}", name)
        out.append(
            sec.add(fig)
            if fig
            else sec.add(Note(f"{missing[0].upper()}{missing[1:]}{_why(sweep)}."))
        )
    out.append(_inputs(sweep, prefix))
    return out


def _why(sweep: SweepData) -> str:
    for p in sweep.done_points():
        try:
            m = json.loads((sweep.path / p["run_dir"] / "manifest.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        reason = (m.get("nvml") or {}).get("reason")
        if reason:
            return f" ({reason})"
    return ""


def _inputs(sweep: SweepData, prefix: str) -> Section:
    sec = Section(f"{prefix}inputs", "Inputs and versions")
    first = next(iter(sweep.done_points()), None)
    manifest: dict[str, Any] = {}
    if first:
        try:
            manifest = json.loads((sweep.path / first["run_dir"] / "manifest.json").read_text())
        except (OSError, json.JSONDecodeError):
            manifest = {}
    versions = manifest.get("versions") or {}
    if versions:
        sec.add(
            Table(
                ["component", "version"],
                [[k, str(v) if v is not None else "-"] for k, v in versions.items()],
                caption="versions (first point)",
            )
        )
    gpus = manifest.get("gpus") or []
    if gpus:
        keys = [
            k for k in ("index", "name", "uuid", "memory_total_bytes") if any(k in g for g in gpus)
        ]
        sec.add(Table(keys, [[str(g.get(k, "-")) for k in keys] for g in gpus], caption="GPUs"))
    sec.add(Code(pretty_json(sweep.spec), summary="sweep spec (sweep.json)"))
    if manifest.get("spec"):
        sec.add(
            Code(
                pretty_json(manifest["spec"]),
                summary=f"resolved run spec of {first['id'] if first else ''}",
            )
        )
    return sec
