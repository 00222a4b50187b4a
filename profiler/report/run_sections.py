"""The sections of one run's report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from profiler.report import run_plots, tables
from profiler.report.data import RunData
from profiler.report.doc import Code, Note, Section, Table
from profiler.report.fmt import (
    client_health_rows,
    gb,
    num,
    pct,
    pretty_json,
    slo_text,
    text,
)
from profiler.report.node_section import cells, node_section
from profiler.report.session_section import session_section
from profiler.store import schema

GPU_TABLE = [
    "GPU", "util mean", "util peak", "memory peak", "memory total", "power mean", "energy",
    "server memory peak", "errors",
]  # fmt: skip


def _arrival(spec: dict[str, Any]) -> str:
    a = spec.get("arrival") or {}
    kind = a.get("kind")
    if kind == "concurrency":
        return f"closed loop, {a.get('concurrency')} in flight"
    if kind == "users":
        return f"closed loop, {a.get('users')} users (sessions)"
    if kind in ("constant", "poisson", "gamma", "ramp"):
        cap = f", at most {a['max_concurrency']} in flight" if a.get("max_concurrency") else ""
        return f"{kind} arrivals at {a.get('rate')} req/s{cap}"
    return str(kind or "-")


def why_unavailable(summary: schema.Summary, manifest: schema.Manifest, section: str) -> str | None:
    """Why a telemetry section has no data, or None when it has."""
    s = {"gpu": summary.gpu, "energy": summary.energy, "server": summary.server}[section]
    if s is not None:
        return None if s.available else str(s.reason or "not recorded")
    nvml = manifest.nvml
    if section in ("gpu", "energy") and nvml is not None and nvml.available is False:
        return str(nvml.reason or "NVML unavailable")
    return "not in this run's summary"


FROM = {"from_intended": "from the intended start", "from_send": "from the send"}


def _attainment_rows(att: schema.SloAttainment) -> list[list[str]]:
    """SLO attainment rows: the headline measure first, then the other one (open loops)."""
    if not att.slo:
        return [["SLO attainment", "-"]]
    head = att.headline or "from_send"
    rows = []
    for key in (head, "from_send" if head == "from_intended" else "from_intended"):
        a = getattr(att, key, None)
        if a is None:
            continue
        label = f"SLO attainment {FROM[key]}" + (" (headline)" if key == head else "")
        rows.append(
            [
                label,
                f"{pct(a.fraction)} of requests, {num(a.requests_per_s)} req/s meeting every SLO "
                f"({'meets' if a.meets_target else 'misses'} the target)",
            ]  # fmt: skip
        )
    return rows


def scope_gpus(scope: dict[str, Any]) -> str:
    """``GPUs 2, 5`` or ``every GPU``."""
    gpus = scope.get("gpus")
    if gpus is None:
        return "every GPU"
    return f"GPU{'s' if len(gpus) != 1 else ''} {', '.join(gpus) or 'none'}"


def scope_text(scope: dict[str, Any]) -> str:
    """``GPUs 2, 5 (cuda_visible_devices: CUDA_VISIBLE_DEVICES=2,5)``."""
    why = f": {scope['reason']}" if scope.get("reason") else ""
    return f"{scope_gpus(scope)} ({scope.get('method')}{why})"


def run_sections(run: RunData, prefix: str = "", heading: str | None = None) -> list[Section]:
    s, m, spec = run.summary, run.manifest, run.spec
    rec = m.recorded_spec()
    out: list[Section] = []
    head = Section(f"{prefix}summary", heading or "Summary")
    for note in run.notes:
        head.add(Note(note))
    client = s.client or schema.Client()
    if client.saturated:
        head.add(
            Note(
                f"The load generator was saturated ({client.reason}); latencies include client delay."
            )
        )
    req, att = s.requests or schema.Requests(), s.attainment()
    win, thr, joules = (
        s.window or schema.Window(),
        s.throughput or schema.Throughput(),
        s.energy or schema.Energy(),
    )
    tok = s.tokens or schema.Tokens()

    rows = [
        ["run", run.run_id],
        ["model", str(m.model or (rec.serve and rec.serve.model) or (rec.endpoint and rec.endpoint.model) or "-")],
        ["workload", str((rec.workload and rec.workload.name) or s.workload or "-")],
        ["load", _arrival(spec)],
        ["ended", (m.ended if run.has_manifest else "-") + (f" ({m.end_reason})" if m.end_reason else "")],
        ["requests", f"{text(req.total)} total: {text(req.ok)} ok, {text(req.error)} error, "
                     f"{text(req.timeout)} timeout, {text(req.cancelled)} cancelled"],
        ["error rate", pct(s.error_rate)],
        ["measured window", f"{num(win.seconds)} s (warm-up {num(win.warmup_s)} s, "
                            f"cool-down {num(win.cooldown_s)} s)"],
        ["throughput", f"{num(thr.requests_per_s)} req/s, "
                       f"{num(thr.output_tokens_per_s, '{:.1f}')} output tok/s, "
                       f"{num(thr.total_tokens_per_s, '{:.1f}')} total tok/s"],
        ["SLO", slo_text(att.slo)],
        *_attainment_rows(att),
        ["energy per output token", f"{num(joules.joules_per_output_token)} J" if joules.available else "not available"],
        ["GPUs measured", scope_text(run.gpu_scope())],
        ["tokens", f"{tok.prompt} prompt, {tok.output} output"],
    ]  # fmt: skip
    head.add(Table(["", ""], rows))
    out.append(head)

    lat = Section(f"{prefix}latency", "Latency")
    lat.add(tables.run_latency(s.to_dict()))
    lat.add(run_plots.latency_distributions(run, prefix))
    out.append(lat)

    gpu_reason = why_unavailable(s, m, "gpu")
    has_gpu_samples = run.samples.has("nvml", "utilization_ratio")
    tl = Section(f"{prefix}timeline", "Load and GPU timeline")
    if gpu_reason and not has_gpu_samples:
        tl.add(
            Note(
                f"GPU telemetry is not available for this run: {gpu_reason}. Only the load is shown."
            )
        )
    tl.add(run_plots.timeline(run, prefix, gpu=has_gpu_samples))
    gpu = s.gpu or schema.Gpu()
    if gpu.available:
        per = gpu.per_gpu or {}
        tl.add(
            Table(
                GPU_TABLE,
                [[g, *cells(r, GPU_TABLE[1:])] for g, r in per.items()],
                caption="the server's GPUs over the measured window (server memory: its processes' "
                f"peak over the run{'; ' + gpu.process_memory_note if gpu.process_memory_note else ''})",
            )  # fmt: skip
        )
    out.append(tl)

    energy = s.energy or schema.Energy()
    out.append(
        _facts(
            Section(f"{prefix}energy", "Energy"),
            f"Energy is not available: {why_unavailable(s, m, 'energy')}.",
            [
                [f"energy ({scope_gpus(run.gpu_scope())}, measured window)", f"{num(energy.joules)} J"],
                ["per output token", f"{num(energy.joules_per_output_token)} J"],
                ["mean power from energy", f"{num(energy.mean_power_from_energy_watts)} W"],
                ["GPU-seconds", num(energy.gpu_seconds)],
                ["method", str(energy.method)],
            ],
            lambda: run_plots.energy(run, prefix),
            why_unavailable(s, m, "energy") is None,
        )
    )  # fmt: skip

    ic = Section(f"{prefix}interconnect", "NVLink and PCIe traffic")
    fig = run_plots.interconnect(run, prefix)
    if gpu.available:
        ic.add(
            Table(
                ["link", "tx", "rx", "tx per output token", "rx per output token"],
                [
                    [
                        name,
                        gb(getattr(gpu, f"{k}_tx_bytes")),
                        gb(getattr(gpu, f"{k}_rx_bytes")),
                        f"{num(getattr(gpu, f'{k}_tx_bytes_per_output_token'))} B",
                        f"{num(getattr(gpu, f'{k}_rx_bytes_per_output_token'))} B",
                    ]
                    for k, name in (("nvlink", "NVLink"), ("pcie", "PCIe"))
                ],
                caption=f"bytes over the measured window, {scope_gpus(run.gpu_scope())} (methods: {', '.join(gpu.traffic_methods or []) or '-'})",
            )  # fmt: skip
        )
    if fig:
        ic.add(fig)
    elif not gpu.available:
        ic.add(Note(f"No NVLink/PCIe samples: {gpu_reason or 'not recorded'}."))
    else:
        ic.add(
            Note(
                "No NVLink/PCIe rate samples in this run (not supported by these GPUs or the driver)."
            )
        )
    out.append(ic)
    nodes = node_section(run, prefix)  # multi-node runs (--prometheus-url)
    if nodes:
        out.append(nodes)

    server = s.server or schema.ServerMetrics()

    def mean_peak(key: str, f: Callable[[Any], str]) -> str:
        return (
            f"{f(getattr(server, key.format('mean')))} / {f(getattr(server, key.format('peak')))}"
        )

    out.append(
        _facts(
            Section(f"{prefix}server", "Server (vLLM /metrics)"),
            f"Server metrics are not available: {why_unavailable(s, m, 'server')}.",
            [
                ["KV-cache usage mean / peak", mean_peak("kv_cache_usage_{}_ratio", pct)],
                ["running requests mean / peak", mean_peak("num_requests_running_{}", num)],
                ["waiting requests mean / peak", mean_peak("num_requests_waiting_{}", num)],
                ["preemptions", num(server.preemptions)],
                ["prefix-cache hit ratio", pct(server.prefix_cache_hit_ratio)],
            ],
            lambda: run_plots.server_kv(run, prefix),
            why_unavailable(s, m, "server") is None,
        )
    )  # fmt: skip
    sessions = session_section(run, prefix)  # session turns, prefix-cache timeline
    if sessions:
        out.append(sessions)
    out.append(roofline_section(run, prefix))
    out.append(inputs_section(run, prefix))
    return out


def _facts(
    sec: Section, note: str, rows: list[list[str]], figure: Callable[[], Any], available: bool
) -> Section:
    """A telemetry section: its table and figure, or the note saying why there is no data."""
    if not available:
        return sec.add(Note(note))
    sec.add(Table(["", ""], rows))
    fig = figure()
    if fig:
        sec.add(fig)
    return sec


def _count(n: float) -> str:
    return f"{n / 1e9:.3g}B" if n >= 1e9 else f"{n / 1e6:.3g}M"


def roofline_section(run: RunData, prefix: str) -> Section:
    """The hardware limit for the model, GPU and batch run, and the measured fraction of it."""
    sec = Section(f"{prefix}roofline", "Against the hardware limit (roofline)")
    r = run.summary.roofline
    if not isinstance(r, dict) or not r.get("available"):
        why = r.get("reason") if isinstance(r, dict) else "not in this run's summary"
        sec.add(Note(f"No roofline for this run: {why}."))
        return sec
    hw, m, d, p, rn = r["hardware"], r["model"], r["decode"], r["prefill"], r["run"]
    meas, frac = r["measured"], r["fraction"]
    if hw.get("placeholder"):
        sec.add(Note(f"Hardware: {hw.get('source')}."))
    rows = [
        ["hardware", f"{hw['name']}: {num(hw['hbm_bytes_per_s'] / 1e12)} TB/s, "
                     f"{num(hw['peak_flops_per_s'] / 1e12, '{:.1f}')} TFLOP/s ({hw.get('source')})"],
        ["model", f"{m['name']}, {_count(m['params'])} params, weights {m['weight_dtype']}, "
                  f"KV {m['kv_dtype']} ({m.get('source')})"],
        ["batch", f"{num(r['batch'], '{:.1f}')} streams ({r.get('batch_source')}), "
                  f"{num(r['input_tokens'], '{:.0f}')} prompt + {num(r['output_tokens'], '{:.0f}')} output tokens"],
        ["decode step", f"{gb(d['bytes_per_step'])} read ({gb(d['weight_bytes_per_step'])} weights, "
                        f"{gb(d['kv_bytes_per_step'])} KV cache), {num(d['flops_per_step'] / 1e12, '{:.2f}')} TFLOP"],
        ["decode bound", f"{num(d['tokens_per_s_bound'], '{:,.0f}')} tok/s by HBM bandwidth "
                         f"({num(d['tokens_per_s_bound_compute'], '{:,.0f}')} by compute)"],
        ["prefill bound", f"{num(p['tokens_per_s_bound'], '{:,.0f}')} prompt tok/s by peak FLOP/s"],
        ["run bound", f"{num(rn['output_tokens_per_s_bound'], '{:,.0f}')} output tok/s ({rn['bound_by']})"],
        ["measured", f"{num(meas['output_tokens_per_s'], '{:,.1f}')} output tok/s: {pct(frac['run'])} of the run "
                     f"bound, {pct(frac['decode'])} of the decode bound; {num(meas['prompt_tokens_per_s'], '{:,.1f}')} "
                     f"prompt tok/s: {pct(frac['prefill'])} of the prefill bound"],
    ]  # fmt: skip
    sec.add(Table(["", ""], rows, caption="bounds at 100% of the catalog's peaks, per replica"))
    return sec


def inputs_section(run: RunData, prefix: str) -> Section:
    m, s = run.manifest, run.summary
    sec = Section(f"{prefix}inputs", "Inputs and versions")
    sec.add(tables.versions(m.versions or {}, "versions"))
    gpus = m.gpus or []
    if gpus:
        keys = [
            k
            for k in ("index", "name", "uuid", "memory_total_bytes", "pcie_gen_max", "nvlink_links")
            if any(k in g for g in gpus)
        ]
        sec.add(Table(keys, [[str(g.get(k, "-")) for k in keys] for g in gpus], caption="GPUs"))
    else:
        reason = m.nvml.reason if m.nvml else None
        sec.add(Note(f"No GPU inventory: {reason or 'NVML not available on the load host'}."))
    if m.host:
        sec.add(Table(["host", ""], [[k, str(v)] for k, v in m.host.items()]))
    if s.client:
        sec.add(
            Table(["client health", ""], [list(r) for r in client_health_rows(s.client.to_dict())])
        )
    argv = m.server.argv if m.server else None
    if argv:
        sec.add(Code(" ".join(str(a) for a in argv), summary="server command line"))
    sec.add(Code(pretty_json(run.spec), summary="resolved run spec (manifest.json)"))
    return sec
