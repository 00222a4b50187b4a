"""Every relative link in README.md and docs/*.md resolves, and the README stays short.

Markdown is parsed with markdown-it-py (installed with rich), so links and headings inside code
blocks and code spans are not taken for real ones. Anchors follow GitHub's heading ids
(github-slugger): the heading's text, lower-cased, with punctuation removed (letters, digits,
``_``, ``-`` and spaces stay), each space made a ``-``; a repeated id gets ``-1``, ``-2``, ...
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_BYTES = 12_500

_MD = MarkdownIt("commonmark").enable("table")


def github_slug(text: str) -> str:
    """The id GitHub gives a heading whose rendered text is ``text``."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def _tokens(path: Path) -> list[Token]:
    return _MD.parse(path.read_text(encoding="utf-8"))


def anchors(path: Path) -> set[str]:
    """The heading ids of one page, duplicates numbered as GitHub numbers them."""
    tokens = _tokens(path)
    seen: Counter[str] = Counter()
    ids: set[str] = set()
    for i, tok in enumerate(tokens):
        if tok.type != "heading_open":
            continue
        inline = tokens[i + 1]
        text = "".join(
            child.content
            for child in inline.children or []
            if child.type in ("text", "code_inline")
        )
        base = github_slug(text)
        ids.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
        seen[base] += 1
    return ids


def links(path: Path) -> list[str]:
    """Every link target of one page (code blocks and code spans excluded)."""
    out: list[str] = []
    for tok in _tokens(path):
        for child in tok.children or []:
            if child.type == "link_open":
                out.append(str(child.attrs.get("href", "")))
    return out


def _is_external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE))


def test_github_slug_rules() -> None:
    assert github_slug("On a GPU server and on a cluster") == "on-a-gpu-server-and-on-a-cluster"
    assert github_slug("`infprof run`: one load test") == "infprof-run-one-load-test"
    assert github_slug("Precision (profiler/capacity/models.py, hardware.py)") == (
        "precision-profilercapacitymodelspy-hardwarepy"
    )
    assert github_slug("Summarising 1M requests x 100 gaps") == "summarising-1m-requests-x-100-gaps"


def test_duplicate_headings_are_numbered(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("# A\n\n## Notes\n\n```\n# not a heading\n```\n\n## Notes\n", encoding="utf-8")
    assert anchors(page) == {"a", "notes", "notes-1"}


def test_links_in_code_are_not_links(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("[a](x.md) `[b](y.md)`\n\n```\n[c](z.md)\n```\n", encoding="utf-8")
    assert links(page) == ["x.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if not target or _is_external(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / unquote(file_part)).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT)}")
            continue
        if anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            broken.append(f"{target}: no heading '#{anchor}' in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)} has broken links:\n" + "\n".join(broken)


def test_docs_pages_exist() -> None:
    assert len(PAGES) > 1, "docs/*.md not found"


def test_readme_is_short() -> None:
    size = (ROOT / "README.md").stat().st_size
    assert size < README_MAX_BYTES, (
        f"README.md is {size:,} bytes; keep it under {README_MAX_BYTES:,} "
        "(move reference material to docs/ and link it)"
    )
