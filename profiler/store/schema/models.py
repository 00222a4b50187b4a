"""The models of the files: summary.json (``Summary``), manifest.json (``Manifest``, how a run
ended: ``Ended``), a sweep's index.json (``SweepIndex``) and the plan JSON (``Plan``). Only the
keys readers walk into are typed; the rest are kept as written (``base.Section``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from profiler.errors import StorageError
from profiler.store.schema.base import Document, Section
from profiler.store.schema.migrations import summary_v1

log = logging.getLogger(__name__)
__all__ = [
    "Attainment", "Available", "Client", "Distribution", "Ended", "Energy", "Gpu", "GpuScope",
    "IndexPoint", "Manifest", "Nodes", "Nvml", "Plan", "PrefixCache", "RayRecord", "RecordedSpec",
    "Requests", "ServerMetrics", "ServerRecord", "Sessions", "SloAttainment", "SpecEndpoint",
    "SpecServe", "SpecWorkload", "Summary", "SweepIndex", "Throughput", "Tokens", "TurnBucket",
    "Window", "slo_attainment_of",
]  # fmt: skip


# ---------------------------------------------------------------------------- summary.json
class Distribution(Section):
    """A latency (or other) distribution: ``profiler/sketches.QuantileSketch.to_dict``."""

    count: int | None = None
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None


class Requests(Section):
    total: int | None = None
    ok: int | None = None
    error: int | None = None
    timeout: int | None = None
    cancelled: int | None = None


class Throughput(Section):
    requests_per_s: float | None = None
    output_tokens_per_s: float | None = None
    total_tokens_per_s: float | None = None


class Window(Section):
    start: float | None = None  # run-clock seconds
    end: float | None = None
    seconds: float | None = None
    warmup_s: float | None = None
    cooldown_s: float | None = None
    excluded_requests: int | None = None


class Tokens(Section):
    prompt: int | None = None
    output: int | None = None
    prompt_mean_per_request: float | None = None
    output_mean_per_request: float | None = None


class Attainment(Section):
    fraction: float | None = None
    requests_per_s: float | None = None
    met: int | None = None
    meets_target: bool | None = None


class SloAttainment(Attainment):
    """``slo_attainment``: the headline figures, and both from the send and from the
    intended start (None where not measured)."""

    slo: dict[str, Any] | None = None  # the SloSpec dump: printed, never walked into
    headline: str | None = None
    from_send: Attainment | None = None
    from_intended: Attainment | None = None


class Available(Section):
    """A telemetry section: whether it has data, and why not."""

    available: bool | None = None
    reason: str | None = None


class GpuScope(Section):
    gpus: list[str] | None = None
    method: str | None = None
    reason: str | None = None


class Gpu(Available):
    count: int | None = None
    utilization_mean_ratio: float | None = None
    memory_used_peak_bytes: float | None = None
    power_mean_watts: float | None = None
    nvlink_tx_bytes: float | None = None
    nvlink_rx_bytes: float | None = None
    pcie_tx_bytes: float | None = None
    pcie_rx_bytes: float | None = None
    nvlink_tx_bytes_per_output_token: float | None = None
    nvlink_rx_bytes_per_output_token: float | None = None
    pcie_tx_bytes_per_output_token: float | None = None
    pcie_rx_bytes_per_output_token: float | None = None
    traffic_methods: list[str] | None = None
    process_memory_note: str | None = None
    per_gpu: dict[str, dict[str, Any]] | None = None  # one row of figures per GPU
    scope: GpuScope | None = None


class Energy(Available):
    method: str | None = None
    joules: float | None = None
    joules_per_output_token: float | None = None
    mean_power_from_energy_watts: float | None = None
    gpu_seconds: float | None = None
    per_gpu_joules: dict[str, float] | None = None
    scope: GpuScope | None = None


class Client(Section):
    saturated: bool | None = None
    reason: str | None = None


class ServerMetrics(Available):
    kv_cache_usage_mean_ratio: float | None = None
    kv_cache_usage_peak_ratio: float | None = None
    num_requests_running_mean: float | None = None
    num_requests_running_peak: float | None = None
    num_requests_waiting_mean: float | None = None
    num_requests_waiting_peak: float | None = None
    preemptions: float | None = None
    prefix_cache_hit_ratio: float | None = None


class Nodes(Available):
    node_count: int | None = None
    per_node: dict[str, dict[str, Any]] | None = None  # per node the same figures as the total


class PrefixCache(Available):
    hits: float | None = None
    queries: float | None = None
    hit_ratio: float | None = None


class TurnBucket(Section):
    ok: int | None = None
    ttft_s: Distribution | None = None
    tpot_s: Distribution | None = None
    e2e_s: Distribution | None = None
    prompt_tokens: Distribution | None = None
    cached_tokens: Distribution | None = None


class Sessions(Section):
    """``sessions`` (``analysis/turns``)."""

    sessions: int | None = None
    complete_sessions: int | None = None
    turns_per_session: Distribution | None = None
    duration_s: Distribution | None = None
    turn_buckets: list[str] | None = None
    by_turn: dict[str, TurnBucket] | None = None


class Summary(Document):
    """summary.json: ``analysis/summary_json.summarize_run``'s result."""

    FILE: ClassVar[str] = "summary.json"
    KIND: ClassVar[str] = "summary"

    run_id: str | None = None
    requests: Requests | None = None
    throughput: Throughput | None = None
    latency: dict[str, Distribution] | None = None
    dispatch_lag_s: Distribution | None = None
    queue_wait_s: Distribution | None = None
    tokens: Tokens | None = None
    error_rate: float | None = None
    window: Window | None = None
    slo_attainment: SloAttainment | None = None
    workload: str | None = None
    client: Client | None = None
    gpu: Gpu | None = None
    energy: Energy | None = None
    server: ServerMetrics | None = None
    nodes: Nodes | None = None
    sessions: Sessions | None = None
    prefix_cache: PrefixCache | None = None
    # the roofline's hardware/model/decode/prefill/run figures: one reader prints them whole
    roofline: dict[str, Any] | None = None

    @classmethod
    def of(cls, summary: dict[str, Any]) -> Summary:
        """A summary computed in memory (``summarize_run``) as the document."""
        return cls.parse(summary, "summary")

    def lat(self, metric: str) -> Distribution:
        """``latency.<metric>`` (empty when not measured)."""
        return (self.latency or {}).get(metric) or Distribution()

    def attainment(self) -> SloAttainment:
        return self.slo_attainment or SloAttainment()


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


