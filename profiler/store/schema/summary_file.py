"""summary.json as a typed model (``Summary``) and the sections readers walk into; the rest of
the file is kept as written (``base.Part``)."""

from __future__ import annotations

from typing import Any, ClassVar

from profiler.store.schema.base import Artifact, Part
from profiler.store.schema.migrations import summary_v1

__all__ = [
    "Attainment", "Available", "Client", "Distribution", "Energy", "Gpu", "GpuScope", "Nodes",
    "PrefixCache", "Requests", "ServerMetrics", "Sessions", "SloAttainment", "Summary",
    "Throughput", "Tokens", "TurnBucket", "Window", "slo_attainment_of",
]  # fmt: skip


# ---------------------------------------------------------------------------- summary.json
class Distribution(Part):
    """A latency (or other) distribution: ``profiler/sketches.QuantileSketch.to_dict``."""

    count: int | None = None
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None


class Requests(Part):
    total: int | None = None
    ok: int | None = None
    error: int | None = None
    timeout: int | None = None
    cancelled: int | None = None


class Throughput(Part):
    requests_per_s: float | None = None
    output_tokens_per_s: float | None = None
    total_tokens_per_s: float | None = None


class Window(Part):
    start: float | None = None  # run-clock seconds
    end: float | None = None
    seconds: float | None = None
    warmup_s: float | None = None
    cooldown_s: float | None = None
    excluded_requests: int | None = None


class Tokens(Part):
    prompt: int | None = None
    output: int | None = None
    prompt_mean_per_request: float | None = None
    output_mean_per_request: float | None = None


class Attainment(Part):
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


class Available(Part):
    """A telemetry section: whether it has data, and why not."""

    available: bool | None = None
    reason: str | None = None


class GpuScope(Part):
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


class Client(Part):
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


class TurnBucket(Part):
    ok: int | None = None
    ttft_s: Distribution | None = None
    tpot_s: Distribution | None = None
    e2e_s: Distribution | None = None
    prompt_tokens: Distribution | None = None
    cached_tokens: Distribution | None = None


class Sessions(Part):
    """``sessions`` (``analysis/turns``)."""

    sessions: int | None = None
    complete_sessions: int | None = None
    turns_per_session: Distribution | None = None
    duration_s: Distribution | None = None
    turn_buckets: list[str] | None = None
    by_turn: dict[str, TurnBucket] | None = None


class Summary(Artifact):
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


def slo_attainment_of(summary: Summary | dict[str, Any]) -> dict[str, Any]:
    """summary.json's ``slo_attainment`` section from a summary of any version ({} without
    one), for readers that take it as a dict."""
    if isinstance(summary, Summary):
        return summary.attainment().to_dict()
    att = summary_v1(summary).get("slo_attainment")
    return att if isinstance(att, dict) else {}
