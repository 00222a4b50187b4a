"""infprof report: every section and plot renders for synthetic run and sweep directories; the
HTML is self-contained; dead runs are repaired; missing telemetry is said, not drawn."""

from __future__ import annotations

import base64
import json
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from profiler.cli.main import cli
from profiler.report.build import write_report_files
from tests.fakes.synthetic_runs import make_run, make_sweep

RUN_SECTIONS = {"summary", "latency", "timeline", "energy", "interconnect", "server", "inputs"}
RUN_PLOTS = {"latency", "timeline", "energy", "interconnect", "kv"}
SWEEP_SECTIONS = {
    "overview",
    "points",
    "latency-throughput",
    "slo-attainment",
    "distributions",
    "gpu",
    "energy",
    "interconnect",
    "inputs",
}
SWEEP_PLOTS = {
    "sweep-latency-throughput",
    "sweep-slo-attainment",
    "sweep-distributions",
    "sweep-gpu",
    "sweep-energy",
    "sweep-interconnect",
}


class Page(HTMLParser):
    """Section ids, plots (img data-plot), notes and every external reference of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: set[str] = set()
        self.plots: dict[str, str] = {}
        self.external: list[str] = []
        self.notes: list[str] = []
        self._in_note = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("id"):
            self.sections.add(a["id"] or "")
        if tag == "img":
            self.plots[a.get("data-plot") or ""] = a.get("src") or ""
        for key in ("src", "href"):
            v = a.get(key) or ""
            if v and not v.startswith(("data:", "#")):
                self.external.append(v)
        if tag in ("script", "link"):
            self.external.append(tag)
        self._in_note = tag == "p" and a.get("class") == "note"

    def handle_data(self, data: str) -> None:
        if self._in_note:
            self.notes.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "p":
            self._in_note = False


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text())
    return page


def check_images(page: Page) -> None:
    for name, src in page.plots.items():
        assert src.startswith("data:image/png;base64,"), name
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, name


@pytest.fixture(scope="module")
def plan_json(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from profiler.capacity.planner import plan
    from profiler.capacity.result import PlanRequest

    return plan(PlanRequest(model="llama-3.1-8b", gpus=["h100", "h200"], target_rps=10)).model_dump(
        mode="json"
    )


def test_run_report_has_every_section_and_plot(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r1", n=500)
    t0 = time.perf_counter()
    files = write_report_files([run])
    assert time.perf_counter() - t0 < 15
    assert files.html == run / "report.html" and files.markdown == run / "report.md"
    page = parse(files.html)
    assert page.sections >= RUN_SECTIONS
    assert set(page.plots) == RUN_PLOTS
    check_images(page)
    assert page.external == []  # self-contained
    html = files.html.read_text()
    assert "resolved run spec" in html and "NVIDIA H100" in html and "versions" in html
    md = files.markdown.read_text()
    for plot in RUN_PLOTS:
        assert f"report_files/{plot}.png" in md
        assert (run / "report_files" / f"{plot}.png").stat().st_size > 5000


def test_run_without_gpu_says_so(tmp_path: Path) -> None:
    run = make_run(tmp_path, "cpu-run", gpu=False, n=200)
    page = parse(write_report_files([run]).main)
    assert {"latency", "timeline"} <= set(page.plots)
    assert not {"energy", "interconnect", "kv"} & set(page.plots)
    notes = " ".join(page.notes)
    assert "GPU telemetry is not available" in notes and "NVML library not found" in notes
    assert "Energy is not available" in notes
    assert "Server metrics are not available" in notes


def _files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def test_building_a_report_only_reads_the_run_directory(tmp_path: Path) -> None:
    """A report reads and renders: repairing a killed run is ``infprof report``'s step before
    it (profiler/analysis/repair.py), never the report's; a run left unrepaired is refused with
    the fix, its files untouched."""
    from profiler.errors import StorageError
    from profiler.report.build import build_document

    run = make_run(tmp_path, "dead", journal_only=True, n=60)
    before = _files(run)
    with pytest.raises(StorageError, match="ended before its records were compacted") as e:
        build_document([run])
    assert "infprof report" in e.value.fix
    assert _files(run) == before
    done = make_run(tmp_path, "done", n=60)
    (done / "samples.parquet").unlink()  # as a run killed during compaction leaves it
    before = _files(done)
    build_document([done])
    assert _files(done) == before


def test_dead_run_is_compacted_and_summarised(tmp_path: Path) -> None:
    run = make_run(tmp_path, "dead", journal_only=True, n=120)
    assert not (run / "requests.parquet").exists() and not (run / "summary.json").exists()
    result = CliRunner().invoke(cli, ["report", str(run)])
    assert result.exit_code == 0, result.output
    page = parse(run / "report.html")
    assert (run / "requests.parquet").exists() and (run / "samples.parquet").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["requests"]["total"] == 120
    notes = " ".join(page.notes)
    assert "compacted" in notes and "recomputed" in notes and "ended early (interrupted" in notes
    assert set(page.plots) >= RUN_PLOTS


def test_sweep_report_has_every_section_and_plot(tmp_path: Path, plan_json: dict) -> None:
    sweep = make_sweep(tmp_path)
    (sweep / "plan.json").write_text(json.dumps(plan_json))
    files = write_report_files([sweep])
    page = parse(files.main)
    assert SWEEP_SECTIONS | {"plan", "plan-interconnect", "plan-scaling"} <= page.sections
    assert set(page.plots) == SWEEP_PLOTS | {"plan-test-time-scaling"}
    check_images(page)
    assert page.external == []
    html = files.main.read_text()
    assert "c1-synthetic-conc16" in html and "NVLink4 900" in html and "knee" in html


def test_sweep_without_gpu_and_with_search(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, gpu=False)
    index = json.loads((sweep / "index.json").read_text())
    index["searches"] = [
        {
            "config_id": "c0", "label": "tp1", "workload": "synthetic", "target_fraction": 0.9, "best_rate": 3.0,
            "failed_rate": 3.2, "stopped": "converged", "slo_met_rps_at_best": 2.9, "output_tokens_per_s_at_best": 90.0,
            "probes": [
                {"rate": 1.0, "passed": True, "fraction": 1.0, "achieved_rps": 1.0, "error_rate": 0.0, "reason": ""},
                {"rate": 2.0, "passed": True, "fraction": 0.97, "achieved_rps": 2.0, "error_rate": 0.0, "reason": ""},
                {"rate": 4.0, "passed": False, "fraction": 0.2, "achieved_rps": 3.1, "error_rate": 0.0, "reason": ""},
                {"rate": 3.0, "passed": True, "fraction": 0.92, "achieved_rps": 2.9, "error_rate": 0.0, "reason": ""},
                {"rate": 3.2, "passed": False, "fraction": 0.85, "achieved_rps": 3.0, "error_rate": 0.0, "reason": ""},
            ],
        }
    ]  # fmt: skip
    (sweep / "index.json").write_text(json.dumps(index))
    page = parse(write_report_files([sweep]).main)
    assert "slo-search" in page.sections and "sweep-slo-search" in page.plots
    assert not {"sweep-gpu", "sweep-energy", "sweep-interconnect"} & set(page.plots)
    notes = " ".join(page.notes)
    assert "GPU telemetry is not available" in notes and "NVML library not found" in notes


def test_several_inputs_in_one_report(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", gpu=False, n=100)
    b = make_run(tmp_path, "b", gpu=False, n=100, ttft_s=0.08)
    out = tmp_path / "out"
    files = write_report_files([a, b], out, formats=["html"])
    assert files.html == out / "report.html" and files.markdown is None
    page = parse(files.main)
    assert {"overview", "i0-summary", "i1-summary", "i0-latency", "i1-latency"} <= page.sections
    assert {"i0-latency", "i1-latency"} <= set(page.plots)


def test_plan_from_options_and_planner_errors(tmp_path: Path, plan_json: dict) -> None:
    """``infprof report --plan-model`` has the planner compute the plan before the report
    renders it; a plan.json beside the input is shown instead."""
    run = make_run(tmp_path, "r", gpu=False, n=50)
    args = ["report", str(run), "--plan-gpu", "h100", "--plan-target-rps", "5"]
    res = CliRunner().invoke(cli, [*args, "--plan-model", "llama-3.1-8b"])
    assert res.exit_code == 0, res.output
    page = parse(run / "report.html")
    assert "plan" in page.sections and "plan-test-time-scaling" in page.plots
    html = (run / "report.html").read_text()
    assert "infprof plan --model llama-3.1-8b --gpu h100" in html
    res = CliRunner().invoke(cli, [*args, "--plan-model", "no-such-model"])
    assert res.exit_code == 0, res.output
    page = parse(run / "report.html")
    assert "plan" in page.sections and any("could not be computed" in n for n in page.notes)
    (run / "plan.json").write_text(json.dumps(plan_json))
    res = CliRunner().invoke(cli, [*args, "--plan-model", "no-such-model"])
    assert res.exit_code == 0, res.output
    page = parse(run / "report.html")
    assert not any("could not be computed" in n for n in page.notes)
    assert str(run / "plan.json") in (run / "report.html").read_text()


def test_cli_prints_the_path_and_rejects_bad_input(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", gpu=False, n=50)
    res = CliRunner().invoke(cli, ["report", str(run), "--format", "md"])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == str(run / "report.md")
    res = CliRunner().invoke(cli, ["report", str(run), "--format", "pdf"])
    assert res.exit_code == 2 and "unknown format pdf" in res.output
    res = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert res.exit_code == 5 and "neither a run directory nor a sweep directory" in res.output
    res = CliRunner().invoke(cli, ["report", str(run), "--json", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["html"] == str(tmp_path / "o" / "report.html")
    for bad in ("../escape", "a/b", ".."):
        res = CliRunner().invoke(cli, ["report", str(run), "--name", bad])
        assert res.exit_code == 2 and "a file name stem, not a path" in res.output
    assert not (tmp_path / "escape.html").exists()


def test_runs_without_successes_or_records_still_render(tmp_path: Path) -> None:
    from profiler.store.rundir import RunDir, write_json_atomic

    failed = make_run(tmp_path, "all-failed", gpu=False, n=40, error_fraction=1.0)
    page = parse(write_report_files([failed]).main)
    assert {"latency", "timeline"} <= set(page.plots)
    rd = RunDir.create(tmp_path, "empty")
    (rd.path / "requests.jsonl").write_text("")
    write_json_atomic(
        rd.path / "manifest.json", {"run_id": "empty", "ended": "interrupted", "spec": None}
    )
    from profiler.analysis.repair import repair_inputs

    page = parse(write_report_files([rd.path], notes=repair_inputs([rd.path])).main)
    assert (
        "summary" in page.sections
        and json.loads((rd.path / "summary.json").read_text())["requests"]["total"] == 0
    )


def test_multi_node_run_has_a_per_node_table_and_timeline(tmp_path: Path) -> None:
    import re

    from profiler.report.data import load_run
    from profiler.report.run_plots import node_series

    run = make_run(tmp_path, "multi", nodes=("host-a", "host-b"), n=300)
    files = write_report_files([run])
    page = parse(files.html)
    assert "nodes" in page.sections and "node-timeline" in page.plots
    check_images(page)
    html = files.html.read_text()
    img = re.search(r'<img[^>]*data-plot="node-timeline"[^>]*>', html)
    assert img and re.search(r'alt="[^"]*host-a, host-b"', img.group(0))
    section = html[html.index('<section id="nodes"') :]
    section = section[: section.index("</section>")]
    for cell in ("host-a", "host-b", "all nodes", "610 W", "810 W"):
        assert f"<td>{cell}</td>" in section, cell
    assert "report_files/node-timeline.png" in files.markdown.read_text()
    # what the timeline draws: one line per node, its GPUs combined
    data = load_run(run)
    util = node_series(data, "gpu_utilization_ratio", "mean")
    power = node_series(data, "gpu_power_watts", "sum")
    assert set(util) == set(power) == {"host-a", "host-b"}
    assert util["host-a"][1] == pytest.approx(0.5) and util["host-b"][1] == pytest.approx(0.6)
    assert power["host-a"][1] == pytest.approx(610.0) and power["host-b"][1] == pytest.approx(810.0)


def test_node_section_only_with_prometheus_and_says_why_when_empty(tmp_path: Path) -> None:
    from profiler.analysis.summary_json import summarize_run
    from profiler.store.rundir import write_json_atomic

    plain = make_run(tmp_path, "plain", n=100)
    assert "nodes" not in parse(write_report_files([plain]).main).sections
    manifest = json.loads((plain / "manifest.json").read_text())
    manifest["spec"]["prometheus_url"] = "http://prometheus:9090"
    write_json_atomic(plain / "manifest.json", manifest)
    write_json_atomic(plain / "summary.json", summarize_run(plain))
    page = parse(write_report_files([plain]).main)
    assert "nodes" in page.sections and "node-timeline" not in page.plots
    assert any(
        "Per-node telemetry is not available" in n and "infprof_gpu_" in n for n in page.notes
    )


def _overview_slo(sweep: Path) -> str:
    from profiler.report.build import build_document

    (overview,) = [s for s in build_document([sweep]).sections if s.id == "overview"]
    rows = [r for b in overview.blocks for r in getattr(b, "rows", []) if r and r[0] == "SLO"]
    assert len(rows) == 1
    return str(rows[0][1])


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        # today's sweep.json: the SloSpec's model dump
        (
            {"slo": {"ttft_s": 0.3, "tpot_s": 0.04, "e2e_s": None, "target_fraction": 0.8}},
            "TTFT ≤ 300 ms, TPOT ≤ 40 ms for 80% of requests",
        ),
        # older ones: the --slo text, the search's fraction beside it
        ({"slo": "ttft=0.3,tpot=0.04"}, "TTFT ≤ 300 ms, TPOT ≤ 40 ms for 90% of requests"),
        (
            {"slo": "ttft=0.3", "target_fraction": 0.75},
            "TTFT ≤ 300 ms for 75% of requests",
        ),
        (
            {"slo": "ttft=0.3,fraction=0.95", "target_fraction": 0.75},
            "TTFT ≤ 300 ms for 95% of requests",
        ),
    ],
    ids=["model-dump", "text", "text-fraction-beside", "text-with-fraction"],
)
def test_sweep_without_finished_points_shows_its_slo(
    tmp_path: Path, spec: dict, shown: str
) -> None:
    """The SLO line of a sweep comes from sweep.json, in any of its forms; with no finished
    point there is no manifest to fall back on."""
    sweep = make_sweep(tmp_path, configs=1, loads=(1, 2))
    index = json.loads((sweep / "index.json").read_text())
    for p in index["points"]:
        p["status"], p["summary"] = "failed", None
    index["status"] = "interrupted"
    (sweep / "index.json").write_text(json.dumps(index))
    base = json.loads((sweep / "sweep.json").read_text())
    base.pop("slo")
    (sweep / "sweep.json").write_text(json.dumps({**base, **spec}))
    assert _overview_slo(sweep) == shown
