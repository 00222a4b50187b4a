"""Engine profiles (--engine, default vLLM), compute/communication overlap and MoE realism
(expert load imbalance with and without EPLB, grouped-GEMM efficiency, DP-attention
imbalance)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from profiler.capacity.catalog import resolve_model
from profiler.capacity.deployment import Deployment, Efficiency, Layout
from profiler.capacity.engines import load_engines
from profiler.capacity.hardware import load_hardware
from profiler.capacity.perf import busiest_rank_prefill, expert_imbalance, forward
from profiler.capacity.planner import plan
from profiler.capacity.result import PlanRequest
from profiler.errors import SpecError
from profiler.spec import SloSpec


def _dep(model: str = "deepseek-v3", gpu: str = "h800", **kw: object) -> Deployment:
    hw = load_hardware()
    g = hw.gpu(gpu)
    return Deployment(
        model=resolve_model(model),
        gpu=g,
        layout=kw.pop("layout", Layout(dp=32, ep=32)),  # type: ignore[arg-type]
        scale_up=hw.interconnect(str(kw.pop("up", g.default_scale_up()))),
        scale_out=hw.interconnect(str(kw.pop("out", g.default_scale_out()))),
        gpus_per_node=8,
        weight_dtype="fp8",
        **kw,  # type: ignore[arg-type]
    )


def test_default_engine_is_vllm_and_engines_differ() -> None:
    base = dict(
        model="llama-3.1-70b", gpus=["h100"], input_len=1000, output_len=1000, scaling=False
    )
    v = plan(PlanRequest(**base))  # type: ignore[arg-type]
    t = plan(PlanRequest(**base, engine="tensorrt-llm", weight_dtype="fp8"))  # type: ignore[arg-type]
    assert v.engine == "vllm" and t.engine == "tensorrt-llm"
    assert v.efficiency["h100"] != t.efficiency["h100"]
    with pytest.raises(SpecError, match="unknown engine"):
        plan(PlanRequest(**base, engine="nope"))  # type: ignore[arg-type]


def test_engine_limits_and_memory_modes() -> None:
    cat, hw = load_engines(), load_hardware()
    assert cat.engine(None).key == "vllm"
    assert cat.engine("vllm").batch_limits(hw.gpu("b200")) == (1024, 16384)
    assert cat.engine("vllm").batch_limits(hw.gpu("h200")) == (1024, 8192)
    assert cat.engine("vllm").batch_limits(hw.gpu("a100")) == (256, 2048)
    assert cat.engine("trtllm").key == "tensorrt-llm"
    d = _dep("llama-3.1-70b", "h100", layout=Layout(tp=2))
    total = d.with_(memory_mode="total", gpu_memory_utilization=0.9).kv_free_bytes()
    free = d.with_(memory_mode="free", gpu_memory_utilization=0.9).kv_free_bytes()
    rest = d.weight_bytes_per_gpu() + d.reserve_bytes()
    assert total == pytest.approx(0.9 * d.gpu.memory_bytes - rest)
    assert free == pytest.approx(0.9 * (d.gpu.memory_bytes - rest))


def test_overlap_hides_communication_only_up_to_the_compute() -> None:
    base = _dep()
    s0 = forward(base, 128.0, 2048.0)
    comp = float(s0.mem_s) + float(s0.compute_s)
    comm = float(s0.comm_s)
    for o in (0.3, 1.0):
        s = forward(base.with_(eff=base.eff.model_copy(update={"comm_overlap": o})), 128.0, 2048.0)
        assert float(s.t_s) == pytest.approx(
            comp + comm - o * min(comp, comm) + base.eff.step_overhead_s, rel=1e-9
        )


def test_network_costs_time_only_on_the_critical_path() -> None:
    # full overlap: while the all-to-all is shorter than compute a slower NIC changes nothing
    eff = Efficiency(comm_overlap=1.0)
    fast = _dep(eff=eff, out="ib-400")
    slow = _dep(eff=eff, out="ib-200")
    a, b = forward(fast, 16.0, 4096.0), forward(slow, 16.0, 4096.0)
    assert float(a.comm_s) < float(a.mem_s) + float(a.compute_s)
    assert float(b.comm_s) < float(b.mem_s) + float(b.compute_s)
    assert float(b.t_s) == pytest.approx(float(a.t_s))
    # without overlap the slower NIC shows
    no = Efficiency(comm_overlap=0.0)
    assert float(forward(_dep(eff=no, out="ib-200"), 16.0, 4096.0).t_s) > float(
        forward(_dep(eff=no, out="ib-400"), 16.0, 4096.0).t_s
    )


def test_sensitivity_table_shows_overlap() -> None:
    def gpus_with(overlap: float) -> dict[str, int | None]:
        r = plan(
            PlanRequest(
                model="deepseek-r1",
                gpus=["h800"],
                input_len=1024,
                output_len=2048,
                target_rps=50,
                slo=SloSpec(tpot_s=0.05, ttft_s=2),
                layouts=["dp32xep32"],
                comm_overlap=overlap,
                scaling=False,
            )
        )
        assert r.best is not None
        return {x.interconnect: x.gpus_total for x in r.best.interconnects}

    plain, hidden = gpus_with(0.0), gpus_with(0.6)
    # halving the NIC costs fewer extra GPUs when communication overlaps compute
    extra = lambda g: (g["ib-200"] or 10**9) - (g["ib-400"] or 0)  # noqa: E731
    assert extra(hidden) < extra(plain)


def test_expert_imbalance_random_and_skew() -> None:
    # ep balanced random loads: the busiest of ep ranks holds 1 + sqrt(2 ln ep / mu) x the mean
    assert float(expert_imbalance(1, 100.0, 1.3)) == 1.0
    assert float(expert_imbalance(64, 100.0, 1.0)) == pytest.approx(
        1 + math.sqrt(2 * math.log(64) / 100)
    )
    assert float(expert_imbalance(64, 1e6, 1.0)) == pytest.approx(1.0, abs=0.01)
    cat = load_engines()
    assert cat.eplb_expert_skew < cat.default_expert_skew
    no_eplb = plan(
        PlanRequest(model="deepseek-r1", gpus=["h800"], layouts=["dp32xep32"], scaling=False)
    )
    eplb = plan(
        PlanRequest(
            model="deepseek-r1", gpus=["h800"], layouts=["dp32xep32"], eplb=True, scaling=False
        )
    )
    assert eplb.efficiency["h800"].expert_skew == cat.eplb_expert_skew
    assert (
        eplb.configurations[0].capacity_tokens_per_s_per_gpu
        > no_eplb.configurations[0].capacity_tokens_per_s_per_gpu
    )


def test_grouped_gemm_efficiency_slows_only_expert_work() -> None:
    d = _dep(layout=Layout(dp=8, ep=8))
    slow = d.with_(eff=d.eff.model_copy(update={"moe_gemm_fraction": 0.5}))
    a, b = forward(d, 512.0, 1024.0, 512.0, 512.0), forward(slow, 512.0, 1024.0, 512.0, 512.0)
    assert float(b.t_s) > float(a.t_s)
    dense = _dep("llama-3.1-70b", layout=Layout(tp=8))
    dense_slow = dense.with_(eff=dense.eff.model_copy(update={"moe_gemm_fraction": 0.5}))
    assert float(forward(dense, 64.0, 1024.0).t_s) == float(forward(dense_slow, 64.0, 1024.0).t_s)


def test_dp_attention_waits_for_the_busiest_rank() -> None:
    # one rank: the mean; many ranks: the expected maximum of Poisson chunk arrivals
    assert float(busiest_rank_prefill(300.0, 1024.0, 1)) == 300.0
    eight = float(busiest_rank_prefill(300.0, 1024.0, 8))
    many = float(busiest_rank_prefill(300.0, 1024.0, 128))
    assert 300.0 < eight < many <= 1024.0 * 6
    arr = np.asarray(busiest_rank_prefill(np.array([0.0, 300.0]), 1024.0, 8))
    assert arr[0] == 0.0 and arr[1] == pytest.approx(eight)
