"""``write_report_files``: runs and sweeps to one self-contained HTML file plus Markdown."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler import __version__
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
class ComputedPlan:
    """A capacity plan computed before the report (``capacity.report_plan``, by ``infprof
    report --plan-model``): its JSON form, or ``{"error": ...}``, and the command it stands for."""

    data: dict[str, Any]
    origin: str


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
    plan: ComputedPlan | None = None,
    notes: dict[Path, list[str]] | None = None,
    knees: dict[Path, list[dict[str, Any]]] | None = None,
) -> Document:
    """The report of ``inputs``, read and rendered. What ``infprof report`` computed before:
    ``notes``, per run, what its repair did (``analysis.repair``); ``knees``, per sweep, the
    knees of its finished points (``analysis.knee``; a sweep not in it shows those its index
    stored); ``plan``, the plan of --plan-model (a plan.json beside an input comes first)."""
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
            if knees and item.path in knees:
                item.index["knees"] = knees[item.path]
            heading = f"Sweep {item.sweep_id}" if multi else None
            sections += sweep_sections(item, prefix, heading)
        else:
            heading = f"Run {item.run_id}" if multi else None
            sections += run_sections(item, prefix, heading)
    sections += _plan([item.path for item in loaded], plan)
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


def stored_plan(inputs: Sequence[Path]) -> Path | None:
    """The plan.json beside the first input that has one: the report shows it (and no plan
    computed from --plan-model)."""
    return next((p / PLAN_FILE for p in inputs if (p / PLAN_FILE).exists()), None)


def _plan(inputs: Sequence[Path], computed: ComputedPlan | None) -> list[Section]:
    p = stored_plan(inputs)
    if p is not None:
        try:
            data = Plan.load(p).to_dict()
        except StorageError as e:
            return plan_sections({"error": f"{p} is unreadable ({e.one_line()})"}, str(p))
        return plan_sections(data, str(p))
    return plan_sections(computed.data, computed.origin) if computed else []


def _write_text(path: Path, text: str) -> None:
    write_text_atomic(path, text, "choose a writable --out directory")


def write_report_files(
    inputs: Sequence[Path],
    out_dir: Path | None = None,
    formats: Sequence[str] = FORMATS,
    plan: ComputedPlan | None = None,
    name: str = "report",
    notes: dict[Path, list[str]] | None = None,
    knees: dict[Path, list[dict[str, Any]]] | None = None,
) -> ReportFiles:
    """Write ``<out_dir>/<name>.html`` and/or ``<name>.md`` (figures for Markdown under
    ``<name>_files/``). ``out_dir`` defaults to the input directory (one input) or the current
    directory (several). ``plan``, ``notes`` and ``knees``: see ``build_document``."""
    t0 = time.perf_counter()
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise SpecError(
            f"--format: unknown format {', '.join(bad) or '(none)'}", "use html, md or html,md"
        )
    inputs = [Path(p) for p in inputs]
    doc = build_document(inputs, plan, notes, knees)
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
