"""Matplotlib plumbing for the report: figures are built on the object API with the Agg
canvas (no pyplot state, no display), rendered to PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
DPI = 96


def new_figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    width: float = 10.5,
    row_height: float = 2.6,
    sharex: bool = False,
) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, max(row_height * nrows, 2.4)), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=sharex, squeeze=False)
    for ax in axes.flat:
        ax.grid(True, alpha=0.3, linewidth=0.6)
        ax.tick_params(labelsize=8)
    return fig, axes


def to_png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def cdf(
    ax: Any,
    values: np.ndarray,
    *,
    scale: float = 1.0,
    label: str | None = None,
    c: str | None = None,
) -> None:
    v = np.sort(values[~np.isnan(values)]) * scale
    if v.size == 0:
        return
    y = np.arange(1, v.size + 1) / v.size
    ax.step(v, y, where="post", label=label, color=c, linewidth=1.2)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("fraction ≤ x", fontsize=8)


def hline(ax: Any, y: float | None, label: str, c: str = "#d62728") -> None:
    if y is not None:
        ax.axhline(y, color=c, linestyle="--", linewidth=1, label=label)


def vline(ax: Any, x: float | None, label: str, c: str = "#d62728", style: str = "--") -> None:
    if x is not None:
        ax.axvline(x, color=c, linestyle=style, linewidth=1, label=label)


def title(ax: Any, text: str) -> None:
    ax.set_title(text, fontsize=9.5, loc="left")


def legend(ax: Any, **kw: Any) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7.5, **kw)


def empty(ax: Any, text: str) -> None:
    ax.text(
        0.5,
        0.5,
        text,
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize=9,
        color="#57606a",
    )
    ax.set_xticks([])
    ax.set_yticks([])


def log_x_if_wide(ax: Any, values: Sequence[float]) -> None:
    v = [x for x in values if x is not None and x > 0]
    if len(v) >= 2 and max(v) / min(v) >= 20:
        ax.set_xscale("log")
