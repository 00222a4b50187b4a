"""`infprof run` as a user runs it, against the fake OpenAI server on loopback: --json output,
--workers, and one-line errors with documented exit codes for bad input."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from profiler.store.rundir import read_records

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.fake_openai",
            "--port",
            "0",
            "--ttft-ms",
            "5",
            "--itl-ms",
            "1",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("READY"), line
    yield line.split()[1]
    proc.kill()
    proc.wait()


def _infprof(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "profiler", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_endpoint_json(fake_url: str, tmp_path: Path) -> None:
    res = _infprof(
        "run",
        "--endpoint",
        fake_url,
        "--num-requests",
        "30",
        "--concurrency",
        "4",
        "--output-len",
        "16",
        "--out",
        str(tmp_path),
        "--run-id",
        "e",
        "--json",
        "-q",
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["requests"]["ok"] == 30
    assert summary["tokens"]["output"] == 30 * 16
    assert summary["model"] == "fake-model"
    assert summary["client"]["saturated"] in (True, False)
    assert json.loads((tmp_path / "e" / "summary.json").read_text()) == summary


def test_progress_goes_to_stderr(fake_url: str, tmp_path: Path) -> None:
    res = _infprof("run", "--endpoint", fake_url, "--num-requests", "5", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "done" in res.stderr and "run directory" in res.stderr
    assert "TTFT" in res.stdout


def test_workers_share_one_clock(fake_url: str, tmp_path: Path) -> None:
    res = _infprof(
        "run",
        "--endpoint",
        fake_url,
        "--num-requests",
        "40",
        "--rate",
        "40",
        "--arrival",
        "constant",
        "--workers",
        "2",
        "--output-len",
        "8",
        "--out",
        str(tmp_path),
        "--run-id",
        "w",
        "--json",
        "-q",
    )
    assert res.returncode == 0, res.stderr
    recs = read_records(tmp_path / "w")
    assert sorted(r.id for r in recs) == list(range(40))
    assert {r.outcome for r in recs} == {"ok"}
    assert len(list((tmp_path / "w").glob("requests.w*.jsonl"))) == 2
    # one clock: the merged intended starts are the constant-rate schedule
    starts = sorted(r.intended_start_s for r in recs)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) == pytest.approx(0.025, abs=1e-6) and max(gaps) == pytest.approx(
        0.025, abs=1e-6
    )
    assert json.loads(res.stdout)["requests"]["ok"] == 40


def _one_line_error(res: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert res.returncode == code, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("infprof: error:")]
    assert len(err) == 1, res.stderr
    for w in words:
        assert w in err[0], err[0]


def test_bad_input_errors(tmp_path: Path) -> None:
    _one_line_error(
        _infprof(
            "run", "--workload", "nope", "--endpoint", "http://127.0.0.1:9", "--out", str(tmp_path)
        ),
        2,
        "unknown workload",
        "fix:",
    )
    _one_line_error(
        _infprof("run", "--endpoint", "http://127.0.0.1:9", "--out", str(tmp_path)),
        4,
        "cannot reach",
        "fix:",
    )
    _one_line_error(
        _infprof("run", "--model", str(tmp_path / "missing-model"), "--out", str(tmp_path)),
        2,
        "does not exist",
        "fix:",
    )
    _one_line_error(
        _infprof("run", "--endpoint", "not a url", "--out", str(tmp_path)), 2, "not an http(s) URL"
    )
    _one_line_error(
        _infprof(
            "run", "--endpoint", "http://127.0.0.1:9", "--slo", "latency=3", "--out", str(tmp_path)
        ),
        2,
        "--slo",
    )


def test_port_taken(tmp_path: Path) -> None:
    from profiler.serving import tinymodel

    model = tinymodel.make_tiny_model(tmp_path / "tiny")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = _infprof(
            "run",
            "--model",
            str(model),
            "--load-format",
            "dummy",
            "--port",
            str(port),
            "--out",
            str(tmp_path / "runs"),
        )
    _one_line_error(res, 3, f"port {port} is in use", "fix:")
