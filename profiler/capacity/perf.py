"""Roofline step-time model for one replica: prefill and decode forward passes, per GPU.

For one pipeline stage on one GPU (symbols as in docs/capacity.md), each operator class is its
own roofline, bound by HBM bandwidth or by the tensor-core rate of its precision:
    t_dense  = max(W_dense / (eta_B BW), F_dense / (eta_F F(w)))
    t_moe    = max(W_experts / (eta_B BW), imbalance F_experts / (eta_F F(w))) / eta_moe
    t_attn   = max(KV_read / (eta_B BW), F_attn / (eta_F F(bf16)))
    t_comp   = t_dense + t_moe + t_attn
    t_comm   = TP all-reduces + EP all-to-alls (alpha + imbalance bytes / (eta_N BW_link))
    t_stage  = t_comp + t_comm - overlap min(t_comp, t_comm)
``overlap`` is the share of communication hidden behind compute (0: none, vLLM's default;
two-batch overlap / DBO hide part of it), so the network costs time only where it is on the
critical path. A decode step with PP splits the batch into pp micro-batches:
    TPOT = pp t_stage(B/pp) + (pp-1) t_p2p + t_overhead
Every efficiency is at most 1, so no output needs more than the GPU's peak bandwidth or
FLOP/s (StepCost.hbm_utilization / compute_utilization say how much a step uses). Every
function works on numpy arrays of batch sizes so a capacity search is one vectorised call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from profiler.capacity import network
from profiler.capacity.deployment import ACT_BYTES, Deployment


@dataclass
class StepCost:
    """One forward pass through the whole replica (all stages), per GPU; arrays over batch."""

    t_s: Any  # step seconds (TPOT for a decode step)
    mem_s: Any  # time of memory-bound operators
    compute_s: Any  # time of compute-bound operators
    comm_s: Any  # communication on the critical path (bandwidth + latency, after overlap)
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
    hbm_utilization: Any = 0.0  # (weight + KV bytes) / step time / peak HBM bandwidth
    compute_utilization: Any = 0.0  # FLOPs / step time / peak FLOP/s of the GEMM precision

    def bottleneck(self) -> Any:
        """'memory_bandwidth' | 'compute' | 'network' per element (largest share of the step)."""
        stack = np.stack(np.broadcast_arrays(self.mem_s, self.compute_s, self.comm_s))
        names = np.array(["memory_bandwidth", "compute", "network"])
        return names[np.argmax(stack, axis=0)]


@dataclass(frozen=True)
class _Consts:
    """Per-deployment constants of one stage on one GPU (computed once per Deployment)."""

    w_base: float  # non-routed weight bytes read per step
    f_tok: float  # linear FLOPs per token (body)
    f_dec: float  # extra linear FLOPs per decode token (LM head)
    e_bytes: float  # bytes of one routed expert's slice across the stage's MoE layers
    e_local: float  # routed experts held per GPU (E/ep), or E under TP-sharded experts
    e_keep: float  # 1 - k/E
    e_flops: float  # routed-expert FLOPs per token entering the MoE layers (per GPU share)
    ep: int
    k: int
    bw: float
    f_lin: float
    f_attn: float
    # communication per token (bytes) and per step (fixed seconds, collectives)
    tp_bytes_tok: float
    tp_n: float
    ep_bytes_tok: float
    ep_frac_out: float
    ep_n: float
    up_bw: float
    up_lat: float
    out_bw: float
    out_lat: float


def _consts(dep: Deployment) -> _Consts:
    cached = dep.__dict__.get("_consts_cache")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    m, g, lay = dep.model, dep.gpu, dep.layout
    tp, pp, ep = lay.tp, lay.pp, lay.ep
    wb = dep.w_bytes
    Lm_s = m.num_moe_layers / pp
    body = m.body_params / (tp * pp)
    head = m.head_params / (tp * pp)  # last stage only; averaged over stages
    k, E = m.num_experts_per_tok, m.n_routed_experts
    share = ep if ep > 1 else tp  # experts split by EP, or every expert split by TP
    up_bw, up_lat = dep._link(inter=False)
    out_bw, out_lat = dep._link(inter=True)
    disp = 1.0 if dep.weight_dtype in ("fp8", "nvfp4", "mxfp4") else ACT_BYTES
    c = _Consts(
        w_base=(body + head) * wb,
        f_tok=2.0 * body,
        f_dec=2.0 * head,  # LM head on decode tokens (the last prompt token's is ignored)
        e_bytes=m.expert_params * Lm_s * wb / (1 if ep > 1 else tp),
        e_local=(E + dep.redundant_experts) / ep if ep > 1 else float(E),
        e_keep=1.0 - k / E if E else 1.0,
        e_flops=2.0 * k * m.expert_params * Lm_s / share,
        ep=ep,
        k=k,
        bw=g.hbm_bytes_per_s,
        f_lin=g.peak_flops(dep.weight_dtype),
        f_attn=g.peak_flops("bf16"),
        tp_bytes_tok=network.allreduce_bytes_per_gpu(m.hidden_size * ACT_BYTES, tp),
        tp_n=2.0 * m.num_hidden_layers / pp if tp > 1 else 0.0,
        ep_bytes_tok=network.alltoall_bytes_per_gpu(1.0 / tp, k, m.hidden_size, disp, ACT_BYTES, ep)
        if ep > 1 and Lm_s > 0
        else 0.0,
        ep_frac_out=_out_share(dep, k),
        ep_n=Lm_s if ep > 1 else 0.0,
        up_bw=up_bw,
        up_lat=up_lat,
        out_bw=out_bw,
        out_lat=out_lat,
    )
    dep.__dict__["_consts_cache"] = c  # frozen dataclass: cache beside the fields
    return c


def _out_share(dep: Deployment, k: int) -> float:
    """Share of a token's all-to-all bytes that crosses a NIC. Per expert copy: the copies
    bound for other domains, (ep - D)/(ep - 1) of the remote ones under uniform routing. With
    DeepEP's normal (prefill) kernels a token crosses to each remote domain once and is
    forwarded there over NVLink: (n - 1)(1 - (1 - 1/n)^k) crossings of k copies, n = ep / D
    domains (DeepSeek-V3 technical report, s3.4; deepseek-ai/DeepEP)."""
    ep, dom = dep.layout.ep, dep.domain
    plain = network.inter_node_fraction(ep, dom)
    if not dep.ep_dedup or plain == 0.0 or k <= 0:
        return plain
    n = ep / dom
    crossings = (n - 1) * (1.0 - (1.0 - 1.0 / n) ** k)
    return min(plain, crossings / (k * (ep - 1) / ep))


def expert_imbalance(ep: int, assignments_per_rank: Any, skew: float) -> Any:
    """Busiest EP rank's routed-expert load over the mean: skew x (1 + sqrt(2 ln(ep) / mu)),
    mu = token-expert assignments per rank. The second factor is the expected maximum of ep
    balanced random loads (Gaussian order statistics); ``skew`` the systematic part (hot
    experts), which EPLB-style replication removes."""
    if ep <= 1:
        return 1.0 + 0.0 * np.asarray(assignments_per_rank, dtype=float)
    mu = np.maximum(np.asarray(assignments_per_rank, dtype=float), 1.0)
    return skew * (1.0 + np.sqrt(2.0 * np.log(ep) / mu))


def busiest_rank_prefill(p_tok: Any, chunk: float, dp: int) -> Any:
    """Prefill tokens of the busiest of ``dp`` attention ranks in a step that averages
    ``p_tok`` per rank: prompts arrive in chunks of ``chunk`` tokens, a Poisson number per rank
    per step, and every MoE layer waits for the slowest rank (the DP-attention imbalance of
    aggregated serving, lmsys.org/blog/2025-05-05-large-scale-ep). chunk x E[max of dp
    Poisson(p_tok / chunk)]."""
    p = np.asarray(p_tok, dtype=float)
    if dp <= 1 or chunk <= 0:
        return p
    mu = p / chunk
    flat = np.atleast_1d(mu).astype(float)
    out = np.empty_like(flat)
    for i, lam in enumerate(flat):
        if lam <= 0:
            out[i] = 0.0
            continue
        kmax = int(lam + 12 * np.sqrt(lam) + 12)
        k = np.arange(kmax + 1)
        logpmf = k * np.log(lam) - lam - np.array([math.lgamma(x + 1) for x in k])
        cdf = np.minimum(np.cumsum(np.exp(logpmf)), 1.0)
        out[i] = float(np.sum(1.0 - cdf**dp))
    res = np.maximum(out.reshape(np.shape(mu)) * chunk, p)
    return res if res.ndim else float(res)


def _stage(
    dep: Deployment,
    b_dec: Any,
    ctx_dec: Any,
    p_tok: Any,
    ctx_pre: Any,
    chunk: float | None = None,
) -> dict[str, Any]:
    """One pipeline stage on one GPU for a micro-batch of ``b_dec`` decode tokens (mean context
    ``ctx_dec``) and ``p_tok`` prefill tokens (mean attention context ``ctx_pre``), per
    attention rank. With attention DP and prompts arriving in chunks of ``chunk`` tokens the
    per-rank work (dense layers, attention, all-to-all) is the busiest rank's."""
    c, eff, m, lay = _consts(dep), dep.eff, dep.model, dep.layout
    mean_tokens = b_dec + p_tok  # per attention rank (a TP group)
    if chunk and lay.dp > 1:
        p_tok = busiest_rank_prefill(p_tok, chunk, lay.dp)
    tokens = b_dec + p_tok
    zero = 0.0 * tokens

    # ---- dense (non-routed) linear layers
    d_mem = c.w_base / c.bw + zero
    d_cmp = (c.f_tok * tokens + c.f_dec * b_dec) / c.f_lin
    w_touched = c.w_base + zero
    lin_flops = c.f_tok * tokens + c.f_dec * b_dec

    # ---- routed experts (grouped GEMMs, eta_moe of a dense GEMM's efficiency)
    e_mem = zero
    e_cmp = zero
    imb = 1.0 + zero
    if c.e_flops:
        # tokens entering the MoE layer: the EP group's total (experts are shared by all ranks)
        t_moe = mean_tokens * lay.dp if c.ep > 1 else tokens
        imb = expert_imbalance(c.ep, t_moe * c.k / max(c.ep, 1), eff.expert_skew)
        e_w = c.e_local * (1.0 - c.e_keep**t_moe) * c.e_bytes
        e_f = c.e_flops * t_moe
        w_touched = w_touched + e_w
        lin_flops = lin_flops + e_f
        e_mem = e_w / c.bw / eff.moe_gemm_fraction
        e_cmp = e_f * imb / c.f_lin / eff.moe_gemm_fraction

    # ---- attention: KV reads (decode) and writes (all new tokens), FLOPs
    tp_pp = lay.tp * lay.pp
    kv_bytes = (
        b_dec * dep.kv_bytes_per_sequence(ctx_dec) + tokens * dep.kv_bytes_per_token_per_gpu()
    )
    attn_flops = (
        m.attn_flops(b_dec, ctx_dec, "decode") + m.attn_flops(p_tok, ctx_pre, "prefill")
    ) / tp_pp
    a_mem = kv_bytes / c.bw
    a_cmp = attn_flops / c.f_attn

    # regime of each operator at the current efficiencies; xb/xf at peak (calibration design)
    xb = zero
    xf = zero
    for mem, cmp in ((d_mem, d_cmp), (e_mem, e_cmp), (a_mem, a_cmp)):
        is_mem = mem * eff.compute_fraction >= cmp * eff.mem_bw_fraction
        xb = xb + np.where(is_mem, mem, 0.0)
        xf = xf + np.where(is_mem, 0.0, cmp)

    # ---- communication: 2 TP all-reduces per layer of T h b_a (inside a domain); per MoE
    # layer one EP dispatch + combine. Hierarchical all-to-all (DeepEP): traffic for another
    # domain goes over the NIC to the same-index GPU there and is forwarded over the scale-up
    # fabric, so the scale-up link carries every remote byte and the NIC the inter-domain
    # share; the busiest rank receives imbalance x the mean.
    tp_bytes = c.tp_n * c.tp_bytes_tok * tokens
    ep_per = c.ep_bytes_tok * tokens * imb
    up_bytes = tp_bytes + c.ep_n * ep_per
    out_bytes = c.ep_n * ep_per * c.ep_frac_out
    comm_bw = tp_bytes / c.up_bw + c.tp_n * c.up_lat
    n_coll = c.tp_n + 2 * c.ep_n
    if c.ep_n:
        lat = c.out_lat if c.ep_frac_out > 0 else c.up_lat
        t_bw = np.maximum(ep_per / c.up_bw, ep_per * c.ep_frac_out / c.out_bw)
        comm_bw = comm_bw + c.ep_n * (t_bw + 2 * lat)
    return {
        "xb": xb,
        "xf": xf,
        "n_coll": n_coll + zero,
        "comm_fixed": comm_bw,
        "up_bytes": up_bytes,
        "out_bytes": out_bytes,
        "w_bytes": w_touched,
        "kv_bytes": kv_bytes,
        "flops": lin_flops + attn_flops,
        "lin_flops": lin_flops,
        "attn_flops": attn_flops,
        "tokens": tokens,
    }


