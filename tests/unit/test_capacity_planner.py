"""plan(): sizing arithmetic, SLO monotonicity, prices, interconnect sensitivity, measured vs
modelled flags and the test-time scaling section."""

from __future__ import annotations

import json
import math

import pytest

from profiler.capacity.calibrate import predict_tpot
from profiler.capacity.deployment import Efficiency
from profiler.capacity.measured import MeasuredPoint
from profiler.capacity.planner import plan
from profiler.capacity.result import PlanRequest, PlanResult
from profiler.capacity.scaling import test_time_scaling
from profiler.errors import SpecError
from profiler.spec import SloSpec

FAST = {"scaling": False}


def _plan(**kw: object) -> PlanResult:
    args: dict[str, object] = {
        "model": "llama-3.1-70b",
        "gpus": ["h100"],
        "input_len": 1024,
        "output_len": 512,
        "target_rps": 10.0,
        **FAST,
    }
    args.update(kw)
    return plan(PlanRequest.model_validate(args))


def test_configurations_follow_the_sizing_formulas() -> None:
    slo = SloSpec(ttft_s=2.0, tpot_s=0.05)
    r = _plan(slo=slo)
    assert r.configurations and r.best is not None
    assert sum(c.best for c in r.configurations) == 1 and r.configurations[0].best
    assert r.best.gpus_total == min(
        c.gpus_total for c in r.configurations if c.cost_per_hour == r.best.cost_per_hour
    )
    for c in r.configurations:
        assert c.gpus_total == c.tp * c.pp * c.dp == c.replicas * c.gpus_per_replica
        assert c.replicas == math.ceil(10.0 / c.max_rps_per_replica - 1e-9)
        assert c.rps_per_replica * c.replicas == pytest.approx(10.0)
        assert c.cost_per_hour == pytest.approx(c.gpus_total * 2.50)
        out_tps = 10.0 * 512
        # demand per GPU (the load spread over the GPUs) and capacity per GPU are separate
        assert c.demand_tokens_per_s_per_gpu == pytest.approx(out_tps / c.gpus_total)
        assert c.capacity_tokens_per_s_per_gpu == pytest.approx(
            c.max_rps_per_replica * 512 / c.gpus_per_replica
        )
        assert c.capacity_tokens_per_s_per_gpu >= c.demand_tokens_per_s_per_gpu * (1 - 1e-9)
        assert c.cost_per_million_output_tokens == pytest.approx(
            c.cost_per_hour / (out_tps * 3600) * 1e6
        )
        assert c.joules_per_output_token == pytest.approx(c.gpus_total * 700 / out_tps)
        assert c.tokens_per_s_per_user == pytest.approx(1 / c.tpot_s)
        assert c.ttft_s <= 2.0 and c.tpot_s <= 0.05
        assert c.nodes == math.ceil(c.gpus_total / 8) or c.gpus_per_replica >= 8
        assert c.source == "modelled" and set(c.sources.values()) == {"modelled"}
        assert c.bottleneck in ("compute", "memory_bandwidth", "kv_capacity", "network")


@pytest.mark.parametrize(
    "model,gpu", [("llama-3.1-70b", "h100"), ("deepseek-v3", "h800"), ("llama-3.1-8b", "l40s")]
)
def test_tighter_tpot_slo_never_needs_fewer_gpus(model: str, gpu: str) -> None:
    previous_best = 0
    previous: dict[str, int] = {}
    for tpot in (None, 0.2, 0.1, 0.06, 0.04, 0.03):
        r = _plan(model=model, gpus=[gpu], target_rps=40.0, slo=SloSpec(tpot_s=tpot))
        if r.best is None:
            break
        assert r.best.gpus_total >= previous_best
        previous_best = r.best.gpus_total
        now = {c.parallelism: c.gpus_total for c in r.configurations}
        for layout, gpus in previous.items():  # a layout can only need more, or drop out
            if layout in now:
                assert now[layout] >= gpus
        previous = now


