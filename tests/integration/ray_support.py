"""A local multi-node Ray cluster on loopback for the ``ray`` tests: Ray's own test cluster
(``ray.cluster_utils.Cluster``), a head with no CPU and no GPU to schedule (the driver
attaches to it, with the actors that take nothing: its journal collector, node samplers) and
two nodes with one CPU and one logical GPU each (Ray sets ``CUDA_VISIBLE_DEVICES`` for a task that asks for it; no real
GPU is needed). Every process binds to 127.0.0.1, Ray's usage reporting is off, and the
cluster is always shut down.

Ray's processes inherit this process's environment when the nodes start: PYTHONPATH names the
repository (so ``tests.fakes`` imports in a Ray worker), TMPDIR a directory the fixture removes
(the run directories of points on nodes that were killed)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NODE_CPUS = 1
NODE_GPUS = 1
OBJECT_STORE_BYTES = 100 * 1024 * 1024

ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # node address 127.0.0.1: loopback only
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
}


@dataclass
class LocalCluster:
    cluster: Any
    address: str
    tmp: Path

    def worker_nodes(self) -> list[Any]:
        return [n for n in self.cluster.list_all_nodes() if n is not self.cluster.head_node]

    def node(self, node_id: str) -> Any:
        return next(n for n in self.cluster.list_all_nodes() if n.node_id == node_id)

    def add_gpu_node(self) -> Any:
        node = self.cluster.add_node(
            num_cpus=NODE_CPUS, num_gpus=NODE_GPUS, object_store_memory=OBJECT_STORE_BYTES
        )
        self.cluster.wait_for_nodes()
        return node

    def kill(self, node: Any) -> None:
        """The node dies at once: raylet and workers killed, no graceful drain."""
        self.cluster.remove_node(node, allow_graceful=False)


@contextmanager
def local_cluster(gpu_nodes: int = 2) -> Iterator[LocalCluster]:
    from ray.cluster_utils import Cluster

    tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths
    old = {k: os.environ.get(k) for k in [*ENV, "PYTHONPATH", "TMPDIR"]}
    os.environ.update(ENV)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), old["PYTHONPATH"]) if p)
    (tmp / "tmp" / "ray").mkdir(parents=True)  # Ray keeps its address file there
    os.environ["TMPDIR"] = str(tmp / "tmp")
    import ray._private.ray_constants as ray_constants

    # read by Ray when it picks a node address; this process imported Ray before ENV was set
    loopback_before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    cluster = None
    try:
        started = time.monotonic()
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,  # the driver attaches here: points and workers go elsewhere
                "num_gpus": 0,
                "include_dashboard": False,
                "temp_dir": str(tmp / "r"),
                "object_store_memory": OBJECT_STORE_BYTES,
            },
        )
        lc = LocalCluster(cluster, cluster.address, tmp)
        for _ in range(gpu_nodes):
            cluster.add_node(
                num_cpus=NODE_CPUS, num_gpus=NODE_GPUS, object_store_memory=OBJECT_STORE_BYTES
            )
        cluster.wait_for_nodes()
        print(f"local Ray cluster up in {time.monotonic() - started:.1f} s at {lc.address}")
        yield lc
    finally:
        if cluster is not None:
            cluster.shutdown()
        ray_constants.ENABLE_RAY_CLUSTER = loopback_before
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)
