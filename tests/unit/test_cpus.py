"""Cores for a launched server and for the load generator (profiler/cpus.py), the default
split of `infprof run` on a host without a GPU, and the server started on its cores."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil
import pytest

from profiler import cpus
from profiler.errors import SpecError
from profiler.run_flags import RunOptions
from profiler.run_options import build_run_spec
from profiler.run_server import probe_host
from profiler.serving.vllm import VllmServer
from profiler.serving.vllm_command import server_env
from profiler.spec import ServeSpec

needs_affinity = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(cpus.available()) < 2,
    reason="needs CPU affinity and at least 2 cores",
)


def _no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "profiler.telemetry.nvml.nvml_state", lambda: {"available": False, "reason": "test"}
    )
    monkeypatch.setattr("profiler.serving.vllm_command._has_nvidia_device", lambda: False)


def test_split_keeps_the_first_core_for_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {3, 1, 2, 0})
    assert cpus.available() == [0, 1, 2, 3]
    assert cpus.split_for_server() == ([1, 2, 3], [0])
    assert cpus.others([1, 2, 3]) == [0]
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {5})
    assert cpus.split_for_server() is None  # one core: nothing to split


@needs_affinity
def test_on_cpus_pins_this_thread_and_restores() -> None:
    before = os.sched_getaffinity(0)
    first = min(before)
    with cpus.on_cpus([first]):
        assert os.sched_getaffinity(0) == {first}
    assert os.sched_getaffinity(0) == before
    with cpus.on_cpus(None):
        assert os.sched_getaffinity(0) == before


def test_default_cpu_run_gives_the_server_all_but_one_core(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_gpu(monkeypatch)
    monkeypatch.setenv("INFPROF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setattr(cpus, "split_for_server", lambda: ([1, 2, 3], [0]))
    spec = build_run_spec(probe_host(), RunOptions(out=tmp_path))
    assert spec.serve is not None and spec.serve.cpus == [1, 2, 3]
    assert server_env(spec.serve, {})["VLLM_CPU_OMP_THREADS_BIND"] == "1,2,3"
    # the user binding vLLM's threads turns the split off
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-3")
    spec = build_run_spec(probe_host(), RunOptions(out=tmp_path))
    assert spec.serve is not None and spec.serve.cpus is None


def test_no_split_on_a_gpu_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(
        "profiler.telemetry.nvml.nvml_state", lambda: {"available": True, "device_count": 8}
    )
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    spec = build_run_spec(probe_host(), RunOptions(out=tmp_path, model="org/some-model"))
    assert spec.serve is not None and spec.serve.cpus is None


def test_server_cpus_outside_this_process_are_a_spec_error(tmp_path: Path) -> None:
    bad = max(cpus.available()) + 64
    s = ServeSpec(model="org/fake-model", cpus=[bad])
    with pytest.raises(SpecError, match="not all available"):
        VllmServer(s, tmp_path / "server.log").start()


@needs_affinity
def test_launched_server_runs_on_its_cores_and_the_caller_keeps_its_own(tmp_path: Path) -> None:
    fake = Path(__file__).resolve().parents[1] / "fakes" / "fake_vllm_proc.py"
    last = max(cpus.available())
    before = os.sched_getaffinity(0)

    def build(spec: ServeSpec, port: int, python: str) -> list[str]:
        return [sys.executable, str(fake), "--model", spec.model, "--port", str(port)]

    s = ServeSpec(model="org/fake-model", served_model_name="org/fake-model", cpus=[last])
    with VllmServer(s, tmp_path / "server.log", argv_builder=build) as server:
        assert server.pid is not None  # started by the context manager
        assert psutil.Process(server.pid).cpu_affinity() == [last]
        assert os.sched_getaffinity(0) == before


@needs_affinity
def test_beside_runs_the_block_on_the_cores_the_server_was_kept_off() -> None:
    before = os.sched_getaffinity(0)
    server = [max(before)]
    with cpus.beside(server) as client:
        assert client == cpus.others(server) and os.sched_getaffinity(0) == set(client)
    assert os.sched_getaffinity(0) == before
    with cpus.beside(None) as client:  # not pinned: nothing changes
        assert client is None and os.sched_getaffinity(0) == before
