"""Fault matrix, NVML row: a GPU lost mid-run, NotSupported appearing mid-run, the library
going away mid-run, and no library at all. Telemetry marks the gap (``up`` = 0 with the error,
or the metric missing) and the run goes on. In process: the fake NVML (tests/fakes/nvml.py)
patched in, the fake OpenAI server on loopback, the real runner."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pynvml
import pytest

from profiler.distributions import LengthDist
from profiler.runner import RunHooks, execute
from profiler.spec import ArrivalSpec, EndpointSpec, RunSpec, Scenario, WorkloadSpec
from tests.fakes.fake_openai import FakeConfig, serve_in_thread
from tests.fakes.nvml import h100, install_fake_nvml
from tests.integration.faults_support import journal_records, parquet_rows, read_json

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def spec(tmp_path: Path, url: str, duration_s: float) -> RunSpec:
    return RunSpec(
        run_id="nvml",
        out_dir=tmp_path / "runs",
        workload=WorkloadSpec(
            name="w", scenarios=[Scenario(input=LengthDist.fixed(8), output=LengthDist.fixed(10))]
        ),
        arrival=ArrivalSpec(kind="concurrency", concurrency=2),
        duration_s=duration_s,
        endpoint=EndpointSpec(url=url),
        sample_interval_s=0.1,
    )


def series(samples: list[dict[str, Any]], device: str, metric: str) -> list[dict[str, Any]]:
    return sorted(
        (s for s in samples if s["source"] == "nvml" and s["device"] == device and s["metric"] == metric),
        key=lambda s: s["t_s"],
    )  # fmt: skip


def test_nvml_faults_mid_run_mark_the_gap_and_the_run_goes_on(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "nvml"
    at: dict[str, float] = {}
    with install_fake_nvml([h100(0, peers=[1]), h100(1, peers=[0])]) as nv:

        def inject() -> None:
            wall_start = read_json(run_dir / "manifest.json")["clock"]["wall_start"]

            def step(name: str, delay_s: float) -> None:
                time.sleep(delay_s)
                at[name] = time.time() - wall_start  # on the run clock

            step("lost", 0.8)
            nv.gpus[1].lost = True
            step("unsupported", 0.8)
            nv.gpus[0].unsupported.add("nvmlDeviceGetPowerUsage")
            step("unloaded", 0.8)
            nv.init_count = 0  # every later call: NVML_ERROR_UNINITIALIZED

        def on_ready(_endpoint: object) -> None:
            threading.Thread(target=inject, daemon=True).start()

        with serve_in_thread(FakeConfig(itl_ms=5)) as fake:
            result = execute(spec(tmp_path, fake.url, 3.2), RunHooks(on_ready=on_ready))
    assert result.ended == "completed", result.reason
    assert set(at) == {"lost", "unsupported", "unloaded"}
    records = journal_records(run_dir)
    assert len(records) > 10 and Counter(r["outcome"] for r in records) == {"ok": len(records)}
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["nvml"]["available"] is True and len(manifest["gpus"]) == 2
    devices = sorted({str(g.get("index", i)) for i, g in enumerate(manifest["gpus"])})
    assert devices == ["0", "1"]
    samples = parquet_rows(run_dir / "samples.parquet")
    margin = 0.35  # a tick in flight when the fault was injected, and scheduling

    # GPU 1 lost: up 1 before, then up 0 with the error, never back
    up1 = series(samples, "1", "up")
    assert up1 and all(s["value"] == 1.0 for s in up1 if s["t_s"] < at["lost"] - margin)
    after = [s for s in up1 if s["t_s"] > at["lost"] + margin]
    assert after and all(s["value"] == 0.0 and s["error"] for s in after)
    assert all("GPU is lost" in s["error"] for s in after if s["t_s"] < at["unloaded"] - margin)
    assert not [
        s for s in samples
        if s["device"] == "1" and s["metric"] == "power_watts" and s["t_s"] > at["lost"] + margin
    ]  # fmt: skip

    # GPU 0: power NotSupported from then on (a missing value, not a crash), the rest flows
    power0 = series(samples, "0", "power_watts")
    assert [s for s in power0 if s["t_s"] < at["unsupported"] - margin]
    assert not [s for s in power0 if s["t_s"] > at["unsupported"] + margin]
    between = [
        s for s in series(samples, "0", "memory_used_bytes")
        if at["unsupported"] + margin < s["t_s"] < at["unloaded"] - margin
    ]  # fmt: skip
    assert between, "GPU 0 stopped reporting after one metric became unsupported"
    up0 = series(samples, "0", "up")
    assert all(s["value"] == 1.0 for s in up0 if s["t_s"] < at["unloaded"] - margin)

    # the library gone: both GPUs up 0 with the error; host telemetry unaffected
    gone = [s for s in up0 if s["t_s"] > at["unloaded"] + margin]
    assert gone and all(s["value"] == 0.0 and s["error"] for s in gone)
    host_late = [s for s in samples if s["source"] == "host" and s["t_s"] > at["unloaded"] + margin]
    assert host_late

    summary = read_json(run_dir / "summary.json")
    assert summary["requests"]["ok"] == len(records)


def test_nvml_library_missing(tmp_path: Path) -> None:
    with (
        install_fake_nvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND),
        serve_in_thread(FakeConfig(itl_ms=5)) as fake,
    ):
        result = execute(spec(tmp_path, fake.url, 1.0))
    assert result.ended == "completed"
    run_dir = tmp_path / "runs" / "nvml"
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["nvml"] == {
        "available": False,
        "reason": "NVML library libnvidia-ml.so.1 not found (no NVIDIA driver on this machine)",
    }
    samples = parquet_rows(run_dir / "samples.parquet")
    assert samples and {s["source"] for s in samples} == {"host", "vllm"}
    assert read_json(run_dir / "summary.json")["requests"]["ok"] == len(journal_records(run_dir))
