"""HTML and Markdown reports of runs and sweeps (``infprof report``).

``write_report([path, ...])`` returns the path of the HTML file (Markdown beside it). The
heavy modules (matplotlib, pyarrow) load only when a report is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def write_report(inputs: Sequence[Path], out_dir: Path | None = None) -> Path:
    """Write the report of ``inputs`` (run or sweep directories); returns the HTML path."""
    from profiler.report.build import write_report as _write

    return _write(list(inputs), out_dir).main
