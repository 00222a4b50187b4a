"""One replica as the step model sees it: the model, the GPU and its fabrics, the parallel
layout, the serving engine's settings and the efficiency factors (``Deployment``), and the
memory it leaves for the KV cache (docs/capacity.md, "Memory and batch limits"). The step times are
profiler/capacity/perf.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from profiler.capacity.hardware import GpuSpec, Interconnect, load_hardware
from profiler.capacity.models import DTYPE_BYTES, ModelSpec

GIB = 1024**3
ACT_BYTES = 2.0  # activations travel in BF16


class Efficiency(BaseModel):
    """Achieved fractions of peak and fixed costs (an engine profile's, or calibrated from
    measurements). Fractions are bounded by physics: at most 1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mem_bw_fraction: float = Field(
        default=0.75, gt=0, le=1, description="eta_B: achieved HBM bandwidth / peak"
    )
    compute_fraction: float = Field(
        default=0.55, gt=0, le=1, description="eta_F: achieved GEMM FLOP/s / peak"
    )
    collective_latency_s: float = Field(
        default=6e-6, ge=0, description="alpha: software latency per collective"
    )
    step_overhead_s: float = Field(
        default=1.5e-3, ge=0, description="t_overhead: scheduling, sampling per step"
    )
    network_fraction: float = Field(
        default=0.8, gt=0, le=1, description="eta_N: achieved link bandwidth / line rate"
    )
    comm_overlap: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of communication time hidden behind compute (two-batch overlap)",
    )
    moe_gemm_fraction: float = Field(
        default=0.85,
        gt=0,
        le=1,
        description="eta_moe: grouped expert GEMMs' efficiency relative to dense GEMMs",
    )
    expert_skew: float = Field(
        default=1.3,
        ge=1,
        description="busiest EP rank's share of routed-expert work over the mean, beyond "
        "random fluctuation (EPLB-style balancing brings it near 1)",
    )

    @classmethod
    def ideal(cls) -> Efficiency:
        """100% of every peak, no overheads: the physical limit (roofline bounds)."""
        return cls(
            mem_bw_fraction=1.0,
            compute_fraction=1.0,
            collective_latency_s=0.0,
            step_overhead_s=0.0,
            network_fraction=1.0,
            comm_overlap=0.0,
            moe_gemm_fraction=1.0,
            expert_skew=1.0,
        )


def reserve_bytes(
    model: ModelSpec, tp: int = 1, max_num_batched_tokens: int = 8192, max_num_seqs: int = 256
) -> float:
    """Memory a server keeps beside weights and KV cache, per GPU: activation peak + CUDA
    context/graphs/NCCL buffers: 1 GiB + C (4h + 2 I/tp) b_a + min(S, 1024) V 4 / tp (FP32
    logits of up to 1,024 sequences, vLLM's largest default max_num_seqs), C =
    max_num_batched_tokens, S = max_num_seqs."""
    act = max_num_batched_tokens * (4 * model.hidden_size + 2 * model.intermediate_size / tp)
    logits = min(max_num_seqs, 1024) * model.vocab_size * 4.0 / tp
    return GIB + act * ACT_BYTES + logits


@dataclass(frozen=True)
class Layout:
    """Parallelism of one replica. ``dp`` is the number of attention data-parallel ranks inside
    the replica (vLLM --data-parallel-size with expert parallelism; 1 otherwise); ``ep`` is the
    expert-parallel group (tp * dp) or 1 when experts are tensor-parallel."""

    tp: int = 1
    pp: int = 1
    dp: int = 1
    ep: int = 1

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp

    def label(self) -> str:
        """'TP8', 'TP4xPP2', 'DP16xEP16' (TP1 left out when other axes are named)."""
        parts = [f"TP{self.tp}"] if self.tp > 1 or (self.pp == 1 and self.dp == 1) else []
        if self.pp > 1:
            parts.append(f"PP{self.pp}")
        if self.dp > 1:
            parts.append(f"DP{self.dp}")
        if self.ep > 1:
            parts.append(f"EP{self.ep}")
        return "x".join(parts)


def parse_layout(text: str) -> Layout:
    """'tp8', 'TP4xPP2', 'dp8xep8', 'tp2xdp4xep8' -> Layout (ep defaults to tp x dp when dp > 1
    is given with 'ep', else 1)."""
    import re

    from profiler.errors import SpecError

    parts = [p for p in re.split(r"[x,*\s]+", text.strip().lower()) if p]
    vals = {"tp": 1, "pp": 1, "dp": 1, "ep": 0}
    for p in parts:
        m = re.fullmatch(r"(tp|pp|dp|ep)(\d+)", p)
        if not m or int(m.group(2)) < 1:
            raise SpecError(
                f"layout '{text}': cannot read '{p}'", "write e.g. tp8, tp4xpp2 or dp8xep8"
            )
        vals[m.group(1)] = int(m.group(2))
    ep = vals["ep"] or 1
    if ep > 1 and ep != vals["tp"] * vals["dp"]:
        raise SpecError(
            f"layout '{text}': EP{ep} must equal TP x DP = {vals['tp'] * vals['dp']}",
            "expert parallelism spans the replica's attention ranks: e.g. dp8xep8, tp2xdp4xep8",
        )
    return Layout(tp=vals["tp"], pp=vals["pp"], dp=vals["dp"], ep=ep)


