"""``dig``: one step down a nested dict per key, ``None`` as soon as a step is missing. Only for
other tools' result files (``capacity/importers``: GuideLLM, vllm bench, AIPerf JSON), which
have no schema here; infprof's own files are read through ``store.schema``."""

from __future__ import annotations

from typing import Any


def dig(d: Any, *path: str) -> Any:
    """``d[path[0]][path[1]]...``, or ``None`` where a level is missing or not a dict."""
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d
