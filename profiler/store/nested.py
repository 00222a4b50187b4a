"""``dig``: one step down a nested dict per key, ``None`` as soon as a step is missing. The one
getter the readers of run artifacts (summary.json, manifest.json, index.json, result files)
share until those files are typed models."""

from __future__ import annotations

from typing import Any


def dig(d: Any, *path: str) -> Any:
    """``d[path[0]][path[1]]...``, or ``None`` where a level is missing or not a dict."""
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d
