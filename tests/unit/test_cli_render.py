"""render_summary's per-node table (a --prometheus-url run) and its silence without one."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from profiler.analysis.run_summary import summarize_run
from profiler.cli.render import render_summary
from tests.fakes.synthetic_runs import make_run


def rendered(summary: dict) -> str:
    buf = io.StringIO()
    render_summary(summary, console=Console(file=buf, width=120, color_system=None))
    return buf.getvalue()


def test_a_multi_node_run_prints_one_row_per_node(tmp_path: Path) -> None:
    run = make_run(tmp_path, "multi", nodes=("host-a", "host-b"), n=100)
    out = rendered(summarize_run(run))
    assert "nodes (from Prometheus)" in out
    rows = {line.split()[1]: line for line in out.splitlines() if "host-" in line}
    assert set(rows) == {"host-a", "host-b"}
    assert "50%" in rows["host-a"] and "610" in rows["host-a"]  # 2 GPUs: 300 W + 310 W
    assert "60%" in rows["host-b"] and "810" in rows["host-b"]


def test_a_single_machine_run_prints_no_node_table(tmp_path: Path) -> None:
    summary = summarize_run(make_run(tmp_path, "plain", n=100))
    assert summary["nodes"]["available"] is False
    assert "nodes" not in rendered(summary)
    summary["nodes"] = {"available": False, "reason": "Prometheus returned nothing"}
    assert "nodes: not available (Prometheus returned nothing)" in rendered(summary)
