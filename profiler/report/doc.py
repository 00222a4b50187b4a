"""A small document model (sections of text, tables, figures, notes, code) rendered to one
self-contained HTML file (figures inlined as base64 PNG, CSS inline, no external assets) and
to Markdown (figures written as PNG files next to it)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

CSS = """
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Helvetica,Arial,sans-serif;
 margin:0 auto;max-width:1180px;padding:0 24px 48px;color:#1f2328;line-height:1.45}
h1{font-size:1.7em;border-bottom:1px solid #d0d7de;padding-bottom:.3em}
h2{font-size:1.3em;border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.08em;margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.9em}
th,td{border:1px solid #d0d7de;padding:3px 9px;text-align:right;white-space:nowrap}
th{background:#f6f8fa} td:first-child,th:first-child{text-align:left}
caption{caption-side:top;text-align:left;color:#57606a;font-size:.9em;padding-bottom:3px}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eaeef2}
figcaption{color:#57606a;font-size:.88em}
.note{background:#fff8c5;border:1px solid #d4a72c66;padding:.5em .8em;border-radius:4px}
.subtitle{color:#57606a} nav{font-size:.9em;columns:2} nav a{color:#0969da;text-decoration:none}
pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:.82em}
details summary{cursor:pointer;color:#0969da}
.table-wrap{overflow-x:auto} table.kv td{text-align:left} table.kv td:first-child{color:#57606a}
"""


@dataclass
class Text:
    text: str


@dataclass
class Note:
    """A callout, e.g. "GPU telemetry not available: ..."."""

    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str | None = None


@dataclass
class Figure:
    name: str  # file stem in the Markdown output; unique within a document
    png: bytes
    alt: str
    caption: str | None = None


@dataclass
class Code:
    text: str
    summary: str | None = None  # collapsible in HTML when set


Block = Text | Note | Table | Figure | Code


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2

    def add(self, *blocks: Block) -> Section:
        self.blocks.extend(blocks)
        return self


@dataclass
class Document:
    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def render_html(doc: Document) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(doc.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(doc.title)}</h1>",
    ]
    if doc.subtitle:
        out.append(f'<p class="subtitle">{_e(doc.subtitle)}</p>')
    toc = [s for s in doc.sections if s.level == 2]
    if len(toc) > 2:
        out.append(
            "<nav><ul>"
            + "".join(f'<li><a href="#{_e(s.id)}">{_e(s.title)}</a></li>' for s in toc)
            + "</ul></nav>"
        )
    for s in doc.sections:
        out.append(f'<section id="{_e(s.id)}"><h{s.level}>{_e(s.title)}</h{s.level}>')
        out.extend(_block_html(b) for b in s.blocks)
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


def _block_html(b: Block) -> str:
    if isinstance(b, Text):
        return "".join(f"<p>{_e(p)}</p>" for p in b.text.split("\n\n"))
    if isinstance(b, Note):
        return f'<p class="note">{_e(b.text)}</p>'
    if isinstance(b, Table):
        cap = f"<caption>{_e(b.caption)}</caption>" if b.caption else ""
        head = "".join(f"<th>{_e(h)}</th>" for h in b.headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in b.rows
        )
        if not any(b.headers):  # a key-value table
            return f'<div class="table-wrap"><table class="kv">{cap}<tbody>{body}</tbody></table></div>'
        return f'<div class="table-wrap"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    if isinstance(b, Figure):
        data = base64.b64encode(b.png).decode("ascii")
        cap = f"<figcaption>{_e(b.caption)}</figcaption>" if b.caption else ""
        return (
            f'<figure id="fig-{_e(b.name)}"><img src="data:image/png;base64,{data}" '
            f'alt="{_e(b.alt)}" data-plot="{_e(b.name)}">{cap}</figure>'
        )
    pre = f"<pre>{_e(b.text)}</pre>"
    return f"<details><summary>{_e(b.summary)}</summary>{pre}</details>" if b.summary else pre


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: Document, image_dir: str) -> str:
    """Markdown text; figures are referenced as ``{image_dir}/{name}.png``."""
    out = [f"# {doc.title}", ""]
    if doc.subtitle:
        out += [f"_{doc.subtitle}_", ""]
    for s in doc.sections:
        out += [f"{'#' * s.level} {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Text):
                out += [b.text, ""]
            elif isinstance(b, Note):
                out += [f"> **Note:** {b.text}", ""]
            elif isinstance(b, Table):
                if b.caption:
                    out += [f"*{b.caption}*", ""]
                out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
                out.append(
                    "|" + "|".join("---" if i == 0 else "---:" for i in range(len(b.headers))) + "|"
                )
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
                out.append("")
            elif isinstance(b, Figure):
                out += [f"![{b.alt}]({image_dir}/{b.name}.png)", ""]
                if b.caption:
                    out += [f"*{b.caption}*", ""]
            else:
                if b.summary:
                    out += [f"<details><summary>{b.summary}</summary>", ""]
                out += ["```", b.text, "```", ""]
                if b.summary:
                    out += ["</details>", ""]
    return "\n".join(out)
