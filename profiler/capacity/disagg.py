"""Disaggregated prefill/decode (``--disaggregated``): separate prefill and decode pools, each
with its own layout and GPU count, and the KV transfer between them.

Per GPU type the prefill pool takes the layout with the most prompts/s per GPU meeting the TTFT
SLO (its own prefill plus the KV transfer plus queueing), the decode pool the layout with the
most requests/s per GPU meeting the TPOT SLO (decode steps only, no prefill chunks), both from
the same candidate list as the aggregated plan:
    replicas_p = ceil(lambda / lambda_p),  replicas_d = ceil(lambda / lambda_d)
    ratio      = decode GPUs / prefill GPUs
    capacity   = n O / (G_p / lambda_p + G_d / lambda_d)    output tokens/s per GPU at balance
The KV of each prompt (T_in tokens, every layer and KV head, local layers capped at their
window) moves from the prefill replica's GPUs to the decode replica: over the scale-up fabric
when both pools fit in one scale-up domain larger than a node (a GB200 NVL72 rack), else over
the NICs (RDMA, as Mooncake/NIXL do), all the prefill replica's GPUs sending in parallel.
"""

from __future__ import annotations

import math
from typing import Any

from profiler.capacity.candidates import plan_layouts, unfit
from profiler.capacity.context import PlanContext, deployment, gpus_per_node
from profiler.capacity.deployment import Layout
from profiler.capacity.hardware import GpuSpec
from profiler.capacity.pools import PoolCapacity, decode_capacity, prefill_capacity
from profiler.capacity.result import (
    ConfigResult,
    DisaggregatedResult,
    KvTransfer,
    PoolResult,
)


def _pool(role: str, lay: Layout, cap: PoolCapacity, replicas: int, shape: Any) -> PoolResult:
    if role == "decode":
        per_gpu = cap.rps_max * shape.n * shape.output_len / lay.gpus
    else:
        per_gpu = cap.rps_max * shape.uncached_input / lay.gpus
    return PoolResult(
        role=role,  # type: ignore[arg-type]
        parallelism=lay.label(),
        tp=lay.tp,
        dp=lay.dp,
        ep=lay.ep,
        gpus_per_replica=lay.gpus,
        replicas=replicas,
        gpus_total=replicas * lay.gpus,
        max_rps_per_replica=cap.rps_max,
        batch=cap.batch,
        tpot_s=cap.tpot_s,
        ttft_s=cap.ttft_s,
        capacity_tokens_per_s_per_gpu=per_gpu,
        limit=cap.limit,
        bottleneck=cap.bottleneck,
    )


def _transfer(
    ctx: PlanContext, g: GpuSpec, prefill: Layout, decode: Layout
) -> tuple[Any, float, float]:
    """(interconnect, bytes per request, seconds per request)."""
    m, shape = ctx.model, ctx.shape
    nbytes = float(m.kv_bytes_per_sequence(shape.input_len, ctx.kv_dtype, tp=1))
    gpn = gpus_per_node(ctx, g)
    domain = g.scale_up_gpus or gpn
    same_domain = domain > gpn and prefill.gpus + decode.gpus <= domain
    dep = deployment(ctx, g, prefill)
    net = dep.scale_up if same_domain else dep.scale_out
    bw = net.bytes_per_s * dep.eff.network_fraction * prefill.gpus
    return net, nbytes, net.latency_s + nbytes / bw


def plan_disaggregated(
    ctx: PlanContext, aggregated: list[ConfigResult]
) -> list[DisaggregatedResult]:
    out: list[DisaggregatedResult] = []
    shape, slo = ctx.shape, ctx.req.slo
    for g in ctx.gpus:
        cands = [lay for lay in plan_layouts(ctx, g) if unfit(ctx, deployment(ctx, g, lay)) is None]
        if not cands:
            continue
        # decode: most requests/s per GPU meeting the TPOT SLO
        best_d: tuple[float, Layout, PoolCapacity] | None = None
        for lay in cands:
            cap = decode_capacity(deployment(ctx, g, lay), shape, slo, ctx.req.concurrency)
            if cap.feasible and (best_d is None or cap.rps_max / lay.gpus > best_d[0]):
                best_d = (cap.rps_max / lay.gpus, lay, cap)
        if best_d is None:
            continue
        # prefill: most prompts/s per GPU meeting the TTFT SLO with the transfer included
        best_p: tuple[float, Layout, PoolCapacity, Any, float, float] | None = None
        for lay in cands:
            net, nbytes, t_kv = _transfer(ctx, g, lay, best_d[1])
            dep_p = deployment(ctx, g, lay).with_(ep_dedup=True)  # DeepEP normal mode
            cap = prefill_capacity(dep_p, shape, slo, t_kv)
            if cap.feasible and (best_p is None or cap.rps_max / lay.gpus > best_p[0]):
                best_p = (cap.rps_max / lay.gpus, lay, cap, net, nbytes, t_kv)
        if best_p is None:
            continue
        _, lay_d, cap_d = best_d
        _, lay_p, cap_p, net, nbytes, t_kv = best_p
        target = ctx.target_rps
        if target:
            rep_p = max(math.ceil(target / cap_p.rps_max - 1e-9), 1)
            rep_d = max(math.ceil(target / cap_d.rps_max - 1e-9), 1)
            rate_p = target / rep_p
        else:
            rep_p = rep_d = 1
            rate_p = cap_p.rps_max
        gpus_p, gpus_d = rep_p * lay_p.gpus, rep_d * lay_d.gpus
        per_gpu_cap = (
            shape.n * shape.output_len / (lay_p.gpus / cap_p.rps_max + lay_d.gpus / cap_d.rps_max)
        )
        agg = next((c for c in aggregated if c.gpu == g.key and c.best_for_gpu), None)
        price = ctx.prices[g.key]
        total = gpus_p + gpus_d if target else lay_p.gpus + lay_d.gpus
        out.append(
            DisaggregatedResult(
                gpu=g.key,
                prefill=_pool("prefill", lay_p, cap_p, rep_p, shape),
                decode=_pool("decode", lay_d, cap_d, rep_d, shape),
                kv_transfer=KvTransfer(
                    bytes_per_request=nbytes,
                    interconnect=net.key,
                    label=net.label,
                    seconds=t_kv,
                    gb_per_s_per_prefill_gpu=rate_p * nbytes / lay_p.gpus / 1e9,
                ),
                gpus_total=total,
                decode_to_prefill_ratio=(gpus_d / gpus_p)
                if target
                else (lay_d.gpus / cap_d.rps_max) / (lay_p.gpus / cap_p.rps_max),
                capacity_tokens_per_s_per_gpu=per_gpu_cap,
                demand_tokens_per_s_per_gpu=(
                    target * shape.n * shape.output_len / total if target else None
                ),
                cost_per_hour=total * price,
                aggregated_gpus_total=agg.gpus_total if agg is not None else None,
                aggregated_capacity_tokens_per_s_per_gpu=(
                    agg.capacity_tokens_per_s_per_gpu if agg is not None else None
                ),
                meets_slo=True,
            )
        )
    return out
