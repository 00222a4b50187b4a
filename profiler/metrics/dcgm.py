"""dcgm-exporter compatible names and units (``infprof exporter --dcgm-compatible``).

For every NVML field infprof can read that has a dcgm-exporter counterpart, ``DcgmCollector``
exposes the DCGM name in DCGM's unit, with dcgm-exporter's labels ``gpu``, ``UUID``,
``pci_bus_id``, ``device`` (``nvidia<N>``), ``modelName`` and ``Hostname`` (dcgm-exporter
renamed it to ``hostname`` in 2026; ``hostname_label`` picks either), so existing dcgm
dashboards work unchanged (NVIDIA/dcgm-exporter ``etc/default-counters.csv``,
``internal/pkg/rendermetrics``).

dcgm-exporter types a few cumulative fields as counters without a ``_total`` suffix
(``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION``, the ``*_VIOLATION`` times). prometheus_client
always appends ``_total`` to counters, which would change the name, so those are exposed as
``untyped`` under the exact DCGM name: ``rate()``/``increase()`` work on them as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from profiler.metrics.collector import GpuIdentity, GpusArg, LatestFn
from profiler.metrics.exposition import Family, series_prefix

MIB = float(1 << 20)


class DcgmField(NamedTuple):
    name: str
    source_metric: str  # a GPU_FIELDS name (source nvml)
    scale: float  # DCGM value = infprof value * scale
    type: str  # gauge | untyped (cumulative; see the module doc)
    help: str


# The first metric present wins when several infprof fields map to one DCGM name
# (GPM rates are preferred over NVML's coarser counters when a GPU has GPM).
# fmt: off
FIELDS: tuple[DcgmField, ...] = (
    DcgmField("DCGM_FI_DEV_GPU_UTIL", "utilization_ratio", 100.0, "gauge", "GPU utilization (in %)."),
    DcgmField("DCGM_FI_DEV_MEM_COPY_UTIL", "memory_utilization_ratio", 100.0, "gauge", "Memory utilization (in %)."),
    DcgmField("DCGM_FI_DEV_FB_USED", "memory_used_bytes", 1 / MIB, "gauge", "Framebuffer memory used (in MiB)."),
    DcgmField("DCGM_FI_DEV_FB_FREE", "memory_free_bytes", 1 / MIB, "gauge", "Framebuffer memory free (in MiB)."),
    DcgmField("DCGM_FI_DEV_FB_RESERVED", "memory_reserved_bytes", 1 / MIB, "gauge", "Framebuffer memory reserved (in MiB)."),
    DcgmField("DCGM_FI_DEV_FB_TOTAL", "memory_total_bytes", 1 / MIB, "gauge", "Framebuffer memory total (in MiB)."),
    DcgmField("DCGM_FI_DEV_POWER_USAGE", "power_watts", 1.0, "gauge", "Power draw (in W)."),
    DcgmField("DCGM_FI_DEV_POWER_USAGE_INSTANT", "power_instant_watts", 1.0, "gauge", "Current instantaneous power usage of the device (in W)."),
    DcgmField("DCGM_FI_DEV_ENFORCED_POWER_LIMIT", "power_limit_watts", 1.0, "gauge", "Effective power limit that the driver enforces (in W)."),
    DcgmField("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "energy_joules_total", 1000.0, "untyped", "Total energy consumption since boot (in mJ)."),
    DcgmField("DCGM_FI_DEV_GPU_TEMP", "temperature_celsius", 1.0, "gauge", "GPU temperature (in C)."),
    DcgmField("DCGM_FI_DEV_MEMORY_TEMP", "memory_temperature_celsius", 1.0, "gauge", "Memory temperature (in C)."),
    DcgmField("DCGM_FI_DEV_SM_CLOCK", "sm_clock_hertz", 1e-6, "gauge", "SM clock frequency (in MHz)."),
    DcgmField("DCGM_FI_DEV_MEM_CLOCK", "memory_clock_hertz", 1e-6, "gauge", "Memory clock frequency (in MHz)."),
    DcgmField("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "clock_event_reasons", 1.0, "gauge", "Current clock throttle reasons (bitmask)."),
    DcgmField("DCGM_FI_DEV_POWER_VIOLATION", "throttle_power_seconds_total", 1e9, "untyped", "Throttling duration due to power constraints (in ns)."),
    DcgmField("DCGM_FI_DEV_THERMAL_VIOLATION", "throttle_thermal_seconds_total", 1e9, "untyped", "Throttling duration due to thermal constraints (in ns)."),
    DcgmField("DCGM_FI_DEV_SYNC_BOOST_VIOLATION", "throttle_sync_boost_seconds_total", 1e9, "untyped", "Throttling duration due to sync-boost constraints (in ns)."),
    DcgmField("DCGM_FI_DEV_BOARD_LIMIT_VIOLATION", "throttle_board_limit_seconds_total", 1e9, "untyped", "Throttling duration due to board limit constraints (in ns)."),
    DcgmField("DCGM_FI_DEV_LOW_UTIL_VIOLATION", "throttle_low_util_seconds_total", 1e9, "untyped", "Throttling duration due to low utilization (in ns)."),
    DcgmField("DCGM_FI_DEV_RELIABILITY_VIOLATION", "throttle_reliability_seconds_total", 1e9, "untyped", "Throttling duration due to reliability constraints (in ns)."),
    DcgmField("DCGM_FI_DEV_PCIE_LINK_GEN", "pcie_link_gen", 1.0, "gauge", "PCIe current link generation."),
    DcgmField("DCGM_FI_DEV_PCIE_LINK_WIDTH", "pcie_link_width", 1.0, "gauge", "PCIe current link width."),
    DcgmField("DCGM_FI_PROF_PCIE_TX_BYTES", "gpm_pcie_tx_bytes_per_second", 1.0, "gauge", "The rate of data transmitted over the PCIe bus - including both protocol headers and data payloads - in bytes per second."),
    DcgmField("DCGM_FI_PROF_PCIE_TX_BYTES", "pcie_tx_bytes_per_second", 1.0, "gauge", "The rate of data transmitted over the PCIe bus - including both protocol headers and data payloads - in bytes per second."),
    DcgmField("DCGM_FI_PROF_PCIE_RX_BYTES", "gpm_pcie_rx_bytes_per_second", 1.0, "gauge", "The rate of data received over the PCIe bus - including both protocol headers and data payloads - in bytes per second."),
    DcgmField("DCGM_FI_PROF_PCIE_RX_BYTES", "pcie_rx_bytes_per_second", 1.0, "gauge", "The rate of data received over the PCIe bus - including both protocol headers and data payloads - in bytes per second."),
    DcgmField("DCGM_FI_PROF_NVLINK_TX_BYTES", "gpm_nvlink_tx_bytes_per_second", 1.0, "gauge", "The rate of data transmitted over NVLink, not including protocol headers, in bytes per second."),
    DcgmField("DCGM_FI_PROF_NVLINK_TX_BYTES", "nvlink_tx_bytes_per_second", 1.0, "gauge", "The rate of data transmitted over NVLink, not including protocol headers, in bytes per second."),
    DcgmField("DCGM_FI_PROF_NVLINK_RX_BYTES", "gpm_nvlink_rx_bytes_per_second", 1.0, "gauge", "The rate of data received over NVLink, not including protocol headers, in bytes per second."),
    DcgmField("DCGM_FI_PROF_NVLINK_RX_BYTES", "nvlink_rx_bytes_per_second", 1.0, "gauge", "The rate of data received over NVLink, not including protocol headers, in bytes per second."),
    DcgmField("DCGM_FI_PROF_SM_ACTIVE", "gpm_sm_activity_ratio", 1.0, "gauge", "The ratio of cycles an SM has at least 1 warp assigned."),
    DcgmField("DCGM_FI_PROF_SM_OCCUPANCY", "gpm_sm_occupancy_ratio", 1.0, "gauge", "The ratio of number of warps resident on an SM."),
    DcgmField("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "gpm_tensor_activity_ratio", 1.0, "gauge", "Ratio of cycles the tensor (HMMA) pipe is active."),
    DcgmField("DCGM_FI_PROF_DRAM_ACTIVE", "gpm_dram_bandwidth_ratio", 1.0, "gauge", "Ratio of cycles the device memory interface is active sending or receiving data."),
)
# fmt: on

DCGM_NAMES: tuple[str, ...] = tuple(dict.fromkeys(f.name for f in FIELDS))


class DcgmCollector(Collector):
    """dcgm-exporter's names over the same latest samples as ``TelemetryCollector``."""

    def __init__(
        self,
        latest: LatestFn,
        hostname: str,
        *,
        gpus: GpusArg = None,
        hostname_label: str = "Hostname",
    ) -> None:
        self._latest = latest
        self._hostname = hostname
        self._gpus = gpus
        self._host_label = hostname_label
        self._label_cache: dict[str, dict[str, str]] = {}
        self._prefix: dict[tuple[str, str], str] = {}
        self._seen_gpus: Mapping[str, GpuIdentity] | None = None
        self._by_metric: dict[str, list[tuple[int, DcgmField]]] = {}
        for rank, f in enumerate(FIELDS):
            self._by_metric.setdefault(f.source_metric, []).append((rank, f))

    def describe(self) -> Iterable[Metric]:
        return []

    def _labels(self, gpu: str, ident: GpuIdentity) -> dict[str, str]:
        labels = {
            "gpu": gpu,
            "UUID": ident.uuid,
            "device": f"nvidia{gpu}",
            "modelName": ident.model,
        }
        if ident.pci_bus_id:
            labels["pci_bus_id"] = ident.pci_bus_id
        labels[self._host_label] = self._hostname
        return labels

    def collect(self) -> Iterable[Metric]:
        g = self._gpus
        gpus: Mapping[str, GpuIdentity] = (g() if callable(g) else g) if g is not None else {}
        if gpus != self._seen_gpus:  # identities changed: cached label blocks are stale
            self._label_cache.clear()
            self._prefix.clear()
            self._seen_gpus = dict(gpus)
        snap = self._latest()
        down = {
            d
            for (src, d, m), s in snap.items()
            if src == "nvml" and m == "up" and s.value is not None and s.value < 1
        }
        # (dcgm name, gpu) -> value, first mapping in FIELDS order wins
        chosen: dict[tuple[str, str], tuple[int, float]] = {}
        for (src, device, metric), s in snap.items():
            if src != "nvml" or s.value is None or "/" in device or device in down:
                continue
            for rank, f in self._by_metric.get(metric, ()):
                key = (f.name, device)
                if key not in chosen or rank < chosen[key][0]:
                    chosen[key] = (rank, float(s.value) * f.scale)
        fams: dict[str, Family] = {}
        for (name, gpu), (rank, value) in sorted(
            chosen.items(), key=lambda kv: (kv[1][0], _gpu_key(kv[0][1]))
        ):
            fam = fams.get(name)
            if fam is None:
                f = FIELDS[rank]
                fam = fams[name] = Family(name, f.help, f.type)
            labels = self._label_cache.get(gpu)
            if labels is None:
                labels = self._label_cache[gpu] = self._labels(gpu, gpus.get(gpu) or GpuIdentity())
            prefix = self._prefix.get((name, gpu))
            if prefix is None:
                prefix = self._prefix[(name, gpu)] = series_prefix(name, labels)
            fam.add(name, labels, value, prefix)
        return [fam.metric() for fam in fams.values()]


def _gpu_key(gpu: str) -> tuple[int, str]:
    return (int(gpu), "") if gpu.isdigit() else (1 << 30, gpu)
