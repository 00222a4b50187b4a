"""Knees: of a curve by the Kneedle method (Satopää et al., "Finding a 'Kneedle' in a Haystack",
ICDCS workshops 2011), in its offline form.

Both axes are normalised to [0, 1]; the knee is the point farthest from the straight line
joining the first and last points, on the side the curve bends to:

- ``concave`` (rises then flattens, e.g. achieved throughput against offered load): the point
  with the largest ``y_n - x_n``;
- ``convex`` (flat then shoots up, e.g. latency against achieved throughput): the point with
  the largest ``x_n - y_n``.

For the throughput–latency curve of a sweep (x = achieved output tokens/s, y = latency, points
in load order) the convex knee is the operating point past which more load buys little
throughput and much latency. A curve that never strays more than ``min_score`` (0.2, in
normalised units) from that line has no knee: with few points a mild bend is noise, not
saturation.

``sweep_knees`` applies it to a sweep's points, one knee per configuration and workload;
``with_knees`` gives a sweep index its knees before a report reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Curve = Literal["concave", "convex"]
MIN_SCORE = 0.2


@dataclass(frozen=True)
class Knee:
    index: int  # index into the caller's sequences (not the sorted order)
    x: float
    y: float
    score: float  # normalised distance from the chord, 0..1


def find_knee(
    x: Sequence[float | None],
    y: Sequence[float | None],
    *,
    curve: Curve = "convex",
    min_score: float = MIN_SCORE,
) -> Knee | None:
    """The Kneedle knee of the points ``(x[i], y[i])`` (missing values skipped), or ``None``
    when there are fewer than three points or the curve is nearly straight."""
    if len(x) != len(y):
        raise ValueError("x and y must have the same length")
    idx = [i for i in range(len(x)) if x[i] is not None and y[i] is not None]
    xs = np.array([x[i] for i in idx], dtype=np.float64)
    ys = np.array([y[i] for i in idx], dtype=np.float64)
    finite = np.isfinite(xs) & np.isfinite(ys)
    keep = np.asarray(idx, dtype=np.int64)[finite]
    xs, ys = xs[finite], ys[finite]
    if xs.size < 3:
        return None
    order = np.argsort(xs, kind="stable")
    xs, ys, keep = xs[order], ys[order], keep[order]
    xr = xs[-1] - xs[0]
    yr = float(ys.max() - ys.min())
    if xr <= 0 or yr <= 0:
        return None
    xn = (xs - xs[0]) / xr
    yn = (ys - ys.min()) / yr
    # chord from the first to the last normalised point
    chord = yn[0] + (yn[-1] - yn[0]) * xn
    diff = (yn - chord) if curve == "concave" else (chord - yn)
    best = int(np.argmax(diff))
    score = float(diff[best])
    if score < min_score or best in (0, xs.size - 1):
        return None
    return Knee(index=int(keep[best]), x=float(xs[best]), y=float(ys[best]), score=score)


def sweep_knees(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The throughput–latency knee (x: output tokens/s, y: E2E p50) per configuration and
    workload of a sweep, over its finished points in load order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in points:
        if p["status"] == "done" and p.get("summary"):
            groups.setdefault((p["config_id"], p["workload"]), []).append(p)
    out = []
    for (cfg, workload), pts in sorted(groups.items()):
        pts.sort(key=lambda p: float(p["load"]["value"]))
        x = [p["summary"].get("output_tokens_per_s") for p in pts]
        y = [p["summary"].get("e2e_p50_s") for p in pts]
        k = find_knee(x, y, curve="convex")
        out.append(
            {
                "config_id": cfg,
                "workload": workload,
                "x_metric": "output_tokens_per_s",
                "y_metric": "e2e_p50_s",
                "point": pts[k.index]["id"] if k else None,
                "load": pts[k.index]["load"] if k else None,
                "x": k.x if k else None,
                "y": k.y if k else None,
                "score": k.score if k else None,
                "reason": None if k else "fewer than 3 finished points, or no bend in the curve",
            }
        )
    return out


def with_knees(index: dict[str, Any]) -> dict[str, Any]:
    """The sweep index (index.json's data) with its knees: those the finished sweep stored, or,
    for a sweep that did not finish (or stored none), those of its finished points so far.
    Sets ``index["knees"]`` and returns the index."""
    if not index.get("knees") or index.get("status") != "complete":
        index["knees"] = sweep_knees(index.get("points") or [])
    return index
