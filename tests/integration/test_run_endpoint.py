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
from tests.integration.faults_support import fake_server, infprof_cmd, run_cli

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    with fake_server("--ttft-ms", "5", "--itl-ms", "1") as fake:
        yield fake.url


def _infprof(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(infprof_cmd(*args), {**os.environ, **(env or {})}, timeout_s=300)


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
    assert summary["client"]["event_loop"] in ("uvloop", "asyncio")
    assert summary["client"]["token_counting"] == "usage"
    if sys.platform == "linux":
        assert 0 <= summary["client"]["run_queue_wait_ratio"] < 1
    assert json.loads((tmp_path / "e" / "summary.json").read_text()) == summary


@pytest.mark.parametrize("tokenizer", [True, False])
def test_no_usage_counts_with_the_tokenizer(tmp_path: Path, tokenizer: bool) -> None:
    """A server that streams no usage: chunks counted with --tokenizer, else one per chunk."""
    from tokenizers import Tokenizer

    from profiler.serving.tinymodel import make_tiny_model
    from tests.fakes.fake_openai import FakeConfig, serve_in_thread

    tiny = make_tiny_model(tmp_path / "tiny")
    chunk_text = " tok tok"  # the fake's chunk of 2 tokens
    per_chunk = len(
        Tokenizer.from_file(str(tiny / "tokenizer.json"))
        .encode(chunk_text, add_special_tokens=False)
        .ids
    )
    assert per_chunk != 1
    if not tokenizer:
        per_chunk = 1
    with serve_in_thread(FakeConfig(usage=False, chunk_tokens=2)) as server:
        res = _infprof(
            "run",
            "--endpoint",
            server.url,
            *(["--tokenizer", str(tiny)] if tokenizer else []),
            "--num-requests",
            "8",
            "--concurrency",
            "2",
            "--output-len",
            "6",
            "--out",
            str(tmp_path),
            "--run-id",
            "t",
            "--json",
            "-q",
        )
        assert server.counters.last_body is not None
        assert server.counters.last_body["stream_options"]["continuous_usage_stats"] is True
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["requests"]["ok"] == 8
    assert summary["client"]["token_counting"] == ("tokenizer" if tokenizer else "chunks")
    assert summary["tokens_estimated_requests"] == 8
    assert summary["tokens"]["output"] == 8 * 3 * per_chunk
    recs = read_records(tmp_path / "t")
    assert len(recs) == 8
    for r in recs:
        assert r.tokens_estimated
        assert r.chunk_tokens == [per_chunk] * 3
        assert r.output_tokens == 3 * per_chunk
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert manifest["spec"]["tokenizer"] == (str(tiny.resolve()) if tokenizer else None)


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


def test_client_health_is_exported_while_the_load_runs(fake_url: str, tmp_path: Path) -> None:
    """The live exporter carries the client's CPU and loop lag during the run, not only at
    its end, so a dashboard shows a saturated client when it happens."""
    import time
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["run", "--endpoint", fake_url, "--duration", "6", "--concurrency", "2"]
    args += ["--output-len", "64", "--metrics-port", str(port), "--out", str(tmp_path), "-q"]
    proc = subprocess.Popen(
        infprof_cmd(*args),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    text = r.read().decode()
            except OSError:
                continue
            values = {
                s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples
            }
            # the gauges read 0 until the first one-second measurement
            if values.get("infprof_inflight_requests", 0) > 0 and (
                values.get("infprof_client_cpu_ratio", 0) > 0
            ):
                seen = values
                break
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert seen, "client health was not exported while requests were in flight"
    assert 0 < seen["infprof_client_cpu_ratio"] < 4
    assert seen["infprof_client_event_loop_lag_seconds"] >= 0
    assert seen["infprof_client_saturated"] in (0.0, 1.0)


def test_open_loop_capped_in_flight_queues_without_calling_the_client_saturated(
    fake_url: str, tmp_path: Path
) -> None:
    """--rate with --concurrency 1 against ~90 ms requests every 25 ms: requests queue for
    the slot. The wait is queue_wait_s, not dispatch lag; the attainment from the intended
    start (the headline) counts it, the one from the send does not."""
    res = _infprof(
        "run", "--endpoint", fake_url, "--num-requests", "20", "--rate", "40",
        "--arrival", "constant", "--concurrency", "1", "--output-len", "80",
        "--slo", "ttft=0.05", "--out", str(tmp_path), "--run-id", "q", "--json", "-q",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["requests"]["ok"] == 20
    assert s["queue_wait_s"]["count"] == 20 and s["queue_wait_s"]["max"] > 0.5
    assert s["dispatch_lag_s"]["p99"] < 0.025
    assert "dispatch lag" not in (s["client"]["reason"] or "")
    att = s["slo_attainment"]
    assert att["headline"] == "from_intended"
    assert att["from_send"]["fraction"] == 1.0
    assert att["from_intended"]["fraction"] < 0.5
    assert att["fraction"] == att["from_intended"]["fraction"]
    recs = read_records(tmp_path / "q")
    assert all(r.queue_wait_s is not None for r in recs)


def test_repeat_writes_complete_run_directories(fake_url: str, tmp_path: Path) -> None:
    """``--repeat 2``: two complete run directories under one parent, a repeats.json with the
    figures across them, and the parent compares as a directory of repeats."""
    res = _infprof(
        "run",
        "--endpoint",
        fake_url,
        "--num-requests",
        "12",
        "--concurrency",
        "3",
        "--output-len",
        "8",
        "--repeat",
        "2",
        "--out",
        str(tmp_path),
        "--run-id",
        "rr",
        "--json",
        "-q",
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    parent = tmp_path / "rr"
    assert data == json.loads((parent / "repeats.json").read_text())
    assert [r["run_dir"] for r in data["runs"]] == ["rep-01", "rep-02"]
    assert data["status"] == "complete" and data["server"] is None
    for name in ("rep-01", "rep-02"):
        run = parent / name
        for f in ("manifest.json", "requests.parquet", "itl.parquet", "summary.json"):
            assert (run / f).is_file(), (name, f)
        assert json.loads((run / "manifest.json").read_text())["ended"] == "completed"
        assert json.loads((run / "summary.json").read_text())["requests"]["ok"] == 12
        assert sorted(r.id for r in read_records(run)) == list(range(12))
    assert data["across_repeats"]["requests_ok"] == {
        "n": 2,
        "median": 12.0,
        "min": 12,
        "max": 12,
        "spread": 0,
        "rel_spread": 0.0,
    }
    cmp = _infprof("compare", str(parent), str(parent), "--json", "--resamples", "100")
    assert cmp.returncode == 0, cmp.stderr
    assert json.loads(cmp.stdout)["interval"] == "hierarchical"
