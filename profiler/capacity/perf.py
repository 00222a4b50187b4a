"""Roofline step-time model for one replica: prefill and decode forward passes, per GPU.

For one pipeline stage on one GPU (symbols as in docs/capacity.md):
    t_linear = max(W_touched / (eta_B BW), F_linear / (eta_F F_peak(w)))
    t_attn   = max(KV_read / (eta_B BW),  F_attn / (eta_F F_peak(bf16)))
    t_comm   = TP all-reduces + EP all-to-alls (alpha + bytes / (eta_N BW_link) each)
    t_stage  = t_linear + t_attn + t_comm
A decode step with PP splits the batch into pp micro-batches:
    TPOT = pp t_stage(B/pp) + (pp-1) t_p2p + t_overhead
Communication is not overlapped with compute (vLLM's default). Every function works on numpy
arrays of batch sizes so a capacity search is one vectorised call.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from profiler.capacity import network
from profiler.capacity.hardware import GpuSpec, Interconnect
from profiler.capacity.models import DTYPE_BYTES, ModelSpec

GIB = 1024**3
ACT_BYTES = 2.0  # activations travel in BF16


class Efficiency(BaseModel):
    """Achieved fractions of peak and fixed costs; calibrated from measurements when given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mem_bw_fraction: float = Field(
        default=0.75, gt=0, le=1.5, description="eta_B: achieved HBM bandwidth / peak"
    )
    compute_fraction: float = Field(
        default=0.55, gt=0, le=1.5, description="eta_F: achieved GEMM FLOP/s / peak"
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

    def with_(self, **kw: Any) -> Deployment:
        return replace(self, **kw)

    @property
    def spans_nodes(self) -> bool:
        return self.layout.gpus > self.gpus_per_node

    @property
    def w_bytes(self) -> float:
        return DTYPE_BYTES[self.weight_dtype]

    # ------------------------------------------------------------ memory
    def weight_bytes_per_gpu(self) -> float:
        m, lay = self.model, self.layout
        if lay.ep > 1:
            stored = m.nonrouted_params / lay.tp + m.routed_params / lay.ep
        else:
            stored = m.params_total / lay.tp
        return stored / lay.pp * self.w_bytes

    def reserve_bytes(self) -> float:
        """Activation peak + CUDA context/graphs/NCCL buffers: 1 GiB + C (4h + 2 I/tp) b_a +
        max_num_seqs V 4 / tp (FP32 logits)."""
        m, tp = self.model, self.layout.tp
        act = (
            self.max_num_batched_tokens
            * (4 * m.hidden_size + 2 * m.intermediate_size / tp)
            * ACT_BYTES
        )
        logits = self.max_num_seqs * m.vocab_size * 4.0 / tp
        return GIB + act + logits

    def kv_bytes_per_token_per_gpu(self) -> float:
        m, lay = self.model, self.layout
        return m.kv_bytes_per_token(self.kv_dtype, tp=lay.tp, layers=None) / lay.pp

    def kv_capacity_tokens(self) -> float:
        """Tokens of KV cache one attention rank holds: (M u - W - reserve) / KV_tok,gpu."""
        free = (
            self.gpu.memory_bytes * self.gpu_memory_utilization
            - self.weight_bytes_per_gpu()
            - self.reserve_bytes()
        )
        return max(free, 0.0) / self.kv_bytes_per_token_per_gpu()

    # ------------------------------------------------------------ links
    def _link(self, inter: bool) -> tuple[float, float]:
        net = self.scale_out if inter else self.scale_up
        return net.bytes_per_s * self.eff.network_fraction, net.latency_s


@dataclass
class StepCost:
    """One forward pass through the whole replica (all stages), per GPU; arrays over batch."""

    t_s: Any  # step seconds (TPOT for a decode step)
    mem_s: Any  # time of memory-bound parts
    compute_s: Any  # time of compute-bound parts
    comm_s: Any  # communication (bandwidth + latency)
    overhead_s: float
    # calibration design: t = xb/eta_B + xf/eta_F + n_coll*alpha + comm_fixed + t_overhead
    xb: Any
    xf: Any
    n_coll: Any
    comm_fixed_s: Any
    scale_up_bytes: Any  # per GPU per step
    scale_out_bytes: Any
    weight_bytes: Any
    kv_bytes: Any
    flops: Any

    def bottleneck(self) -> Any:
        """'memory_bandwidth' | 'compute' | 'network' per element (largest share of the step)."""
        stack = np.stack(np.broadcast_arrays(self.mem_s, self.compute_s, self.comm_s))
        names = np.array(["memory_bandwidth", "compute", "network"])
        return names[np.argmax(stack, axis=0)]


def _stage(dep: Deployment, b_dec: Any, ctx_dec: Any, p_tok: Any, ctx_pre: Any) -> dict[str, Any]:
    """One pipeline stage on one GPU for a micro-batch of ``b_dec`` decode tokens (mean context
    ``ctx_dec``) and ``p_tok`` prefill tokens (mean attention context ``ctx_pre``), per
    attention rank."""
    m, g, lay, eff = dep.model, dep.gpu, dep.layout, dep.eff
    tp, pp, ep = lay.tp, lay.pp, lay.ep
    b_dec = np.asarray(b_dec, dtype=float)
    p_tok = np.asarray(p_tok, dtype=float)
    tokens = b_dec + p_tok  # per attention rank (a TP group)
    tokens_all = tokens * lay.dp  # entering an MoE layer of the EP group
    L_s = m.num_hidden_layers / pp
    Lm_s = m.num_moe_layers / pp
    wb = dep.w_bytes

    # ---- linear layers: weights touched and FLOPs
    body = m.body_params / (tp * pp)
    head = m.head_params / (tp * pp)  # last stage only; averaged over stages
    w_touched = (body + head) * wb
    lin_flops = 2.0 * (
        body * tokens + head * b_dec
    )  # LM head: decode tokens (+ last prompt token, ignored)
    if m.is_moe:
        e_layer = m.expert_params
        if ep > 1:
            local = m.n_routed_experts / ep
            hit = local * (1.0 - (1.0 - m.num_experts_per_tok / m.n_routed_experts) ** tokens_all)
            w_touched = w_touched + hit * e_layer * Lm_s * wb
            lin_flops = lin_flops + 2.0 * m.num_experts_per_tok * e_layer * Lm_s * tokens_all / ep
        else:
            hit = m.experts_touched(tokens)
            w_touched = w_touched + hit * e_layer * Lm_s * wb / tp
            lin_flops = lin_flops + 2.0 * m.num_experts_per_tok * e_layer * Lm_s * tokens / tp
    f_lin_peak = g.peak_flops(dep.weight_dtype)

    # ---- attention: KV reads (decode) and writes (all new tokens), FLOPs
    kv_tok = dep.kv_bytes_per_token_per_gpu()
    kv_bytes = b_dec * ctx_dec * kv_tok + tokens * kv_tok
    attn_flops = (
        b_dec * ctx_dec * m.attn_flops_per_token_per_ctx("decode")
        + p_tok * ctx_pre * m.attn_flops_per_token_per_ctx("prefill")
    ) / (tp * pp)
    f_attn_peak = g.peak_flops("bf16")

    bw = g.hbm_bytes_per_s
    lin_mem, lin_cmp = w_touched / bw, lin_flops / f_lin_peak
    att_mem, att_cmp = kv_bytes / bw, attn_flops / f_attn_peak
    lin_is_mem = lin_mem / eff.mem_bw_fraction >= lin_cmp / eff.compute_fraction
    att_is_mem = att_mem / eff.mem_bw_fraction >= att_cmp / eff.compute_fraction
    xb = np.where(lin_is_mem, lin_mem, 0.0) + np.where(att_is_mem, att_mem, 0.0)
    xf = np.where(lin_is_mem, 0.0, lin_cmp) + np.where(att_is_mem, 0.0, att_cmp)

    # ---- communication
    up_bw, up_lat = dep._link(inter=False)
    n_coll = np.zeros_like(tokens)
    comm_fixed = np.zeros_like(tokens)
    up_bytes = np.zeros_like(tokens)
    out_bytes = np.zeros_like(tokens)
    if tp > 1:  # 2 all-reduces per layer of T h b_a (TP stays inside a node)
        n = 2.0 * L_s
        per = network.allreduce_bytes_per_gpu(tokens * m.hidden_size * ACT_BYTES, tp)
        up_bytes = up_bytes + n * per
        comm_fixed = comm_fixed + n * (per / up_bw + up_lat)
        n_coll = n_coll + n
    if ep > 1 and Lm_s > 0:  # dispatch + combine per MoE layer
        disp = 1.0 if dep.weight_dtype == "fp8" else ACT_BYTES
        per = network.alltoall_bytes_per_gpu(
            tokens / tp, m.num_experts_per_tok, m.hidden_size, disp, ACT_BYTES, ep
        )
        frac_out = network.inter_node_fraction(ep, dep.gpus_per_node)
        out_bw, out_lat = dep._link(inter=True)
        # hierarchical all-to-all (DeepEP): traffic for another node goes over the NIC to the
        # same-index GPU there and is forwarded over the scale-up fabric, so the scale-up link
        # carries every remote byte and the NIC the inter-node share
        t_bw = np.maximum(per / up_bw, per * frac_out / out_bw)
        lat = out_lat if frac_out > 0 else up_lat
        up_bytes = up_bytes + Lm_s * per
        out_bytes = out_bytes + Lm_s * per * frac_out
        comm_fixed = comm_fixed + Lm_s * (t_bw + 2 * lat)
        n_coll = n_coll + 2 * Lm_s
    return {
        "xb": xb,
        "xf": xf,
        "n_coll": n_coll,
        "comm_fixed": comm_fixed,
        "up_bytes": up_bytes,
        "out_bytes": out_bytes,
        "w_bytes": w_touched * np.ones_like(tokens),
        "kv_bytes": kv_bytes,
        "flops": lin_flops + attn_flops,
        "tokens": tokens,
    }


def forward(
    dep: Deployment, b_dec: Any, ctx_dec: Any, p_tok: Any = 0.0, ctx_pre: Any = 0.0
) -> StepCost:
    """A full step of the replica: ``b_dec`` decode streams and ``p_tok`` prefill tokens per
    attention rank, split into pp micro-batches that flow through pp stages."""
    pp, eff = dep.layout.pp, dep.eff
    b = np.asarray(b_dec, dtype=float)
    # a micro-batch carries at least one stream: a lone stream still crosses every stage
    micro = np.where(b > 0, np.maximum(b / pp, 1.0), 0.0)
    st = _stage(dep, micro, ctx_dec, np.asarray(p_tok, dtype=float) / pp, ctx_pre)
    xb, xf = pp * st["xb"], pp * st["xf"]
    n_coll = pp * st["n_coll"]
    comm_fixed = pp * st["comm_fixed"]
    up_bytes, out_bytes = pp * st["up_bytes"], pp * st["out_bytes"]
    if pp > 1:
        size = st["tokens"] * dep.model.hidden_size * ACT_BYTES
        bw, lat = dep._link(inter=dep.spans_nodes)
        comm_fixed = comm_fixed + (pp - 1) * network.p2p_time_s(size, bw, lat)
        n_coll = n_coll + (pp - 1)
        # each GPU sends its stage's activations once per micro-batch
        if dep.spans_nodes:
            out_bytes = out_bytes + pp * size
        else:
            up_bytes = up_bytes + pp * size
    mem_s = xb / eff.mem_bw_fraction
    compute_s = xf / eff.compute_fraction
    comm_s = comm_fixed + n_coll * eff.collective_latency_s
    t = mem_s + compute_s + comm_s + eff.step_overhead_s
    return StepCost(
        t_s=t,
        mem_s=mem_s,
        compute_s=compute_s,
        comm_s=comm_s,
        overhead_s=eff.step_overhead_s,
        xb=xb,
        xf=xf,
        n_coll=n_coll,
        comm_fixed_s=comm_fixed,
        scale_up_bytes=up_bytes,
        scale_out_bytes=out_bytes,
        weight_bytes=pp * st["w_bytes"],
        kv_bytes=pp * st["kv_bytes"],
        flops=pp * st["flops"],
    )


def decode_step(dep: Deployment, batch: Any, context: float) -> StepCost:
    """A pure decode step: ``batch`` streams per attention rank at mean context ``context``."""
    return forward(dep, batch, context)


def prefill_time_s(dep: Deployment, prompt_tokens: float) -> float:
    """Time to prefill one prompt alone (chunks of max_num_batched_tokens; causal attention
    sees on average half the prompt): (n_chunks + pp - 1) stage times."""
    if prompt_tokens <= 0:
        return 0.0
    chunks = int(np.ceil(prompt_tokens / dep.max_num_batched_tokens))
    per = prompt_tokens / chunks
    step = forward(dep.with_(layout=replace(dep.layout, pp=1)), 0.0, 0.0, per, prompt_tokens / 2)
    pp = dep.layout.pp
    stage = (float(step.t_s) - dep.eff.step_overhead_s) / pp
    return (chunks + pp - 1) * stage + chunks * dep.eff.step_overhead_s
