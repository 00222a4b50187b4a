"""vLLM on the Ray cluster a user already runs: check a layout's GPUs fit before anything is
launched, and launch vLLM across the cluster's nodes with vLLM's own Ray executor backend (as
vLLM's multi-node docs do). Joining the cluster and listing its nodes is ``profiler.cluster``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from profiler.cluster import NodeInfo, RayClusterError, alive_nodes, connect
from profiler.spec import ServeSpec

EXECUTORS = ("local", "ray")
RAY_BACKEND_FLAG = "--distributed-executor-backend"


def missing_gpus(
    resources: Mapping[str, float], nodes: list[NodeInfo], need: int, layout: str
) -> str | None:
    """One line naming what the cluster lacks for ``need`` GPUs (``layout`` says why it needs
    them), or None when it has them. ``resources`` is ``ray.cluster_resources()``."""
    have = float(resources.get("GPU", 0.0))
    if have >= need:
        return None
    per_node = ", ".join(f"{n.name} {n.gpus:g}" for n in nodes if n.gpus) or "none on any node"
    return (
        f"{layout} needs {need} GPUs but the Ray cluster has {have:g} ({per_node}): "
        f"{need - have:g} GPU{'' if need - have == 1 else 's'} missing"
    )


def check_gpus(ray: Any, need: int, layout: str) -> list[NodeInfo]:
    """Raise RayClusterError in one line when the cluster has fewer than ``need`` GPUs."""
    nodes = alive_nodes(ray)
    missing = missing_gpus(ray.cluster_resources(), nodes, need, layout)
    if missing:
        raise RayClusterError(
            missing,
            "add GPU nodes with `ray start --address HEAD:6379 --num-gpus N`, or lower --tp/--pp",
        )
    return nodes


def gpus_needed(serve: ServeSpec) -> int:
    return serve.tensor_parallel_size * serve.pipeline_parallel_size * serve.data_parallel_size


def layout_label(serve: ServeSpec) -> str:
    return f"--tp {serve.tensor_parallel_size} --pp {serve.pipeline_parallel_size}" + (
        f" --dp {serve.data_parallel_size}" if serve.data_parallel_size > 1 else ""
    )


def ray_serve_spec(serve: ServeSpec, address: str | None) -> ServeSpec:
    """The server launched with vLLM's Ray executor backend, its workers spread over the
    cluster's nodes: ``--distributed-executor-backend ray`` (unless the user chose a backend)
    and ``RAY_ADDRESS`` so vLLM joins this cluster. Not pinned to this host's cores: Ray places
    the workers."""
    args = list(serve.extra_args)
    if not any(a == RAY_BACKEND_FLAG or a.startswith(RAY_BACKEND_FLAG + "=") for a in args):
        args += [RAY_BACKEND_FLAG, "ray"]
    env = dict(serve.env)
    if address:
        env.setdefault("RAY_ADDRESS", address)
    return serve.model_copy(update={"extra_args": args, "env": env, "cpus": None})


def prepare_run_server(serve: ServeSpec, address: str | None) -> ServeSpec:
    """``infprof run --executor ray`` with a launched server: join the cluster, check it holds
    the layout's GPUs (one line naming what is missing), and return the Ray-backed spec."""
    ray = connect(address)
    check_gpus(ray, gpus_needed(serve), layout_label(serve))
    joined = address or os.environ.get("RAY_ADDRESS")
    if not joined or joined == "auto":  # vLLM joins exactly the cluster checked
        try:
            joined = str(ray.get_runtime_context().gcs_address)
        except Exception:  # an older Ray: vLLM finds the node's cluster itself
            joined = None
    return ray_serve_spec(serve, joined)
