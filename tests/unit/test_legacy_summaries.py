"""Files written before the SLO attainment rename still read: summary.json's ``goodput``
section, and a sweep index's ``goodput_fraction`` / ``goodput_rps`` / ``goodput_rps_at_best``."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from profiler.cli.render import render_summary
from profiler.report.build import write_report_files
from profiler.store.schema import slo_attainment_of
from profiler.sweep.index import key_numbers, read_index
from tests.fakes.synthetic_runs import make_run, make_sweep

OLD = {"slo": {"ttft_s": 0.1}, "requests_per_s": 2.5, "fraction": 0.625, "met": 5}


def _old_summary(summary: dict) -> dict:
    summary = dict(summary)
    summary.pop("slo_attainment", None)
    summary["goodput"] = {**OLD, "meets_target": False}
    return summary


def test_old_goodput_section_reads_as_slo_attainment_from_send() -> None:
    att = slo_attainment_of({"goodput": {**OLD, "meets_target": False}})
    assert att["fraction"] == 0.625 and att["requests_per_s"] == 2.5 and att["met"] == 5
    assert att["headline"] == "from_send" and att["from_send"]["fraction"] == 0.625
    assert att["from_intended"] is None
    assert key_numbers({"goodput": OLD})["slo_attainment"] == 0.625
    assert key_numbers({"goodput": OLD})["slo_met_rps"] == 2.5
    assert slo_attainment_of({}) == {}
    new = {"slo_attainment": {"fraction": 0.9}, "goodput": OLD}
    assert slo_attainment_of(new) == {"fraction": 0.9}


def test_report_and_cli_render_an_old_run(tmp_path: Path) -> None:
    run = make_run(tmp_path, "old", gpu=False, n=100)
    summary = _old_summary(json.loads((run / "summary.json").read_text()))
    (run / "summary.json").write_text(json.dumps(summary))
    html = write_report_files([run]).html.read_text()
    assert "SLO attainment from the send (headline)" in html
    assert "62.5%" in html
    out = io.StringIO()
    render_summary(summary, console=Console(file=out, width=200))
    assert "62.5% of requests met every SLO from the send" in out.getvalue()


def test_new_run_renders_both_attainment_figures(tmp_path: Path) -> None:
    run = make_run(tmp_path, "new", gpu=False, n=100)  # a Poisson (open-loop) run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["slo_attainment"]["headline"] == "from_intended"
    html = write_report_files([run]).html.read_text()
    assert "SLO attainment from the intended start (headline)" in html
    assert "SLO attainment from the send" in html
    out = io.StringIO()
    render_summary(summary, console=Console(file=out, width=200))
    assert "from the intended start" in out.getvalue() and "from the send:" in out.getvalue()


def test_old_sweep_index_reads_under_the_new_names(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, configs=1, loads=(1, 4), gpu=False)
    index = json.loads((sweep / "index.json").read_text())
    for p in index["points"]:
        k = p["summary"]
        k["goodput_fraction"] = k.pop("slo_attainment")
        k["goodput_rps"] = k.pop("slo_met_rps")
    index["searches"] = [{"config_id": "c0", "workload": "w", "goodput_rps_at_best": 2.9}]
    (sweep / "index.json").write_text(json.dumps(index))
    data = read_index(sweep)
    for p in data["points"]:
        assert "goodput_fraction" not in p["summary"] and "slo_attainment" in p["summary"]
        assert "slo_met_rps" in p["summary"]
    assert data["searches"][0]["slo_met_rps_at_best"] == 2.9
    assert "goodput_rps_at_best" not in data["searches"][0]
