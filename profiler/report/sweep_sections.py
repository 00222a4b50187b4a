"""The sections of a sweep's report."""

from __future__ import annotations

from typing import Any

from profiler.errors import InfprofError, StorageError
from profiler.report import sweep_plots, tables
from profiler.report.data import SweepData
from profiler.report.doc import Code, Note, Section, Table, Text
from profiler.report.fmt import pct, pretty_json, slo_text
from profiler.spec import SloSpec
from profiler.store.schema import Manifest


def _slo(sweep: SweepData) -> dict[str, Any]:
    """The sweep's SLO (a ``SloSpec`` dump): sweep.json's, else that of its points' runs."""
    slo = _spec_slo(sweep.spec)
    if slo is not None:
        return slo.model_dump()
    for p in sweep.done_points():
        manifest = _manifest(sweep, p)
        if manifest is not None and manifest.recorded_spec().slo:
            return dict(manifest.recorded_spec().slo or {})
    return {}


def _spec_slo(spec: dict[str, Any]) -> SloSpec | None:
    """sweep.json's ``slo``: the SloSpec's dump, or (older sweeps) the --slo text with the
    search's ``target_fraction`` beside it; None when absent or unreadable (hand-edited)."""
    slo = spec.get("slo")
    try:
        if isinstance(slo, dict):
            return SloSpec.model_validate(slo)
        if isinstance(slo, str) and slo:
            parsed = SloSpec.parse(slo)
            fraction = spec.get("target_fraction")
            if "target_fraction" in parsed.model_fields_set or fraction is None:
                return parsed
            return SloSpec.model_validate({**parsed.model_dump(), "target_fraction": fraction})
    except (InfprofError, ValueError):  # ValueError: pydantic's ValidationError
        return None
    return None


def _manifest(sweep: SweepData, point: dict[str, Any]) -> Manifest | None:
    """The manifest.json of a point's run (None when missing or unreadable)."""
    try:
        return Manifest.load(sweep.path / point["run_dir"] / Manifest.FILE)
    except StorageError:
        return None


def sweep_sections(sweep: SweepData, prefix: str = "", heading: str | None = None) -> list[Section]:
    """The sections of one sweep, in order; its knees are the index's (computed by the sweep
    at its end, or those ``infprof report`` had ``analysis.knee`` compute before the report)."""
    slo = _slo(sweep)
    target = slo.get("target_fraction", sweep.spec.get("target_fraction"))
    out = [_overview(sweep, slo, target, prefix, heading), _points(sweep, prefix)]
    if not sweep.done_points():
        note = Note("No finished points yet: nothing to plot.")
        return [*out, Section(f"{prefix}curves", "Curves").add(note)]
    out += [_latency_throughput(sweep, slo, prefix), _slo_attainment(sweep, slo, target, prefix)]
    if sweep.index.get("searches"):
        out.append(_searches(sweep, slo, target, prefix))
    out.append(_distributions(sweep, prefix))
    out += _telemetry(sweep, prefix)
    out.append(_inputs(sweep, prefix))
    return out


def _overview(
    sweep: SweepData, slo: dict[str, Any], target: Any, prefix: str, heading: str | None
) -> Section:
    idx, spec = sweep.index, sweep.spec
    points = idx["points"]
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
    endpoint = spec.get("endpoint")
    model = spec.get("model") or (f"endpoint {endpoint}" if endpoint else "default (tiny model)")
    per_point = spec.get("num_requests") or (
        f"{spec['duration_s']} s" if spec.get("duration_s") else "default"
    )
    ov.add(
        Table(
            ["", ""],
            [
                ["sweep", sweep.sweep_id],
                ["status", str(idx.get("status"))],
                ["model", str(model)],
                ["configurations", str(len(idx.get("configs") or []) or "-")],
                ["loads", what],
                ["workloads", ", ".join(spec.get("workloads") or ["-"])],
                ["requests per point", str(per_point)],
                ["SLO", slo_text(slo)],
                ["points", f"{len(points)} ({done} done, {len(points) - done} failed)"],
            ],
        )
    )
    if idx.get("configs"):
        ov.add(tables.sweep_configurations(idx))
    return ov


