"""No module of profiler/ is over 400 lines unless its first lines say why (a comment starting
``# size:``): a long module is a sign that two concepts share one file."""

from __future__ import annotations

from pathlib import Path

LIMIT = 400
ROOT = Path(__file__).resolve().parents[2] / "profiler"


def test_no_module_over_400_lines_without_a_stated_reason() -> None:
    over = []
    for path in sorted(ROOT.rglob("*.py")):
        lines = path.read_text().splitlines()
        if len(lines) > LIMIT and not any(ln.startswith("# size:") for ln in lines[:20]):
            over.append(f"{path.relative_to(ROOT.parent)}: {len(lines)} lines")
    assert over == [], "split these along a seam, or state why not in a '# size:' comment"
