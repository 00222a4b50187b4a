"""--dcgm-compatible: dcgm-exporter's names, units and labels from the same samples."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from profiler.metrics.collector import GpuIdentity
from profiler.metrics.dcgm import DCGM_NAMES, FIELDS, DcgmCollector
from profiler.telemetry.fields import GPU_FIELDS
from profiler.telemetry.sample import Sample
from tests.fakes.nvml_exporter_fake import every_metric_latest

GPUS = {"0": GpuIdentity("GPU-aaa", "NVIDIA H100 80GB HBM3", "00000000:18:00.0")}
LABELS = {
    "gpu": "0",
    "UUID": "GPU-aaa",
    "device": "nvidia0",
    "modelName": "NVIDIA H100 80GB HBM3",
    "pci_bus_id": "00000000:18:00.0",
    "Hostname": "node-1",
}


def _reg(snap: dict[tuple[str, str, str], Sample], **kw: str) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DcgmCollector(lambda: snap, "node-1", gpus=GPUS, **kw))
    return reg


def _snap(**values: float) -> dict[tuple[str, str, str], Sample]:
    return {("nvml", "0", k): Sample(1.0, "nvml", "0", k, v) for k, v in values.items()}


def test_units_are_converted_to_dcgm_units() -> None:
    reg = _reg(
        _snap(
            utilization_ratio=0.42,
            memory_used_bytes=3 * 2**30,
            memory_free_bytes=2**29,
            power_watts=312.5,
            energy_joules_total=1234.5,
            temperature_celsius=51,
            sm_clock_hertz=1.98e9,
            memory_clock_hertz=2.619e9,
            pcie_tx_bytes_per_second=1024.0,
            gpm_tensor_activity_ratio=0.4,
            throttle_power_seconds_total=2.5,
        )
    )
    v = lambda name: reg.get_sample_value(name, LABELS)  # noqa: E731
    assert v("DCGM_FI_DEV_GPU_UTIL") == pytest.approx(42.0)
    assert v("DCGM_FI_DEV_FB_USED") == 3072
    assert v("DCGM_FI_DEV_FB_FREE") == 512
    assert v("DCGM_FI_DEV_POWER_USAGE") == 312.5
    assert v("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION") == pytest.approx(1_234_500)
    assert v("DCGM_FI_DEV_GPU_TEMP") == 51
    assert v("DCGM_FI_DEV_SM_CLOCK") == pytest.approx(1980)
    assert v("DCGM_FI_DEV_MEM_CLOCK") == pytest.approx(2619)
    assert v("DCGM_FI_PROF_PCIE_TX_BYTES") == 1024
    assert v("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE") == 0.4
    assert v("DCGM_FI_DEV_POWER_VIOLATION") == pytest.approx(2.5e9)


def test_gpm_rates_win_over_nvml_rates() -> None:
    reg = _reg(
        _snap(
            pcie_tx_bytes_per_second=1.0,
            gpm_pcie_tx_bytes_per_second=2.0,
            nvlink_rx_bytes_per_second=5.0,
        )
    )
    assert reg.get_sample_value("DCGM_FI_PROF_PCIE_TX_BYTES", LABELS) == 2.0
    assert reg.get_sample_value("DCGM_FI_PROF_NVLINK_RX_BYTES", LABELS) == 5.0


def test_energy_keeps_the_exact_dcgm_name() -> None:
    text = generate_latest(_reg(_snap(energy_joules_total=1.0))).decode()
    assert "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{" in text
    assert "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_total" not in text


def test_hostname_label_name_is_selectable_and_down_gpus_are_hidden() -> None:
    snap = _snap(power_watts=100.0)
    reg = _reg(snap, hostname_label="hostname")
    assert (
        reg.get_sample_value(
            "DCGM_FI_DEV_POWER_USAGE",
            {**{k: v for k, v in LABELS.items() if k != "Hostname"}, "hostname": "node-1"},
        )
        == 100
    )
    snap[("nvml", "0", "up")] = Sample(1.0, "nvml", "0", "up", 0.0, "lost")
    assert generate_latest(_reg(snap)).decode() == ""


def test_every_mapping_points_at_a_real_field() -> None:
    known = {f.name for f in GPU_FIELDS}
    assert all(f.source_metric in known for f in FIELDS)
    reg = _reg(every_metric_latest(2))
    names = {m.name for m in reg.collect()}
    assert names == set(DCGM_NAMES)
    for must in (
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_MEMORY_TEMP",
        "DCGM_FI_DEV_SM_CLOCK",
        "DCGM_FI_DEV_MEM_CLOCK",
        "DCGM_FI_PROF_PCIE_TX_BYTES",
        "DCGM_FI_PROF_PCIE_RX_BYTES",
        "DCGM_FI_PROF_NVLINK_TX_BYTES",
        "DCGM_FI_PROF_NVLINK_RX_BYTES",
        "DCGM_FI_PROF_SM_ACTIVE",
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        "DCGM_FI_PROF_DRAM_ACTIVE",
    ):
        assert must in names


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (scripts/ensure-prometheus.sh installs it)",
)
def test_promtool_parses_the_dcgm_exposition() -> None:
    # dcgm-exporter's own names break promtool's naming lint (no base units, counters without
    # _total); only parse errors matter here, and those would be reported as "error while linting".
    res = subprocess.run(
        ["promtool", "check", "metrics"],
        input=generate_latest(_reg(every_metric_latest(2))),
        capture_output=True,
        timeout=60,
    )
    assert b"error while linting" not in res.stdout + res.stderr, (res.stdout + res.stderr).decode()
