"""Fault matrix, server rows: the server dies mid-run (attached endpoint and launched server),
never becomes ready or crashes on start, and its port is taken. Real processes on loopback:
the fake OpenAI server, and for the launched path the vLLM shim (tests/fakes/vllm_openai_shim.py)
started by the real ``VllmServer`` through its interpreter seam."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.fakes.vllm_openai_shim import make_python_wrapper
from tests.integration.faults_support import (
    ProcessTree,
    cli_env,
    fake_server,
    infprof_cmd,
    journal_records,
    launched_cmd,
    one_error_line,
    parquet_rows,
    read_json,
    run_cli,
    shim_run_spec,
    spawn_cli,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LOAD = ["--input-len", "8", "--output-len", "20", "--no-telemetry", "-q"]


# ---------------------------------------------------------------------- 1a: endpoint dies
def test_attached_server_killed_mid_run(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home")
    out = tmp_path / "runs"
    run_dir = out / "killed"
    with fake_server("--itl-ms", "20") as fake:
        cmd = infprof_cmd(
            "run", "--endpoint", fake.url, "--num-requests", "100000", "--concurrency", "4",
            "--out", str(out), "--run-id", "killed", *LOAD,
        )  # fmt: skip
        with spawn_cli(cmd, env, tmp_path / "cli") as cli:
            wait_until(lambda: len(journal_records(run_dir)) >= 8, 30, "records on disk")
            fake.proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            rc = cli.wait(30)
            stopped_s = time.monotonic() - killed_at
    assert rc == 6, cli.stderr
    assert stopped_s < 10, f"the run took {stopped_s:.1f} s to stop"
    assert "run ended early (endpoint_lost)" in cli.stderr
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["ended"] == "endpoint_lost"
    assert "could not reach the server" in manifest["end_reason"]
    records = journal_records(run_dir)
    outcomes = Counter(r["outcome"] for r in records)
    assert outcomes["ok"] >= 8 and set(outcomes) <= {"ok", "error"}, outcomes
    # the requests in flight when it died: cut mid-stream, recorded as errors with status 200
    cut = [r for r in records if r["outcome"] == "error" and r["http_status"] == 200]
    assert 1 <= len(cut) <= 4, records[-20:]
    assert all(r["error"] for r in records if r["outcome"] == "error")
    # every record of the journal made it into Parquet and the summary
    assert len(parquet_rows(run_dir / "requests.parquet")) == len(records)
    assert manifest["requests_sent"] == manifest["requests_recorded"] == len(records)
    summary = read_json(run_dir / "summary.json")
    assert summary["requests"]["total"] == len(records)
    assert summary["error_rate"] == pytest.approx((len(records) - outcomes["ok"]) / len(records))


# ---------------------------------------------------------------------- 1b: launched server dies
def test_launched_server_killed_mid_run(tmp_path: Path) -> None:
    """In process: ``execute`` with a ServeSpec whose interpreter is the shim wrapper."""
    from profiler.runner import RunHooks, execute

    marker = tmp_path / "server.pid"
    spec = shim_run_spec(
        tmp_path,
        "launched-killed",
        output_len=20,
        num_requests=100_000,
        extra_args=["--fake-itl-ms", "20", "--fake-child", "--fake-marker", str(marker)],
    )
    run_dir = tmp_path / "runs" / "launched-killed"
    tree: dict[str, ProcessTree] = {}
    killed_at: list[float] = []

    def kill_when_loaded(_endpoint: object) -> None:
        def go() -> None:
            try:
                wait_until(lambda: len(journal_records(run_dir)) >= 8, 30, "records on disk")
            finally:
                pid = int(marker.read_text())
                tree["server"] = ProcessTree(pid)
                os.kill(pid, signal.SIGKILL)
                killed_at.append(time.monotonic())

        threading.Thread(target=go, daemon=True).start()

    result = execute(spec, RunHooks(on_ready=kill_when_loaded))
    stopped_s = time.monotonic() - killed_at[0]
    assert stopped_s < 10, f"the run took {stopped_s:.1f} s to stop"
    assert result.ended == "server_died", result.reason
    assert "server process exited (code -9)" in (result.reason or "")
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["ended"] == "server_died"
    records = journal_records(run_dir)
    outcomes = Counter(r["outcome"] for r in records)
    assert outcomes["ok"] >= 8 and set(outcomes) <= {"ok", "error"}, outcomes
    assert outcomes["error"] >= 1  # the requests in flight when it died
    assert len(parquet_rows(run_dir / "requests.parquet")) == len(records)
    assert manifest["requests_sent"] == len(records)
    assert read_json(run_dir / "summary.json")["requests"]["total"] == len(records)
    log = (run_dir / "server.log").read_text()
    assert "CHILD_PID" in log
    left = tree["server"].alive()
    assert not left, f"processes left: {[p.cmdline() for p in left]}"


# ---------------------------------------------------------------------- 2: never ready / crash
def test_bad_model_path_fails_before_launching(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    env = cli_env(tmp_path / "home", make_python_wrapper(tmp_path))
    t0 = time.monotonic()
    res = run_cli(
        launched_cmd(
            "run", "--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "runs"),
            f"--serve-arg=--fake-marker={marker}", "--num-requests", "2", "-q",
        ),
        env,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    line = one_error_line(res.stderr)
    assert "no-such-model' does not exist" in line and "fix:" in line
    assert not marker.exists(), "the server was launched"
    assert not (tmp_path / "runs").exists()
    assert time.monotonic() - t0 < 30


def test_bad_server_argument_crashes_with_log_tail(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home", make_python_wrapper(tmp_path))
    out = tmp_path / "runs"
    t0 = time.monotonic()
    res = run_cli(
        launched_cmd(
            "run", "--model", "org/fake-model", "--out", str(out), "--run-id", "crash",
            "--serve-arg=--no-such-vllm-flag", "--num-requests", "2", "--ready-timeout", "60",
            "--no-telemetry", "-q",
        ),
        env,
    )  # fmt: skip
    took = time.monotonic() - t0
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr.split("last lines of")[0]
    assert "infprof: error: vLLM exited with code 2 before it was ready" in res.stderr
    assert "unrecognized arguments: --no-such-vllm-flag" in res.stderr  # the log's last lines
    assert f"(fix: read {out / 'crash' / 'server.log'}" in res.stderr
    assert took < 30, f"took {took:.1f} s (the ready timeout was 60 s)"
    manifest = read_json(out / "crash" / "manifest.json")
    assert manifest["ended"] == "failed"
    assert "exited with code 2" in manifest["end_reason"]


def test_server_never_ready_times_out_and_is_stopped(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home", make_python_wrapper(tmp_path))
    marker = tmp_path / "server.pid"
    t0 = time.monotonic()
    res = run_cli(
        launched_cmd(
            "run", "--model", "org/fake-model", "--out", str(tmp_path / "runs"),
            "--serve-arg=--fake-never-ready", "--serve-arg=--fake-child",
            f"--serve-arg=--fake-marker={marker}", "--ready-timeout", "3", "--num-requests", "2",
            "--no-telemetry", "-q",
        ),
        env,
    )  # fmt: skip
    took = time.monotonic() - t0
    assert res.returncode == 3, res.stderr
    assert "vLLM was not ready after 3 s (stopped it)" in res.stderr
    assert "loading the model (forever)" in res.stderr  # the log's last lines
    assert "fix: raise ready_timeout_s" in res.stderr
    assert 3 <= took < 30
    server_pid = int(marker.read_text())
    assert not psutil.pid_exists(server_pid) or psutil.Process(server_pid).status() == "zombie"
    log = next((tmp_path / "runs").glob("*/server.log")).read_text()
    child = int(log.split("CHILD_PID ")[1].split()[0])
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"


# ---------------------------------------------------------------------- 3: port in use
def test_port_in_use_fails_with_one_line_and_free_port_is_picked(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home", make_python_wrapper(tmp_path))
    marker = tmp_path / "started"
    out = tmp_path / "runs"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = run_cli(
            launched_cmd(
                "run", "--model", "org/fake-model", "--port", str(port), "--out", str(out),
                f"--serve-arg=--fake-marker={marker}", "--num-requests", "2", "-q",
            ),
            env,
        )  # fmt: skip
        assert res.returncode == 3, res.stderr
        line = one_error_line(res.stderr)
        assert line == (
            f"infprof: error: port {port} is in use "
            "(fix: pass another --port or omit it to pick a free one)"
        )
        assert not marker.exists(), "the server was launched"
        # without --port a free one is picked, and the run goes through
        res = run_cli(
            launched_cmd(
                "run", "--model", "org/fake-model", "--out", str(out), "--run-id", "free",
                "--num-requests", "6", "--concurrency", "2", *LOAD,
            ),
            env,
        )  # fmt: skip
    assert res.returncode == 0, res.stderr
    manifest = read_json(out / "free" / "manifest.json")
    assert manifest["ended"] == "completed"
    url = manifest["server"]["url"]
    assert url.startswith("http://127.0.0.1:") and not url.endswith(f":{port}")
    assert Counter(r["outcome"] for r in journal_records(out / "free")) == {"ok": 6}