def _points(sweep: SweepData, prefix: str) -> Section:
    return Section(f"{prefix}points", "Points").add(tables.sweep_points(sweep.index))


def _latency_throughput(sweep: SweepData, slo: dict[str, Any], prefix: str) -> Section:
    return Section(f"{prefix}latency-throughput", "Latency vs throughput").add(
        sweep_plots.latency_throughput(sweep, slo, sweep_plots.knee_ids(sweep)),
        tables.sweep_knees(sweep.index.get("knees") or []),
        Text(
            "The knee is the point farthest below the chord of the normalised throughput-latency "
            "curve (Kneedle, see docs/reports.md): past it, more load buys little throughput and "
            "much latency."
        ),
    )


def _slo_attainment(sweep: SweepData, slo: dict[str, Any], target: Any, prefix: str) -> Section:
    has_slo = any(slo.get(k) for k in ("ttft_s", "tpot_s", "e2e_s"))
    return Section(f"{prefix}slo-attainment", "Throughput and SLO attainment vs load").add(
        sweep_plots.slo_attainment_vs_load(sweep, target, has_slo)
    )


def _searches(sweep: SweepData, slo: dict[str, Any], target: Any, prefix: str) -> Section:
    within = slo_text({k: v for k, v in slo.items() if k != "target_fraction"})
    caption = f"per configuration: target {pct(target)} of requests within {within}"
    ss = Section(f"{prefix}slo-search", "SLO search")
    ss.add(tables.sweep_searches(sweep.index["searches"], caption))
    fig = sweep_plots.search_probes(sweep)
    if fig:
        ss.add(fig)
    return ss


def _distributions(sweep: SweepData, prefix: str) -> Section:
    dist = sweep_plots.distributions(sweep)
    ds = Section(f"{prefix}distributions", "Latency distributions per point")
    if dist:
        return ds.add(dist)
    return ds.add(Note("No request records found under the points' run directories."))


def _telemetry(sweep: SweepData, prefix: str) -> list[Section]:
    """GPU, energy and interconnect against load, or a note saying why not."""
    out = []
    for sid, name, fig, missing in (
        ("gpu", "GPU utilization, memory and power vs load", sweep_plots.gpu_vs_load(sweep), "GPU telemetry is not available for these runs"),
        ("energy", "Energy per output token vs load", sweep_plots.energy_vs_load(sweep), "energy is not available for these runs"),
        ("interconnect", "NVLink and PCIe traffic vs load", sweep_plots.interconnect_vs_load(sweep), "no NVLink/PCIe traffic was measured in these runs"),
    ):  # fmt: skip
        sec = Section(f"{prefix}{sid}", name)
        why = "" if fig else f"{missing[0].upper()}{missing[1:]}{_why(sweep)}."
        out.append(sec.add(fig) if fig else sec.add(Note(why)))
    return out


def _why(sweep: SweepData) -> str:
    for p in sweep.done_points():
        manifest = _manifest(sweep, p)
        reason = manifest.nvml.reason if manifest and manifest.nvml else None
        if reason:
            return f" ({reason})"
    return ""


def _inputs(sweep: SweepData, prefix: str) -> Section:
    sec = Section(f"{prefix}inputs", "Inputs and versions")
    first = next(iter(sweep.done_points()), None)
    manifest = _manifest(sweep, first) if first else None
    versions = (manifest.versions if manifest else None) or {}
    if versions:
        sec.add(tables.versions(versions, "versions (first point)"))
    gpus = (manifest.gpus if manifest else None) or []
    if gpus:
        keys = [
            k for k in ("index", "name", "uuid", "memory_total_bytes") if any(k in g for g in gpus)
        ]
        sec.add(Table(keys, [[str(g.get(k, "-")) for k in keys] for g in gpus], caption="GPUs"))
    sec.add(Code(pretty_json(sweep.spec), summary="sweep spec (sweep.json)"))
    spec = manifest.to_dict().get("spec") if manifest else None  # as written, keys in order
    if spec:
        sec.add(
            Code(
                pretty_json(spec),
                summary=f"resolved run spec of {first['id'] if first else ''}",
            )
        )
    return sec
