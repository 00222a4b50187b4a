"""A fake NVML for tests: pynvml patched with ``unittest.mock.create_autospec`` (so every call
is checked against the real binding's signature) whose functions answer from ``FakeGpu``s.

    with install_fake_nvml([h100(0), h100(1)]) as fake:
        sampler = NvmlSampler()
        fake.advance(1.0)          # counters move by their rates, timestamps by 1 s
        fake.gpus[1].lost = True   # every later call on GPU 1 raises GpuIsLost

Builders: ``h100`` (NVLink, GPM, every field), ``pcie_gpu`` (no NVLink, no GPM),
``no_power_gpu`` (power and energy NotSupported), ``mig_gpu`` (MIG mode on: utilization and
GPM NotSupported). ``install_fake_nvml([], init_error=NVML_ERROR_LIBRARY_NOT_FOUND)`` makes
``nvmlInit`` fail. Only ``profiler.telemetry.nvml.pynvml`` is patched: the real module stays.
"""

from __future__ import annotations

import ctypes
import inspect
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pynvml

GPM_IDS = {
    "sm": 2,
    "occ": 3,
    "tensor": 5,
    "dram": 10,
    "pcie_tx": 20,
    "pcie_rx": 21,
    "nvl_rx": 60,
    "nvl_tx": 61,
}


@dataclass
class FakeLink:
    active: bool = True
    remote_bus_id: str = ""
    remote_type: int = 0  # NVML_NVLINK_DEVICE_TYPE_GPU; 2 = switch
    tx_kib: float = 0.0  # cumulative counters (KiB)
    rx_kib: float = 0.0
    tx_kib_per_s: float = 0.0  # how fast they move on advance()
    rx_kib_per_s: float = 0.0


@dataclass
class FakeGpu:
    index: int
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = ""
    bus_id: str = ""
    arch: int = 9  # Hopper
    cc: tuple[int, int] = (9, 0)
    memory_total: int = 80 * 2**30
    memory_used: int = 10 * 2**30
    memory_reserved: int = 512 * 2**20
    util_gpu: int = 50  # percent
    util_mem: int = 20
    power_mw: int = 300_000
    power_instant_mw: int = 310_000
    power_limit_mw: int = 700_000
    energy_mj: float = 1_000_000.0
    temp_c: int = 45
    mem_temp_c: int = 50
    sm_mhz: int = 1980
    mem_mhz: int = 2619
    clock_events: int = 0x4  # SwPowerCap
    throttle_ns: dict[int, float] = field(
        default_factory=lambda: {
            74: 5e9,
            75: 0.0,
            76: 0.0,
            77: 0.0,
            78: 1e9,
            79: 0.0,
            269: 0.0,
            270: 0.0,
            271: 0.0,
        }
    )
    pcie_gen: int = 5
    pcie_width: int = 16
    pcie_tx_kbps: int = 1000  # KB/s spot rate
    pcie_rx_kbps: int = 2000
    pcie_tx_bytes: float = 0.0  # cumulative counters (fields 197/198)
    pcie_rx_bytes: float = 0.0
    pcie_tx_bytes_per_s: float = 0.0
    pcie_rx_bytes_per_s: float = 0.0
    links: list[FakeLink] = field(default_factory=list)
    link_count_field: bool = True  # field 91 supported
    gpm: dict[int, float] | None = None  # metric id -> value; None = GPM unsupported
    mig: bool = False
    processes: list[tuple[int, int]] = field(default_factory=list)  # (pid, used bytes)
    mig_uuids: list[str] = field(default_factory=list)  # MIG instances (MIG-<uuid>) on this GPU
    power_per_s_mw: float | None = None  # energy grows at this power on advance (default power_mw)
    unsupported: set[str] = field(default_factory=set)  # pynvml function names -> NotSupported
    unsupported_fields: set[int] = field(default_factory=set)
    refuse_batch_fields: set[int] = field(default_factory=set)  # whole call -> InvalidArgument
    pcie_counter_bits: int = 64  # 32: fields 197/198 come as uint32 (would wrap)
    lost: bool = False
    calls: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.uuid = self.uuid or f"GPU-{self.index:08d}-fake-0000-0000-000000000000"
        self.bus_id = self.bus_id or f"00000000:{0x18 + self.index:02X}:00.0"


