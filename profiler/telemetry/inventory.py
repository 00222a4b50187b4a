"""GPU inventory and GPU-to-GPU topology, for manifest.json and ``infprof gpus``.

Queries go through the NVML chokepoint in ``profiler.telemetry.nvml`` (this module does not
import pynvml). The topology matrix uses nvidia-smi's labels: ``X`` (self), ``NV#`` (# NVLink
links, directly or through NVSwitches), ``PIX`` (one PCIe switch), ``PXB`` (several PCIe
switches), ``PHB`` (a PCIe host bridge), ``NODE`` (host bridges within a NUMA node), ``SYS``
(across the SMP interconnect). When NVML's topology calls fail, ``nvidia-smi topo -m`` is
parsed if present; otherwise the topology is None.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from profiler.telemetry import nvml

log = logging.getLogger(__name__)

# nvmlGpuTopologyLevel_t -> nvidia-smi label (INTERNAL: two GPUs on one board, shown as PIX)
TOPOLOGY_LABELS = {0: "PIX", 10: "PIX", 20: "PXB", 30: "PHB", 40: "NODE", 50: "SYS"}
REMOTE_TYPES = {0: "gpu", 1: "ibmnpu", 2: "switch", 0xFF: "unknown"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GPU_COL = re.compile(r"GPU\d+")


def norm_bus_id(bus_id: str | None) -> str | None:
    """``00000000:18:00.0`` / ``0000:18:00.0`` / ``18:00.0`` -> ``0000:18:00.0`` (lower case)."""
    if not bus_id:
        return None
    parts = bus_id.strip().lower().split(":")
    if len(parts) == 2:
        parts = ["0", *parts]
    if len(parts) != 3:
        return bus_id.strip().lower()
    try:
        return f"{int(parts[0], 16):04x}:{int(parts[1], 16):02x}:{parts[2]}"
    except ValueError:
        return bus_id.strip().lower()


def cuda_version_text(v: int | None) -> str | None:
    """12040 -> '12.4'."""
    if not v:
        return None
    return f"{v // 1000}.{(v % 1000) // 10}"


def _links(dev: nvml.NvmlDevice) -> list[int]:
    count = dev.fields([(91, 0)]).get((91, 0))
    if count is not None:
        return list(range(int(count[0])))
    out = []
    for link in range(int(nvml.const("NVML_NVLINK_MAX_LINKS", 18))):
        if dev.call(None, "nvmlDeviceGetNvLinkState", link) is None:
            break
        out.append(link)
    return out


def _gpu(dev: nvml.NvmlDevice) -> dict[str, Any]:
    mem = dev.call("memory", "nvmlDeviceGetMemoryInfo")
    pci = dev.call("pci", "nvmlDeviceGetPciInfo")
    cc = dev.call("cc", "nvmlDeviceGetCudaComputeCapability")
    mig = dev.call("mig_mode", "nvmlDeviceGetMigMode")
    limit = dev.call("power_limit", "nvmlDeviceGetEnforcedPowerLimit")
    peers = []
    active = 0
    links = _links(dev)
    for link in links:
        if dev.call(None, "nvmlDeviceGetNvLinkState", link) != 1:
            continue
        active += 1
        remote = dev.call(None, "nvmlDeviceGetNvLinkRemotePciInfo", link)
        rtype = dev.call(None, "nvmlDeviceGetNvLinkRemoteDeviceType", link)
        peers.append(
            {
                "link": link,
                "remote_pci_bus_id": norm_bus_id(nvml.text(remote.busId))
                if remote is not None
                else None,
                "remote_type": REMOTE_TYPES.get(int(rtype), "unknown")
                if rtype is not None
                else None,
            }
        )
    return {
        "index": dev.index,
        "uuid": nvml.text(dev.call("uuid", "nvmlDeviceGetUUID")),
        "name": nvml.text(dev.call("name", "nvmlDeviceGetName")),
        "memory_total_bytes": int(mem.total) if mem is not None else None,
        "pci_bus_id": norm_bus_id(nvml.text(pci.busId)) if pci is not None else None,
        "architecture": dev.call("arch", "nvmlDeviceGetArchitecture"),
        "compute_capability": f"{cc[0]}.{cc[1]}" if cc is not None else None,
        "power_limit_watts": limit / 1000 if limit is not None else None,
        "mig_mode": bool(int(mig[0])) if mig is not None else None,
        "nvlink": {"links": len(links), "active": active, "peers": peers},
    }


def topology_nvml(
    devices: Sequence[nvml.NvmlDevice], gpus: Sequence[dict[str, Any]]
) -> dict[str, Any] | None:
    """The label matrix from NVLink peers and ``nvmlDeviceGetTopologyCommonAncestor``; None
    when a pair without NVLink could not be placed."""
    n = len(devices)
    by_bus = {g.get("pci_bus_id"): i for i, g in enumerate(gpus) if g.get("pci_bus_id")}
    direct = [[0] * n for _ in range(n)]
    switch_links = [0] * n
    for i, g in enumerate(gpus):
        for p in (g.get("nvlink") or {}).get("peers", []):
            if p.get("remote_pci_bus_id") in by_bus and p.get("remote_type") in ("gpu", None):
                direct[i][by_bus[p["remote_pci_bus_id"]]] += 1
            elif p.get("remote_type") in ("switch", None):  # None: a driver too old to say
                switch_links[i] += 1
    matrix: list[list[str]] = []
    for i in range(n):
        row = []
        for j in range(n):
            if i == j:
                row.append("X")
            elif direct[i][j]:
                row.append(f"NV{direct[i][j]}")
            elif switch_links[i] and switch_links[j]:
                row.append(f"NV{min(switch_links[i], switch_links[j])}")
            else:
                try:
                    level = devices[i].call(
                        None, "nvmlDeviceGetTopologyCommonAncestor", devices[j].handle
                    )
                except nvml.DeviceFault:
                    level = None
                if level is None:
                    return None
                row.append(TOPOLOGY_LABELS.get(int(level), f"L{int(level)}"))
        matrix.append(row)
    return {"gpus": [f"GPU{d.index}" for d in devices], "matrix": matrix, "source": "nvml"}


def parse_nvidia_smi_topo(text: str) -> dict[str, Any] | None:
    """The GPU x GPU block of ``nvidia-smi topo -m`` (NIC rows/columns and affinities dropped)."""
    lines = [_ANSI.sub("", ln).rstrip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return None
    cols = [tok for tok in lines[0].split() if _GPU_COL.fullmatch(tok)]
    if not cols:
        return None
    rows: dict[str, list[str]] = {}
    for ln in lines[1:]:
        cells = ln.split()
        if ln.startswith("Legend"):
            break
        if cells and _GPU_COL.fullmatch(cells[0]) and len(cells) > len(cols):
            rows[cells[0]] = cells[1 : 1 + len(cols)]
    if set(rows) != set(cols):
        return None
    return {"gpus": cols, "matrix": [rows[c] for c in cols], "source": "nvidia-smi"}


def run_nvidia_smi_topo() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        res = subprocess.run(
            [exe, "topo", "-m"], capture_output=True, text=True, timeout=15, check=False
        )
    except (OSError, subprocess.SubprocessError) as e:
        log.debug("nvidia-smi topo -m: %s", e)
        return None
    return res.stdout if res.returncode == 0 else None


def collect(
    indices: Sequence[int] | None = None, smi_topo: Callable[[], str | None] = run_nvidia_smi_topo
) -> dict[str, Any]:
    """Inventory: driver/CUDA versions, per GPU identity and links, topology matrix. Without
    NVML: ``{"available": False, "reason": ...}``."""
    devices, unavailable = nvml.open_devices(indices)
    if unavailable is not None:
        return unavailable.as_dict()
    try:
        gpus: list[dict[str, Any]] = []
        for d in devices:
            try:
                gpus.append(_gpu(d))
            except nvml.DeviceFault as e:
                gpus.append({"index": d.index, "error": str(e)})
        healthy = [(d, g) for d, g in zip(devices, gpus, strict=True) if "error" not in g]
        topology = topology_nvml([d for d, _ in healthy], [g for _, g in healthy])
        if topology is None:
            smi = smi_topo()
            topology = parse_nvidia_smi_topo(smi) if smi else None
        return {
            "available": True,
            "reason": None,
            "driver_version": nvml.text(nvml.system_call("nvmlSystemGetDriverVersion")),
            "cuda_driver_version": cuda_version_text(
                nvml.system_call("nvmlSystemGetCudaDriverVersion")
            ),
            "nvml_version": nvml.text(nvml.system_call("nvmlSystemGetNVMLVersion")),
            "gpu_count": len(gpus),
            "gpus": gpus,
            "topology": topology,
        }
    finally:
        nvml.nvml_shutdown()
