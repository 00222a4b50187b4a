"""Host samples from psutil (source ``host``).

Devices: ``""`` host totals, ``cpu<N>`` per core, the interface name for network counters,
``server`` and ``client`` for the two process trees. CPU busy fractions come from cpu_times
deltas kept by this sampler (psutil's ``cpu_percent(interval=None)`` keeps one module-wide
baseline that any other caller in the process would move). Host memory used is
``total - available``. The ``client`` tree is this process and its children by default, so it
includes the telemetry threads themselves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import psutil

from profiler.telemetry.counters import CounterRate
from profiler.telemetry.procs import ProcessTreeMeter
from profiler.telemetry.sample import Sample

SOURCE = "host"


def _busy_total(ct: Any) -> tuple[float, float]:
    """(busy, total) CPU seconds of a psutil cpu_times tuple, as psutil's cpu_percent counts
    them: guest time is already inside user/nice, idle and iowait are not busy."""
    d = ct._asdict()
    total = sum(d.values()) - d.get("guest", 0.0) - d.get("guest_nice", 0.0)
    idle = d.get("idle", 0.0) + d.get("iowait", 0.0)
    return total - idle, total


class HostSampler:
    source = SOURCE

    def __init__(
        self,
        server_pids: Callable[[], Iterable[int]] | None = None,
        client_pids: Callable[[], Iterable[int]] | None = None,
        *,
        per_core: bool = True,
        network: bool = True,
    ) -> None:
        self._per_core = per_core
        self._network = network
        self._net: dict[tuple[str, str], CounterRate] = {}
        own = os.getpid()
        self._trees: dict[str, ProcessTreeMeter] = {
            "client": ProcessTreeMeter(client_pids or (lambda: {own})),
        }
        if server_pids is not None:
            self._trees["server"] = ProcessTreeMeter(server_pids)
        self._cpu_prev: list[tuple[float, float]] | None = [
            _busy_total(ct) for ct in psutil.cpu_times(percpu=True)
        ]

    def sample(self, t_s: float) -> list[Sample]:
        out: list[Sample] = []

        def put(device: str, metric: str, value: float | None) -> None:
            if value is not None:
                out.append(Sample(t_s, SOURCE, device, metric, float(value)))

        self._cpu(put)
        vm = psutil.virtual_memory()
        put("", "memory_total_bytes", vm.total)
        put("", "memory_used_bytes", vm.total - vm.available)
        if self._network:
            for nic, c in psutil.net_io_counters(pernic=True).items():
                for direction, value in (("tx", c.bytes_sent), ("rx", c.bytes_recv)):
                    _, rate = self._net.setdefault((nic, direction), CounterRate()).update(
                        value, t_s
                    )
                    put(nic, f"network_{direction}_bytes_total", value)
                    put(nic, f"network_{direction}_bytes_per_second", rate)
        for name, meter in self._trees.items():
            try:
                usage = meter.measure(t_s)
            except Exception as e:  # a pid source that fails skips one reading
                out.append(
                    Sample(t_s, SOURCE, name, "process_count", None, f"{type(e).__name__}: {e}")
                )
                continue
            if usage is None:
                continue
            put(name, "process_cpu_ratio", usage.cpu_cores)
            put(name, "process_rss_bytes", usage.rss_bytes)
            put(name, "process_count", usage.count)
        return out

    def _cpu(self, put: Callable[[str, str, float | None], None]) -> None:
        now = [_busy_total(ct) for ct in psutil.cpu_times(percpu=True)]
        prev = self._cpu_prev
        if prev is None or len(prev) != len(now):  # first read, or CPUs hot-plugged
            self._cpu_prev = now
            return
        if sum(t for _, t in now) <= sum(t for _, t in prev):
            # No clock tick since the last read (the kernel counts CPU time in ticks of
            # about 10 ms): keep the older base so the next reading spans a real interval.
            return
        self._cpu_prev = now
        busy_all = total_all = 0.0
        for i, ((b0, t0), (b1, t1)) in enumerate(zip(prev, now, strict=True)):
            db, dt = b1 - b0, t1 - t0
            busy_all += max(db, 0.0)
            total_all += max(dt, 0.0)
            if self._per_core and dt > 0:
                put(f"cpu{i}", "cpu_utilization_ratio", min(max(db / dt, 0.0), 1.0))
        if total_all > 0:
            put("", "cpu_utilization_ratio", min(busy_all / total_all, 1.0))

    def close(self) -> None:
        return None