def h100(index: int, peers: list[int] | None = None, links_per_peer: int = 6, **kw: Any) -> FakeGpu:
    """H100 SXM-like: NVLink to ``peers`` (GPU indices), GPM, every field supported."""
    gpm = {
        GPM_IDS["sm"]: 60.0,
        GPM_IDS["occ"]: 30.0,
        GPM_IDS["tensor"]: 40.0,
        GPM_IDS["dram"]: 55.0,
        GPM_IDS["pcie_tx"]: 1.0,
        GPM_IDS["pcie_rx"]: 2.0,
        GPM_IDS["nvl_tx"]: 100.0,
        GPM_IDS["nvl_rx"]: 50.0,
    }
    g = FakeGpu(index, gpm=gpm, **kw)
    for p in peers or []:
        for _ in range(links_per_peer):
            g.links.append(FakeLink(remote_bus_id=f"00000000:{0x18 + p:02X}:00.0"))
    return g


def pcie_gpu(index: int, **kw: Any) -> FakeGpu:
    """A PCIe card without NVLink or GPM (L4-like, Ada)."""
    kw.setdefault("name", "NVIDIA L4")
    kw.setdefault("arch", 8)
    kw.setdefault("cc", (8, 9))
    kw.setdefault("memory_total", 24 * 2**30)
    g = FakeGpu(index, link_count_field=False, **kw)
    g.unsupported |= {"nvmlDeviceGetNvLinkState", "nvmlGpmQueryDeviceSupport"}
    g.unsupported_fields |= {91, 138, 139, 197, 198}
    return g


def no_power_gpu(index: int, **kw: Any) -> FakeGpu:
    """Power, power limit and energy all NotSupported (field and function)."""
    g = pcie_gpu(index, name="NVIDIA Old Card", arch=4, **kw)
    g.unsupported |= {
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetEnforcedPowerLimit",
        "nvmlDeviceGetTotalEnergyConsumption",
    }
    g.unsupported_fields |= {83, 185, 186}
    return g


def mig_gpu(index: int, **kw: Any) -> FakeGpu:
    """An H100 with MIG mode enabled: device-level utilization and GPM are NotSupported."""
    g = h100(index, mig=True, **kw)
    g.unsupported |= {"nvmlDeviceGetUtilizationRates", "nvmlGpmSampleGet"}
    return g


def busy_idle_node(busy: tuple[int, ...], count: int = 8) -> list[FakeGpu]:
    """``count`` H100s in an NVLink ring (one link to the next GPU); those in ``busy`` run a
    server (90 % busy, 400 W, 1e6 KiB/s NVLink tx), the others idle with distinctly different
    readings (7 %, 61 W, and five times the NVLink traffic), so an idle GPU leaking into a
    server figure shows. No processes: the caller places them."""
    gpus = []
    for i in range(count):
        on = i in busy
        g = h100(i, peers=[(i + 1) % count], links_per_peer=1)
        g.util_gpu = 90 if on else 7
        g.power_mw = 400_000 if on else 61_000
        g.links[0].tx_kib_per_s = 1e6 if on else 5e6  # idle GPUs move *more*: pooling shows
        gpus.append(g)
    return gpus


