"""TelemetryCollector: names, labels, counters, skipped values, up, and promtool's lint."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from profiler.metrics.collector import (
    GpuIdentity,
    TelemetryCollector,
    check_labels,
    gpu_identities,
    metric_name,
)
from profiler.telemetry.fields import BY_SOURCE
from profiler.telemetry.sample import Sample
from tests.fakes.nvml_exporter_fake import every_metric_latest

GPUS = {
    "0": GpuIdentity("GPU-aaa", "NVIDIA H100 80GB HBM3", "00000000:18:00.0"),
    "1": GpuIdentity("GPU-bbb", "NVIDIA H100 80GB HBM3"),
}


def _s(
    source: str, device: str, metric: str, value: float | None, error: str | None = None
) -> Sample:
    return Sample(1.0, source, device, metric, value, error)


def _snap(*samples: Sample) -> dict[tuple[str, str, str], Sample]:
    return {(s.source, s.device, s.metric): s for s in samples}


def _registry(
    snap: dict[tuple[str, str, str], Sample], labels: dict[str, str] | None = None
) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(TelemetryCollector(lambda: snap, labels or {"hostname": "node-1"}, gpus=GPUS))
    return reg


def test_gpu_host_and_server_series_carry_their_labels() -> None:
    snap = _snap(
        _s("nvml", "0", "power_watts", 312.5),
        _s("nvml", "1", "utilization_ratio", 0.75),
        _s("host", "", "cpu_utilization_ratio", 0.5),
        _s("host", "eth0", "network_rx_bytes_per_second", 1e6),
        _s("vllm", "", "kv_cache_usage_ratio", 0.4),
        _s("vllm", "1", "num_requests_running", 7.0),
    )
    reg = _registry(snap, {"hostname": "node-1", "run_id": "r1", "model": "m"})
    gpu0 = {
        "gpu": "0",
        "uuid": "GPU-aaa",
        "gpu_model": "NVIDIA H100 80GB HBM3",
        "hostname": "node-1",
        "run_id": "r1",
        "model": "m",
    }
    assert reg.get_sample_value("infprof_gpu_power_watts", gpu0) == 312.5
    assert (
        reg.get_sample_value(
            "infprof_gpu_utilization_ratio", {**gpu0, "gpu": "1", "uuid": "GPU-bbb"}
        )
        == 0.75
    )
    static = {"hostname": "node-1", "run_id": "r1", "model": "m"}
    assert reg.get_sample_value("infprof_host_cpu_utilization_ratio", static) == 0.5
    assert (
        reg.get_sample_value(
            "infprof_host_network_rx_bytes_per_second", {**static, "device": "eth0"}
        )
        == 1e6
    )
    assert reg.get_sample_value("infprof_server_kv_cache_usage_ratio", static) == 0.4
    assert (
        reg.get_sample_value("infprof_server_num_requests_running", {**static, "engine": "1"})
        == 7.0
    )


def test_counters_are_counters_with_one_total_suffix() -> None:
    snap = _snap(
        _s("nvml", "0", "energy_joules_total", 1234.5),
        _s("nvml", "0", "nvlink_tx_bytes_total", 9e9),
    )
    reg = _registry(snap)
    fams = {m.name: m for m in reg.collect()}
    assert fams["infprof_gpu_energy_joules"].type == "counter"
    assert fams["infprof_gpu_nvlink_tx_bytes"].type == "counter"
    text = generate_latest(reg).decode()
    assert "# TYPE infprof_gpu_energy_joules_total counter" in text
    assert "_total_total" not in text
    labels = {
        "gpu": "0",
        "uuid": "GPU-aaa",
        "gpu_model": "NVIDIA H100 80GB HBM3",
        "hostname": "node-1",
    }
    assert reg.get_sample_value("infprof_gpu_energy_joules_total", labels) == 1234.5


def test_none_values_are_skipped_and_up_is_derived_per_gpu() -> None:
    snap = _snap(
        _s("nvml", "0", "power_watts", 300.0),
        _s("nvml", "0", "memory_temperature_celsius", None),  # NotSupported
        _s("nvml", "1", "power_watts", None, "GPU 1: GPU is lost"),
        _s("host", "", "memory_used_bytes", None),
    )
    reg = _registry(snap)
    names = {s.name for m in reg.collect() for s in m.samples}
    assert "infprof_gpu_memory_temperature_celsius" not in names
    assert "infprof_host_memory_used_bytes" not in names
    base = {"gpu_model": "NVIDIA H100 80GB HBM3", "hostname": "node-1"}
    assert reg.get_sample_value("infprof_gpu_up", {**base, "gpu": "0", "uuid": "GPU-aaa"}) == 1.0
    assert reg.get_sample_value("infprof_gpu_up", {**base, "gpu": "1", "uuid": "GPU-bbb"}) == 0.0


def test_a_down_gpu_exports_only_up() -> None:
    snap = _snap(
        _s("nvml", "0", "power_watts", 300.0),  # stale, from before the loss
        _s("nvml", "0", "up", 0.0, "GPU 0: GPU is lost"),
        _s("nvml", "1", "power_watts", 200.0),
        _s("nvml", "1", "up", 1.0),
    )
    reg = _registry(snap)
    series = [(s.name, s.labels["gpu"], s.value) for m in reg.collect() for s in m.samples]
    assert ("infprof_gpu_up", "0", 0.0) in series
    assert ("infprof_gpu_up", "1", 1.0) in series
    assert ("infprof_gpu_power_watts", "1", 200.0) in series
    assert not [x for x in series if x[0] == "infprof_gpu_power_watts" and x[1] == "0"]


def test_per_link_samples_get_a_link_label() -> None:
    snap = _snap(
        _s("nvml", "0", "nvlink_tx_bytes_total", 10.0),
        _s("nvml", "0/3", "nvlink_tx_bytes_total", 4.0),
    )
    reg = _registry(snap)
    base = {
        "gpu": "0",
        "uuid": "GPU-aaa",
        "gpu_model": "NVIDIA H100 80GB HBM3",
        "hostname": "node-1",
    }
    assert reg.get_sample_value("infprof_gpu_nvlink_tx_bytes_total", base) == 10.0
    assert reg.get_sample_value("infprof_gpu_nvlink_tx_bytes_total", {**base, "link": "3"}) == 4.0


def test_unknown_metric_and_gpu_without_identity() -> None:
    snap = _snap(_s("nvml", "7", "future_thing_total", 2.0), _s("other", "", "ignored", 1.0))
    reg = _registry(snap)
    fams = {m.name: m for m in reg.collect()}
    assert fams["infprof_gpu_future_thing"].type == "counter"
    assert (
        reg.get_sample_value(
            "infprof_gpu_up", {"gpu": "7", "uuid": "", "gpu_model": "", "hostname": "node-1"}
        )
        == 1.0
    )
    assert not [n for n in fams if "ignored" in n]


def test_every_field_is_exported_under_its_canonical_name() -> None:
    reg = _registry(every_metric_latest(2))
    names = {s.name for m in reg.collect() for s in m.samples}
    prefix = {"nvml": "infprof_gpu_", "host": "infprof_host_", "vllm": "infprof_server_"}
    for source, fields in BY_SOURCE.items():
        for f in fields:
            assert metric_name(source, f.name) in names, f.name
            if not f.name.endswith("_count"):
                assert prefix[source] + f.name in names, f.name


def test_names_reserved_for_histograms_are_renamed() -> None:
    assert metric_name("host", "process_count") == "infprof_host_processes"
    assert metric_name("vllm", "odd_sum") == "infprof_server_odd_sum_value"
    assert metric_name("nvml", "power-watts") == "infprof_gpu_power_watts"
    assert metric_name("elsewhere", "x") is None


GOLDEN = """\
# HELP infprof_gpu_energy_joules_total energy since driver load (nvmlDeviceGetTotalEnergyConsumption)
# TYPE infprof_gpu_energy_joules_total counter
infprof_gpu_energy_joules_total{gpu="0",gpu_model="NVIDIA H100 80GB HBM3",hostname="node-1",uuid="GPU-aaa"} 5000.0
# HELP infprof_gpu_power_watts average power over the last second (nvmlDeviceGetPowerUsage)
# TYPE infprof_gpu_power_watts gauge
infprof_gpu_power_watts{gpu="0",gpu_model="NVIDIA H100 80GB HBM3",hostname="node-1",uuid="GPU-aaa"} 300.0
# HELP infprof_gpu_up 1 when the GPU answered this tick, 0 when it was lost or failed
# TYPE infprof_gpu_up gauge
infprof_gpu_up{gpu="0",gpu_model="NVIDIA H100 80GB HBM3",hostname="node-1",uuid="GPU-aaa"} 1.0
# HELP infprof_host_cpu_utilization_ratio CPU busy fraction (per core with device cpu<N>, host total with device '')
# TYPE infprof_host_cpu_utilization_ratio gauge
infprof_host_cpu_utilization_ratio{hostname="node-1"} 0.5
infprof_host_cpu_utilization_ratio{device="cpu0",hostname="node-1"} 0.25
"""


def test_golden_exposition() -> None:
    snap = _snap(
        _s("host", "", "cpu_utilization_ratio", 0.5),
        _s("host", "cpu0", "cpu_utilization_ratio", 0.25),
        _s("nvml", "0", "power_watts", 300.0),
        _s("nvml", "0", "energy_joules_total", 5000.0),
        _s("nvml", "0", "up", 1.0),
    )
    assert generate_latest(_registry(snap)).decode() == GOLDEN


def test_static_labels_are_checked() -> None:
    assert check_labels({"run_id": "r", "model": "", "x": None}) == {"run_id": "r"}  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        check_labels({"bad-name": "x"})
    with pytest.raises(ValueError):
        check_labels({"__reserved": "x"})


def test_gpu_identities_from_inventory() -> None:
    inv = {
        "gpus": [
            {"index": 0, "uuid": "GPU-1", "name": "NVIDIA L4", "pci_bus_id": "0000:01:00.0"},
            {"index": 1, "error": "lost"},
        ]
    }
    ids = gpu_identities(inv)
    assert ids["0"] == GpuIdentity("GPU-1", "NVIDIA L4", "0000:01:00.0")
    assert ids["1"] == GpuIdentity()
    assert gpu_identities({"available": False, "reason": "no driver"}) == {}


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (scripts/ensure-prometheus.sh installs it)",
)
def test_promtool_check_metrics_finds_no_problem() -> None:
    text = generate_latest(
        _registry(every_metric_latest(2), {"hostname": "n", "run_id": "r", "model": "m"})
    )
    res = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60
    )
    assert res.returncode == 0, (res.stdout + res.stderr).decode()
    assert not (res.stdout + res.stderr).strip(), (res.stdout + res.stderr).decode()


def test_docs_list_every_exported_name() -> None:
    from pathlib import Path

    from tests.unit.test_dashboards import exported_infprof_names

    doc = (Path(__file__).resolve().parents[2] / "docs" / "prometheus.md").read_text()
    names = exported_infprof_names()
    histograms = {n.removesuffix("_bucket") for n in names if n.endswith("_bucket")}
    families = {
        n
        for n in names
        if not n.endswith("_created") and not any(n.startswith(h + "_") for h in histograms)
    }
    missing = sorted(f for f in families | histograms if f"`{f}`" not in doc)
    assert not missing, f"docs/prometheus.md does not list: {missing}"
