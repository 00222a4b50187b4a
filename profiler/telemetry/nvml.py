"""NVML through pynvml (package ``nvidia-ml-py``): the only module that imports ``pynvml``.

Every NVML call goes through one chokepoint, ``NvmlDevice.call`` (and ``fields`` for
``nvmlDeviceGetFieldValues``):

- NotSupported (and FunctionNotFound, NoPermission, InvalidArgument, NotFound) -> ``None``,
  and the capability is remembered for that device: it is probed once, never retried per tick.
- GpuIsLost, Unknown, ResetRequired and similar -> ``DeviceFault``; the sampler turns it into
  an ``up`` = 0 sample with the error for that GPU, and the run goes on.
- Anything else (Timeout, Memory, ...) -> ``None`` for this tick only.
- NVML unavailable (no library, driver not loaded, init failure) -> ``NvmlUnavailable(reason)``.

Units are converted where values leave this module: W, J, bytes, bytes/s, Hz, seconds, ratios.
The sampler is ``profiler.telemetry.nvml_sampler.NvmlSampler``; inventory and topology are
``profiler.telemetry.inventory.collect``. Both import this module, never the other way round.
Importing this module needs no GPU and touches no driver.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

try:
    import pynvml
except ImportError:  # pragma: no cover - nvidia-ml-py is a base dependency
    pynvml = None

log = logging.getLogger(__name__)

# NVML return codes (nvml.h ABI; the same values pynvml exports as NVML_ERROR_*)
SUCCESS = 0
_UNSUPPORTED = frozenset({3, 13, 4, 2, 6, 25, 26})
"""NOT_SUPPORTED, FUNCTION_NOT_FOUND, NO_PERMISSION, INVALID_ARGUMENT, NOT_FOUND,
ARGUMENT_VERSION_MISMATCH, DEPRECATED: the device or driver cannot do this; remember it."""
_FAULT = frozenset({15, 999, 16, 1, 9, 18, 14, 11, 28})
"""GPU_IS_LOST, UNKNOWN, RESET_REQUIRED, UNINITIALIZED, DRIVER_NOT_LOADED,
LIB_RM_VERSION_MISMATCH, CORRUPTED_INFOROM, IRQ_ISSUE, GPU_NOT_FOUND: the GPU stopped answering."""
_INIT_REASONS = {
    12: "NVML library libnvidia-ml.so.1 not found (no NVIDIA driver on this machine)",
    9: "the NVIDIA kernel driver is not loaded",
    4: "no permission to open the NVIDIA device files",
    18: "NVML and the kernel driver are different versions (reload the driver or reboot)",
}

# value types of c_nvmlFieldValue_t -> member of the value union
_UNION_MEMBER = {
    0: "dVal",
    1: "uiVal",
    2: "ulVal",
    3: "ullVal",
    4: "sllVal",
    5: "siVal",
    6: "usVal",
}
WIDE_TYPES = frozenset({2, 3, 4})  # 64-bit on Linux: counters that do not wrap in practice
MIB = 1 << 20


@dataclass(frozen=True)
class NvmlUnavailable:
    """NVML cannot be used on this machine, and why. Never raised: returned."""

    reason: str
    available: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"available": False, "reason": self.reason}


class DeviceFault(Exception):
    """One GPU stopped answering (lost, reset required, unknown error)."""


class _Unsupported(Exception):
    pass


class FieldValue(NamedTuple):
    """One answer of ``nvmlDeviceGetFieldValues``: the value, NVML's timestamp (us, 0 when
    not given) and the value type (0 double, 1 uint32, 2 ulong, 3 uint64, 4 int64, 5 int32,
    6 ushort), which tells a 64-bit counter from one that wraps at 2**32."""

    value: float
    timestamp_us: int
    value_type: int


def _code(e: BaseException) -> int | None:
    v = getattr(e, "value", None)
    return v if isinstance(v, int) else None


def nvml_init() -> NvmlUnavailable | None:
    """Initialise NVML (reference counted by NVML and pynvml; pair with ``nvml_shutdown``).
    Returns None on success, or the reason it is unavailable."""
    if pynvml is None:
        return NvmlUnavailable("nvidia-ml-py (pynvml) is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        code = _code(e)
        return NvmlUnavailable(_INIT_REASONS.get(code or -1, f"NVML init failed: {e}"))
    except Exception as e:  # a broken binding or loader: still a state, never a crash
        return NvmlUnavailable(f"NVML could not be loaded: {type(e).__name__}: {e}")
    return None


def nvml_shutdown() -> None:
    if pynvml is None:
        return
    try:
        pynvml.nvmlShutdown()
    except Exception as e:  # shutting down must never fail a run
        log.debug("nvmlShutdown: %s", e)


def const(name: str, default: Any = None) -> Any:
    """A pynvml constant by name (for helpers that must not import pynvml)."""
    return getattr(pynvml, name, default)


def system_call(fn_name: str, *args: Any) -> Any:
    """A device-less NVML query (driver version, ...); None when it fails for any reason."""
    fn = getattr(pynvml, fn_name, None)
    if fn is None:
        return None
    try:
        return fn(*args)
    except pynvml.NVMLError as e:
        log.debug("%s: %s", fn_name, e)
        return None


def text(v: Any) -> str | None:
    """bytes or str from pynvml (struct char arrays stay bytes) -> str."""
    if v is None:
        return None
    return v.decode(errors="replace") if isinstance(v, bytes | bytearray) else str(v)


class NvmlDevice:
    """One GPU handle plus what it can do. ``caps[name]`` is True once a query worked, False
    once it was unsupported (never asked again), absent while unknown."""

    def __init__(self, index: int, handle: Any, fault: str | None = None) -> None:
        self.index = index
        self.handle = handle
        self.fault = fault  # set when the handle itself could not be obtained
        self.caps: dict[str, bool] = {}
        self.field_caps: dict[tuple[int, int], bool] = {}

    def call(self, cap: str | None, fn_name: str, *args: Any, with_handle: bool = True) -> Any:
        """The chokepoint. ``cap`` names the capability remembered for this device (None: do not
        remember, e.g. while probing link indices). Raises only ``DeviceFault``."""
        if self.fault is not None:
            raise DeviceFault(self.fault)
        if cap is not None and self.caps.get(cap) is False:
            return None
        fn = getattr(pynvml, fn_name, None)
        if fn is None:  # an older binding without this entry point
            if cap is not None:
                self.caps[cap] = False
            return None
        try:
            value = fn(self.handle, *args) if with_handle else fn(*args)
        except pynvml.NVMLError as e:
            code = _code(e)
            if code in _FAULT:
                raise DeviceFault(f"{fn_name}: {e}") from e
            if code in _UNSUPPORTED:
                if cap is not None and cap not in self.caps:
                    log.debug("GPU %d: %s unsupported (%s)", self.index, cap, e)
                if cap is not None:
                    self.caps[cap] = False
            return None
        if cap is not None:
            self.caps[cap] = True
        return value

    def fields(self, ids: Sequence[tuple[int, int]]) -> dict[tuple[int, int], FieldValue]:
        """Read ``(fieldId, scopeId)`` pairs in one ``nvmlDeviceGetFieldValues`` call. Returns
        the fields that answered; a field that reports NotSupported is remembered and left out
        of later calls. Should a driver refuse the whole batch as unsupported, each field is
        asked alone once, so one unknown field id cannot hide the others."""
        wanted = [k for k in ids if self.field_caps.get(k) is not False]
        if not wanted or self.caps.get("field_values") is False:
            return {}
        try:
            values = self._field_batch(wanted)
        except _Unsupported:
            if len(wanted) == 1:
                self.field_caps[wanted[0]] = False
                return {}
            out: dict[tuple[int, int], FieldValue] = {}
            for key in wanted:
                out.update(self.fields([key]))
            if not any(self.field_caps.get(k) for k in wanted):
                self.caps["field_values"] = False
            return out
        if values is None:
            return {}
        got: dict[tuple[int, int], FieldValue] = {}
        for key, fv in zip(wanted, values, strict=False):
            ret = int(fv.nvmlReturn)
            if ret == SUCCESS:
                self.field_caps[key] = True
                vtype = int(fv.valueType)
                member = _UNION_MEMBER.get(vtype)
                if member is not None:
                    got[key] = FieldValue(
                        float(getattr(fv.value, member)), int(fv.timestamp), vtype
                    )
            elif ret in _FAULT:
                raise DeviceFault(f"field {key[0]}: NVML error {ret}")
            elif ret in _UNSUPPORTED:
                self.field_caps[key] = False
        return got

    def _field_batch(self, keys: list[tuple[int, int]]) -> Any:
        if self.fault is not None:
            raise DeviceFault(self.fault)
        try:
            return pynvml.nvmlDeviceGetFieldValues(self.handle, keys)
        except pynvml.NVMLError as e:
            code = _code(e)
            if code in _FAULT:
                raise DeviceFault(f"nvmlDeviceGetFieldValues: {e}") from e
            if code in _UNSUPPORTED:
                raise _Unsupported(str(e)) from e
            return None

    # --- GPM (Hopper+): two buffers, metrics computed between them ---------------------

    def gpm_alloc(self) -> Any:
        return self.call("gpm", "nvmlGpmSampleAlloc", with_handle=False)

    def gpm_free(self, sample: Any) -> None:
        fn = getattr(pynvml, "nvmlGpmSampleFree", None)
        if fn is None or sample is None:
            return
        try:
            fn(sample)
        except Exception as e:
            log.debug("nvmlGpmSampleFree: %s", e)

    def gpm_get(self, sample: Any) -> bool:
        return self.call("gpm", "nvmlGpmSampleGet", sample) is not None

    def gpm_metrics(self, s1: Any, s2: Any, ids: Sequence[int]) -> dict[int, float]:
        """Metric id -> value between two GPM samples (NaN and failed metrics left out)."""
        mg = pynvml.c_nvmlGpmMetricsGet_t()
        mg.version = pynvml.NVML_GPM_METRICS_GET_VERSION
        mg.numMetrics = len(ids)
        mg.sample1 = s1
        mg.sample2 = s2
        for i, mid in enumerate(ids):
            mg.metrics[i].metricId = mid
        # not remembered: a pair taken too close together fails with InvalidArgument, and
        # support itself was settled by nvmlGpmQueryDeviceSupport
        if self.call(None, "nvmlGpmMetricsGet", mg, with_handle=False) is None:
            return {}
        out: dict[int, float] = {}
        for i, mid in enumerate(ids):
            m = mg.metrics[i]
            if int(m.nvmlReturn) == SUCCESS and not math.isnan(m.value):
                out[mid] = float(m.value)
        return out


def open_devices(
    indices: Sequence[int] | None = None,
) -> tuple[list[NvmlDevice], NvmlUnavailable | None]:
    """Initialise NVML and get a handle per GPU (all GPUs when ``indices`` is None). On
    success the caller owns one ``nvml_shutdown()``. A GPU whose handle fails is returned with
    ``fault`` set, so it shows up as down rather than vanishing."""
    state = nvml_init()
    if state is not None:
        return [], state
    try:
        count = int(pynvml.nvmlDeviceGetCount())
    except pynvml.NVMLError as e:
        nvml_shutdown()
        return [], NvmlUnavailable(f"NVML could not count GPUs: {e}")
    if count == 0:
        nvml_shutdown()
        return [], NvmlUnavailable("NVML is loaded but reports no GPUs")
    wanted = list(range(count)) if indices is None else list(indices)
    devices: list[NvmlDevice] = []
    for i in wanted:
        if not 0 <= i < count:
            devices.append(NvmlDevice(i, None, fault=f"no GPU {i} (NVML sees {count})"))
            continue
        try:
            devices.append(NvmlDevice(i, pynvml.nvmlDeviceGetHandleByIndex(i)))
        except pynvml.NVMLError as e:
            devices.append(NvmlDevice(i, None, fault=f"nvmlDeviceGetHandleByIndex: {e}"))
    return devices, None


def nvml_state() -> dict[str, Any]:
    """``{"available": True, "device_count": n}`` or ``{"available": False, "reason": ...}``."""
    devices, state = open_devices()
    if state is not None:
        return state.as_dict()
    nvml_shutdown()
    return {"available": True, "reason": None, "device_count": len(devices)}


def gpu_ids() -> tuple[list[dict[str, Any]], NvmlUnavailable | None]:
    """``[{"index", "uuid", "name", "memory_total_bytes", "memory_free_bytes"}, ...]`` of every
    GPU (a light inventory: for ``--gpus`` and for sizing the embedded default model); a value
    NVML cannot give, or a GPU that does not answer, has ``None`` there."""
    devices, state = open_devices()
    if state is not None:
        return [], state
    try:
        out = []
        for d in devices:
            row: dict[str, Any] = {"index": d.index, "uuid": None, "name": None}
            row["memory_total_bytes"] = row["memory_free_bytes"] = None
            try:
                row["uuid"] = text(d.call("uuid", "nvmlDeviceGetUUID"))
                row["name"] = text(d.call("name", "nvmlDeviceGetName"))
                mem = d.call("memory", "nvmlDeviceGetMemoryInfo")
                if mem is not None:
                    row["memory_total_bytes"] = int(mem.total)
                    row["memory_free_bytes"] = int(mem.free)
            except DeviceFault as e:
                log.debug("GPU %d: %s", d.index, e)
                row["lost"] = True
            out.append(row)
        return out, None
    finally:
        nvml_shutdown()


def device_memory() -> list[dict[str, Any]]:
    """``gpu_ids()`` of the GPUs that answer (``[]`` without NVML): what sizes the embedded
    default model on a GPU host."""
    return [g for g in gpu_ids()[0] if not g.pop("lost", False)]


def mig_parent_index(mig_uuid: str) -> int | None:
    """NVML index of the GPU a MIG instance (``MIG-<uuid>``) lives on; None when unknown."""
    if nvml_init() is not None:
        return None
    try:
        handle = system_call("nvmlDeviceGetHandleByUUID", mig_uuid)
        parent = (
            system_call("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", handle)
            if handle is not None
            else None
        )
        index = system_call("nvmlDeviceGetIndex", parent) if parent is not None else None
        return None if index is None else int(index)
    finally:
        nvml_shutdown()


__all__ = [
    "DeviceFault",
    "NvmlDevice",
    "NvmlUnavailable",
    "const",
    "gpu_ids",
    "device_memory",
    "mig_parent_index",
    "nvml_init",
    "nvml_shutdown",
    "nvml_state",
    "open_devices",
    "system_call",
    "text",
]
