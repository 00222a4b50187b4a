"""A launched server on its own cores, the load generator's event loop on the others, and the
split recorded in the manifest (in process: ``execute`` with the vLLM shim as the server)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil
import pytest

from profiler import cpus
from tests.integration.faults_support import read_json, shim_run_spec

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not hasattr(os, "sched_setaffinity") or len(cpus.available()) < 2,
        reason="needs CPU affinity and at least 2 cores",
    ),
]


def test_server_and_load_generator_run_on_separate_cores(tmp_path: Path) -> None:
    from profiler.runner import RunHooks, execute

    server_cores = cpus.available()[1:]
    client_cores = cpus.available()[:1]
    marker = tmp_path / "server.pid"
    spec = shim_run_spec(
        tmp_path,
        "split",
        output_len=10,
        num_requests=40,
        extra_args=["--fake-itl-ms", "5", "--fake-marker", str(marker)],
        cpus=server_cores,
    )
    before = os.sched_getaffinity(0)
    seen: dict[str, Any] = {}

    def on_ready(_endpoint: object) -> None:
        seen["server"] = psutil.Process(int(marker.read_text())).cpu_affinity()

    def on_progress(_p: object) -> None:  # called on the event loop's thread
        seen.setdefault("loop", sorted(os.sched_getaffinity(0)))

    result = execute(spec, RunHooks(on_ready=on_ready, on_progress=on_progress))
    assert result.ended == "completed", result.reason
    assert seen["server"] == server_cores
    assert seen["loop"] == client_cores
    assert os.sched_getaffinity(0) == before  # restored after the run
    manifest = read_json(tmp_path / "runs" / "split" / "manifest.json")
    assert manifest["cpus"] == {"server": server_cores, "client": client_cores}
