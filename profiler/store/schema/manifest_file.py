"""manifest.json as a typed model (``Manifest``; how a run ended: ``Ended``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict

from profiler.errors import StorageError
from profiler.store.schema.base import Artifact, Part

log = logging.getLogger(__name__)
__all__ = [
    "Ended", "Manifest", "Nvml", "RayRecord", "RecordedSpec", "ServerRecord", "SpecEndpoint",
    "SpecServe", "SpecWorkload",
]  # fmt: skip


# --------------------------------------------------------------------------- manifest.json
# How a run ended (manifest.json ``ended``): ``running`` until it does; the load's own
# endings (load/driver, load/guard, load/workers, load/ray_workers); ``failed`` for an
# InfprofError before the load; ``error_rate`` for a completed run over --max-error-rate.
Ended = Literal[
    "running",
    "completed",
    "interrupted",
    "failed",
    "failing",
    "error_rate",
    "server_died",
    "endpoint_lost",
    "storage_error",
    "worker_lost",
]


class SpecServe(Part):
    """The resolved run spec's ``serve`` (``spec.ServeSpec``) as far as readers use it."""

    model: str | None = None
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    data_parallel_size: int | None = None
    enable_expert_parallel: bool | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None


class SpecEndpoint(Part):
    url: str | None = None
    model: str | None = None


class SpecWorkload(Part):
    name: str | None = None
    scenarios: list[dict[str, Any]] | None = None  # weight and n read; ScenarioSpec dumps


class RecordedSpec(Part):
    """manifest.json ``spec``: the resolved ``spec.RunSpec`` dump (older runs' specs are kept
    as they are, so it is not validated as today's RunSpec)."""

    serve: SpecServe | None = None
    endpoint: SpecEndpoint | None = None
    workload: SpecWorkload | None = None
    arrival: dict[str, Any] | None = None  # ArrivalSpec dump: kind, rate, concurrency, users
    slo: dict[str, Any] | None = None
    prometheus_url: str | None = None
    warmup_s: float | None = None
    cooldown_s: float | None = None


class Nvml(Part):
    available: bool | None = None
    reason: str | None = None


class ServerRecord(Part):
    argv: list[str] | None = None
    url: str | None = None
    ready_s: float | None = None
    log: str | None = None


class RayRecord(Part):
    address: str | None = None
    nodes: list[dict[str, Any]] | None = None  # one row per node, printed by key


class Manifest(Artifact):
    """manifest.json: written when the run starts, updated as it goes, ``ended`` at the end.
    The runner changes it through the methods below and saves it with ``save``. The keys no
    reader walks into (tool, clock, started_at, ended_at, default_model, topology,
    server_capabilities, cpus, requests_sent/recorded, repeat) are kept as written, untyped."""

    FILE: ClassVar[str] = "manifest.json"
    KIND: ClassVar[str] = "manifest"
    model_config = ConfigDict(extra="allow", validate_assignment=True)

    run_id: str | None = None
    spec: RecordedSpec | None = None
    host: dict[str, Any] | None = None  # printed whole
    versions: dict[str, str | None] | None = None  # printed whole
    ended: Ended = "running"
    end_reason: str | None = None
    nvml: Nvml | None = None
    gpus: list[dict[str, Any]] | None = None  # NVML inventory rows, printed by key
    gpu_scope: dict[str, Any] | None = None
    server: ServerRecord | None = None
    model: str | None = None
    metrics_url: str | None = None  # the live Prometheus export (--metrics-port)
    ray: RayRecord | None = None  # the cluster's nodes (--executor ray)
    workers: list[dict[str, Any]] | None = None  # remote load workers' clocks (load/ray_workers)

    def set(self, **fields: Any) -> None:
        """Change top-level keys (validated as on load)."""
        for k, v in fields.items():
            setattr(self, k, v)

    def record_ray(self, address: str | None, nodes: list[dict[str, Any]]) -> None:
        """The Ray cluster the run sampled (``telemetry/ray_nodes``): its address and per node
        name, ids, GPUs, CPUs, NVML state and clock offset."""
        self.set(ray=RayRecord(address=address, nodes=nodes))

    def record_inventory(self, inv: dict[str, Any]) -> None:
        """The NVML inventory (``telemetry/inventory.collect``): availability, GPUs, topology
        and driver versions."""
        self.set(
            nvml=Nvml(available=inv.get("available", False), reason=inv.get("reason")),
            gpus=inv.get("gpus", []),
            topology=inv.get("topology"),
            versions={
                **(self.versions or {}),
                "driver": inv.get("driver_version"),
                "cuda_driver": inv.get("cuda_driver_version"),
            },
        )

    def end(self, ended: Ended, reason: str | None, ended_at: float, **counts: Any) -> None:
        """How the run ended (``ended`` one of ``Ended``)."""
        self.set(ended=ended, end_reason=reason, ended_at=ended_at, **counts)

    def save_quietly(self, path: Path) -> bool:
        """``save``, a failure logged instead of raised (a run already failing for another
        reason still raises that one); whether it was saved."""
        try:
            self.save(path)
        except StorageError:
            log.warning("could not update %s", path)
            return False
        return True

    def scope_gpus(self) -> list[str] | None:
        return (self.gpu_scope or {}).get("gpus")

    def recorded_spec(self) -> RecordedSpec:
        return self.spec or RecordedSpec()