MemoryMode = Literal["total", "free"]


def default_kv_dtype(weight_dtype: str) -> str:
    """The KV cache's precision when none is given: the activations' (FP32 for an FP32 model,
    else BF16)."""
    return "fp32" if weight_dtype == "fp32" else "bf16"


@dataclass(frozen=True)
class Deployment:
    model: ModelSpec
    gpu: GpuSpec
    layout: Layout
    scale_up: Interconnect
    scale_out: Interconnect
    gpus_per_node: int
    eff: Efficiency = field(default_factory=Efficiency)
    weight_dtype: str = "bf16"
    kv_dtype: str = "bf16"
    gpu_memory_utilization: float = 0.92
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    memory_mode: MemoryMode = "total"  # vLLM/SGLang: share of all memory; TRT-LLM: of the free
    domain_gpus: int | None = None  # GPUs per scale-up domain (None: the GPU's)
    redundant_experts: int = 0  # EPLB replicas beside the E routed experts (spread over EP)
    ep_dedup: bool = False  # dispatch sends a token once per remote domain (DeepEP normal mode)

    @classmethod
    def on(
        cls,
        model: ModelSpec,
        gpu: GpuSpec,
        layout: Layout,
        *,
        eff: Efficiency,
        weight_dtype: str,
        kv_dtype: str | None = None,
        scale_up: Interconnect | None = None,
        scale_out: Interconnect | None = None,
        gpus_per_node: int | None = None,
        **settings: Any,
    ) -> Deployment:
        """``layout`` of ``model`` on ``gpu``: over the GPU's default scale-up and scale-out
        fabrics (profiler/data/hardware.yaml) and a whole node of GPUs unless given, the KV cache in ``kv_dtype`` (default:
        ``default_kv_dtype``); ``settings`` are the other fields (engine limits, EP options)."""
        hw = load_hardware()
        return cls(
            model=model,
            gpu=gpu,
            layout=layout,
            scale_up=scale_up or hw.interconnect(gpu.default_scale_up()),
            scale_out=scale_out or hw.interconnect(gpu.default_scale_out()),
            gpus_per_node=gpus_per_node or gpu.gpus_per_node,
            eff=eff,
            weight_dtype=weight_dtype,
            kv_dtype=kv_dtype or default_kv_dtype(weight_dtype),
            **settings,
        )

    def with_(self, **kw: Any) -> Deployment:
        return replace(self, **kw)

    @property
    def domain(self) -> int:
        if self.domain_gpus:
            return self.domain_gpus
        return self.gpu.scale_up_gpus or self.gpus_per_node

    @property
    def spans_nodes(self) -> bool:
        """Whether a replica reaches past one scale-up domain (its traffic then uses NICs)."""
        return self.layout.gpus > self.domain

    @property
    def w_bytes(self) -> float:
        return DTYPE_BYTES[self.weight_dtype]

    # ------------------------------------------------------------ memory
    def weight_bytes_per_gpu(self) -> float:
        m, lay = self.model, self.layout
        if lay.ep > 1:
            extra = 1.0 + self.redundant_experts / max(m.n_routed_experts, 1)
            stored = m.nonrouted_params / lay.tp + m.routed_params * extra / lay.ep
        else:
            stored = m.params_total / lay.tp
        return stored / lay.pp * self.w_bytes

    def reserve_bytes(self) -> float:
        return reserve_bytes(
            self.model, self.layout.tp, self.max_num_batched_tokens, self.max_num_seqs
        )

    def kv_free_bytes(self) -> float:
        """Memory one GPU gives the KV cache: u M - W - reserve (vLLM/SGLang) or
        u (M - W - reserve) (TRT-LLM's free-memory fraction)."""
        mem = self.gpu.memory_bytes
        rest = self.weight_bytes_per_gpu() + self.reserve_bytes()
        free = (
            self.gpu_memory_utilization * mem - rest
            if self.memory_mode == "total"
            else self.gpu_memory_utilization * (mem - rest)
        )
        return max(free, 0.0)

    def kv_bytes_per_token_per_gpu(self) -> float:
        m, lay = self.model, self.layout
        return m.kv_bytes_per_token(self.kv_dtype, tp=lay.tp, layers=None) / lay.pp

    def kv_bytes_per_sequence(self, context: Any) -> Any:
        """KV bytes one sequence of ``context`` tokens holds on one GPU of its attention rank
        (local-attention layers capped at their window)."""
        m, lay = self.model, self.layout
        return m.kv_bytes_per_sequence(context, self.kv_dtype, tp=lay.tp) / lay.pp

    def kv_capacity_tokens(self) -> float:
        """Tokens of full-attention KV cache one attention rank holds."""
        return self.kv_free_bytes() / self.kv_bytes_per_token_per_gpu()

    # ------------------------------------------------------------ links
    def _link(self, inter: bool) -> tuple[float, float]:
        net = self.scale_out if inter else self.scale_up
        return net.bytes_per_s * self.eff.network_fraction, net.latency_s
