"""A run on an 8-GPU node (fake NVML) whose server uses GPUs 2 and 5: the summary's GPU and
energy figures and manifest.json ``gpu_scope`` cover those two only, chosen by each method in
turn. The idle GPUs read distinctly different values (7 % busy, 61 W, five times the NVLink
traffic), so any of them leaking into a figure shows. In process: the real runner, the fake
NVML patched in and its clock moving in real time, the launched "vLLM" being the OpenAI shim
(tests/fakes/vllm_openai_shim.py) or the fake OpenAI server on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from profiler.analysis.summary_json import summarize_run
from profiler.distributions import LengthDist
from profiler.report import write_html_and_markdown
from profiler.runner import execute
from profiler.spec import ArrivalSpec, EndpointSpec, RunSpec, Scenario, WorkloadSpec
from tests.fakes.fake_openai import FakeConfig, serve_in_thread
from tests.fakes.nvml import FakeGpu, FakeNvml, busy_idle_node, install_fake_nvml
from tests.integration.faults_support import shim_run_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SERVER = (2, 5)
KIB = 1024


def node() -> list[FakeGpu]:
    gpus = busy_idle_node(SERVER)
    gpus[0].processes = [(999_999, 5 * 2**30)]  # somebody else's job on GPU 0
    return gpus


@contextmanager
def fake_node() -> Iterator[FakeNvml]:
    """The fake NVML with its clock (energy, NVLink counters) following real time."""
    stop = threading.Event()
    with install_fake_nvml(node()) as fake:

        def tick() -> None:
            last = time.monotonic()
            while not stop.wait(0.02):
                now = time.monotonic()
                fake.advance(now - last)
                last = now

        t = threading.Thread(target=tick, daemon=True)
        t.start()
        try:
            yield fake
        finally:
            stop.set()
            t.join()


def endpoint_spec(tmp_path: Path, url: str, **kw: Any) -> RunSpec:
    return RunSpec(
        run_id="r",
        out_dir=tmp_path / "runs",
        workload=WorkloadSpec(
            name="w", scenarios=[Scenario(input=LengthDist.fixed(8), output=LengthDist.fixed(20))]
        ),
        arrival=ArrivalSpec(kind="concurrency", concurrency=4),
        num_requests=60,
        endpoint=EndpointSpec(url=url),
        sample_interval_s=0.1,
        **kw,
    )


def check_server_gpus_only(run_dir: Path, method: str, fake: FakeNvml) -> dict[str, Any]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    scope = manifest["gpu_scope"]
    assert scope["gpus"] == ["2", "5"] and scope["method"] == method, scope
    assert scope["uuids"] == [fake.gpus[2].uuid, fake.gpus[5].uuid]
    gpu, energy = summary["gpu"], summary["energy"]
    assert gpu["scope"]["gpus"] == ["2", "5"] and gpu["scope"]["method"] == method
    assert gpu["count"] == 2 and sorted(gpu["per_gpu"]) == ["2", "5"]
    assert gpu["utilization_mean_ratio"] == pytest.approx(0.9)  # all 8 pooled: 0.28
    assert gpu["power_mean_watts"] == pytest.approx(800.0)  # all 8: 1,166 W
    seconds, tokens = summary["window"]["seconds"], summary["tokens"]["output"]
    assert sorted(energy["per_gpu_joules"]) == ["2", "5"]
    assert energy["mean_power_from_energy_watts"] == pytest.approx(800.0, rel=0.15)
    assert energy["joules_per_output_token"] == pytest.approx(800.0 * seconds / tokens, rel=0.15)
    nvlink = 2 * 1e6 * KIB * seconds / tokens  # all 8 would be 16x this
    assert gpu["nvlink_tx_bytes_per_output_token"] == pytest.approx(nvlink, rel=0.2)
    return summary


def test_launched_server_on_cuda_visible_devices(tmp_path: Path) -> None:
    spec = shim_run_spec(
        tmp_path,
        "cvd",
        output_len=20,
        num_requests=60,
        extra_args=[],
        env={"CUDA_VISIBLE_DEVICES": "2,5"},
        tensor_parallel_size=2,
    )
    spec = spec.model_copy(update={"sample_interval_s": 0.1})
    with fake_node() as fake:
        result = execute(spec)
    assert result.ended == "completed", result.reason
    check_server_gpus_only(result.run_dir, "cuda_visible_devices", fake)


def test_launched_server_found_by_its_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    # a 1 s "model load", and NVML reads processes every 2 s: the run outlasts two reads
    spec = shim_run_spec(
        tmp_path,
        "procs",
        output_len=20,
        num_requests=60,
        extra_args=["--fake-child", "--fake-startup-s", "1.0"],
    )
    spec = spec.model_copy(update={"sample_interval_s": 0.1})
    done = threading.Event()
    with fake_node() as fake:
        # processes this session already runs (a shared vLLM server, say) are not this run's
        before = {p.pid for p in psutil.Process().children(recursive=True)}

        def place() -> None:  # the server's tree (shim and its child) holds GPUs 2 and 5
            while not done.wait(0.01):
                tree = sorted(
                    (p.create_time(), p.pid)
                    for p in psutil.Process().children(recursive=True)
                    if p.pid not in before
                )
                tree = [pid for _, pid in tree]
                if len(tree) >= 2:
                    fake.gpus[2].processes = [(tree[0], 30 * 2**30)]
                    fake.gpus[5].processes = [(tree[-1], 31 * 2**30)]
                    return

        placer = threading.Thread(target=place, daemon=True)
        placer.start()
        try:
            result = execute(spec)
        finally:
            done.set()
            placer.join()
    assert result.ended == "completed", result.reason
    summary = check_server_gpus_only(result.run_dir, "server_processes", fake)
    assert summary["gpu"]["per_gpu"]["5"]["process_memory_used_peak_bytes"] == 31 * 2**30
    assert "sets no CUDA_VISIBLE_DEVICES" in summary["gpu"]["scope"]["reason"]


def test_explicit_gpus_on_an_endpoint_and_an_old_run_falls_back_to_all(tmp_path: Path) -> None:
    with fake_node() as fake, serve_in_thread(FakeConfig(itl_ms=5)) as srv:
        spec = endpoint_spec(tmp_path, srv.url, gpus=["2", fake.gpus[5].uuid[:14]])
        result = execute(spec)
    assert result.ended == "completed", result.reason
    check_server_gpus_only(result.run_dir, "explicit", fake)
    md = write_html_and_markdown([result.run_dir]).with_suffix(".md").read_text()
    assert "GPUs 2, 5 (explicit: --gpus)" in md and "energy (GPUs 2, 5, measured window)" in md
    # a run directory from before the scope was recorded: every GPU, and both say so
    manifest_path, summary_path = result.run_dir / "manifest.json", result.run_dir / "summary.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["gpu_scope"]
    manifest_path.write_text(json.dumps(manifest))
    old = summarize_run(result.run_dir)
    assert old["gpu"]["count"] == 8 and old["gpu"]["scope"]["method"] == "all"
    assert "no GPU scope recorded" in old["gpu"]["scope"]["reason"]
    assert old["gpu"]["power_mean_watts"] == pytest.approx(800.0 + 6 * 61.0)
    for key in ("gpu", "energy"):  # a summary.json written before scoping
        del old[key]["scope"]
    summary_path.write_text(json.dumps(old))
    md = write_html_and_markdown([result.run_dir]).with_suffix(".md").read_text()
    assert "every GPU (all: no GPU scope recorded for this run" in md


def test_an_attached_endpoint_without_gpus_counts_all_and_says_why(tmp_path: Path) -> None:
    with fake_node(), serve_in_thread(FakeConfig(itl_ms=5)) as srv:
        result = execute(endpoint_spec(tmp_path, srv.url))
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["gpu_scope"]["method"] == "all"
    assert manifest["gpu_scope"]["gpus"] == [str(i) for i in range(8)]
    assert "--gpus" in manifest["gpu_scope"]["reason"]
