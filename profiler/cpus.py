"""CPU cores for a server and its load generator on one host.

A load generator that shares cores with the server it measures is starved by it: on the
2-core development machine the vLLM CPU worker, engine and API server kept every core busy and
the client's event loop waited up to 2.5 s in the kernel's run queue (measured from
``/proc/thread-self/schedstat``), which showed up as 1 s TTFT outliers that the server never
caused. So when the profiler launches a CPU server itself, it keeps the first core for the
client and gives the server the others (``ServeSpec.cpus``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def available() -> list[int]:
    """The cores this process may run on (every core where affinity is not supported)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def split_for_server() -> tuple[list[int], list[int]] | None:
    """(server cores, client cores): the first core for the client, the rest for the server;
    None with fewer than 2 cores or where affinity cannot be set."""
    cores = available()
    if len(cores) < 2 or not hasattr(os, "sched_setaffinity"):
        return None
    return cores[1:], cores[:1]


def others(cpus: list[int]) -> list[int]:
    """The available cores not in ``cpus`` (where the client runs beside a pinned server)."""
    return [c for c in available() if c not in set(cpus)]


@contextlib.contextmanager
def on_cpus(cpus: list[int] | None) -> Iterator[None]:
    """Run the block on ``cpus``: this thread only, and children it starts inherit them.
    No-op for None/empty or where affinity is not supported."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        yield
        return
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


@contextlib.contextmanager
def beside(server_cpus: list[int] | None) -> Iterator[list[int] | None]:
    """Run the block (the load generator) on the cores a pinned server was kept off; yields
    those cores, or None when the server is not pinned (nothing changes then)."""
    client = others(server_cpus) if server_cpus else None
    with on_cpus(client):
        yield client or None