def forward(
    dep: Deployment,
    b_dec: Any,
    ctx_dec: Any,
    p_tok: Any = 0.0,
    ctx_pre: Any = 0.0,
    prefill_chunk: float | None = None,
) -> StepCost:
    """A full step of the replica: ``b_dec`` decode streams and ``p_tok`` prefill tokens per
    attention rank, split into pp micro-batches that flow through pp stages. ``prefill_chunk``
    (tokens a scheduled prompt brings to one step) sets the busiest attention rank's share."""
    pp, eff = dep.layout.pp, dep.eff
    b = np.asarray(b_dec, dtype=float)
    # a micro-batch carries at least one stream: a lone stream still crosses every stage
    micro = np.where(b > 0, np.maximum(b / pp, 1.0), 0.0)
    st = _stage(
        dep,
        micro,
        np.asarray(ctx_dec, dtype=float),
        np.asarray(p_tok, dtype=float) / pp,
        ctx_pre,
        prefill_chunk,
    )
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
    comp = mem_s + compute_s
    comm = comm_fixed + n_coll * eff.collective_latency_s
    hidden = eff.comm_overlap * np.minimum(comp, comm)
    # the calibration design keeps the step linear in the factors: whichever side is shorter
    # is the one partly hidden, so its terms are scaled by (1 - overlap)
    comm_short = comm <= comp
    o = eff.comm_overlap
    f_comp = np.where(comm_short, 1.0, 1.0 - o)
    f_comm = np.where(comm_short, 1.0 - o, 1.0)
    t = comp + comm - hidden + eff.step_overhead_s
    hbm = pp * (st["w_bytes"] + st["kv_bytes"])
    flops = pp * st["flops"]
    with np.errstate(divide="ignore", invalid="ignore"):
        hbm_util = np.where(t > 0, hbm / t / dep.gpu.hbm_bytes_per_s, 0.0)
        lin_t = pp * st["lin_flops"] / dep.gpu.peak_flops(dep.weight_dtype)
        att_t = pp * st["attn_flops"] / dep.gpu.peak_flops("bf16")
        cmp_util = np.where(t > 0, (lin_t + att_t) / t, 0.0)
    return StepCost(
        t_s=t,
        mem_s=mem_s,
        compute_s=compute_s,
        comm_s=comm - hidden,
        overhead_s=eff.step_overhead_s,
        xb=xb * f_comp,
        xf=xf * f_comp,
        n_coll=n_coll * f_comm,
        comm_fixed_s=comm_fixed * f_comm,
        scale_up_bytes=up_bytes,
        scale_out_bytes=out_bytes,
        weight_bytes=pp * st["w_bytes"],
        kv_bytes=pp * st["kv_bytes"],
        flops=flops,
        hbm_utilization=hbm_util,
        compute_utilization=cmp_util,
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