def test_more_load_never_needs_fewer_gpus() -> None:
    sizes = [_plan(target_rps=rps, slo=SloSpec(tpot_s=0.05)).best for rps in (1, 10, 50, 200)]
    gpus = [b.gpus_total for b in sizes if b is not None]
    assert gpus == sorted(gpus) and gpus[-1] > gpus[0]


def test_price_override_changes_the_best_gpu() -> None:
    r = _plan(gpus=["h100", "h200"], slo=SloSpec(tpot_s=0.05))
    cheap = _plan(gpus=["h100", "h200"], slo=SloSpec(tpot_s=0.05), prices={"h200": 0.01})
    assert cheap.best is not None and cheap.best.gpu == "h200"
    assert cheap.prices["h200"] == 0.01 and r.prices["h200"] == 3.5
    assert {c.gpu for c in cheap.configurations if c.best_for_gpu} == {"h100", "h200"}


def test_users_and_peak_factor_set_the_load() -> None:
    r = _plan(target_rps=None, users=1_000_000, rate_per_user_per_s=10 / 86400, peak_factor=2.0)
    assert r.load["target_rps"] == pytest.approx(1_000_000 * 10 / 86400 * 2)
    assert r.load["output_tokens_per_s"] == pytest.approx(r.load["target_rps"] * 512)


def test_interconnect_sensitivity_and_override() -> None:
    r = _plan(slo=SloSpec(tpot_s=0.05))
    tp8 = next(c for c in r.configurations if c.parallelism == "TP8")
    checks = {x.interconnect: x for x in tp8.interconnects}
    assert set(checks) >= {"nvlink-900", "nvlink-400", "pcie-gen5", "pcie-gen4", "ib-400", "ib-200"}
    assert checks["nvlink-900"].used and not checks["ib-400"].used  # one node: no scale-out traffic
    assert checks["nvlink-900"].tpot_s is not None and checks["pcie-gen4"].tpot_s is not None
    assert checks["pcie-gen4"].tpot_s > checks["nvlink-900"].tpot_s
    assert tp8.required_scale_up_gb_per_s is not None and tp8.required_scale_out_gb_per_s is None
    assert tp8.network_bytes_per_gpu_per_step["scale_up"] > 0
    forced = _plan(slo=SloSpec(tpot_s=0.05), interconnect=["pcie-gen4"])
    assert forced.interconnect_overrides == ["pcie-gen4"]
    assert {c.scale_up for c in forced.configurations} == {"pcie-gen4"}
    tp8_pcie = next(c for c in forced.configurations if c.parallelism == "TP8")
    assert tp8_pcie.tpot_s >= tp8.tpot_s


def test_moe_plans_include_expert_parallel_layouts() -> None:
    r = _plan(model="deepseek-v3", gpus=["h800"], slo=SloSpec(ttft_s=2.0, tpot_s=0.05))
    eps = {c.ep for c in r.configurations}
    assert max(eps) > 1 and 1 in {c.ep for c in r.configurations} | {1}
    assert all(c.gpus_total >= 16 for c in r.configurations)  # 671 GB of FP8 weights > 8 x 80 GB
    assert any("KV cache holds 0.00 GB per GPU" in x.reason for x in r.rejected)
    wide = [c for c in r.configurations if c.gpus_per_replica > 8]
    assert wide and all(c.nodes >= c.replicas * 2 for c in wide)


def test_no_feasible_configuration_is_explained() -> None:
    r = _plan(model="llama-3.1-405b", gpus=["l40s"], max_gpus_per_replica=4)
    assert r.configurations == [] and r.best is None
    assert any("No configuration" in n for n in r.notes)
    assert r.rejected


