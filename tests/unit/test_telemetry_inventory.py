"""GPU inventory and topology: NVML path (fake pynvml), nvidia-smi fallback parsing."""

from __future__ import annotations

import sys
from pathlib import Path

import pynvml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # until pytest has pythonpath=["."]

from profiler.telemetry.inventory import (  # noqa: E402
    collect,
    cuda_version_text,
    norm_bus_id,
    parse_nvidia_smi_topo,
)
from tests.fakes.nvml import FakeLink, h100, install_fake_nvml, mig_gpu, pcie_gpu  # noqa: E402

SMI_TOPO = (
    "\t\x1b[4mGPU0\tGPU1\tGPU2\tNIC0\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m\n"
    "GPU0\t X \tNV18\tSYS\tPXB\t0-47\t0\t\tN/A\n"
    "GPU1\tNV18\t X \tSYS\tSYS\t0-47\t0\t\tN/A\n"
    "GPU2\tSYS\tSYS\t X \tSYS\t48-95\t1\t\tN/A\n"
    "NIC0\tPXB\tSYS\tSYS\t X \t\t\t\t\n"
    "\n"
    "Legend:\n\n  X    = Self\n  SYS  = Connection traversing PCIe\n"
)


def test_inventory_of_an_nvlink_pair_and_a_pcie_card() -> None:
    gpus = [h100(0, peers=[1], links_per_peer=4), h100(1, peers=[0], links_per_peer=4), pcie_gpu(2)]
    with install_fake_nvml(gpus) as fake:
        inv = collect()
        assert fake.init_count == 0  # shut down again
    assert inv["available"] is True
    assert inv["driver_version"] == "550.54.15" and inv["cuda_driver_version"] == "12.4"
    assert inv["gpu_count"] == 3
    g0 = inv["gpus"][0]
    assert g0["uuid"].startswith("GPU-") and g0["name"] == "NVIDIA H100 80GB HBM3"
    assert g0["memory_total_bytes"] == 80 * 2**30
    assert g0["pci_bus_id"] == "0000:18:00.0"
    assert g0["compute_capability"] == "9.0" and g0["mig_mode"] is False
    assert g0["nvlink"]["links"] == 4 and g0["nvlink"]["active"] == 4
    assert {p["remote_pci_bus_id"] for p in g0["nvlink"]["peers"]} == {"0000:19:00.0"}
    assert inv["gpus"][2]["nvlink"] == {"links": 0, "active": 0, "peers": []}
    topo = inv["topology"]
    assert topo["source"] == "nvml" and topo["gpus"] == ["GPU0", "GPU1", "GPU2"]
    assert topo["matrix"] == [["X", "NV4", "NODE"], ["NV4", "X", "NODE"], ["NODE", "NODE", "X"]]


def test_nvswitch_links_count_for_every_pair() -> None:
    gpus = [h100(i) for i in range(3)]
    for g in gpus:
        g.links = [
            FakeLink(
                remote_bus_id=f"00000000:{0xA0 + k:02X}:00.0",
                remote_type=pynvml.NVML_NVLINK_DEVICE_TYPE_SWITCH,
            )
            for k in range(18)
        ]
    with install_fake_nvml(gpus):
        inv = collect()
    assert inv["topology"]["matrix"][0] == ["X", "NV18", "NV18"]
    for g in gpus:  # a driver that cannot tell a switch from a GPU: unmatched peers are switches
        g.unsupported.add("nvmlDeviceGetNvLinkRemoteDeviceType")
    with install_fake_nvml(gpus):
        old = collect()
    assert old["gpus"][0]["nvlink"]["peers"][0]["remote_type"] is None
    assert old["topology"]["matrix"][1] == ["NV18", "X", "NV18"]


def test_topology_falls_back_to_nvidia_smi_then_none() -> None:
    gpus = [pcie_gpu(0), pcie_gpu(1), pcie_gpu(2)]
    with install_fake_nvml(gpus, topology_error=True):
        parsed = collect(smi_topo=lambda: SMI_TOPO)
        none = collect(smi_topo=lambda: None)
    assert parsed["topology"]["source"] == "nvidia-smi"
    assert parsed["topology"]["matrix"][0] == ["X", "NV18", "SYS"]
    assert none["topology"] is None and none["available"] is True


def test_parse_nvidia_smi_topo_rejects_garbage() -> None:
    assert parse_nvidia_smi_topo("") is None
    assert parse_nvidia_smi_topo("No devices were found\n") is None
    single = parse_nvidia_smi_topo("\tGPU0\tCPU Affinity\tNUMA Affinity\nGPU0\t X \t0-7\t0\n")
    assert single == {"gpus": ["GPU0"], "matrix": [["X"]], "source": "nvidia-smi"}


def test_mig_lost_and_unavailable() -> None:
    gpus = [mig_gpu(0), h100(1)]
    gpus[1].lost = True
    with install_fake_nvml(gpus):
        inv = collect(smi_topo=lambda: None)
    assert inv["gpus"][0]["mig_mode"] is True
    assert inv["gpus"][1]["index"] == 1 and "lost" in inv["gpus"][1]["error"]
    with install_fake_nvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND):
        assert collect() == {
            "available": False,
            "reason": "NVML library libnvidia-ml.so.1 not found (no NVIDIA driver on this machine)",
        }


def test_small_helpers() -> None:
    assert norm_bus_id("00000000:1A:00.0") == "0000:1a:00.0"
    assert norm_bus_id("0000:1a:00.0") == "0000:1a:00.0"
    assert norm_bus_id("1A:00.0") == "0000:1a:00.0"
    assert norm_bus_id("") is None
    assert cuda_version_text(12040) == "12.4" and cuda_version_text(11080) == "11.8"
    assert cuda_version_text(None) is None
