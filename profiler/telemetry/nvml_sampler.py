"""Per-GPU samples from NVML, one pass per device per tick (source ``nvml``, device = index).

Every query goes through ``profiler.telemetry.nvml`` (the chokepoint; this module does not
import pynvml). Per tick and GPU: utilization, memory (v2 with reserved, else v1), power
(average and instant), power limit, energy counter, temperatures, SM/memory clocks,
clock-event reasons (bitmask, named flags, cumulative times), PCIe link and throughput, NVLink
per-link data counters (totals since sampling began and rates), GPM metrics on Hopper+, and
every ``process_interval_s`` the compute processes NVML lists and the GPU memory of the
server's process tree (``profiler.telemetry.nvml_processes``, which says when that memory is
known). The batchable fields are read in one ``nvmlDeviceGetFieldValues`` call.

NVML's own update rates bound what a tick can see: utilization covers the last 1/6-1 s, power
is a 1-s average on Ampere+, the energy counter moves every 20-100 ms and GPM needs two
samples at least 100 ms apart. Intervals below ~0.1 s therefore add cost, not information.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from profiler.telemetry import nvml
from profiler.telemetry.counters import CounterRate
from profiler.telemetry.nvml_processes import SOURCE, ServerProcesses
from profiler.telemetry.sample import Sample

log = logging.getLogger(__name__)

KIB = 1024

# field ids (nvml.h): value -> metric, scale to base units
FI_MEMORY_TEMP = 82
FI_TOTAL_ENERGY = 83  # mJ
FI_NVLINK_LINK_COUNT = 91
FI_NVLINK_DATA_TX = 138  # KiB, cumulative, scopeId = link
FI_NVLINK_DATA_RX = 139
FI_POWER_INSTANT = 186  # mW
FI_PCIE_COUNT_TX = 197  # bytes, cumulative (may wrap)
FI_PCIE_COUNT_RX = 198
THROTTLE_FIELDS: dict[int, str] = {  # cumulative nanoseconds
    74: "throttle_power_seconds_total",
    75: "throttle_thermal_seconds_total",
    76: "throttle_sync_boost_seconds_total",
    77: "throttle_board_limit_seconds_total",
    78: "throttle_low_util_seconds_total",
    79: "throttle_reliability_seconds_total",
    269: "throttle_sw_thermal_seconds_total",
    270: "throttle_hw_thermal_seconds_total",
    271: "throttle_hw_power_brake_seconds_total",
}
CLOCK_EVENT_FLAGS: dict[int, str] = {
    0x1: "clock_event_gpu_idle",
    0x2: "clock_event_applications_clocks",
    0x4: "clock_event_sw_power_cap",
    0x8: "clock_event_hw_slowdown",
    0x10: "clock_event_sync_boost",
    0x20: "clock_event_sw_thermal",
    0x40: "clock_event_hw_thermal",
    0x80: "clock_event_hw_power_brake",
    0x100: "clock_event_display_clock",
}
# GPM metric id -> (metric, scale): percentages -> ratio, MiB/s -> bytes/s
GPM_METRICS: dict[int, tuple[str, float]] = {
    2: ("gpm_sm_activity_ratio", 0.01),
    3: ("gpm_sm_occupancy_ratio", 0.01),
    5: ("gpm_tensor_activity_ratio", 0.01),
    10: ("gpm_dram_bandwidth_ratio", 0.01),
    61: ("gpm_nvlink_tx_bytes_per_second", float(nvml.MIB)),
    60: ("gpm_nvlink_rx_bytes_per_second", float(nvml.MIB)),
    20: ("gpm_pcie_tx_bytes_per_second", float(nvml.MIB)),
    21: ("gpm_pcie_rx_bytes_per_second", float(nvml.MIB)),
}
GPM_MIN_SPACING_S = 0.1
LINK_REFRESH_S = 10.0

Values = list[tuple[str, str, float]]  # (device, metric, value)


class _Gpm:
    """Two GPM buffers swapped each tick; metrics between the previous and the current."""

    def __init__(self, dev: nvml.NvmlDevice) -> None:
        self.dev = dev
        self.prev: Any = None
        self.prev_t = 0.0
        self.cur: Any = dev.gpm_alloc()
        self.spare: Any = dev.gpm_alloc()

    def read(self, t_s: float) -> dict[int, float]:
        if self.cur is None or not self.dev.gpm_get(self.cur):
            return {}
        if self.prev is None:
            self.prev, self.prev_t, self.cur, self.spare = self.cur, t_s, self.spare, None
            return {}
        if t_s - self.prev_t < GPM_MIN_SPACING_S:  # too close: keep prev, overwrite cur next tick
            return {}
        out = self.dev.gpm_metrics(self.prev, self.cur, list(GPM_METRICS))
        self.prev, self.cur, self.prev_t = self.cur, self.prev, t_s
        return out

    def close(self) -> None:
        for s in (self.prev, self.cur, self.spare):
            self.dev.gpm_free(s)
        self.prev = self.cur = self.spare = None


class _GpuState:
    def __init__(self, dev: nvml.NvmlDevice) -> None:
        self.dev = dev
        self.name = str(dev.index)
        self.mig = False
        self.links: list[int] = []  # link indices present
        self.active_links: list[int] = []
        self.links_checked_t: float | None = None
        self.counters: dict[tuple[str, int], CounterRate] = {}
        self.gpm: _Gpm | None = None
        self.spot_t: float | None = None
        self.probed = False

    def counter(self, kind: str, scope: int = 0) -> CounterRate:
        c = self.counters.get((kind, scope))
        if c is None:
            c = self.counters[(kind, scope)] = CounterRate()
        return c


class NvmlSampler:
    """The ``Sampler`` for NVML. ``state`` says whether NVML is available (and why not)."""

    source = SOURCE

    def __init__(
        self,
        indices: Sequence[int] | None = None,
        interval_s: float = 0.5,
        process_pids: Callable[[], set[int]] | None = None,
        *,
        process_interval_s: float = 2.0,
        pcie_spot_interval_s: float = 1.0,
        gpm: bool = True,
        nvlink_per_link: bool = False,
    ) -> None:
        self.interval_s = interval_s  # a hint: GPM pairs and docs; the recorder sets the pace
        self._procs = ServerProcesses(process_pids, process_interval_s)
        self._pcie_spot_interval_s = pcie_spot_interval_s
        self._gpm = gpm
        self._per_link = nvlink_per_link
        devices, unavailable = nvml.open_devices(indices)
        self._unavailable = unavailable
        self._gpus = [_GpuState(d) for d in devices]
        self._open = unavailable is None

    @property
    def available(self) -> bool:
        return self._unavailable is None

    @property
    def state(self) -> dict[str, Any]:
        if self._unavailable is not None:
            return self._unavailable.as_dict()
        return {"available": True, "reason": None, "devices": [g.name for g in self._gpus]}

    def capabilities(self) -> dict[str, dict[str, bool]]:
        """Per GPU: capability -> supported, as learned so far (for the manifest)."""
        return {g.name: dict(g.dev.caps) for g in self._gpus}

    def sample(self, t_s: float) -> list[Sample]:
        out: list[Sample] = []
        healthy: list[_GpuState] = []
        for g in self._gpus:
            try:
                if not g.probed:
                    self._probe(g, t_s)
                values = self._read(g, t_s)
            except nvml.DeviceFault as e:
                out.append(Sample(t_s, SOURCE, g.name, "up", 0.0, f"GPU {g.name}: {e}"))
                continue
            except Exception as e:  # a binding surprise: this GPU, this tick, never the run
                log.warning("GPU %s: sampling failed: %s: %s", g.name, type(e).__name__, e)
                out.append(
                    Sample(t_s, SOURCE, g.name, "up", 0.0, f"internal: {type(e).__name__}: {e}")
                )
                continue
            out.extend(Sample(t_s, SOURCE, d, m, v) for d, m, v in values)
            out.append(Sample(t_s, SOURCE, g.name, "up", 1.0))
            healthy.append(g)
        out.extend(self._procs.read([g.dev for g in healthy], t_s))
        return out

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        for g in self._gpus:
            if g.gpm is not None:
                g.gpm.close()
        nvml.nvml_shutdown()

    # --- one GPU ----------------------------------------------------------------------

    def _probe(self, g: _GpuState, t_s: float) -> None:
        """Once per GPU: MIG mode, NVLink links, GPM support."""
        dev = g.dev
        mig = dev.call("mig_mode", "nvmlDeviceGetMigMode")
        g.mig = bool(mig and int(mig[0]) == 1)
        count = dev.fields([(FI_NVLINK_LINK_COUNT, 0)]).get((FI_NVLINK_LINK_COUNT, 0))
        if count is not None:
            g.links = list(range(int(count[0])))
        else:  # no link-count field: walk link indices until one is refused
            max_links = int(nvml.const("NVML_NVLINK_MAX_LINKS", 18))
            for link in range(max_links):
                if dev.call(None, "nvmlDeviceGetNvLinkState", link) is None:
                    break
                g.links.append(link)
        self._refresh_links(g, t_s)
        if self._gpm and not g.mig:  # MIG needs per-instance GPM samples: not collected
            support = dev.call("gpm", "nvmlGpmQueryDeviceSupport")
            if support is not None and int(getattr(support, "isSupportedDevice", 0)):
                g.gpm = _Gpm(dev)
            else:
                dev.caps["gpm"] = False
        g.probed = True

    def _refresh_links(self, g: _GpuState, t_s: float) -> None:
        active = []
        for link in g.links:
            if g.dev.call(None, "nvmlDeviceGetNvLinkState", link) == 1:
                active.append(link)
        g.active_links = active
        g.links_checked_t = t_s

    def _read(self, g: _GpuState, t_s: float) -> Values:
        dev, name = g.dev, g.name
        v: Values = []

        def put(metric: str, x: Any, scale: float = 1.0, device: str = name) -> None:
            if x is not None:
                v.append((device, metric, float(x) * scale))

        u = dev.call("utilization", "nvmlDeviceGetUtilizationRates")
        if u is not None:
            put("utilization_ratio", u.gpu, 0.01)
            put("memory_utilization_ratio", u.memory, 0.01)
        mem = dev.call("memory_v2", "nvmlDeviceGetMemoryInfo", nvml.const("nvmlMemory_v2"))
        if mem is None:
            mem = dev.call("memory", "nvmlDeviceGetMemoryInfo")
        if mem is not None:
            put("memory_used_bytes", mem.used)
            put("memory_free_bytes", mem.free)
            put("memory_total_bytes", mem.total)
            put("memory_reserved_bytes", getattr(mem, "reserved", None))
        put("power_watts", dev.call("power", "nvmlDeviceGetPowerUsage"), 1e-3)
        put("power_limit_watts", dev.call("power_limit", "nvmlDeviceGetEnforcedPowerLimit"), 1e-3)
        sensor = nvml.const("NVML_TEMPERATURE_GPU", 0)
        temp = dev.call("temperature_v", "nvmlDeviceGetTemperatureV", sensor)
        if temp is None and dev.caps.get("temperature_v") is False:
            temp = dev.call("temperature", "nvmlDeviceGetTemperature", sensor)
        put("temperature_celsius", temp)
        put(
            "sm_clock_hertz",
            dev.call("clock_sm", "nvmlDeviceGetClockInfo", nvml.const("NVML_CLOCK_SM", 1)),
            1e6,
        )
        put(
            "memory_clock_hertz",
            dev.call("clock_mem", "nvmlDeviceGetClockInfo", nvml.const("NVML_CLOCK_MEM", 2)),
            1e6,
        )
        reasons = dev.call("clock_events", "nvmlDeviceGetCurrentClocksEventReasons")
        if reasons is None and dev.caps.get("clock_events") is False:
            reasons = dev.call("throttle_reasons", "nvmlDeviceGetCurrentClocksThrottleReasons")
        if reasons is not None:
            mask = int(reasons)
            put("clock_event_reasons", mask)
            for bit, metric in CLOCK_EVENT_FLAGS.items():
                put(metric, 1.0 if mask & bit else 0.0)
        put("pcie_link_gen", dev.call("pcie_gen", "nvmlDeviceGetCurrPcieLinkGeneration"))
        put("pcie_link_width", dev.call("pcie_width", "nvmlDeviceGetCurrPcieLinkWidth"))
        self._read_fields(g, t_s, put, v)
        if g.gpm is not None:
            for mid, value in g.gpm.read(t_s).items():
                metric, scale = GPM_METRICS[mid]
                put(metric, value, scale)
        return v

    def _read_fields(self, g: _GpuState, t_s: float, put: Callable[..., None], v: Values) -> None:
        dev = g.dev
        if g.links_checked_t is None or t_s - g.links_checked_t >= LINK_REFRESH_S:
            self._refresh_links(g, t_s)
        ids = [(FI_MEMORY_TEMP, 0), (FI_TOTAL_ENERGY, 0), (FI_POWER_INSTANT, 0)]
        ids += [(fid, 0) for fid in THROTTLE_FIELDS]
        ids += [(FI_PCIE_COUNT_TX, 0), (FI_PCIE_COUNT_RX, 0)]
        for link in g.active_links:
            ids += [(FI_NVLINK_DATA_TX, link), (FI_NVLINK_DATA_RX, link)]
        f = dev.fields(ids)

        def val(fid: int, scope: int = 0) -> float | None:
            x = f.get((fid, scope))
            return None if x is None else x.value

        put("memory_temperature_celsius", val(FI_MEMORY_TEMP))
        energy_mj = val(FI_TOTAL_ENERGY)
        if energy_mj is None and dev.field_caps.get((FI_TOTAL_ENERGY, 0)) is False:
            energy_mj = dev.call("energy", "nvmlDeviceGetTotalEnergyConsumption")
        put("energy_joules_total", energy_mj, 1e-3)
        put("power_instant_watts", val(FI_POWER_INSTANT), 1e-3)
        for fid, metric in THROTTLE_FIELDS.items():
            put(metric, val(fid), 1e-9)
        self._read_pcie(g, t_s, f, put)
        if g.links:
            put("nvlink_links", len(g.links))
            put("nvlink_links_active", len(g.active_links))
        for direction, fid in (("tx", FI_NVLINK_DATA_TX), ("rx", FI_NVLINK_DATA_RX)):
            kind = f"nvlink_{direction}"
            rates: list[float] = []
            for link in g.active_links:
                raw = f.get((fid, link))
                if raw is None:
                    continue
                total, rate = g.counter(kind, link).update(
                    raw.value * KIB, _field_time(raw.timestamp_us, t_s)
                )
                if rate is not None:
                    rates.append(rate)
                if self._per_link:
                    put(f"{kind}_bytes_total", total, device=f"{g.name}/{link}")
                    put(f"{kind}_bytes_per_second", rate, device=f"{g.name}/{link}")
            # totals include links that have since gone down, so they never move backwards
            totals = [c.total for (k, _), c in g.counters.items() if k == kind]
            if totals:
                put(f"{kind}_bytes_total", sum(totals))
            if rates:
                put(f"{kind}_bytes_per_second", sum(rates))

    def _read_pcie(
        self, g: _GpuState, t_s: float, f: dict[Any, nvml.FieldValue], put: Callable[..., None]
    ) -> None:
        """PCIe bytes: from the byte counters (fields 197/198) when NVML has them as 64-bit
        values, rates from their deltas; else nvmlDeviceGetPcieThroughput's 20 ms spot sample
        (a call that itself takes ~20 ms, so at most every ``pcie_spot_interval_s``)."""
        from_counter = set()
        for fid, kind in ((FI_PCIE_COUNT_TX, "pcie_tx"), (FI_PCIE_COUNT_RX, "pcie_rx")):
            raw = f.get((fid, 0))
            if raw is None:
                continue
            if raw.value_type not in nvml.WIDE_TYPES:  # a 32-bit byte count wraps within a tick
                g.dev.field_caps[(fid, 0)] = False
                continue
            total, rate = g.counter(kind).update(raw.value, _field_time(raw.timestamp_us, t_s))
            put(f"{kind}_bytes_total", total)
            put(f"{kind}_bytes_per_second", rate)
            from_counter.add(kind)
        if len(from_counter) == 2:
            return
        if g.spot_t is not None and t_s - g.spot_t < self._pcie_spot_interval_s:
            return
        g.spot_t = t_s
        for kind, const in (
            ("pcie_tx", "NVML_PCIE_UTIL_TX_BYTES"),
            ("pcie_rx", "NVML_PCIE_UTIL_RX_BYTES"),
        ):
            if kind not in from_counter:
                value = g.dev.call(
                    kind,
                    "nvmlDeviceGetPcieThroughput",
                    nvml.const(const, 0 if kind == "pcie_tx" else 1),
                )
                put(f"{kind}_bytes_per_second", value, KIB)


def _field_time(timestamp_us: int, t_s: float) -> float:
    """A field value's own timestamp in seconds when NVML gave one, else the tick time.
    Rates use one or the other for a counter consistently (NVML fills it or never does)."""
    return timestamp_us * 1e-6 if timestamp_us > 0 else t_s
