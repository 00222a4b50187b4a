"""Per-replica capacity under SLOs, and the operating point at a given load.

Steady state of one attention rank with b decoding streams (continuous batching, chunked
prefill), for requests of T_in prompt tokens (T_unc of them not prefix-cached), O output tokens
per sample and n samples:
    prefill tokens per step  p = b T_unc / (n O)       (prompts arrive as streams finish)
    TPOT(b)   = t_step(b decodes at context T_in + O/2, p prefill tokens)
    lambda(b) = b / (n O TPOT(b))                       (Little's law, requests/s per rank)
    TTFT(b)   = TPOT/2 + n_chunks t_mixed + rho/(2(1-rho)) n_chunks t_mixed    (M/D/1 wait)
              with rho = p / (C - b), C = max_num_batched_tokens
    b_max     = min(KV bytes free / KV bytes per stream, max_num_seqs, C - 1)
The capacity is the largest lambda over b <= b_max meeting every SLO; with a fixed concurrency
(a closed loop of c streams per replica) it is lambda at b = c / dp.

The pools of a disaggregated deployment are sized in profiler/capacity/pools.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from profiler.capacity.deployment import Deployment
from profiler.capacity.perf import StepCost, forward
from profiler.spec import SloSpec

GRID_POINTS = 40
REFINE_POINTS = 12  # capacity resolution ~ (b_lim)^(1/40) / 13, about 1.5%


@dataclass(frozen=True)
class WorkloadShape:
    """Mean lengths of the requests to plan for."""

    input_len: float
    output_len: float
    n: float = 1.0
    cached_prefix_len: float = 0.0
    held_tokens_per_stream: float = 0.0  # KV of idle sessions per stream (capacity/sessions.py)

    @property
    def uncached_input(self) -> float:
        return max(self.input_len - self.cached_prefix_len, 1.0)

    @property
    def resident_tokens_per_stream(self) -> float:
        """Average KV tokens a decoding stream holds: (T_in + n O / 2) / n (prompt shared),
        plus the KV that thinking sessions keep cached for it."""
        return (
            self.input_len + self.n * self.output_len / 2
        ) / self.n + self.held_tokens_per_stream

    @property
    def decode_context(self) -> float:
        return self.input_len + self.output_len / 2

    def kv_bytes_per_stream(self, dep: Deployment) -> float:
        """Average KV bytes a decoding stream holds on one GPU: the prompt's KV is shared by
        the n samples, each sample's output grows linearly (local layers capped); plus the
        KV idle sessions hold for it (``held_tokens_per_stream``, counted at full-attention
        bytes per token: an upper bound for models with local layers)."""
        prompt = float(dep.kv_bytes_per_sequence(self.input_len))
        mid = float(dep.kv_bytes_per_sequence(self.input_len + self.output_len / 2))
        held = self.held_tokens_per_stream * dep.kv_bytes_per_token_per_gpu()
        return (prompt + self.n * (mid - prompt)) / self.n + held

    def kv_bytes_per_request(self, dep: Deployment) -> float:
        """KV bytes one whole request needs at its end (prompt + n full outputs)."""
        prompt = float(dep.kv_bytes_per_sequence(self.input_len))
        full = float(dep.kv_bytes_per_sequence(self.input_len + self.output_len))
        return prompt + self.n * (full - prompt)


@dataclass
class Curve:
    """Model outputs over a grid of per-rank batch sizes."""

    b: np.ndarray
    tpot_s: np.ndarray
    ttft_s: np.ndarray
    rps_rank: np.ndarray
    rho: np.ndarray
    step: StepCost


@dataclass
class Capacity:
    feasible: bool
    reason: str
    b_limit: float  # batch bound per rank from KV / max_num_seqs / token budget
    limit_kind: str  # which bound: kv_capacity | max_num_seqs | token_budget
    b_star: float  # per-rank batch at capacity
    rps_max: float  # per replica, requests/s at the SLO
    limit: (
        str  # what stopped b growing: slo_tpot | slo_ttft | slo_e2e | prefill | kv_capacity | ...
    )
    bottleneck: str
    curve: Curve | None = None


def _evaluate(dep: Deployment, wl: WorkloadShape, b: np.ndarray) -> Curve:
    n, out_len = wl.n, wl.output_len
    p_tok = b * wl.uncached_input / (n * out_len)
    chunk = min(wl.uncached_input, float(dep.max_num_batched_tokens))
    step = forward(dep, b, wl.decode_context, p_tok, wl.input_len / 2, chunk)
    tpot = np.asarray(step.t_s, dtype=float)
    rps_rank = b / (n * out_len * tpot)
    C = dep.max_num_batched_tokens
    room = np.maximum(C - b, 1e-9)
    chunks = np.ceil(wl.uncached_input / room)
    chunk = wl.uncached_input / chunks
    mixed = forward(dep, b, wl.decode_context, chunk, wl.input_len / 2)
    service = chunks * np.asarray(mixed.t_s, dtype=float)
    rho = p_tok / room
    with np.errstate(divide="ignore", invalid="ignore"):
        wait = np.where(rho < 1, rho / (2 * (1 - rho)) * service, np.inf)
    ttft = tpot / 2 + service + wait
    return Curve(b=b, tpot_s=tpot, ttft_s=ttft, rps_rank=rps_rank, rho=rho, step=step)


def _meets(
    curve: Curve, wl: WorkloadShape, slo: SloSpec
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    checks: dict[str, np.ndarray] = {"prefill": curve.rho < 1}
    if slo.tpot_s is not None:
        checks["slo_tpot"] = curve.tpot_s <= slo.tpot_s
    if slo.ttft_s is not None:
        checks["slo_ttft"] = curve.ttft_s <= slo.ttft_s
    if slo.e2e_s is not None:
        checks["slo_e2e"] = curve.ttft_s + (wl.output_len - 1) * curve.tpot_s <= slo.e2e_s
    ok = np.ones_like(curve.b, dtype=bool)
    for v in checks.values():
        ok &= v
    return ok, checks


def batch_limit(dep: Deployment, wl: WorkloadShape) -> tuple[float, str, str]:
    """(b_max per rank, which bound, reason if nothing fits)."""
    free = dep.kv_free_bytes()
    need = wl.kv_bytes_per_request(dep)
    if free < need:
        w_gb = dep.weight_bytes_per_gpu() / 1e9
        return (
            0.0,
            "kv_capacity",
            (
                f"KV cache holds {free / 1e9:,.2f} GB per GPU, one request needs "
                f"{need / 1e9:,.2f} GB (weights {w_gb:.1f} GB/GPU of {dep.gpu.memory_gb:g} GB)"
            ),
        )
    bounds = {
        "kv_capacity": free / wl.kv_bytes_per_stream(dep),
        "max_num_seqs": float(dep.max_num_seqs),
        "token_budget": float(dep.max_num_batched_tokens - 1),
    }
    kind = min(bounds, key=lambda k: bounds[k])
    return bounds[kind], kind, ""


def stream_limit(
    dep: Deployment, wl: WorkloadShape, concurrency: float | None = None
) -> tuple[float, str, str]:
    """(streams per rank to size for, which bound, why nothing fits or ""): the batch limit,
    or with ``concurrency`` (streams per replica, a closed loop) exactly concurrency / dp
    streams ("concurrency") when the limit allows them."""
    b_lim, kind, reason = batch_limit(dep, wl)
    if b_lim < 1:
        return b_lim, kind, reason or "batch limit below one stream"
    if concurrency is None:
        return b_lim, kind, ""
    b_fix = concurrency / dep.layout.dp
    if b_fix > b_lim * (1 + 1e-9):
        why = f"{concurrency:g} streams need {b_fix:,.0f} per rank; {kind} allows {b_lim:,.0f}"
        return b_lim, kind, why
    return max(b_fix, 1e-6), "concurrency", ""


def capacity(
    dep: Deployment, wl: WorkloadShape, slo: SloSpec, concurrency: float | None = None
) -> Capacity:
    """The replica's SLO capacity; with ``concurrency`` (streams per replica, a closed loop)
    the throughput at exactly that batch."""
    b_lim, kind, reason = stream_limit(dep, wl, concurrency)
    if reason:
        return Capacity(False, reason, b_lim, kind, 0, 0, kind, kind)
    b = np.unique(np.concatenate([np.geomspace(min(1.0, b_lim), b_lim, GRID_POINTS), [b_lim]]))
    if concurrency is not None:
        b = np.array([b_lim])
    curve = _evaluate(dep, wl, b)
    ok, checks = _meets(curve, wl, slo)
    if not ok.any():
        failed = [k for k, v in checks.items() if not v[0]]
        what = failed[0] if failed else "slo"
        detail = {
            "slo_tpot": f"TPOT {curve.tpot_s[0] * 1e3:.1f} ms at batch 1 exceeds the TPOT SLO",
            "slo_ttft": f"TTFT {curve.ttft_s[0]:.2f} s at batch 1 exceeds the TTFT SLO",
            "slo_e2e": "end-to-end latency at batch 1 exceeds the e2e SLO",
            "prefill": "prefill cannot keep up even at batch 1",
        }.get(what, what)
        return Capacity(False, detail, b_lim, kind, 0, 0, what, "compute", curve)
    rps = np.where(ok, curve.rps_rank, -1.0)
    i = int(np.argmax(rps))
    if (
        i < len(b) - 1 and concurrency is None
    ):  # refine between the best feasible point and the next one
        fine = np.linspace(b[i], b[i + 1], REFINE_POINTS + 2)[1:-1]
        b = np.unique(np.concatenate([b, fine]))
        curve = _evaluate(dep, wl, b)
        ok, checks = _meets(curve, wl, slo)
        rps = np.where(ok, curve.rps_rank, -1.0)
        i = int(np.argmax(rps))
    if i == len(b) - 1:
        limit = kind
    else:  # the first check that fails just past the best point
        j = min(i + 1, len(b) - 1)
        failing = [k for k, v in checks.items() if not v[j]]
        limit = failing[0] if failing else "throughput_peak"
    bottleneck = "kv_capacity" if limit == "kv_capacity" else str(curve.step.bottleneck()[i])
    return Capacity(
        feasible=True,
        reason="",
        b_limit=b_lim,
        limit_kind=kind,
        b_star=float(b[i]),
        rps_max=float(curve.rps_rank[i]) * dep.layout.dp,
        limit=limit,
        bottleneck=bottleneck,
        curve=curve,
    )


@dataclass
class OperatingPoint:
    b: float  # decoding streams per rank
    tpot_s: float
    ttft_s: float
    e2e_s: float
    rps_replica: float
    step: StepCost
    bottleneck: str


def operating_point(
    dep: Deployment, wl: WorkloadShape, cap: Capacity, rps_replica: float
) -> OperatingPoint:
    """Batch, TTFT and TPOT of a replica offered ``rps_replica`` (<= its capacity)."""
    assert cap.curve is not None
    c = cap.curve
    i_star = int(np.searchsorted(c.b, cap.b_star))
    lam = np.maximum.accumulate(c.rps_rank[: i_star + 1])
    target = rps_replica / dep.layout.dp
    if target <= lam[0]:
        b_op = max(target / lam[0], 1e-6) * c.b[0]
    else:
        b_op = float(np.interp(target, lam, c.b[: i_star + 1]))
    pt = _evaluate(dep, wl, np.array([b_op]))
    tpot, ttft = float(pt.tpot_s[0]), float(pt.ttft_s[0])
    return OperatingPoint(
        b=b_op,
        tpot_s=tpot,
        ttft_s=ttft,
        e2e_s=ttft + (wl.output_len - 1) * tpot,
        rps_replica=rps_replica,
        step=pt.step,
        bottleneck=str(pt.step.bottleneck()[0]),
    )


def latency_at_batch(dep: Deployment, wl: WorkloadShape, b: float) -> tuple[float, float]:
    """(TPOT, TTFT) of ``dep`` running ``b`` decoding streams per rank (TTFT may be inf when
    prefill cannot keep up)."""
    c = _evaluate(dep, wl, np.array([b]))
    return float(c.tpot_s[0]), float(c.ttft_s[0])


def required_bandwidth(
    dep: Deployment, wl: WorkloadShape, op: OperatingPoint, slo: SloSpec, kind: str
) -> float | None:
    """Least per-GPU line rate (bytes/s per direction) on the ``scale_up`` or ``scale_out``
    fabric at which the operating batch still meets the TPOT SLO (without a TPOT SLO: stays
    within 10% of the step time with unlimited bandwidth). Found by bisection on the model,
    so transfers hidden behind another fabric (the max() in an all-to-all) are accounted
    for. None when this configuration sends nothing over that fabric."""
    nbytes = as_float(op.step.scale_up_bytes if kind == "scale_up" else op.step.scale_out_bytes)
    if nbytes <= 0:
        return None
    net = dep.scale_up if kind == "scale_up" else dep.scale_out
    b = np.array([op.b])

    def tpot(gb_per_s: float) -> float:
        d = dep.with_(**{kind: net.model_copy(update={"gb_per_s": gb_per_s})})
        return float(_evaluate(d, wl, b).tpot_s[0])

    lo, hi = 1e-2, 1e5  # GB/s
    target = slo.tpot_s if slo.tpot_s is not None else 1.1 * tpot(hi)
    if tpot(hi) > target:
        return None
    if tpot(lo) <= target:
        return lo * 1e9
    for _ in range(40):
        mid = float(np.sqrt(lo * hi))
        if tpot(mid) <= target:
            hi = mid
        else:
            lo = mid
        if hi / lo < 1.01:
            break
    return hi * 1e9


def as_float(x: Any) -> float:
    return float(np.asarray(x, dtype=float).reshape(-1)[0])