class SpecServe(Section):
    """The resolved run spec's ``serve`` (``spec.ServeSpec``) as far as readers use it."""

    model: str | None = None
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    data_parallel_size: int | None = None
    enable_expert_parallel: bool | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None


class SpecEndpoint(Section):
    url: str | None = None
    model: str | None = None


class SpecWorkload(Section):
    name: str | None = None
    scenarios: list[dict[str, Any]] | None = None  # weight and n read; ScenarioSpec dumps


class RecordedSpec(Section):
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


class Nvml(Section):
    available: bool | None = None
    reason: str | None = None


class ServerRecord(Section):
    argv: list[str] | None = None
    url: str | None = None
    ready_s: float | None = None
    log: str | None = None


class RayRecord(Section):
    address: str | None = None
    nodes: list[dict[str, Any]] | None = None  # one row per node, printed by key


class Manifest(Document):
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


# ------------------------------------------------------------------------------ index.json
class IndexPoint(Section):
    """One point of a sweep: configuration, load, workload, run directory, status and key
    numbers (``sweep/index.key_numbers``; the median of its repeats with --repeat)."""

    id: str
    config_id: str | None = None
    config: dict[str, Any] | None = None  # tp, pp, dp, ep, max_num_seqs ...: read by key
    load: dict[str, Any] | None = None  # kind, value
    workload: str | None = None
    run_dir: str | None = None
    status: str | None = None
    dtypes: dict[str, str | None] | None = None
    model: str | None = None  # where an index records the point's model
    summary: dict[str, Any] | None = None  # flat key numbers: {name: number}


class SweepIndex(Document):
    """index.json of a sweep directory (``sweep/index`` keeps it while the sweep runs)."""

    FILE: ClassVar[str] = "index.json"
    KIND: ClassVar[str] = "index"

    configs: list[dict[str, Any]] = Field(default_factory=list)
    points: list[IndexPoint]
    searches: list[dict[str, Any]] = Field(default_factory=list)
    knees: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def _fix(cls) -> str:
        return "pass a directory written by infprof sweep"

    def done_points(self) -> list[IndexPoint]:
        return [p for p in self.points if p.status == "done" and p.run_dir]

    def config(self, config_id: str | None) -> dict[str, Any]:
        return next((c for c in self.configs if c.get("id") == config_id), {})


# -------------------------------------------------------------------------------- plan JSON
class Plan(Document):
    """The plan JSON: ``capacity/result.PlanResult`` dumped (``infprof plan --json``, a
    ``plan.json`` beside runs), or ``{"error": ...}`` when planning failed. Its sections are
    validated by PlanResult where it is built; here they are kept whole for the report."""

    FILE: ClassVar[str] = "plan.json"
    KIND: ClassVar[str] = "plan"
    CURRENT: ClassVar[int] = 2

    error: str | None = None
    configurations: list[dict[str, Any]] | None = None


def slo_attainment_of(summary: Summary | dict[str, Any]) -> dict[str, Any]:
    """summary.json's ``slo_attainment`` section from a summary of any version ({} without
    one), for readers that take it as a dict."""
    if isinstance(summary, Summary):
        return summary.attainment().to_dict()
    att = summary_v1(summary).get("slo_attainment")
    return att if isinstance(att, dict) else {}