def test_measured_points_override_modelled_numbers() -> None:
    shape = {"input_len": 512.0, "output_len": 256.0}
    true = Efficiency(
        mem_bw_fraction=0.6, compute_fraction=0.4, collective_latency_s=1e-5, step_overhead_s=0.003
    )
    pts = []
    for b in (1, 16, 64, 128, 256):
        p = MeasuredPoint(
            model="llama-3.1-8b",
            gpu="h100",
            tp=1,
            output_tokens_per_s=float(b),
            tpot_s=1.0,
            max_num_seqs=1024,
            **shape,
        )
        tpot = predict_tpot(p, true)
        out = b / tpot
        pts.append(
            p.model_copy(
                update={
                    "tpot_s": tpot,
                    "output_tokens_per_s": out,
                    "requests_per_s": out / 256,
                    "ttft_s": 0.1,
                    "ttft_pct_s": {"p50": 0.1, "p90": 0.15},
                    "tpot_pct_s": {"p50": tpot, "p90": tpot * 1.1},
                    "run_dir": f"b{b}",
                }
            )
        )
    slo = SloSpec(tpot_s=0.05, ttft_s=1.0)
    r = plan(
        PlanRequest(
            model="llama-3.1-8b",
            gpus=["h100"],
            target_rps=20.0,
            slo=slo,
            measured_points=pts,
            scaling=False,
            **shape,
        )
    )
    assert r.calibration and r.calibration[0].gpu == "h100"
    assert r.efficiency["h100"].mem_bw_fraction == pytest.approx(0.6, rel=0.05)
    tp1 = next(c for c in r.configurations if c.parallelism == "TP1")
    assert tp1.source == "measured" and tp1.calibrated
    ok = [p for p in pts if (p.tpot_pct_s["p90"] <= 0.05)]
    assert tp1.max_rps_per_replica == pytest.approx(max(p.requests_per_s or 0 for p in ok))
    assert (
        tp1.sources["tpot_s"] == "measured"
        and tp1.sources["required_scale_up_gb_per_s"] == "modelled"
    )
    other = next(c for c in r.configurations if c.parallelism != "TP1")
    assert other.source == "modelled" and other.calibrated


def test_result_is_json_and_lists_required_keys() -> None:
    r = _plan(
        slo=SloSpec(tpot_s=0.05), scaling=True, scaling_output_lens=[256, 4096], scaling_ns=[1, 4]
    )
    data = json.loads(json.dumps(r.model_dump(mode="json")))
    keys = {
        "gpu",
        "tp",
        "pp",
        "dp",
        "ep",
        "gpus_total",
        "nodes",
        "demand_tokens_per_s_per_gpu",
        "capacity_tokens_per_s_per_gpu",
        "ttft_s",
        "tpot_s",
        "cost_per_hour",
        "source",
    }
    assert keys <= set(data["configurations"][0])
    tts = data["test_time_scaling"]
    assert [row["output_len"] for row in tts["by_output_len"]] == [256, 4096]
    assert [row["n"] for row in tts["by_n"]] == [1, 4]


def test_test_time_scaling_grows_with_reasoning_length_and_n() -> None:
    req = PlanRequest(
        model="deepseek-r1",
        gpus=["h800"],
        input_len=1024,
        output_len=1024,
        slo=SloSpec(tpot_s=0.05),
        users=1000,
        rate_per_user_per_s=1 / 60,
    )
    tts = test_time_scaling(req, output_lens=[256, 1024, 4096, 16384], ns=[1, 2, 4, 8])
    by_o = [row.gpus_per_1k_users for row in tts.by_output_len]
    by_n = [row.gpus_per_1k_users for row in tts.by_n]
    assert all(v is not None for v in by_o + by_n)
    assert by_o == sorted(by_o) and by_o[-1] > 10 * by_o[0]  # super-linear in reasoning length
    assert by_n == sorted(by_n) and by_n[-1] > 2 * by_n[0]
    assert tts.rate_per_user_per_s == pytest.approx(1 / 60)


def test_bad_requests_are_spec_errors() -> None:
    with pytest.raises(SpecError, match="unknown model"):
        _plan(model="nope")
    with pytest.raises(SpecError, match="unknown GPU"):
        _plan(gpus=["h100,tpu-v5"])
    with pytest.raises(SpecError, match="unknown interconnect"):
        _plan(interconnect=["carrier-pigeon"])
    with pytest.raises(ValueError, match="either target_rps or users"):
        PlanRequest(model="tiny", target_rps=1.0, users=10, rate_per_user_per_s=1.0)
