"""The server's GPU memory from NVML's process lists (source ``nvml``, device = GPU index):
which compute processes each GPU runs, which of them are the server's (its process tree), and
how much GPU memory those hold, with the rule for when that memory is known at all.

Every query goes through ``profiler.telemetry.nvml`` (the chokepoint)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from profiler.telemetry import nvml
from profiler.telemetry.sample import Sample

log = logging.getLogger(__name__)

SOURCE = "nvml"


class ServerProcesses:
    """Reads the process lists of the GPUs every ``interval_s``; ``pids`` gives the server's
    process tree (None: no server to attribute, nothing is read)."""

    def __init__(self, pids: Callable[[], set[int]] | None, interval_s: float) -> None:
        self._pids = pids
        self._interval_s = interval_s
        self._read_t: float | None = None  # last process-list read
        self._warned = False

    def read(self, devices: list[nvml.NvmlDevice], t_s: float) -> list[Sample]:
        """Every ``interval_s``, per GPU: ``compute_processes`` (what NVML lists, any
        owner), ``server_compute_processes`` (those in the server's tree) and
        ``process_memory_used_bytes`` (the server's memory there). The memory is a value only
        when it is known: the sum over the server's processes on that GPU, or 0 on a GPU where
        none of them runs *while NVML lists a server process on another GPU in the same read*
        (NVML demonstrably sees the server's PIDs, so their absence is real). When NVML lists
        no process of the server anywhere, nothing says the server holds no memory: inside a
        container NVML gives host PIDs that are not the server's, and a listing can be empty
        for want of permission; then there is no value, never a 0."""
        if self._pids is None or not devices:
            return []
        if self._read_t is not None and t_s - self._read_t < self._interval_s:
            return []
        try:
            pids = set(self._pids())
        except Exception as e:  # the pid source is the caller's; a failure skips one read
            log.debug("process_pids failed: %s", e)
            pids = set()
        if not pids:  # the server does not exist yet (or any more): ask again next tick
            return []
        self._read_t = t_s
        listed: list[tuple[str, int, list[Any]]] = []  # (gpu, listed, the server's)
        for dev in devices:
            try:
                procs = dev.call("processes", "nvmlDeviceGetComputeRunningProcesses")
            except nvml.DeviceFault as e:  # the next tick reports the GPU as down
                log.debug("GPU %s: process list: %s", dev.index, e)
                continue
            if procs is not None:
                listed.append((str(dev.index), len(procs), [p for p in procs if p.pid in pids]))
        out: list[Sample] = []
        sees_server = any(mine for _, _, mine in listed)
        for gpu, total, mine in listed:
            out.append(Sample(t_s, SOURCE, gpu, "compute_processes", float(total)))
            out.append(Sample(t_s, SOURCE, gpu, "server_compute_processes", float(len(mine))))
            used = [p.usedGpuMemory for p in mine if p.usedGpuMemory is not None]
            if used:
                out.append(Sample(t_s, SOURCE, gpu, "process_memory_used_bytes", float(sum(used))))
            elif not mine and sees_server:
                out.append(Sample(t_s, SOURCE, gpu, "process_memory_used_bytes", 0.0))
        if not sees_server and any(total for _, total, _ in listed) and not self._warned:
            self._warned = True
            log.warning(
                "NVML lists GPU processes but none is the server's (PID namespace? e.g. a "
                "container): the server's GPU memory is not known"
            )
        return out
