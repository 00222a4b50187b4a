"""Sweeps end to end against a fake OpenAI server with a known capacity (real runner, real
client, loopback): the SLO search finds the saturation rate within 10%, and a sweep killed
mid-way resumes without redoing finished points.

The fake (this file run as a script) serves at most ``slots`` streams at once; a request
waits for a slot, then streams ``max_tokens`` tokens: the first after ``ttft`` seconds, the
rest ``itl`` apart. Its capacity is ``slots / (ttft + (max_tokens - 1) * itl)`` requests/s;
above it the queue grows and TTFT misses its objective.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.faults_support import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SLOTS, TTFT_S, ITL_S, OUTPUT_LEN = 2, 0.1, 0.05, 8
CAPACITY = SLOTS / (TTFT_S + (OUTPUT_LEN - 1) * ITL_S)  # 4.44 req/s
ROOT = Path(__file__).resolve().parents[2]
INFPROF = [sys.executable, "-m", "profiler"]


# ---------------------------------------------------------------------- the fake server
def serve(port: int, slots: int, ttft_s: float, itl_s: float) -> None:
    from aiohttp import web

    sem = asyncio.Semaphore(slots)

    async def models(_req: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def complete(req: web.Request) -> web.StreamResponse:
        body = await req.json()
        n_out = int(body.get("max_tokens") or 16)
        chat = req.path.endswith("/chat/completions")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(req)

        def chunk(i: int) -> bytes:
            piece = {"delta": {"content": "x"}} if chat else {"text": "x"}
            data = {"id": "c", "object": "chunk", "model": "fake", "choices": [{"index": 0, **piece, "finish_reason": None}],
                    "usage": {"prompt_tokens": 16, "completion_tokens": i, "total_tokens": 16 + i}}  # fmt: skip
            return f"data: {json.dumps(data)}\n\n".encode()

        async with sem:
            await asyncio.sleep(ttft_s)
            await resp.write(chunk(1))
            for i in range(2, n_out + 1):
                await asyncio.sleep(itl_s)
                await resp.write(chunk(i))
        usage = {"id": "c", "object": "chunk", "model": "fake", "choices": [],
                 "usage": {"prompt_tokens": 16, "completion_tokens": n_out, "total_tokens": 16 + n_out}}  # fmt: skip
        await resp.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", complete)
    app.router.add_post("/v1/chat/completions", complete)
    web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        # as a module from the repository root: the file imports the tests package
        [
            sys.executable,
            "-m",
            "tests.integration.test_sweep_fake",
            str(port),
            str(SLOTS),
            str(TTFT_S),
            str(ITL_S),
        ],
        cwd=ROOT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/v1/models", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the fake server did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "INFPROF_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}


# ---------------------------------------------------------------------- tests
def test_slo_search_finds_the_saturation_rate(fake_url: str, tmp_path: Path) -> None:
    out = tmp_path / "search"
    cmd = [*INFPROF, "sweep", "--endpoint", fake_url, "--search", "slo", "--slo", "ttft=0.35", "--target-fraction", "0.9",
           "--arrival", "constant", "--duration", "8", "--input-len", "16", "--output-len", str(OUTPUT_LEN),
           "--start-rate", "1", "--tolerance", "0.05", "--max-probes", "10", "--sample-interval", "1", "--out", str(out), "--json"]  # fmt: skip
    proc = run_cli(cmd, _env(tmp_path), timeout_s=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    (search,) = data["searches"]
    best = search["best_rate"]
    assert best is not None, search
    assert abs(best - CAPACITY) / CAPACITY <= 0.10, (best, CAPACITY, search["probes"])
    probes = [p for p in data["points"] if p["probe"]]
    assert len(probes) == len(search["probes"]) and all(
        (out / p["run_dir"] / "summary.json").exists() for p in probes
    )


def test_killed_sweep_resumes_without_redoing_finished_points(
    fake_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "grid"
    args = ["sweep", "--endpoint", fake_url, "--concurrency", "1,2,3,4", "--num-requests", "12", "--input-len", "16",
            "--output-len", str(OUTPUT_LEN), "--sample-interval", "1", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen([*INFPROF, *args], cwd=ROOT, env=_env(tmp_path), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    index = out / "index.json"
    deadline = time.monotonic() + 300
    done: list[str] = []
    while time.monotonic() < deadline and proc.poll() is None:
        if index.exists():
            done = [
                p["id"] for p in json.loads(index.read_text())["points"] if p["status"] == "done"
            ]
            if len(done) >= 2:
                break
        time.sleep(0.2)
    assert proc.poll() is None, (
        f"the sweep finished before it could be killed: {proc.stderr.read() if proc.stderr else ''}"
    )
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up
    proc.wait(timeout=30)
    finished = {
        p["id"]: p for p in json.loads(index.read_text())["points"] if p["status"] == "done"
    }
    assert 2 <= len(finished) < 4
    stamps = {
        pid: (out / p["run_dir"] / "summary.json").stat().st_mtime_ns for pid, p in finished.items()
    }

    res = run_cli(
        [*INFPROF, "sweep", "--resume", str(out), "--json"], _env(tmp_path), timeout_s=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(res.stdout)
    assert data["status"] == "complete"
    assert sorted(p["id"] for p in data["points"] if p["status"] == "done") == [
        "c0-default-conc1", "c0-default-conc2", "c0-default-conc3", "c0-default-conc4",
    ]  # fmt: skip
    assert {
        pid: (out / "runs" / pid / "summary.json").stat().st_mtime_ns for pid in finished
    } == stamps
    for pid in finished:  # a skipped point prints nothing; a rerun one prints its load
        assert f"/ concurrency {pid.rsplit('conc', 1)[1]}" not in res.stderr
    report = run_cli([*INFPROF, "report", str(out)], _env(tmp_path), timeout_s=120)
    assert report.returncode == 0, report.stderr[-2000:]
    assert Path(report.stdout.strip()).read_text().count("data:image/png;base64,") >= 3


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))


def test_sweep_repeat_keeps_every_repeat_and_resumes(fake_url: str, tmp_path: Path) -> None:
    """``--repeat 2``: two complete runs per point under runs/<point>/rep-01.., the point's
    figures the median of its repeats; resuming a finished sweep reruns nothing."""
    out = tmp_path / "sw"
    args = [*INFPROF, "sweep", "--endpoint", fake_url, "--concurrency", "1,2"]
    args += ["--num-requests", "6", "--output-len", str(OUTPUT_LEN), "--no-telemetry"]
    res = run_cli(
        [*args, "--repeat", "2", "--out", str(out), "--json", "-q"], _env(tmp_path), timeout_s=300
    )
    assert res.returncode == 0, res.stderr
    index = json.loads(res.stdout)
    assert json.loads((out / "sweep.json").read_text())["repeat"] == 2
    assert len(index["points"]) == 2
    for p in index["points"]:
        assert p["status"] == "done" and len(p["repeats"]) == 2
        for r in p["repeats"]:
            assert (
                json.loads((out / r["run_dir"] / "summary.json").read_text())["requests"]["ok"] == 6
            )
        ttft = sorted(r["summary"]["ttft_p50_s"] for r in p["repeats"])
        assert p["summary"]["ttft_p50_s"] == pytest.approx(sum(ttft) / 2)  # median of two
        assert p["across_repeats"]["ttft_p50_s"]["min"] == ttft[0]
    mtimes = sorted((out / "runs").rglob("summary.json"))
    stamps = [m.stat().st_mtime_ns for m in mtimes]
    again = run_cli([*INFPROF, "sweep", "--resume", str(out), "-q"], _env(tmp_path), timeout_s=120)
    assert again.returncode == 0, again.stderr
    assert "points run 2 times" in again.stdout
    assert [m.stat().st_mtime_ns for m in mtimes] == stamps and len(mtimes) == 4
