"""Knees of a sweep's throughput–latency curves (see ``profiler.analysis.knee``)."""

from __future__ import annotations

from typing import Any

from profiler.analysis.knee import find_knee


def knees(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The throughput–latency knee (x: output tokens/s, y: E2E p50) per configuration and
    workload, over its finished points in load order (see profiler.analysis.knee)."""
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
