"""Fault matrix, signal rows: SIGINT/SIGTERM during a run (attached and launched server; the
launched server's whole process tree must be gone), a signal while the server is still
loading, and the profiler itself SIGKILLed: ``infprof report`` recovers every record that
was complete before the kill."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.fakes.fake_openai import FakeConfig, serve_in_thread
from tests.fakes.vllm_openai_shim import make_python_wrapper
from tests.integration.faults_support import (
    ProcessTree,
    cli_env,
    fake_server,
    infprof_cmd,
    journal_lines,
    journal_records,
    launched_cmd,
    parquet_rows,
    read_json,
    run_cli,
    spawn_cli,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LOAD = ["--input-len", "8", "--output-len", "20", "--num-requests", "100000", "-q"]


def assert_interrupted_run(run_dir: Path, sig: signal.Signals) -> None:
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["ended"] == "interrupted"
    assert manifest["end_reason"] == f"stopped by {sig.name}"
    records = journal_records(run_dir)
    outcomes = Counter(r["outcome"] for r in records)
    assert outcomes["ok"] >= 8 and set(outcomes) <= {"ok", "cancelled"}, outcomes
    assert 1 <= outcomes["cancelled"] <= 4  # the ones in flight
    assert manifest["requests_sent"] == manifest["requests_recorded"] == len(records)
    summary = read_json(run_dir / "summary.json")
    assert summary["requests"]["total"] == len(records)
    assert summary["requests"]["ok"] == outcomes["ok"]
    assert len(parquet_rows(run_dir / "requests.parquet")) == len(records)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_run_against_endpoint(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "runs"
    with fake_server("--itl-ms", "20") as fake:
        cmd = infprof_cmd(
            "run", "--endpoint", fake.url, "--concurrency", "4", "--sample-interval", "0.2",
            "--out", str(out), "--run-id", "sig", *LOAD,
        )  # fmt: skip
        with spawn_cli(cmd, cli_env(tmp_path / "home"), tmp_path / "cli") as cli:
            wait_until(lambda: len(journal_records(out / "sig")) >= 8, 30, "records on disk")
            cli.proc.send_signal(sig)
            rc = cli.wait(20)
            assert rc == 6, cli.stderr
            assert "run ended early (interrupted)" in cli.stderr
    assert_interrupted_run(out / "sig", sig)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_run_launched_server_leaves_no_process(
    tmp_path: Path, sig: signal.Signals
) -> None:
    out = tmp_path / "runs"
    env = cli_env(tmp_path / "home", make_python_wrapper(tmp_path))
    cmd = launched_cmd(
        "run", "--model", "org/fake-model", "--concurrency", "4", "--serve-arg=--fake-child",
        "--serve-arg=--fake-itl-ms=20", "--sample-interval", "0.2", "--out", str(out),
        "--run-id", "sig", *LOAD,
    )  # fmt: skip
    with spawn_cli(cmd, env, tmp_path / "cli") as cli:
        tree = ProcessTree(cli.proc.pid)
        wait_until(lambda: len(journal_records(out / "sig")) >= 8, 30, "records on disk")
        pids = tree.refresh()
        assert len(pids) >= 3, "expected infprof, the server and its child"
        cli.proc.send_signal(sig)
        rc = cli.wait(30)
        assert rc == 6, cli.stderr
        left = tree.alive()
        assert not left, f"processes left: {[p.cmdline() for p in left]}"
    assert_interrupted_run(out / "sig", sig)
    assert "CHILD_PID" in (out / "sig" / "server.log").read_text()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_while_server_loads(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "runs"
    env = cli_env(tmp_path / "home", make_python_wrapper(tmp_path))
    marker = tmp_path / "server.pid"
    cmd = launched_cmd(
        "run", "--model", "org/fake-model", "--serve-arg=--fake-child",
        "--serve-arg=--fake-startup-s=60", f"--serve-arg=--fake-marker={marker}",
        "--out", str(out), "--run-id", "early", *LOAD,
    )  # fmt: skip
    with spawn_cli(cmd, env, tmp_path / "cli") as cli:
        tree = ProcessTree(cli.proc.pid)
        wait_until(marker.exists, 30, "the server to start loading")
        wait_until(lambda: "CHILD_PID" in (out / "early" / "server.log").read_text(), 10, "child")
        tree.refresh()
        cli.proc.send_signal(sig)
        rc = cli.wait(30)
        assert rc == 6, cli.stderr
        assert "Traceback" not in cli.stderr
        assert "interrupted" in cli.stderr
        left = tree.alive()
        assert not left, f"processes left: {[p.cmdline() for p in left]}"
    manifest = read_json(out / "early" / "manifest.json")
    assert manifest["ended"] == "interrupted"


# ---------------------------------------------------------------------- 5: profiler SIGKILLed
def test_profiler_sigkilled_report_recovers_every_completed_record(tmp_path: Path) -> None:
    """Requests finish in pairs every ~3 s, so the second record of a pair must be flushed by
    time (0.5 s), not by the next append; the kill comes 1.5 s after the first pair."""
    out = tmp_path / "runs"
    run_dir = out / "killed"
    env = cli_env(tmp_path / "home")
    with serve_in_thread(FakeConfig(itl_ms=150)) as fake:
        c = fake.counters
        cmd = infprof_cmd(
            "run", "--endpoint", fake.url, "--concurrency", "2", "--out", str(out),
            "--run-id", "killed", "--server-kind", "vllm", *LOAD,  # no probe: counters = load
        )  # fmt: skip
        with spawn_cli(cmd, env, tmp_path / "cli") as cli:
            wait_until(lambda: c.requests - c.running >= 2, 30, "a pair of requests done")
            done = c.requests - c.running
            time.sleep(1.5)
            assert c.requests - c.running == done, "a pair finished during the wait"
            cli.proc.kill()
            assert cli.wait(10) == -signal.SIGKILL
    lines = journal_lines(run_dir)
    assert len(lines) == done, "records completed >0.5 s before the kill must be on disk"
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["ended"] == "running"  # how a killed run looks
    assert not (run_dir / "requests.parquet").exists()

    res = run_cli(infprof_cmd("report", str(run_dir)), env)
    assert res.returncode == 0, res.stderr
    assert (run_dir / "report.html").exists()
    rows = parquet_rows(run_dir / "requests.parquet")
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in journal_records(run_dir))
    assert len(rows) == done
    assert read_json(run_dir / "summary.json")["requests"]["total"] == done
    assert journal_lines(run_dir) == lines  # the journal itself is kept as it was
