"""The pools of a disaggregated deployment (``--disaggregated``, profiler/capacity/disagg.py):
one replica of each at its SLO capacity.

A decode replica runs decode steps only (b streams, no prefill tokens; TPOT is the step time);
a prefill replica runs chunks of C prompt tokens: its service rate is mu = C / (T_unc t_chunk)
prompts/s and
    TTFT = n_ch t_chunk + rho / (2 (1 - rho)) T_unc / (C / t_chunk) + t_kv_transfer
(M/D/1 wait at load rho), so its capacity is mu rho* with rho* the largest load meeting the
TTFT SLO (rho* = 1 without one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from profiler.capacity.deployment import Deployment
from profiler.capacity.perf import StepCost, forward
from profiler.capacity.sizing import GRID_POINTS, WorkloadShape, stream_limit
from profiler.spec import SloSpec


@dataclass
class PoolCapacity:
    """One replica of a prefill or decode pool at its SLO capacity."""

    feasible: bool
    reason: str
    rps_max: float  # requests/s per replica
    batch: float  # decode: streams per rank; prefill: prompt tokens per chunk step
    tpot_s: float | None  # decode step time (decode pools)
    ttft_s: float | None  # prefill latency + transfer at capacity (prefill pools)
    limit: str
    bottleneck: str
    step: StepCost | None = None


def decode_capacity(
    dep: Deployment, wl: WorkloadShape, slo: SloSpec, concurrency: float | None = None
) -> PoolCapacity:
    """A decode-only replica: b streams per rank at mean context T_in + O/2, no prefill
    tokens (prompts arrive with their KV from the prefill pool); TPOT is the step time and
    lambda = b / (n O TPOT). Capacity: the largest lambda meeting the TPOT (and e2e) SLO."""
    b_lim, kind, reason = stream_limit(dep, wl, concurrency)
    if reason:
        return PoolCapacity(False, reason, 0, 0, None, None, kind, kind)
    if concurrency is not None:
        b = np.array([b_lim])
    else:
        b = np.unique(np.concatenate([np.geomspace(1.0, b_lim, GRID_POINTS * 2), [b_lim]]))
    step = forward(dep, b, wl.decode_context)
    tpot = np.asarray(step.t_s, dtype=float)
    rps = b / (wl.n * wl.output_len * tpot)
    ok = np.ones_like(b, dtype=bool)
    if slo.tpot_s is not None:
        ok &= tpot <= slo.tpot_s
    if slo.e2e_s is not None:
        ok &= (wl.output_len - 1) * tpot <= slo.e2e_s
    if not ok.any():
        return PoolCapacity(
            False,
            f"TPOT {tpot[0] * 1e3:.1f} ms at batch {b[0]:g} exceeds the TPOT SLO",
            0,
            0,
            float(tpot[0]),
            None,
            "slo_tpot",
            str(step.bottleneck()[0]),
        )
    i = int(np.argmax(np.where(ok, rps, -1.0)))
    limit = kind if i == len(b) - 1 else "slo_tpot"
    one = forward(dep, np.array([b[i]]), wl.decode_context)
    return PoolCapacity(
        True,
        "",
        float(rps[i]) * dep.layout.dp,
        float(b[i]),
        float(tpot[i]),
        None,
        limit,
        "kv_capacity" if limit == "kv_capacity" else str(step.bottleneck()[i]),
        one,
    )


def prefill_capacity(
    dep: Deployment, wl: WorkloadShape, slo: SloSpec, transfer_s: float = 0.0
) -> PoolCapacity:
    """A prefill-only replica: chunks of C = max_num_batched_tokens prompt tokens per rank
    (causal attention over half the prompt on average). Service rate mu = C / (T_unc t_chunk)
    prompts/s per rank; at load rho the TTFT is the prompt's own chunks plus an M/D/1 wait plus
    the KV transfer, and the capacity is mu rho* at the largest rho meeting the TTFT SLO."""
    C = float(dep.max_num_batched_tokens)
    T = wl.uncached_input
    free, need = dep.kv_free_bytes(), float(dep.kv_bytes_per_sequence(wl.input_len))
    if free < need:
        w_gb = dep.weight_bytes_per_gpu() / 1e9
        return PoolCapacity(
            False,
            f"KV cache holds {free / 1e9:,.2f} GB per GPU, one prompt needs {need / 1e9:,.2f} GB "
            f"(weights {w_gb:.1f} GB/GPU of {dep.gpu.memory_gb:g} GB)",
            0,
            C,
            None,
            None,
            "kv_capacity",
            "kv_capacity",
        )
    step = forward(dep, 0.0, 0.0, C, wl.input_len / 2)
    t_chunk = float(step.t_s)
    mu = C / (T * t_chunk)  # prompts/s per rank
    own = np.ceil(T / C) * forward(dep, 0.0, 0.0, min(T, C), wl.input_len / 2).t_s
    own = float(own) + transfer_s
    service = 1.0 / mu
    rho = 1.0
    if slo.ttft_s is not None:
        room = slo.ttft_s - own
        if room <= 0:
            return PoolCapacity(
                False,
                f"prefill of one prompt takes {own:.2f} s (with KV transfer), over the TTFT SLO",
                0,
                C,
                None,
                own,
                "slo_ttft",
                str(step.bottleneck()),
            )
        # room = rho / (2 (1 - rho)) service  ->  rho = 2 room / (service + 2 room)
        rho = min(2 * room / (service + 2 * room), 1.0)
    ttft = own + (rho / (2 * (1 - rho)) * service if rho < 1 else 0.0)
    return PoolCapacity(
        True,
        "",
        mu * rho * dep.layout.dp,
        C,
        None,
        ttft,
        "slo_ttft" if rho < 1 else "prefill",
        str(np.asarray(step.bottleneck()).item()),
        step,
    )
