"""HostSampler and process-tree metering with the real psutil."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from profiler.telemetry import fields
from profiler.telemetry.host import HostSampler
from profiler.telemetry.procs import ProcessTreeMeter, expand_tree
from profiler.telemetry.sample import Sample

HOST_NAMES = {f.name for f in fields.HOST_FIELDS}


def get(samples: list[Sample], device: str, metric: str) -> float | None:
    for s in samples:
        if s.device == device and s.metric == metric:
            return s.value
    return None


def burn(seconds: float) -> None:
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        x += 1


def test_host_sampler_reports_cpu_memory_network_and_client() -> None:
    s = HostSampler()
    first = s.sample(0.0)
    burn(0.2)  # this thread's CPU shows up in the client tree
    second = s.sample(0.25)  # t_s drives the rates, so the test does not depend on timing
    s.close()
    assert {x.source for x in second} == {"host"}
    assert {x.metric for x in first + second} <= HOST_NAMES
    assert all(x.error is None for x in second)
    ncores = psutil.cpu_count()
    cores = [
        x for x in second if x.metric == "cpu_utilization_ratio" and x.device.startswith("cpu")
    ]
    assert len(cores) == ncores
    assert all(0.0 <= x.value <= 1.0 for x in cores)  # type: ignore[operator]
    total = get(second, "", "cpu_utilization_ratio")
    assert total is not None and 0.0 <= total <= 1.0
    assert get(second, "", "memory_total_bytes") == psutil.virtual_memory().total
    used = get(second, "", "memory_used_bytes")
    assert used is not None and 0 < used < psutil.virtual_memory().total
    assert get(second, "lo", "network_rx_bytes_total") is not None
    assert get(first, "lo", "network_rx_bytes_per_second") is None  # no rate from one reading
    assert get(second, "lo", "network_rx_bytes_per_second") is not None
    cpu = get(second, "client", "process_cpu_ratio")
    assert cpu is not None and cpu > 0.0  # 0.2 s of CPU spent in 0.25 "s" of run clock
    assert get(second, "client", "process_rss_bytes") > 10 * 2**20  # type: ignore[operator]
    assert get(second, "client", "process_count") >= 1  # type: ignore[operator]
    assert get(second, "server", "process_count") is None  # no server given


def test_server_tree_appears_later_and_counts_children() -> None:
    pids: set[int] = set()
    s = HostSampler(server_pids=lambda: pids, per_core=False, network=False)
    before = s.sample(0.0)
    assert get(before, "server", "process_count") is None  # the server does not exist yet
    code = "import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print(c.pid, flush=True); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        pids.add(parent.pid)
        assert set(expand_tree(pids)) == {parent.pid, child_pid}
        at_1 = s.sample(1.0)
        time.sleep(0.1)  # CPU time advances in kernel ticks (about 10 ms)
        at_2 = s.sample(2.0)
    finally:
        for p in psutil.Process(parent.pid).children(recursive=True):
            p.kill()
        parent.kill()
        parent.wait()
    assert get(at_1, "server", "process_count") == 2
    assert get(at_1, "server", "process_cpu_ratio") is None  # first reading of the tree
    rss = get(at_2, "server", "process_rss_bytes")
    assert rss is not None and rss > 2 * 2**20
    cpu = get(at_2, "server", "process_cpu_ratio")
    assert cpu is not None and cpu >= 0.0
    assert get(at_2, "", "cpu_utilization_ratio") is not None
    assert get(at_2, "cpu0", "cpu_utilization_ratio") is None  # per_core=False


def test_meter_cpu_over_the_interval_and_tree_gone() -> None:
    pids = {os.getpid()}
    m = ProcessTreeMeter(lambda: pids)
    assert m.measure(0.0) is not None
    burn(0.1)
    u = m.measure(1.0)
    assert u is not None and u.cpu_cores is not None and u.cpu_cores > 0.05
    pids.clear()
    assert m.measure(2.0) is None


def test_failing_pid_source_is_an_error_sample() -> None:
    def broken() -> set[int]:
        raise RuntimeError("no server handle")

    s = HostSampler(server_pids=broken, per_core=False, network=False)
    out = s.sample(0.0)
    errs = [x for x in out if x.device == "server"]
    assert len(errs) == 1 and errs[0].value is None and "no server handle" in (errs[0].error or "")


def test_tree_membership_is_cached_between_refreshes() -> None:
    m = ProcessTreeMeter(lambda: {os.getpid()}, refresh_s=2.0)
    first = m.measure(0.0)
    assert first is not None
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        cached = m.measure(0.5)
        refreshed = m.measure(2.5)
    finally:
        child.kill()
        child.wait()
    assert cached is not None and refreshed is not None
    assert cached.count == first.count  # the new child is not looked for yet
    assert refreshed.count == first.count + 1


def test_cpu_reading_without_a_tick_keeps_the_older_base(monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import namedtuple

    T = namedtuple("T", "user system idle")
    readings = iter(
        [
            [T(10.0, 0.0, 90.0)],  # constructor base
            [T(10.0, 0.0, 90.0)],  # no tick since: nothing published, base kept
            [T(15.0, 0.0, 95.0)],  # 5 busy of 10 elapsed since the base
        ]
    )
    monkeypatch.setattr(psutil, "cpu_times", lambda percpu=True: next(readings))
    s = HostSampler(per_core=False, network=False)
    assert get(s.sample(1.0), "", "cpu_utilization_ratio") is None
    assert get(s.sample(2.0), "", "cpu_utilization_ratio") == pytest.approx(0.5)
