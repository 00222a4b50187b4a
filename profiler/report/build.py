"""``write_report_files``: runs and sweeps to one self-contained HTML file plus Markdown."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profiler import __version__
from profiler.analysis.knee import with_knees
from profiler.capacity.report_plan import report_plan
from profiler.errors import SpecError, StorageError
from profiler.report.data import RunData, SweepData, kind_of, load_run, load_sweep
from profiler.report.doc import Document, Section, Table, render_html, render_markdown
from profiler.report.fmt import ms, num, pct
from profiler.report.plan_section import plan_sections
from profiler.report.run_sections import run_sections
from profiler.report.sweep_sections import sweep_sections
from profiler.store.files import make_dir, write_text_atomic
from profiler.store.schema import Plan

FORMATS = ("html", "md")
PLAN_FILE = Plan.FILE


@dataclass
class PlanOptions:
    model: str | None = None
    gpus: list[str] = field(default_factory=list)
    target_rps: float | None = None


@dataclass
class ReportFiles:
    html: Path | None
    markdown: Path | None
    figures: int
    seconds: float

    @property
    def main(self) -> Path:
        path = self.html or self.markdown
        assert path is not None
        return path


def build_document(
    inputs: Sequence[Path],
    plan: PlanOptions | None = None,
    notes: dict[Path, list[str]] | None = None,
) -> Document:
    """The report of ``inputs`` (read only; ``notes``: per run, what its repair did)."""
    if not inputs:
        raise SpecError(
            "no run or sweep directory given", "e.g. infprof report runs/run-20250101-120000"
        )
    loaded: list[RunData | SweepData] = []
    for path in inputs:
        if not path.is_dir():
            raise SpecError(f"{path} is not a directory", "pass a run or sweep directory")
        if kind_of(path) == "sweep":
            loaded.append(load_sweep(path))
        else:
            loaded.append(load_run(path, notes=(notes or {}).get(path)))
    multi = len(loaded) > 1
    sections: list[Section] = []
    if multi:
        sections.append(_overview(loaded))
    for i, item in enumerate(loaded):
        prefix = f"i{i}-" if multi else ""
        if isinstance(item, SweepData):
            with_knees(item.index)  # analysis first: the sections only render
            heading = f"Sweep {item.sweep_id}" if multi else None
            sections += sweep_sections(item, prefix, heading)
        else:
            heading = f"Run {item.run_id}" if multi else None
            sections += run_sections(item, prefix, heading)
    sections += _plan(loaded, plan)
    if len(loaded) == 1:
        item = loaded[0]
        title = (
            f"infprof report: sweep {item.sweep_id}"
            if isinstance(item, SweepData)
            else f"infprof report: run {item.run_id}"
        )
    else:
        title = f"infprof report: {len(loaded)} runs and sweeps"
    subtitle = f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by infprof {__version__} from {', '.join(str(p) for p in inputs)}"
    return Document(title, subtitle, sections)


def _overview(loaded: list[RunData | SweepData]) -> Section:
    rows = []
    for item in loaded:
        if isinstance(item, SweepData):
            done = item.done_points()
            best = max(
                done, key=lambda p: p["summary"].get("output_tokens_per_s") or 0, default=None
            )
            k = best["summary"] if best else {}
            rows.append([f"sweep {item.sweep_id}", f"{len(done)} points; best throughput at {best['id'] if best else '-'}",
                         num(k.get("requests_per_s")), num(k.get("output_tokens_per_s"), "{:.1f}"), ms(k.get("ttft_p50_s")),
                         ms(k.get("tpot_p50_s")), pct(k.get("error_rate")), pct(k.get("slo_attainment"))])  # fmt: skip
        else:
            s, wl = item.summary, item.manifest.recorded_spec().workload
            thr = s.throughput
            rows.append([f"run {item.run_id}", str((wl.name if wl else None) or "-"), num(thr.requests_per_s if thr else None),
                         num(thr.output_tokens_per_s if thr else None, "{:.1f}"), ms(s.lat("ttft_s").p50),
                         ms(s.lat("tpot_s").p50), pct(s.error_rate), pct(s.attainment().fraction)])  # fmt: skip
    return Section("overview", "Overview").add(
        Table(
            ["input", "", "req/s", "out tok/s", "TTFT p50 ms", "TPOT p50 ms", "errors", "SLO met"],
            rows,
        )
    )


def _plan(loaded: list[RunData | SweepData], opts: PlanOptions | None) -> list[Section]:
    for item in loaded:
        p = item.path / PLAN_FILE
        if p.exists():
            try:
                data = Plan.load(p).to_dict()
            except StorageError as e:
                return plan_sections({"error": f"{p} is unreadable ({e.one_line()})"}, str(p))
            return plan_sections(data, str(p))
    if opts is None or not opts.model:
        return []
    sweep = next((x for x in loaded if isinstance(x, SweepData)), None)
    slo: dict[str, Any] | None = None
    first = loaded[0]
    if isinstance(first, RunData):
        slo = first.manifest.recorded_spec().slo
    data = report_plan(opts.model, opts.gpus, opts.target_rps, slo, sweep.path if sweep else None)
    origin = f"infprof plan --model {opts.model} --gpu {','.join(opts.gpus or ['h100'])}" + (
        f" --calibration {sweep.path}" if sweep else ""
    )
    return plan_sections(data, origin)


def _write_text(path: Path, text: str) -> None:
    write_text_atomic(path, text, "choose a writable --out directory")


def write_report_files(
    inputs: Sequence[Path],
    out_dir: Path | None = None,
    formats: Sequence[str] = FORMATS,
    plan: PlanOptions | None = None,
    name: str = "report",
    notes: dict[Path, list[str]] | None = None,
) -> ReportFiles:
    """Write ``<out_dir>/<name>.html`` and/or ``<name>.md`` (figures for Markdown under
    ``<name>_files/``). ``out_dir`` defaults to the input directory (one input) or the current
    directory (several)."""
    t0 = time.perf_counter()
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise SpecError(
            f"--format: unknown format {', '.join(bad) or '(none)'}", "use html, md or html,md"
        )
    inputs = [Path(p) for p in inputs]
    doc = build_document(inputs, plan, notes)
    out = out_dir or (inputs[0] if len(inputs) == 1 else Path.cwd())
    make_dir(out, "choose a writable --out directory")
    html_path = md_path = None
    if "html" in formats:
        html_path = out / f"{name}.html"
        _write_text(html_path, render_html(doc))
    if "md" in formats:
        files = out / f"{name}_files"
        files.mkdir(exist_ok=True)
        for fig in doc.figures():
            (files / f"{fig.name}.png").write_bytes(fig.png)
        md_path = out / f"{name}.md"
        _write_text(md_path, render_markdown(doc, files.name))
    return ReportFiles(html_path, md_path, len(doc.figures()), time.perf_counter() - t0)
