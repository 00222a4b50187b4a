"""VllmServer lifecycle against a fake server process (tests/fakes/fake_vllm_proc.py) that
takes vLLM's argv; only the interpreter + module part of the command is swapped."""

from __future__ import annotations

import re
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

from profiler.errors import ServerError, SpecError
from profiler.serving.ports import free_port, port_in_use
from profiler.serving.tinymodel import make_tiny_model
from profiler.serving.vllm import VllmServer
from profiler.serving.vllm_command import build_argv, server_env, vllm_version
from profiler.spec import ServeSpec

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "fake_vllm_proc.py"


def fake_builder(*fake_flags: str):
    def build(spec: ServeSpec, port: int, python: str) -> list[str]:
        real = build_argv(spec, port, python)
        assert real[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
        return [python, str(FAKE), *real[3:], *fake_flags]

    return build


def spec(**kw: object) -> ServeSpec:
    base: dict[str, object] = {
        "model": "org/fake-model",
        "served_model_name": "fake",
        "ready_timeout_s": 20,
    }
    base.update(kw)
    return ServeSpec.model_validate(base)


def child_pids(log: Path) -> list[int]:
    return [int(m) for m in re.findall(r"CHILD_PID (\d+)", log.read_text())]


def assert_gone(pids: list[int]) -> None:
    for pid in pids:
        if psutil.pid_exists(pid):
            p = psutil.Process(pid)
            assert p.status() == psutil.STATUS_ZOMBIE, f"pid {pid} still running: {p.cmdline()}"


def wait_for_children(log: Path, n: int, timeout_s: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = child_pids(log)
        if len(pids) >= n:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"fake did not report {n} children: {log.read_text()}")


def test_ready_then_stop(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with VllmServer(spec(), log, argv_builder=fake_builder()) as server:
        took = server.wait_ready(timeout_s=20)
        assert 0 < took < 20
        assert server.startup_s == took
        assert server.alive() and server.returncode is None
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.pid in server.pids()
        assert "--port" in server.argv and str(server.port) in server.argv
        pids = server.pids()
    assert not server.alive()
    assert_gone(pids)
    assert "fake vllm: model=org/fake-model name=fake" in log.read_text()
    assert server.stop() == server.returncode  # idempotent


def test_crash_on_start_fails_fast_with_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    server = VllmServer(spec(), log, argv_builder=fake_builder("--fake-mode", "crash"))
    server.start()
    t0 = time.monotonic()
    with pytest.raises(ServerError) as e:
        server.wait_ready(timeout_s=60)
    assert time.monotonic() - t0 < 10
    assert "exited with code 1" in e.value.message
    assert "RuntimeError: fake engine failed to start" in e.value.message
    assert str(log) in (e.value.fix or "")
    assert not server.alive()


def test_never_ready_times_out_and_stops(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    server = VllmServer(spec(), log, argv_builder=fake_builder("--fake-mode", "never-ready"))
    server.start()
    t0 = time.monotonic()
    with pytest.raises(ServerError) as e:
        server.wait_ready(timeout_s=2)
    assert 2 <= time.monotonic() - t0 < 10
    assert "not ready after 2 s" in e.value.message
    assert "listening on" in e.value.message  # the log tail
    assert not server.alive()


def test_ready_timeout_defaults_to_spec(tmp_path: Path) -> None:
    s = spec(ready_timeout_s=1.5)
    server = VllmServer(s, tmp_path / "l", argv_builder=fake_builder("--fake-mode", "never-ready"))
    with server, pytest.raises(ServerError, match=r"not ready after 1\.5 s"):
        server.wait_ready()


def test_wrong_served_name_is_not_ready(tmp_path: Path) -> None:
    def build(s: ServeSpec, port: int, python: str) -> list[str]:
        argv = fake_builder()(s, port, python)
        argv[argv.index("--served-model-name") + 1] = "other"
        return argv

    with (
        VllmServer(spec(), tmp_path / "l", argv_builder=build) as server,
        pytest.raises(ServerError),
    ):
        server.wait_ready(timeout_s=1.5)


def test_exit_after_ready_is_seen(tmp_path: Path) -> None:
    s = spec()
    with VllmServer(
        s, tmp_path / "l", argv_builder=fake_builder("--fake-exit-after-s", "0.5")
    ) as server:
        server.wait_ready()
        deadline = time.monotonic() + 10
        while server.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not server.alive()
        assert server.returncode == 3


def test_given_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        server = VllmServer(spec(port=port), tmp_path / "l", argv_builder=fake_builder())
        with pytest.raises(ServerError) as e:
            server.start()
    assert e.value.message == f"port {port} is in use"
    assert e.value.fix == "pass another --port or omit it to pick a free one"
    assert server.pid is None


def test_given_free_port_is_used(tmp_path: Path) -> None:
    port = free_port()
    assert not port_in_use("127.0.0.1", port)
    with VllmServer(spec(port=port), tmp_path / "l", argv_builder=fake_builder()) as server:
        server.wait_ready()
        assert server.url.endswith(f":{port}")
        assert port_in_use("127.0.0.1", port)


def test_stop_kills_stubborn_children_and_escapees(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    flags = ("--fake-ignore-term", "--fake-stubborn-child", "--fake-setsid-child")
    server = VllmServer(spec(), log, argv_builder=fake_builder(*flags))
    with server:
        server.wait_ready()
        children = wait_for_children(log, 2)
        tree = server.pids()
        assert set(children) <= set(tree)
        t0 = time.monotonic()
        server.stop(grace_s=1)
        took = time.monotonic() - t0
    assert 1 <= took < 10
    assert_gone([*tree, *children])
    assert server.returncode == -9


def test_stop_kills_children_left_by_a_crashed_server(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    flags = ("--fake-mode", "crash", "--fake-stubborn-child", "--fake-setsid-child")
    server = VllmServer(spec(), log, argv_builder=fake_builder(*flags))
    server.start()
    with pytest.raises(ServerError):
        server.wait_ready()
    children = child_pids(log)
    assert len(children) == 2
    assert_gone(children)


def test_missing_local_model_is_a_spec_error(tmp_path: Path) -> None:
    server = VllmServer(
        spec(model=str(tmp_path / "nope")), tmp_path / "l", argv_builder=fake_builder()
    )
    with pytest.raises(SpecError, match="does not exist"):
        server.start()
    assert server.pid is None
    assert not (tmp_path / "l").exists()


def test_tiny_model_needs_dummy_load_format(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "tiny")
    with pytest.raises(SpecError, match="has no weights") as e:
        VllmServer(spec(model=str(model)), tmp_path / "l").start()
    assert e.value.fix == "serve it with --load-format dummy"
    s = spec(model=str(model), load_format="dummy")
    with VllmServer(s, tmp_path / "l", argv_builder=fake_builder()) as server:
        server.wait_ready()


def test_bad_python_is_a_server_error(tmp_path: Path) -> None:
    s = spec(python=str(tmp_path / "no-python"))
    with pytest.raises(ServerError, match="cannot start"):
        VllmServer(s, tmp_path / "l").start()


def test_env_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("profiler.serving.vllm_command._has_nvidia_device", lambda: False)
    env = server_env(spec(env={"A": "spec"}), {"A": "base", "B": "base"})
    assert env["A"] == "spec" and env["B"] == "base"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert server_env(spec(), {"VLLM_CPU_KVCACHE_SPACE": "4"})["VLLM_CPU_KVCACHE_SPACE"] == "4"
    monkeypatch.setattr("profiler.serving.vllm_command._has_nvidia_device", lambda: True)
    assert "VLLM_CPU_KVCACHE_SPACE" not in server_env(spec(), {})


def test_vllm_version_of_an_interpreter_without_vllm(tmp_path: Path) -> None:
    # The fake's interpreter may or may not have vLLM; a missing interpreter gives None.
    assert vllm_version(str(tmp_path / "no-python")) is None
    v = vllm_version(sys.executable)
    assert v is None or re.match(r"\d+\.\d+", v)


def test_readiness_ignores_http_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    with VllmServer(spec(), tmp_path / "l", argv_builder=fake_builder()) as server:
        assert server.wait_ready(timeout_s=10) < 10


def test_base_env_replaces_os_environ(tmp_path: Path) -> None:
    base = {"PATH": "/usr/bin:/bin", "ONLY_IN_BASE": "1"}
    code = "import os, sys; print('ENV', os.environ.get('ONLY_IN_BASE'), os.environ.get('HOME'), os.environ.get('X'))"

    def build(s: ServeSpec, port: int, python: str) -> list[str]:
        return [python, "-c", code]

    server = VllmServer(spec(env={"X": "spec"}), tmp_path / "l", env=base, argv_builder=build)
    with server:
        server._proc.wait(timeout=20)  # type: ignore[union-attr]
    assert "ENV 1 None spec" in (tmp_path / "l").read_text()
