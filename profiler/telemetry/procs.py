"""CPU and memory of a process tree (the vLLM server, the load generator) via psutil.

CPU is measured from each process's own cpu_times deltas, not ``Process.cpu_percent``, so it
is exact over the tick even when processes come and go: a process first seen this tick that
started after the previous tick counts its whole CPU time; one that exited since loses only
its last interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class TreeUsage:
    cpu_cores: float | None  # CPU seconds per second over the last interval; None on first read
    rss_bytes: float
    count: int


def expand_tree(pids: Iterable[int]) -> dict[int, psutil.Process]:
    """The given processes and all their descendants (gone processes are skipped)."""
    out: dict[int, psutil.Process] = {}
    for pid in pids:
        if pid in out:
            continue
        try:
            p = psutil.Process(pid)
            kids = p.children(recursive=True)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        out[pid] = p
        for k in kids:
            out.setdefault(k.pid, k)
    return out


class ProcessTreeMeter:
    """Finding descendants scans all of /proc (psutil's ppid map), so the tree's membership is
    refreshed every ``refresh_s`` or when the root pids change; in between, the known
    processes are read directly. A child born between refreshes is counted from the next one."""

    def __init__(self, pids: Callable[[], Iterable[int]], refresh_s: float = 2.0) -> None:
        self._pids = pids
        self._refresh_s = refresh_s
        self._cpu: dict[tuple[int, float], float] = {}  # (pid, create_time) -> cpu seconds
        self._t: float | None = None
        self._wall: float | None = None
        self._roots: set[int] = set()
        self._procs: dict[int, psutil.Process] = {}
        self._tree_t: float | None = None

    def _tree(self, roots: set[int], t_s: float) -> dict[int, psutil.Process]:
        stale = self._tree_t is None or t_s - self._tree_t >= self._refresh_s
        if stale or roots != self._roots:
            self._procs, self._roots, self._tree_t = expand_tree(roots), roots, t_s
        return self._procs

    def measure(self, t_s: float) -> TreeUsage | None:
        """Usage now; None when the pid source yields nothing (the tree does not exist yet)."""
        pids = set(self._pids())
        if not pids:
            self._cpu.clear()
            self._t = self._tree_t = None
            return None
        procs = self._tree(pids, t_s)
        wall_prev = self._wall
        now_wall = time.time()
        cpu_now: dict[tuple[int, float], float] = {}
        rss = 0.0
        spent = 0.0
        for pid, p in procs.items():
            try:
                with p.oneshot():
                    ct = p.cpu_times()
                    created = p.create_time()
                    rss += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            key = (pid, created)
            cpu = ct.user + ct.system
            cpu_now[key] = cpu
            if key in self._cpu:
                spent += max(0.0, cpu - self._cpu[key])
            elif wall_prev is not None and created >= wall_prev:
                spent += cpu  # born during the interval: all its CPU is in it
        prev_t = self._t
        self._cpu, self._t, self._wall = cpu_now, t_s, now_wall
        dt = None if prev_t is None else t_s - prev_t
        cores = spent / dt if dt and dt > 0 else None
        return TreeUsage(cores, rss, len(cpu_now))
