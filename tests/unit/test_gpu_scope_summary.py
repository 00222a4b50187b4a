"""GPU and energy sections cover the server's GPUs only: an 8-GPU node (fake NVML), a server on
GPUs 2 and 5, the six others idle with distinctly different readings."""

from __future__ import annotations

from typing import Any

import pytest

from profiler.analysis.telemetry_sections import summarize_telemetry
from profiler.telemetry.gpu_scope import GpuInfo, choose
from profiler.telemetry.inventory import collect
from profiler.telemetry.nvml_sampler import NvmlSampler
from profiler.telemetry.sample import Sample
from tests.fakes.nvml import FakeGpu, busy_idle_node, install_fake_nvml

NVML_OK = {"available": True, "reason": None}
SERVER = (2, 5)
SERVER_PIDS = {4_000_002, 4_000_005}
KIB = 1024


def node() -> list[FakeGpu]:
    gpus = busy_idle_node(SERVER)
    gpus[2].processes = [(4_000_002, 30 * 2**30)]
    gpus[5].processes = [(4_000_005, 31 * 2**30)]
    gpus[0].processes = [(999, 5 * 2**30)]  # somebody else's job
    return gpus


def sampled() -> tuple[list[Sample], list[dict[str, Any]]]:
    """20 s at 2 Hz from the real sampler over the fake node; and the inventory."""
    with install_fake_nvml(node()) as fake:
        inv = collect()
        s = NvmlSampler(process_pids=lambda: SERVER_PIDS, process_interval_s=0.5)
        out: list[Sample] = []
        for k in range(41):
            out += s.sample(k * 0.5)
            fake.advance(0.5)
        s.close()
    return out, inv["gpus"]


def assert_server_gpus_only(s: dict[str, Any]) -> None:
    gpu, energy = s["gpu"], s["energy"]
    assert gpu["count"] == 2 and sorted(gpu["per_gpu"]) == ["2", "5"]
    assert gpu["utilization_mean_ratio"] == pytest.approx(0.9)  # pooled over 8: 0.28
    assert gpu["power_mean_watts"] == pytest.approx(800.0)  # all 8: 1166
    assert gpu["nvlink_tx_bytes"] == pytest.approx(2 * 1e6 * KIB * 10, rel=0.02)
    assert gpu["nvlink_tx_bytes_per_output_token"] == pytest.approx(
        2 * 1e6 * KIB * 10 / 10_000, rel=0.02
    )
    assert energy["available"] is True and sorted(energy["per_gpu_joules"]) == ["2", "5"]
    assert energy["joules"] == pytest.approx(2 * 400 * 10, rel=0.01)  # all 8: 11,660 J
    assert energy["joules_per_output_token"] == pytest.approx(0.8, rel=0.01)
    assert energy["mean_power_from_energy_watts"] == pytest.approx(800, rel=0.01)
    assert energy["gpu_seconds"] == pytest.approx(20.0)
    assert gpu["process_memory_used_peak_bytes"] == 31 * 2**30
    assert gpu["scope"]["gpus"] == ["2", "5"] and energy["scope"] == gpu["scope"]
    assert gpu["scope"]["other_gpus"] == ["0", "1", "3", "4", "6", "7"]


@pytest.mark.parametrize(
    ("how", "method"),
    [
        ({"explicit": ["2", "5"]}, "explicit"),
        ({"server_env": {"CUDA_VISIBLE_DEVICES": "2,5"}}, "cuda_visible_devices"),
        ({"server_env": {}, "server_tree": True}, "server_processes"),  # decided from samples
    ],
)
def test_gpu_and_energy_cover_the_servers_two_gpus_of_eight(
    how: dict[str, Any], method: str
) -> None:
    samples, gpus = sampled()
    scope = choose(GpuInfo.from_inventory(gpus), **how).as_dict()
    s = summarize_telemetry(samples, 5.0, 15.0, 10_000, NVML_OK, gpu_scope=scope, gpus=gpus)
    assert_server_gpus_only(s)
    assert s["gpu"]["scope"]["method"] == method
    assert s["gpu"]["scope"]["uuids"] == [gpus[2]["uuid"], gpus[5]["uuid"]]


def test_an_old_run_without_a_scope_counts_every_gpu_and_says_so() -> None:
    samples, gpus = sampled()
    s = summarize_telemetry(samples, 5.0, 15.0, 10_000, NVML_OK)
    assert s["gpu"]["count"] == 8 and s["gpu"]["scope"]["method"] == "all"
    assert "no GPU scope recorded" in s["gpu"]["scope"]["reason"]
    assert s["energy"]["joules"] == pytest.approx((2 * 400 + 6 * 61) * 10, rel=0.01)


def test_processes_on_no_gpu_fall_back_to_all_with_the_reason() -> None:
    samples, gpus = sampled()
    pending = choose(GpuInfo.from_inventory(gpus), server_env={}, server_tree=True).as_dict()
    # as in a container: NVML's PIDs are not the server's, so no process memory is known
    drop = {"process_memory_used_bytes", "server_compute_processes"}
    samples = [x for x in samples if x.metric not in drop]
    s = summarize_telemetry(samples, 5.0, 15.0, 10_000, NVML_OK, gpu_scope=pending, gpus=gpus)
    assert s["gpu"]["count"] == 8 and s["gpu"]["scope"]["method"] == "all"
    assert "none is the server's" in s["gpu"]["scope"]["reason"]
