"""One table per result: the console (rich) and the report (HTML/Markdown) show the same
headers and the same cells for a plan and a sweep; the report's section builders compute
neither knees nor plans."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from profiler.report.doc import Table
from tests.fakes.synthetic_runs import make_sweep

REPO = Path(__file__).resolve().parents[2]


def _cell(c: Any) -> str:
    return c.plain if isinstance(c, Text) else str(c)


def _console_tables(monkeypatch: pytest.MonkeyPatch, draw: Any) -> list[tuple[list, list]]:
    """Every rich table ``draw()`` prints, as (headers, rows) of plain strings."""
    seen: list[tuple[list, list]] = []
    real = Console.print

    def spy(self: Console, *objects: Any, **kw: Any) -> None:
        for o in objects:
            if isinstance(o, RichTable) and o.show_header:
                cols = o.columns
                headers = [_cell(c.header) for c in cols]
                cells = [[_cell(x) for x in c._cells] for c in cols]
                rows = [list(r) for r in zip(*cells, strict=True)] if cells else []
                seen.append((headers, rows))
        real(self, *objects, **kw)

    monkeypatch.setattr(Console, "print", spy)
    draw()
    return seen


def _report_tables(sections: list[Any]) -> list[Table]:
    return [b for s in sections for b in s.blocks if isinstance(b, Table) and any(b.headers)]


def _assert_shown_alike(html: list[Table], console: list[tuple[list, list]]) -> None:
    assert html, "the report has no table to compare"
    for t in html:
        match = [c for c in console if c[0] == t.headers]
        assert match, f"no console table with the report's headers {t.headers}"
        assert any(rows == t.rows for _, rows in match), f"cells differ for {t.headers}"


@pytest.fixture(scope="module")
def plan_result() -> Any:
    from profiler.capacity.planner import plan
    from profiler.capacity.result import PlanRequest

    return plan(
        PlanRequest(
            model="deepseek-r1",
            gpus=["h100", "h200"],
            input_len=1024,
            output_len=2048,
            target_rps=20,
            disaggregated=True,
            scaling=False,
        )
    )


def test_plan_console_and_report_show_the_same_tables(
    monkeypatch: pytest.MonkeyPatch, plan_result: Any
) -> None:
    from profiler.cli.plan import render
    from profiler.report.plan_section import plan_sections

    data = plan_result.model_dump(mode="json")
    shown = _report_tables(plan_sections(data, "test"))
    top = len(data["configurations"])  # the report's own cut is applied below
    console = _console_tables(
        monkeypatch, lambda: render(plan_result, top=top, console=Console(width=400))
    )
    # the report lists the top 15; the console --top rows: compare the same rows
    for t in shown:
        for headers, rows in console:
            if headers == t.headers:
                rows[:] = rows[: len(t.rows)]
    _assert_shown_alike(shown, console)
    headers = {h for t in shown for h in t.headers}
    assert {"GPUs/replica", "$/1M tok"} <= headers


def test_sweep_console_and_report_show_the_same_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from profiler.cli.sweep import render_index
    from profiler.report.build import build_document

    sweep = make_sweep(tmp_path)
    index = json.loads((sweep / "index.json").read_text())
    index["searches"] = [
        {"config_id": "c0", "label": "tp1", "workload": "synthetic", "target_fraction": 0.9, "best_rate": 3.0,
         "failed_rate": 3.2, "stopped": "converged", "slo_met_rps_at_best": 2.9, "output_tokens_per_s_at_best": 90.0,
         "probes": [{"rate": 1.0, "passed": True, "fraction": 1.0, "achieved_rps": 1.0, "error_rate": 0.0, "reason": ""}]}
    ]  # fmt: skip
    # a finished sweep's stored knees (one found, one not), shown as stored
    index["knees"] = [
        {"config_id": "c0", "workload": "synthetic", "x_metric": "output_tokens_per_s", "y_metric": "e2e_p50_s",
         "point": "c0-synthetic-conc4", "load": {"kind": "concurrency", "value": 4}, "x": 120.5, "y": 0.25,
         "score": 0.4, "reason": None},
        {"config_id": "c1", "workload": "synthetic", "x_metric": "output_tokens_per_s", "y_metric": "e2e_p50_s",
         "point": None, "load": None, "x": None, "y": None, "score": None, "reason": "no bend in the curve"},
    ]  # fmt: skip
    (sweep / "index.json").write_text(json.dumps(index))
    doc = build_document([sweep])
    shown = _report_tables(
        [
            s
            for s in doc.sections
            if s.id in ("overview", "points", "latency-throughput", "slo-search")
        ]
    )
    assert len(shown) == 4  # configurations, points, knees, searches
    data = json.loads((sweep / "index.json").read_text())
    console = _console_tables(monkeypatch, lambda: render_index(data, sweep))
    _assert_shown_alike(shown, console)


def _imported_names(source: str, package: str) -> set[str]:
    """Every module ``source`` (a module of ``package``) imports, in any form (``import a.b``,
    ``from a import b``, relative, inside functions): for ``from a import b``, ``a`` and ``a.b``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names |= {module, *(f"{module}.{a.name}" for a in node.names)}
    return names