def _err(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


class FakeNvml:
    """Holds the fake GPUs, the fake clock and the patched module."""

    def __init__(
        self,
        gpus: list[FakeGpu],
        init_error: int | None = None,
        topology_error: bool = False,
        autospec: bool = True,
    ) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.topology_error = topology_error
        self.now_us = 1_700_000_000_000_000
        self.init_count = 0
        self.gpm_samples: dict[int, tuple[int, int]] = {}  # address -> (gpu index, time us)
        self._keep: list[Any] = []
        self.module = self._build() if autospec else self._build_plain()

    def advance(self, seconds: float) -> None:
        """Move the fake clock: counters grow by their rates."""
        self.now_us += int(seconds * 1e6)
        for g in self.gpus:
            g.energy_mj += (
                g.power_per_s_mw if g.power_per_s_mw is not None else g.power_mw
            ) * seconds
            g.pcie_tx_bytes += g.pcie_tx_bytes_per_s * seconds
            g.pcie_rx_bytes += g.pcie_rx_bytes_per_s * seconds
            for link in g.links:
                link.tx_kib += link.tx_kib_per_s * seconds
                link.rx_kib += link.rx_kib_per_s * seconds

    # --- building the autospecced module ------------------------------------------------

    def _build(self) -> Any:
        m = mock.create_autospec(pynvml)
        for name in dir(pynvml):  # constants, structs and error classes stay real
            obj = getattr(pynvml, name)
            if not (inspect.isfunction(obj) and name.startswith("nvml")):
                setattr(m, name, obj)
        impl = {n[len("_f_") :]: getattr(self, n) for n in dir(self) if n.startswith("_f_")}
        for name in dir(pynvml):
            if name.startswith("nvml") and inspect.isfunction(getattr(pynvml, name)):
                getattr(m, name).side_effect = self._dispatch(name, impl.get(name))
        return m

    def _build_plain(self) -> Any:
        """The same answers without mock objects (for benchmarks: mock calls cost ~100 us)."""
        impl = {n[len("_f_") :]: getattr(self, n) for n in dir(self) if n.startswith("_f_")}
        m = types.ModuleType("pynvml_fake")
        for name in dir(pynvml):
            obj = getattr(pynvml, name)
            if inspect.isfunction(obj) and name.startswith("nvml"):
                setattr(m, name, self._dispatch(name, impl.get(name)))
            elif not name.startswith("__"):
                setattr(m, name, obj)
        return m

    def _dispatch(self, name: str, fn: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if name in ("nvmlInit", "nvmlInitWithFlags"):
                return fn(*args, **kwargs)
            if self.init_count <= 0 and name != "nvmlShutdown":
                raise _err(pynvml.NVML_ERROR_UNINITIALIZED)
            if fn is None:
                raise _err(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
            gpu = args[0] if args and isinstance(args[0], FakeGpu) else None
            if gpu is not None:
                gpu.calls[name] = gpu.calls.get(name, 0) + 1
                if gpu.lost:
                    raise _err(pynvml.NVML_ERROR_GPU_IS_LOST)
                if name in gpu.unsupported:
                    raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return fn(*args, **kwargs)

        return call

    # --- the NVML functions (handles are the FakeGpu objects themselves) ----------------

    def _f_nvmlInit(self) -> None:
        if self.init_error is not None:
            raise _err(self.init_error)
        self.init_count += 1

    def _f_nvmlInitWithFlags(self, flags: int) -> None:
        self._f_nvmlInit()

    def _f_nvmlShutdown(self) -> None:
        if self.init_count <= 0:
            raise _err(pynvml.NVML_ERROR_UNINITIALIZED)
        self.init_count -= 1

    def _f_nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def _f_nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040

    def _f_nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return 12040

    def _f_nvmlSystemGetNVMLVersion(self) -> str:
        return "12.550.54.15"

    def _f_nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def _f_nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        if not 0 <= index < len(self.gpus):
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        g = self.gpus[index]
        if g.lost:
            raise _err(pynvml.NVML_ERROR_GPU_IS_LOST)
        return g

    def _f_nvmlDeviceGetIndex(self, g: FakeGpu) -> int:
        return g.index

    def _f_nvmlDeviceGetHandleByUUID(self, uuid: Any) -> Any:
        u = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
        for g in self.gpus:
            if g.uuid == u:
                return g
            if u in g.mig_uuids:
                return SimpleNamespace(parent=g, mig_uuid=u)
        raise _err(pynvml.NVML_ERROR_NOT_FOUND)

    def _f_nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, migDevice: Any) -> FakeGpu:
        if not isinstance(migDevice, SimpleNamespace):
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return migDevice.parent  # type: ignore[no-any-return]

    def _f_nvmlDeviceGetName(self, g: FakeGpu) -> str:
        return g.name

    def _f_nvmlDeviceGetUUID(self, g: FakeGpu) -> str:
        return g.uuid

    def _f_nvmlDeviceGetPciInfo(self, g: FakeGpu) -> Any:
        info = pynvml.nvmlPciInfo_t()
        info.busId = g.bus_id.encode()
        return info

    def _f_nvmlDeviceGetPciInfo_v3(self, g: FakeGpu) -> Any:
        return self._f_nvmlDeviceGetPciInfo(g)

    def _f_nvmlDeviceGetArchitecture(self, g: FakeGpu) -> int:
        return g.arch

    def _f_nvmlDeviceGetCudaComputeCapability(self, g: FakeGpu) -> tuple[int, int]:
        return g.cc

    def _f_nvmlDeviceGetMigMode(self, g: FakeGpu) -> list[int]:
        return [int(g.mig), int(g.mig)]

    def _f_nvmlDeviceGetUtilizationRates(self, g: FakeGpu) -> Any:
        u = pynvml.c_nvmlUtilization_t()
        u.gpu, u.memory = g.util_gpu, g.util_mem
        return u

    def _f_nvmlDeviceGetMemoryInfo(self, g: FakeGpu, version: Any = None) -> Any:
        if version:
            m = pynvml.c_nvmlMemory_v2_t()
            m.version, m.reserved = version, g.memory_reserved
        else:
            m = pynvml.c_nvmlMemory_t()
        m.total, m.used, m.free = g.memory_total, g.memory_used, g.memory_total - g.memory_used
        return m

    def _f_nvmlDeviceGetPowerUsage(self, g: FakeGpu) -> int:
        return g.power_mw

    def _f_nvmlDeviceGetEnforcedPowerLimit(self, g: FakeGpu) -> int:
        return g.power_limit_mw

    def _f_nvmlDeviceGetTotalEnergyConsumption(self, g: FakeGpu) -> int:
        return int(g.energy_mj)

    def _f_nvmlDeviceGetTemperatureV(self, g: FakeGpu, sensor: int, version: Any = None) -> int:
        return g.temp_c

    def _f_nvmlDeviceGetTemperature(self, g: FakeGpu, sensor: int) -> int:
        return g.temp_c

    def _f_nvmlDeviceGetClockInfo(self, g: FakeGpu, type: int) -> int:
        return {pynvml.NVML_CLOCK_SM: g.sm_mhz, pynvml.NVML_CLOCK_MEM: g.mem_mhz}.get(
            type, g.sm_mhz
        )

    def _f_nvmlDeviceGetCurrentClocksEventReasons(self, g: FakeGpu) -> int:
        return g.clock_events

    def _f_nvmlDeviceGetCurrPcieLinkGeneration(self, g: FakeGpu) -> int:
        return g.pcie_gen

    def _f_nvmlDeviceGetCurrPcieLinkWidth(self, g: FakeGpu) -> int:
        return g.pcie_width

    def _f_nvmlDeviceGetPcieThroughput(self, g: FakeGpu, counter: int) -> int:
        return g.pcie_tx_kbps if counter == pynvml.NVML_PCIE_UTIL_TX_BYTES else g.pcie_rx_kbps

    def _f_nvmlDeviceGetNvLinkState(self, g: FakeGpu, link: int) -> int:
        if not 0 <= link < len(g.links):
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return int(g.links[link].active)

    def _f_nvmlDeviceGetNvLinkRemotePciInfo(self, g: FakeGpu, link: int) -> Any:
        if not 0 <= link < len(g.links):
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        info = pynvml.nvmlPciInfo_t()
        info.busId = g.links[link].remote_bus_id.encode()
        return info

    def _f_nvmlDeviceGetNvLinkRemoteDeviceType(self, g: FakeGpu, link: int) -> int:
        if not 0 <= link < len(g.links):
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return g.links[link].remote_type

    def _f_nvmlDeviceGetTopologyCommonAncestor(self, a: FakeGpu, b: FakeGpu) -> int:
        if self.topology_error:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return (
            pynvml.NVML_TOPOLOGY_NODE if abs(a.index - b.index) < 4 else pynvml.NVML_TOPOLOGY_SYSTEM
        )

    def _f_nvmlDeviceGetComputeRunningProcesses(self, g: FakeGpu) -> list[Any]:
        return [
            SimpleNamespace(pid=pid, usedGpuMemory=used, gpuInstanceId=0, computeInstanceId=0)
            for pid, used in g.processes
        ]

    def _field(self, g: FakeGpu, fid: int, scope: int) -> tuple[int, float] | None:
        """(valueType, value) or None when unsupported."""
        if fid in g.unsupported_fields:
            return None
        ull = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
        pcie_t = ull if g.pcie_counter_bits == 64 else pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
        simple = {
            82: (pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, g.mem_temp_c),
            83: (ull, int(g.energy_mj)),
            185: (pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, g.power_mw),
            186: (pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, g.power_instant_mw),
            197: (pcie_t, int(g.pcie_tx_bytes) % 2**g.pcie_counter_bits),
            198: (pcie_t, int(g.pcie_rx_bytes) % 2**g.pcie_counter_bits),
        }
        if fid in simple:
            return simple[fid]
        if fid == 91:
            return (
                (pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, len(g.links)) if g.link_count_field else None
            )
        if fid in g.throttle_ns:
            return ull, int(g.throttle_ns[fid])
        if fid in (138, 139):
            if not (0 <= scope < len(g.links)) or not g.links[scope].active:
                return None
            link = g.links[scope]
            return ull, int(link.tx_kib if fid == 138 else link.rx_kib)
        return None

    def _f_nvmlDeviceGetFieldValues(self, g: FakeGpu, fieldIds: list[Any]) -> Any:
        if any((f[0] if isinstance(f, tuple) else f) in g.refuse_batch_fields for f in fieldIds):
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        arr = (pynvml.c_nvmlFieldValue_t * len(fieldIds))()
        for i, fid in enumerate(fieldIds):
            fid, scope = fid if isinstance(fid, tuple) else (fid, 0)
            arr[i].fieldId, arr[i].scopeId, arr[i].timestamp = fid, scope, self.now_us
            got = self._field(g, fid, scope)
            if got is None:
                arr[i].nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
                continue
            vtype, value = got
            arr[i].nvmlReturn, arr[i].valueType = pynvml.NVML_SUCCESS, vtype
            member = {0: "dVal", 1: "uiVal", 3: "ullVal"}[vtype]
            setattr(arr[i].value, member, value)
        return arr

    def _f_nvmlGpmQueryDeviceSupport(self, g: FakeGpu) -> Any:
        s = pynvml.c_nvmlGpmSupport_t()
        s.version, s.isSupportedDevice = pynvml.NVML_GPM_SUPPORT_VERSION, int(g.gpm is not None)
        return s

    def _f_nvmlGpmSampleAlloc(self) -> Any:
        body = pynvml.struct_c_nvmlGpmSample_t()
        self._keep.append(body)
        return pynvml.c_nvmlGpmSample_t(body)

    def _f_nvmlGpmSampleFree(self, gpmSample: Any) -> None:
        self.gpm_samples.pop(ctypes.addressof(gpmSample.contents), None)

    def _f_nvmlGpmSampleGet(self, g: FakeGpu, gpmSample: Any) -> Any:
        if g.gpm is None:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        self.gpm_samples[ctypes.addressof(gpmSample.contents)] = (g.index, self.now_us)
        return gpmSample

    def _f_nvmlGpmMetricsGet(self, metricsGet: Any) -> Any:
        s1 = self.gpm_samples.get(ctypes.addressof(metricsGet.sample1.contents))
        s2 = self.gpm_samples.get(ctypes.addressof(metricsGet.sample2.contents))
        if s1 is None or s2 is None or s1[0] != s2[0] or s2[1] - s1[1] < 100_000:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpm = self.gpus[s1[0]].gpm or {}
        for i in range(metricsGet.numMetrics):
            m = metricsGet.metrics[i]
            if m.metricId in gpm:
                m.nvmlReturn, m.value = pynvml.NVML_SUCCESS, gpm[m.metricId]
            else:
                m.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        return metricsGet


@contextmanager
def install_fake_nvml(
    gpus: list[FakeGpu],
    init_error: int | None = None,
    topology_error: bool = False,
    autospec: bool = True,
) -> Iterator[FakeNvml]:
    """Patch ``profiler.telemetry.nvml.pynvml`` with the fake for the ``with`` block
    (``autospec=False``: a plain module of the same functions, for benchmarks only)."""
    fake = FakeNvml(gpus, init_error=init_error, topology_error=topology_error, autospec=autospec)
    with mock.patch("profiler.telemetry.nvml.pynvml", fake.module):
        yield fake
