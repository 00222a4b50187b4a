"""Canonical sample metric names (the ``metric`` column of samples.parquet).

Names carry their unit. The exporter maps each to a Prometheus name ``infprof_<prefix>_<name>``
(``gpu_``, ``host_``, ``server_``). Counters end in ``_total`` and are cumulative; rates derived
from counters end in ``_per_second``. Extend this table when a sampler learns a new field; the
exporter and the dashboards read it.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

Kind = Literal["gauge", "counter"]


class Field(NamedTuple):
    name: str
    kind: Kind
    help: str


def _g(name: str, help: str) -> Field:
    return Field(name, "gauge", help)


def _c(name: str, help: str) -> Field:
    return Field(name, "counter", help)


# source "nvml": device = GPU index as a string ("0", "1", ...); NVLink per-link fields use
# device "<gpu>/<link>" only when per-link detail is recorded; the totals use the GPU index.
GPU_FIELDS: tuple[Field, ...] = (
    _g(
        "utilization_ratio",
        "GPU busy fraction over NVML's last sample period (nvmlDeviceGetUtilizationRates.gpu / 100)",
    ),
    _g(
        "memory_utilization_ratio",
        "memory-controller busy fraction (nvmlDeviceGetUtilizationRates.memory / 100)",
    ),
    _g("memory_used_bytes", "framebuffer memory used (nvmlDeviceGetMemoryInfo)"),
    _g("memory_free_bytes", "framebuffer memory free"),
    _g("memory_total_bytes", "framebuffer memory total"),
    _g("memory_reserved_bytes", "framebuffer memory reserved by the driver (v2 memory info)"),
    _g("power_watts", "average power over the last second (nvmlDeviceGetPowerUsage)"),
    _g("power_instant_watts", "instantaneous power (field NVML_FI_DEV_POWER_INSTANT)"),
    _g("power_limit_watts", "enforced power limit (nvmlDeviceGetEnforcedPowerLimit)"),
    _c("energy_joules_total", "energy since driver load (nvmlDeviceGetTotalEnergyConsumption)"),
    _g("temperature_celsius", "GPU die temperature"),
    _g("memory_temperature_celsius", "HBM temperature (field NVML_FI_DEV_MEMORY_TEMP)"),
    _g("sm_clock_hertz", "SM clock"),
    _g("memory_clock_hertz", "memory clock"),
    _g("clock_event_reasons", "bitmask of active clock-event (throttle) reasons"),
    _c("throttle_power_seconds_total", "time clocks were held by the power cap"),
    _c("throttle_thermal_seconds_total", "time clocks were held by thermal slowdown"),
    _c("throttle_sync_boost_seconds_total", "time clocks were held by sync boost"),
    _c("throttle_board_limit_seconds_total", "time clocks were held by the board limit"),
    _c("throttle_low_util_seconds_total", "time clocks were held for low utilization"),
    _c("throttle_reliability_seconds_total", "time clocks were held for reliability"),
    _c(
        "throttle_sw_thermal_seconds_total",
        "time clocks were held by software thermal slowdown (field 269)",
    ),
    _c(
        "throttle_hw_thermal_seconds_total",
        "time clocks were held by hardware thermal slowdown (field 270)",
    ),
    _c(
        "throttle_hw_power_brake_seconds_total",
        "time clocks were held by the external power brake (field 271)",
    ),
    _g("clock_event_gpu_idle", "1 while the clock-event reason GpuIdle is active, else 0"),
    _g(
        "clock_event_applications_clocks",
        "1 while clocks are held by the applications-clocks setting",
    ),
    _g("clock_event_sw_power_cap", "1 while clocks are held by the software power cap"),
    _g("clock_event_hw_slowdown", "1 while hardware slowdown is active"),
    _g("clock_event_sync_boost", "1 while clocks are held by sync boost"),
    _g("clock_event_sw_thermal", "1 while software thermal slowdown is active"),
    _g("clock_event_hw_thermal", "1 while hardware thermal slowdown is active"),
    _g("clock_event_hw_power_brake", "1 while the hardware power brake is active"),
    _g("clock_event_display_clock", "1 while clocks are held by the display clock setting"),
    _g("pcie_link_gen", "current PCIe link generation"),
    _g("pcie_link_width", "current PCIe link width (lanes)"),
    _g(
        "pcie_tx_bytes_per_second",
        "PCIe transmit rate: from the byte counter when NVML has it, else nvmlDeviceGetPcieThroughput's 20 ms spot sample (KB/s x 1024)",
    ),
    _g("pcie_rx_bytes_per_second", "PCIe receive rate (as the transmit rate)"),
    _c(
        "pcie_tx_bytes_total",
        "PCIe bytes transmitted since sampling began (field NVML_FI_DEV_PCIE_COUNT_TX_BYTES)",
    ),
    _c(
        "pcie_rx_bytes_total",
        "PCIe bytes received since sampling began (field NVML_FI_DEV_PCIE_COUNT_RX_BYTES)",
    ),
    _g("nvlink_links", "NVLink links present (field NVML_FI_DEV_NVLINK_LINK_COUNT)"),
    _g("nvlink_links_active", "NVLink links in state active"),
    _c(
        "nvlink_tx_bytes_total",
        "NVLink bytes transmitted, all links (counters since sampling began)",
    ),
    _c("nvlink_rx_bytes_total", "NVLink bytes received, all links"),
    _g("nvlink_tx_bytes_per_second", "NVLink transmit rate, all links"),
    _g("nvlink_rx_bytes_per_second", "NVLink receive rate, all links"),
    _g("gpm_sm_activity_ratio", "GPM SM activity (Hopper+)"),
    _g("gpm_sm_occupancy_ratio", "GPM SM occupancy (Hopper+)"),
    _g("gpm_tensor_activity_ratio", "GPM tensor-core activity (Hopper+)"),
    _g("gpm_dram_bandwidth_ratio", "GPM DRAM bandwidth utilization (Hopper+)"),
    _g("gpm_nvlink_tx_bytes_per_second", "GPM NVLink transmit rate (Hopper+)"),
    _g("gpm_nvlink_rx_bytes_per_second", "GPM NVLink receive rate (Hopper+)"),
    _g("gpm_pcie_tx_bytes_per_second", "GPM PCIe transmit rate (Hopper+)"),
    _g("gpm_pcie_rx_bytes_per_second", "GPM PCIe receive rate (Hopper+)"),
    _g(
        "process_memory_used_bytes",
        "GPU memory used by the server's process tree (absent when NVML lists none of its PIDs)",
    ),
    _g("compute_processes", "compute processes NVML lists on the GPU (any owner)"),
    _g("server_compute_processes", "of those, the processes of the server's tree"),
    _g("up", "1 when the GPU answered this tick, 0 when it was lost or failed"),
)

# source "host": device "" for host totals, "cpu<N>" per core, the interface name for network,
# "server" / "client" for process trees.
HOST_FIELDS: tuple[Field, ...] = (
    _g(
        "cpu_utilization_ratio",
        "CPU busy fraction (per core with device cpu<N>, host total with device '')",
    ),
    _g("memory_used_bytes", "host memory used"),
    _g("memory_total_bytes", "host memory total"),
    _c("network_tx_bytes_total", "bytes sent on the interface"),
    _c("network_rx_bytes_total", "bytes received on the interface"),
    _g("network_tx_bytes_per_second", "send rate on the interface"),
    _g("network_rx_bytes_per_second", "receive rate on the interface"),
    _g("process_cpu_ratio", "CPU of a process tree in cores (device server or client)"),
    _g("process_rss_bytes", "resident memory of a process tree (device server or client)"),
    _g("process_count", "processes in the tree (device server or client)"),
)

# source "vllm": device "" (or the engine index), values straight from the server's /metrics.
SERVER_FIELDS: tuple[Field, ...] = (
    _g("num_requests_running", "requests in the running batch (vllm:num_requests_running)"),
    _g("num_requests_waiting", "requests queued (vllm:num_requests_waiting)"),
    _g(
        "kv_cache_usage_ratio",
        "KV-cache blocks in use, 0-1 (vllm:kv_cache_usage_perc; V0 gpu_cache_usage_perc)",
    ),
    _c("num_preemptions_total", "preemptions (vllm:num_preemptions_total)"),
    _c("prompt_tokens_total", "prefill tokens processed (vllm:prompt_tokens_total)"),
    _c("generation_tokens_total", "tokens generated (vllm:generation_tokens_total)"),
    _c(
        "prefix_cache_queries_total",
        "prefix-cache queried tokens (vllm:prefix_cache_queries_total)",
    ),
    _c("prefix_cache_hits_total", "prefix-cache hit tokens (vllm:prefix_cache_hits_total)"),
    _c("request_success_total", "finished requests (vllm:request_success_total)"),
    _g("ttft_seconds_mean", "server-side mean TTFT over the run so far (histogram sum/count)"),
    _g("itl_seconds_mean", "server-side mean inter-token latency so far"),
    _g("e2e_seconds_mean", "server-side mean request latency so far"),
    _g("queue_seconds_mean", "server-side mean queue time so far"),
    _g("up", "1 when /metrics answered this tick, 0 when the scrape failed (error says why)"),
)

BY_SOURCE: dict[str, tuple[Field, ...]] = {
    "nvml": GPU_FIELDS,
    "host": HOST_FIELDS,
    "vllm": SERVER_FIELDS,
}