def test_report_renderers_compute_neither_knees_nor_plans() -> None:
    """A report reads and renders: knees (analysis), plans (capacity) and the repair of a
    killed run (analysis) are computed by ``infprof report`` before it; no module under
    profiler/report/ imports them."""
    banned = (
        "profiler.analysis.knee",
        "profiler.sweep.knees",
        "profiler.capacity",
        "profiler.analysis.repair",
    )

    def bad(names: set[str]) -> list[str]:
        return sorted(m for m in names if any(m == b or m.startswith(b + ".") for b in banned))

    # the check sees every form of import
    probe = (
        "def f():\n    from ..capacity import report_plan\n    import profiler.analysis.knee\n"
        "from profiler.analysis import repair\nfrom profiler import capacity\n"
    )
    assert bad(_imported_names(probe, "profiler.report")) == [
        "profiler.analysis.knee", "profiler.analysis.repair", "profiler.capacity",
        "profiler.capacity.report_plan",
    ]  # fmt: skip
    modules = sorted((REPO / "profiler" / "report").rglob("*.py"))
    assert len(modules) > 10
    for path in modules:
        package = ".".join(path.relative_to(REPO).parts[:-1])
        found = bad(_imported_names(path.read_text(), package))
        assert not found, f"{path.relative_to(REPO)} imports {found}"


def _markdown_table(md: str, caption: str) -> list[list[str]]:
    """The rows of the Markdown table under ``*caption*``, as cells."""
    lines = md[md.index(f"*{caption}*") :].splitlines()[2:]
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def test_report_of_a_sweep_without_stored_knees_shows_the_knees(tmp_path: Path) -> None:
    """An interrupted sweep has no knees in its index: ``infprof report`` has analysis compute
    those of its finished points before the report renders them, as before."""
    from click.testing import CliRunner

    from profiler.analysis.knee import sweep_knees
    from profiler.cli.main import cli

    sweep = make_sweep(tmp_path, configs=1, loads=(1, 2, 4, 6, 8, 12, 16))
    index = json.loads((sweep / "index.json").read_text())
    index["status"], index["knees"] = "interrupted", []
    (sweep / "index.json").write_text(json.dumps(index))
    before = (sweep / "index.json").read_text()
    res = CliRunner().invoke(cli, ["report", str(sweep), "--format", "md"])
    assert res.exit_code == 0, res.output
    assert (sweep / "index.json").read_text() == before  # computed for the report, not stored
    rows = _markdown_table(
        (sweep / "report.md").read_text(), "knee of the throughput-latency curve (Kneedle)"
    )
    knees = sweep_knees(index["points"])
    assert [r[0] for r in rows] == [k["config_id"] for k in knees]
    found = [k for k in knees if k["point"]]
    assert found, "the synthetic sweep bends: a knee is expected"
    for k in found:
        row = next(r for r in rows if r[0] == k["config_id"])
        assert row[3] == f"{k['x']:.1f}" and row[4] == f"{k['y'] * 1000:.1f}"


def test_run_latency_table_is_the_same_on_console_and_in_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from profiler.cli.render import render_summary
    from profiler.report.build import build_document
    from tests.fakes.synthetic_runs import make_run

    run = make_run(tmp_path, "r", gpu=False, n=80, arrival={"kind": "poisson", "rate": 4.0})
    doc = build_document([run])
    shown = _report_tables([s for s in doc.sections if s.id == "latency"])
    summary = json.loads((run / "summary.json").read_text())
    console = _console_tables(
        monkeypatch, lambda: render_summary(summary, run, console=Console(width=200))
    )
    _assert_shown_alike(shown, console)


def test_one_formatting_module() -> None:
    """No copy of report/fmt's helpers (``return "-" if v is None else ...``) in cli/ or
    report/: they import it."""
    copies = []
    for path in [
        *(REPO / "profiler" / "cli").glob("*.py"),
        *(REPO / "profiler" / "report").glob("*.py"),
    ]:
        if path.name == "fmt.py":
            continue
        for f in ast.walk(ast.parse(path.read_text())):
            if not isinstance(f, ast.FunctionDef) or len(f.body) != 1:
                continue
            ret = f.body[0]
            if (
                isinstance(ret, ast.Return)
                and isinstance(ret.value, ast.IfExp)
                and isinstance(ret.value.body, ast.Constant)
                and ret.value.body.value == "-"
            ):
                copies.append(f"{path.name}:{f.name}")
    assert copies == []
