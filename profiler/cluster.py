"""The Ray cluster a user already runs (``ray start`` on each node): join it as a driver, list
its alive nodes, say where the calling task runs, and pin a task or actor to a node. Below
every layer that runs on Ray (``profiler.serving.ray_cluster`` launches vLLM across the
cluster, ``profiler.load.ray_workers``, ``profiler.sweep.ray_executor``,
``profiler.telemetry.ray_nodes``, ``profiler.store.ray_journal``), so none of them imports
another for it.

infprof manages no cluster: it connects to one at ``--ray-address`` (else ``RAY_ADDRESS``,
else the cluster this node joined, ``auto``). Ray is an optional extra
(``pip install 'infprof[ray]'``) and is imported only when ``--executor ray`` is asked for;
importing this module needs neither Ray nor pydantic.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from profiler.errors import ServerError, SpecError

INSTALL_FIX = "pip install 'infprof[ray]' (or `pip install ray`), then retry"


class RayClusterError(ServerError):
    """No Ray cluster to connect to, or it lacks what a run needs."""


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise SpecError("--executor ray needs Ray, which is not installed", INSTALL_FIX) from None
    return ray


def connect(address: str | None) -> Any:
    """Join the cluster at ``address`` as a driver (idempotent); returns the ``ray`` module.

    Never starts a cluster: with no cluster there, the error says how to start one."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    target = address or os.environ.get("RAY_ADDRESS") or "auto"
    check_reachable(target)
    try:
        ray.init(
            address=target,
            ignore_reinit_error=True,
            logging_level=logging.WARNING,
            log_to_driver=False,
            configure_logging=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RayClusterError(
            f"cannot join a Ray cluster at {target}: {first}",
            "start one with `ray start --head` (and `ray start --address HEAD:6379` on every "
            "other node), or pass --ray-address HOST:PORT",
        ) from None
    return ray


CONNECT_TIMEOUT_S = 5.0


def check_reachable(address: str) -> None:
    """A HOST:PORT that nothing answers on fails in one line now (Ray itself would retry for
    minutes). ``auto`` and ``ray://`` client addresses are left to Ray."""
    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise SpecError(
            f"--ray-address {address} is not HOST:PORT", "e.g. --ray-address 10.0.0.1:6379"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise RayClusterError(
            f"no Ray cluster answers at {address} ({e.strerror or type(e).__name__})",
            "start one with `ray start --head --port 6379`, or pass the head's --ray-address",
        ) from None


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    ip: str
    hostname: str
    gpus: float
    cpus: float

    @property
    def name(self) -> str:
        return self.hostname or self.ip


def alive_nodes(ray: Any) -> list[NodeInfo]:
    out = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = n.get("Resources") or {}
        out.append(
            NodeInfo(
                node_id=str(n.get("NodeID")),
                ip=str(n.get("NodeManagerAddress") or ""),
                hostname=str(n.get("NodeManagerHostname") or ""),
                gpus=float(res.get("GPU", 0.0)),
                cpus=float(res.get("CPU", 0.0)),
            )
        )
    return out


def here() -> dict[str, Any]:
    """Where the calling Ray task or actor runs: node id, address, host name, and the GPUs Ray
    gave it (its ``CUDA_VISIBLE_DEVICES``)."""
    import ray

    ctx = ray.get_runtime_context()
    try:
        gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    except Exception:  # outside a worker (the driver)
        gpu_ids = []
    return {
        "node_id": ctx.get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "hostname": socket.gethostname(),
        "gpus": gpu_ids,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "pid": os.getpid(),
    }


def driver_node_id(ray: Any) -> str:
    return str(ray.get_runtime_context().get_node_id())


def on_node(node_id: str, soft: bool = False) -> Any:
    """A scheduling strategy that pins a task or actor to ``node_id``."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=soft)
