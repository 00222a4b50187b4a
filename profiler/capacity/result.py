"""Pydantic request and result models of the planner (``PlanResult.model_dump(mode="json")``
is exactly what ``infprof plan --json`` prints)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from profiler.capacity.calibrate import Calibration
from profiler.capacity.deployment import Efficiency
from profiler.capacity.measured import MeasuredPoint
from profiler.capacity.models import Dtype, KvDtype
from profiler.spec import SloSpec

SCHEMA_VERSION = 2  # 2: demand_/capacity_tokens_per_s_per_gpu, engine, disaggregated
Source = Literal["measured", "modelled"]
Bottleneck = Literal["compute", "memory_bandwidth", "kv_capacity", "network", "client"]
DEFAULT_OUTPUT_LENS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
DEFAULT_NS = (1, 2, 4, 8, 16)
DEFAULT_RATE_PER_USER_PER_S = 1 / 60


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanRequest(_Strict):
    """What to size: a model, candidate GPUs, a request shape, a load and SLOs."""

    model: str
    gpus: list[str] = Field(default_factory=lambda: ["h100"], min_length=1)
    workload: str | None = None
    input_len: float | None = Field(default=None, ge=1)
    output_len: float | None = Field(default=None, ge=1)
    n: float | None = Field(default=None, ge=1, le=64)
    cached_prefix_len: float | None = Field(default=None, ge=0)
    cache_hit_ratio: float | None = Field(default=None, ge=0, le=1)  # capacity/sessions.py
    cache_hit_from: Path | None = None  # a run directory whose measured hit ratio to use
    target_rps: float | None = Field(default=None, gt=0)
    users: float | None = Field(default=None, gt=0)
    rate_per_user_per_s: float | None = Field(default=None, gt=0)
    peak_factor: float = Field(default=1.0, ge=1)
    slo: SloSpec = Field(default_factory=SloSpec)
    calibration: Path | None = None
    calibration_gpu: str | None = None
    calibration_model: str | None = Field(
        default=None, description="model of a calibration file that does not name a known one"
    )
    calibration_layout: str | None = Field(
        default=None, description="layout of a calibration file that does not record one (tp2)"
    )
    measured_points: list[MeasuredPoint] = Field(default_factory=list)
    engine: str | None = Field(default=None, description="vllm (default), sglang, tensorrt-llm")
    layouts: list[str] = Field(
        default_factory=list, description="only these layouts (tp8, tp4xpp2, dp8xep8, ...)"
    )
    concurrency: float | None = Field(
        default=None, gt=0, description="streams in flight per replica (a closed loop)"
    )
    disaggregated: bool = False
    eplb: bool | None = Field(default=None, description="expert load balancing (EPLB)")
    redundant_experts: int | None = Field(default=None, ge=0)
    comm_overlap: float | None = Field(default=None, ge=0, le=1)
    max_gpus_per_node: int | None = Field(default=None, ge=1)
    max_gpus_per_replica: int = Field(default=128, ge=1)
    interconnect: list[str] = Field(default_factory=list)
    prices: dict[str, float] = Field(default_factory=dict)
    weight_dtype: Dtype | None = None
    kv_dtype: KvDtype | None = None
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    max_num_seqs: int | None = Field(default=None, ge=1)
    max_num_batched_tokens: int | None = Field(default=None, ge=64)
    efficiency: Efficiency | None = None
    scaling: bool = True
    scaling_output_lens: list[int] = Field(default_factory=lambda: list(DEFAULT_OUTPUT_LENS))
    scaling_ns: list[int] = Field(default_factory=lambda: list(DEFAULT_NS))

    @model_validator(mode="after")
    def _check(self) -> PlanRequest:
        if self.target_rps is not None and self.users is not None:
            raise ValueError("give either target_rps or users (with rate_per_user_per_s), not both")
        if self.users is not None and self.rate_per_user_per_s is None:
            raise ValueError("users needs rate_per_user_per_s")
        return self


class InterconnectCheck(_Strict):
    interconnect: str
    label: str
    kind: Literal["scale_up", "scale_out"]
    gb_per_s: float = Field(description="line rate per GPU per direction")
    used: bool = Field(description="whether this configuration moves data over this kind of fabric")
    tpot_s: float | None = Field(
        description="at the target load with the same replicas when this fabric carries it; "
        "otherwise at the base configuration's batch"
    )
    ttft_s: float | None
    meets_slo: bool = Field(description="the same replica count meets the SLOs at the target load")
    max_rps_per_replica: float | None
    gpus_total: int | None = Field(description="GPUs needed for the target with this fabric")
    source: Source = "modelled"


class StepBreakdown(_Strict):
    """Seconds of one decode step at the target load, by what bounds each part."""

    memory_s: float
    compute_s: float
    network_s: float
    overhead_s: float


class ConfigResult(_Strict):
    gpu: str
    gpu_name: str
    parallelism: str
    tp: int
    pp: int
    dp: int = Field(description="data-parallel degree in total: gpus_total = tp * pp * dp")
    ep: int
    attention_dp: int = Field(description="attention data-parallel ranks inside one replica")
    gpus_per_replica: int
    replicas: int
    gpus_total: int
    nodes: int
    gpus_per_node: int
    scale_up: str
    scale_out: str
    max_rps_per_replica: float
    rps_per_replica: float
    batch_per_replica: float = Field(description="decoding streams per replica at the target load")
    max_batch_per_replica: float
    demand_tokens_per_s_per_gpu: float | None = Field(
        description="the target load's output tokens/s divided by the GPUs deployed (None "
        "without a target load)"
    )
    capacity_tokens_per_s_per_gpu: float = Field(
        description="output tokens/s per GPU one replica sustains at its SLO capacity"
    )
    tokens_per_s_per_user: float
    ttft_s: float
    tpot_s: float
    e2e_s: float
    cost_per_hour: float
    cost_per_million_output_tokens: float
    joules_per_output_token: float
    hbm_utilization: float = Field(
        description="HBM bytes per step / step time / peak bandwidth at capacity (<= 1)"
    )
    compute_utilization: float = Field(
        description="FLOPs per step / step time / peak FLOP/s at capacity (<= 1)"
    )
    weights_gb_per_gpu: float
    kv_cache_gb_per_gpu: float
    kv_capacity_tokens_per_replica: float
    step: StepBreakdown
    network_bytes_per_gpu_per_step: dict[str, float]
    required_scale_up_gb_per_s: float | None
    required_scale_out_gb_per_s: float | None
    interconnects: list[InterconnectCheck]
    bottleneck: Bottleneck
    limit: str = Field(
        description="what capped the batch: slo_tpot, slo_ttft, slo_e2e, prefill, kv_capacity, max_num_seqs, ..."
    )
    meets_slo: bool
    best: bool = False
    best_for_gpu: bool = False
    source: Source
    calibrated: bool
    sources: dict[str, Source]


class Rejected(_Strict):
    gpu: str
    parallelism: str
    gpus_per_replica: int
    reason: str


class ScalingRow(_Strict):
    gpu: str
    output_len: int
    n: int
    gpus_per_1k_users: float | None
    gpus_per_rps: float | None
    parallelism: str | None
    tpot_s: float | None
    bottleneck: str | None
    source: Source


class TestTimeScaling(_Strict):
    __test__ = False  # not a pytest class

    rate_per_user_per_s: float
    assumption: str
    input_len: float
    by_output_len: list[ScalingRow]
    by_n: list[ScalingRow]


class PoolResult(_Strict):
    """One pool of a disaggregated plan (prefill or decode)."""

    role: Literal["prefill", "decode"]
    parallelism: str
    tp: int
    dp: int
    ep: int
    gpus_per_replica: int
    replicas: int
    gpus_total: int
    max_rps_per_replica: float
    batch: float = Field(description="decode: streams per rank; prefill: tokens per chunk")
    tpot_s: float | None
    ttft_s: float | None
    capacity_tokens_per_s_per_gpu: float = Field(
        description="decode: output tokens/s per decode GPU; prefill: prompt tokens/s per "
        "prefill GPU (uncached)"
    )
    limit: str
    bottleneck: str


class KvTransfer(_Strict):
    bytes_per_request: float = Field(description="the prompt's KV (all layers, all heads)")
    interconnect: str
    label: str
    seconds: float = Field(description="per request, added to TTFT")
    gb_per_s_per_prefill_gpu: float = Field(
        description="average send rate each prefill GPU needs at the target load (capacity "
        "without one)"
    )


class DisaggregatedResult(_Strict):
    gpu: str
    prefill: PoolResult
    decode: PoolResult
    kv_transfer: KvTransfer
    gpus_total: int
    decode_to_prefill_ratio: float = Field(description="decode GPUs per prefill GPU")
    capacity_tokens_per_s_per_gpu: float = Field(
        description="output tokens/s per GPU of both pools together at their capacities, in "
        "the ratio the load needs"
    )
    demand_tokens_per_s_per_gpu: float | None
    cost_per_hour: float
    aggregated_gpus_total: int | None = Field(
        description="GPUs of the cheapest aggregated configuration on this GPU, for comparison"
    )
    aggregated_capacity_tokens_per_s_per_gpu: float | None
    meets_slo: bool
    source: Source = "modelled"


class PlanResult(_Strict):
    schema_version: int = SCHEMA_VERSION
    engine: str = "vllm"
    model: dict[str, Any]
    workload: dict[str, Any]
    load: dict[str, Any]
    slo: SloSpec
    gpus: list[str]
    prices: dict[str, float]
    interconnect_overrides: list[str]
    efficiency: dict[str, Efficiency]
    calibration: list[Calibration]
    configurations: list[ConfigResult]
    best: ConfigResult | None
    rejected: list[Rejected]
    test_time_scaling: TestTimeScaling | None
    disaggregated: list[DisaggregatedResult] | None = None
    notes: list[str]
    sessions: dict[str, Any] | None = None  # session workloads (capacity/sessions.py)
