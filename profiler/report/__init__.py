"""HTML and Markdown reports of runs and sweeps (``infprof report``).

``write_html_and_markdown([path, ...])`` returns the path of the HTML file (Markdown beside
it); ``report.build.write_report_files`` writes the formats asked for. The
heavy modules (matplotlib, pyarrow) load only when a report is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def write_html_and_markdown(inputs: Sequence[Path], out_dir: Path | None = None) -> Path:
    """Write report.html and report.md of ``inputs`` (run or sweep directories); returns the
    HTML path."""
    from profiler.report.build import write_report_files

    return write_report_files(list(inputs), out_dir).main
