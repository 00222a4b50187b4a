"""The roofline and network model against hand-computed cases (ideal efficiencies, so every
number below is arithmetic on catalog facts)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from profiler.capacity import network
from profiler.capacity.catalog import resolve_model
from profiler.capacity.deployment import GIB, Deployment, Efficiency, Layout
from profiler.capacity.hardware import load_hardware
from profiler.capacity.perf import decode_step, forward, prefill_time_s
from profiler.capacity.sizing import WorkloadShape, batch_limit, capacity
from profiler.spec import SloSpec

IDEAL = Efficiency.ideal()
H100_BW = 3.35e12
H100_F = 989e12


def dep(
    model: str = "llama-3.1-8b",
    gpu: str = "h100",
    layout: Layout | None = None,
    eff: Efficiency = IDEAL,
    **kw: object,
) -> Deployment:
    hw = load_hardware()
    g = hw.gpu(gpu)
    m = resolve_model(model)
    return Deployment(
        model=m,
        gpu=g,
        layout=layout or Layout(),
        scale_up=hw.interconnect(str(kw.pop("up", g.default_scale_up()))),
        scale_out=hw.interconnect(str(kw.pop("out", g.default_scale_out()))),
        gpus_per_node=8,
        eff=eff,
        weight_dtype=str(kw.pop("weight_dtype", m.weight_dtype)),
        max_num_seqs=1024,
        max_num_batched_tokens=8192,
    )


def test_decode_is_memory_bound_at_small_batch() -> None:
    # Llama-3.1-8B, H100, TP1, one stream at context 1024:
    # weights read = all parameters but the input embedding = 8,030,261,248 - 128,256 x 4,096
    weights = (8_030_261_248 - 128_256 * 4_096) * 2
    assert weights == 15_009_849_344
    kv = 1024 * 131_072 + 131_072  # read the context, write the new token
    s = decode_step(dep(), 1, 1024)
    assert float(s.t_s) == pytest.approx((weights + kv) / H100_BW, rel=1e-9)
    assert float(s.compute_s) == 0.0
    assert np.asarray(s.bottleneck()).item() == "memory_bandwidth"
    # one token per step: the step takes ~4.5 ms however little compute it does
    assert float(s.t_s) == pytest.approx(4.52e-3, rel=0.01)


def test_decode_turns_compute_bound_past_machine_balance() -> None:
    # BF16 GEMM decode intensity ~ 2B/2 = B FLOP/byte; H100 balance 989/3.35 = 295 FLOP/byte
    d = dep()
    small = forward(d, 256, 1.0)
    large = forward(d, 512, 1.0)
    assert float(small.mem_s) > float(small.compute_s)
    assert float(large.compute_s) > float(large.mem_s)
    body = 8_030_261_248 - 128_256 * 4_096  # linear params a decode token multiplies through
    assert float(large.flops) == pytest.approx(
        2 * body * 512 + 512 * 1 * 4 * 32 * 32 * 128, rel=1e-9
    )


def test_prefill_roofline_is_compute_bound() -> None:
    # 4,096-token prompt, Llama-3.1-8B, H100: linear FLOPs 2 x body x T (no LM head for prompt
    # tokens) + causal attention 4 L n_q d x T x T/2
    m = resolve_model("llama-3.1-8b")
    assert m.body_params == 6_979_588_096
    T = 4096
    linear = 2 * 6_979_588_096 * T
    attn = T * (T / 2) * 4 * 32 * 32 * 128
    assert prefill_time_s(dep(), T) == pytest.approx((linear + attn) / H100_F, rel=1e-9)
    assert prefill_time_s(dep(), T) == pytest.approx(62.3e-3, rel=0.01)


def test_tp_allreduce_bytes_llama_70b() -> None:
    # 2 all-reduces per layer of h x 2 bytes; ring: each GPU sends 2(p-1)/p of it
    per_token = network.tp_allreduce_bytes_per_token(8192, 80, 8)
    assert per_token == 2 * 80 * 2 * 7 / 8 * 8192 * 2 == 4_587_520
    # B = 64: 293.6 MB per step, 0.65 ms at 450 GB/s per direction (NVLink4)
    assert 64 * per_token / 450e9 == pytest.approx(0.652e-3, rel=0.01)
    s = decode_step(dep("llama-3.1-70b", layout=Layout(tp=8)), 64, 1.0)
    assert float(s.scale_up_bytes) == pytest.approx(64 * per_token, rel=1e-9)
    assert float(s.comm_s) == pytest.approx(
        64 * per_token / 450e9 + 160 * 2e-6, rel=1e-6
    )  # + fabric latency
    assert network.allreduce_bytes_per_gpu(1000.0, 1) == 0.0


def test_tp_comm_time_scales_with_fabric() -> None:
    base = decode_step(dep("llama-3.1-70b", layout=Layout(tp=8)), 64, 1.0)
    h800 = decode_step(dep("llama-3.1-70b", layout=Layout(tp=8), up="nvlink-400"), 64, 1.0)
    pcie = decode_step(dep("llama-3.1-70b", layout=Layout(tp=8), up="pcie-gen5"), 64, 1.0)
    assert float(base.comm_s) < float(h800.comm_s) < float(pcie.comm_s)
    bytes_ = 64 * 4_587_520
    assert float(pcie.comm_s) - float(base.comm_s) == pytest.approx(
        bytes_ / 64e9 - bytes_ / 450e9 + 160 * 3e-6, rel=1e-6
    )


def test_moe_alltoall_bytes() -> None:
    # DeepSeek-V3: top-8 x 7168 x (1 byte FP8 dispatch + 2 bytes BF16 combine) = 172,032 B per
    # token per MoE layer, of which (ep-1)/ep leaves the GPU
    assert network.alltoall_bytes_per_gpu(1.0, 8, 7168, 1.0, 2.0, 2) == 172_032 / 2
    assert network.alltoall_bytes_per_gpu(1.0, 8, 7168, 1.0, 2.0, 256) == pytest.approx(
        172_032 * 255 / 256
    )
    assert network.inter_node_fraction(16, 8) == pytest.approx(8 / 15)
    assert network.inter_node_fraction(8, 8) == 0.0
    # the busiest rank receives the mean times the random-fluctuation factor of ep balanced
    # loads (skew 1 here): 1 + sqrt(2 ln ep / mu), mu = 10 tokens x 8 experts per rank
    s = decode_step(dep("deepseek-v3", "h800", Layout(tp=1, dp=8, ep=8)), 10, 1.0)
    imb8 = 1 + math.sqrt(2 * math.log(8) / 80)
    assert float(s.scale_up_bytes) == pytest.approx(58 * 10 * 172_032 * 7 / 8 * imb8, rel=1e-9)
    assert float(s.scale_out_bytes) == 0.0
    wide = decode_step(dep("deepseek-v3", "h800", Layout(tp=1, dp=16, ep=16)), 10, 1.0)
    imb16 = 1 + math.sqrt(2 * math.log(16) / 80)
    assert float(wide.scale_out_bytes) == pytest.approx(
        58 * 10 * 172_032 * 15 / 16 * 8 / 15 * imb16, rel=1e-9
    )
    # inter-node traffic is forwarded inside the node (DeepEP): the scale-up link sees it all
    assert float(wide.scale_up_bytes) == pytest.approx(
        58 * 10 * 172_032 * 15 / 16 * imb16, rel=1e-9
    )


def test_moe_weights_touched_grow_with_batch() -> None:
    # TP8 (experts sharded, not EP): weights read per step follow the distinct experts hit
    d = dep("deepseek-v3", "h800", Layout(tp=8, pp=2))
    w1 = float(decode_step(d, 2, 1.0).weight_bytes)  # micro-batch of 1 token per stage
    w64 = float(decode_step(d, 128, 1.0).weight_bytes)  # micro-batch of 64
    m = resolve_model("deepseek-v3")
    per_expert_layer = m.expert_params * 1.0 / 8  # FP8, split over TP8
    grow = (
        (m.experts_touched(64) - m.experts_touched(1)) * per_expert_layer * (58 / 2) * 2
    )  # 2 stages
    assert w64 - w1 == pytest.approx(grow, rel=1e-9)


def test_pipeline_parallel_single_stream_crosses_every_stage() -> None:
    one = decode_step(dep("llama-3.1-70b", layout=Layout(tp=4)), 1, 1024)
    two = decode_step(dep("llama-3.1-70b", layout=Layout(tp=4, pp=2)), 1, 1024)
    p2p = 8192 * 2 / 450e9 + 2e-6
    # same bytes per token (each stage reads half the weights), plus one stage hand-off;
    # the LM head and KV are split too, so only the hand-off differs
    assert float(two.t_s) == pytest.approx(float(one.t_s) + p2p, rel=1e-6)


def test_kv_capacity_limits_batch() -> None:
    d = dep("llama-3.1-70b", layout=Layout(tp=8))
    free = 80e9 * 0.92 - d.weight_bytes_per_gpu() - d.reserve_bytes()
    assert d.kv_capacity_tokens() == pytest.approx(free / (327_680 / 8))
    assert d.reserve_bytes() > GIB
    wl = WorkloadShape(input_len=2048, output_len=2048)
    b, kind, _ = batch_limit(d, wl)
    assert kind == "kv_capacity"
    assert b == pytest.approx(d.kv_capacity_tokens() / (2048 + 1024))


def test_weights_that_do_not_fit_are_rejected() -> None:
    cap = capacity(dep("deepseek-v3", "h800", Layout(tp=8)), WorkloadShape(1024, 1024), SloSpec())
    assert not cap.feasible
    assert "KV cache holds 0.00 GB per GPU" in cap.reason


def test_parallel_sampling_shares_the_prompt() -> None:
    one = WorkloadShape(input_len=4000, output_len=1000, n=1)
    four = WorkloadShape(input_len=4000, output_len=1000, n=4)
    # KV per stream: (T_in + n O/2)/n
    assert one.resident_tokens_per_stream == 4500
    assert four.resident_tokens_per_stream == 1500
    d = dep("llama-3.1-70b", layout=Layout(tp=8))
    assert batch_limit(d, four)[0] == pytest.approx(3 * batch_limit(d, one)[0])


def test_capacity_meets_slo_and_tighter_slo_lowers_it() -> None:
    d = dep("llama-3.1-70b", layout=Layout(tp=8), eff=Efficiency())
    wl = WorkloadShape(1024, 512)
    loose = capacity(d, wl, SloSpec(tpot_s=0.05))
    tight = capacity(d, wl, SloSpec(tpot_s=0.02))
    assert loose.feasible and tight.feasible
    assert tight.rps_max < loose.rps_max
    assert loose.curve is not None
    i = int(np.searchsorted(loose.curve.b, loose.b_star))
    assert loose.curve.tpot_s[i] <= 0.05
    impossible = capacity(d, wl, SloSpec(tpot_s=0.001))
    assert not impossible.feasible and "TPOT" in impossible.reason


def test_kv_held_by_idle_sessions_counts_against_the_batch() -> None:
    # capacity/sessions.py adds the KV that thinking sessions keep cached per decoding stream
    # (WorkloadShape.held_tokens_per_stream); the byte-based KV limit must count it
    d = dataclasses.replace(
        dep("llama-3.1-70b", layout=Layout(tp=4)),
        max_num_seqs=100_000,
        max_num_batched_tokens=1 << 20,
    )
    base = WorkloadShape(input_len=2048, output_len=512)
    held = WorkloadShape(input_len=2048, output_len=512, held_tokens_per_stream=2304)
    per_token = d.kv_bytes_per_token_per_gpu()
    assert held.kv_bytes_per_stream(d) == pytest.approx(
        base.kv_bytes_per_stream(d) + 2304 * per_token
    )
    b0, k0, _ = batch_limit(d, base)
    b1, k1, _ = batch_limit(d, held)
    assert k0 == k1 == "kv_capacity"
    # 2,304 resident tokens per stream without sessions (2,048 + 512/2), twice that with them
    assert b1 == pytest.approx(b0 / 2, rel=1e-6)
