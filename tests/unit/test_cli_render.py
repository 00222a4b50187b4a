"""render_summary's per-node table (a --prometheus-url run) and its silence without one, the
client-health table, and the progress on stderr (a bar on a terminal, lines otherwise)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from profiler.analysis.summary_json import summarize_run
from profiler.cli.render import ProgressBar, progress_on_stderr, render_summary
from profiler.load.driver import Progress
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


HEALTH = {
    "saturated": False,
    "reason": None,
    "event_loop_lag_s": {"p50": 0.0004, "p99": 0.0021, "max": None},
    "cpu_seconds": 3.25,
    "cpu_ratio": 0.42,
    "dispatch_lag_p99_s": 0.0013,
    "run_queue_wait_ratio": None,
    "event_loop": "uvloop",
    "token_counting": "usage",
}


def health_table(summary: dict) -> str:
    console = Console(record=True, width=120, color_system=None, file=io.StringIO())
    render_summary(summary, console=console)
    text = console.export_text()
    assert "client health" in text
    return text[text.index("client health") :].split("\n\n")[0]


def test_client_health_table_shows_numbers_with_units(tmp_path: Path) -> None:
    summary = summarize_run(make_run(tmp_path, "health", n=50))
    summary["client"] = dict(HEALTH)
    table = health_table(summary)
    assert "None" not in table and "{" not in table
    assert "0.4 ms" in table and "2.1 ms" in table  # event-loop lag p50, p99
    assert "3.2 s" in table and "42%" in table and "1.3 ms" in table
    assert "uvloop" in table and "usage" in table


def test_client_health_not_recorded_shows_no_none(tmp_path: Path) -> None:
    summary = summarize_run(make_run(tmp_path, "old", n=50))
    summary["client"] = {"saturated": None, "reason": "client health not recorded"}
    table = health_table(summary)
    assert "None" not in table and "{" not in table
    assert "client health not recorded" in table


def test_report_health_table_has_no_raw_dicts(tmp_path: Path) -> None:
    from profiler.report.fmt import client_health_rows

    rows = client_health_rows(HEALTH)
    cells = " ".join(v for _, v in rows)
    assert "None" not in cells and "{" not in cells and "0.4 ms" in cells


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _progress(elapsed_s: float, done: int) -> Progress:
    return Progress(
        elapsed_s=elapsed_s,
        sent=done + 2,
        done=done,
        ok=done,
        failed=0,
        inflight=2,
        output_tokens=100 * done,
        planned=10,
    )


def test_progress_is_a_rich_bar_on_a_terminal() -> None:
    stream = _Tty()
    with progress_on_stderr(10, stream=stream) as show:
        assert isinstance(show, ProgressBar)
        show(_progress(1.0, 3))
        show(_progress(2.0, 7))
        assert len(show.bar.tasks) == 1 and show.bar.tasks[0].completed == 7
        show(_progress(0.5, 1))  # the next run of --repeat: a new bar
        assert len(show.bar.tasks) == 2
    assert "1/10" in stream.getvalue() and "output tok/s" in stream.getvalue()


def test_progress_stays_periodic_lines_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with progress_on_stderr(10, stream=io.StringIO()) as show:
        assert show is not None and not isinstance(show, ProgressBar)
        show(_progress(2.0, 4))
    assert "4/10 done, 2 in flight, 0 failed, 200 output tok/s" in capsys.readouterr().err
    with progress_on_stderr(10, quiet=True, stream=_Tty()) as show:
        assert show is None
