"""Calibration: efficiency factors are recovered from synthetic measurements made with known
factors, leave-one-out error is reported, and sweep directories are read into points."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from profiler.capacity.calibrate import fit, predict_tpot
from profiler.capacity.deployment import Efficiency
from profiler.capacity.measured import MeasuredPoint, read_points
from profiler.errors import SpecError
from tests.fakes.synthetic_runs import make_sweep

TRUE = Efficiency(
    mem_bw_fraction=0.62, compute_fraction=0.41, collective_latency_s=14e-6, step_overhead_s=3.0e-3
)


def synthetic_points(eff: Efficiency, noise: float = 0.0, seed: int = 0) -> list[MeasuredPoint]:
    """Points 'measured' on H100 by a server that behaves exactly like the model with ``eff``
    (TPOT from the model; throughput consistent with Little's law), optionally with noise."""
    rng = np.random.default_rng(seed)
    out: list[MeasuredPoint] = []
    grid = [
        ("llama-3.1-8b", 1, [1, 8, 64, 256, 768]),
        ("llama-3.1-8b", 2, [1, 32, 512]),
        ("llama-3.1-70b", 4, [1, 16, 128]),
        ("llama-3.1-70b", 8, [1, 64, 256, 1024]),
    ]
    for model, tp, batches in grid:
        for b in batches:
            # output tok/s x TPOT = decoding streams (Little): b streams while predicting
            p = MeasuredPoint(
                model=model,
                gpu="h100",
                tp=tp,
                input_len=512,
                output_len=256,
                output_tokens_per_s=float(b),
                tpot_s=1.0,
                max_num_seqs=1024,
            )
            tpot = predict_tpot(p, eff) * (1 + noise * rng.standard_normal())
            out.append(
                p.model_copy(
                    update={
                        "tpot_s": tpot,
                        "output_tokens_per_s": b / tpot,
                        "run_dir": f"{model}-tp{tp}-b{b}",
                    }
                )
            )
    return out


def test_fit_recovers_known_factors() -> None:
    pts = synthetic_points(TRUE)
    cal = fit(pts)
    assert cal.gpu == "h100" and cal.points == len(pts)
    assert cal.fitted.mem_bw_fraction == pytest.approx(TRUE.mem_bw_fraction, rel=0.03)
    assert cal.fitted.compute_fraction == pytest.approx(TRUE.compute_fraction, rel=0.03)
    assert cal.fitted.step_overhead_s == pytest.approx(TRUE.step_overhead_s, rel=0.05)
    assert cal.fitted.collective_latency_s == pytest.approx(TRUE.collective_latency_s, rel=0.1)
    assert set(cal.identified) == {
        "mem_bw_fraction",
        "compute_fraction",
        "collective_latency_s",
        "step_overhead_s",
    }
    assert cal.fit_error_pct < 1.0
    # held out: every point predicted by a fit that never saw it
    assert len(cal.heldout) == len(pts)
    assert cal.heldout_error_pct is not None and cal.heldout_error_pct < 1.0
    assert cal.heldout_max_error_pct is not None and cal.heldout_max_error_pct < 3.0


def test_heldout_error_reflects_noise() -> None:
    cal = fit(synthetic_points(TRUE, noise=0.03, seed=1))
    assert cal.heldout_error_pct is not None
    assert 0.5 < cal.heldout_error_pct < 8.0
    assert cal.heldout_error_pct >= cal.fit_error_pct * 0.9  # held out is not better than in-sample
    assert cal.fitted.mem_bw_fraction == pytest.approx(TRUE.mem_bw_fraction, rel=0.1)


def test_unidentified_factors_keep_defaults() -> None:
    # TP1 only, small batches: no collectives, nothing compute-bound
    pts = [
        p
        for p in synthetic_points(TRUE)
        if p.tp == 1 and (p.output_tokens_per_s or 0) * (p.tpot_s or 0) <= 64.5
    ]
    base = Efficiency()
    cal = fit(pts, base)
    assert "collective_latency_s" not in cal.identified
    assert "compute_fraction" not in cal.identified
    assert cal.fitted.collective_latency_s == base.collective_latency_s
    assert cal.fitted.compute_fraction == base.compute_fraction


def test_too_few_points_is_a_clear_error() -> None:
    with pytest.raises(SpecError, match="at least 2"):
        fit(synthetic_points(TRUE)[:1])
    no_gpu = [p.model_copy(update={"gpu": None}) for p in synthetic_points(TRUE)[:3]]
    with pytest.raises(SpecError, match="no GPU recorded"):
        fit(no_gpu)


def test_load_sweep_reads_index_runs_and_manifests(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, configs=2, loads=(1, 4, 16))
    pts = read_points(sweep)
    assert len(pts) == 6
    p = pts[0]
    assert p.gpu == "h100"  # from the manifest's NVML name "NVIDIA H100 80GB HBM3"
    assert p.model == "tiny" and p.tp == 1 and p.ep == 1  # the sweep grid's ep: false
    assert p.input_len == 128 and p.output_len == 32
    assert p.load_kind == "concurrency" and p.load_value in (1, 4, 16)
    assert p.tpot_s is not None and p.output_tokens_per_s is not None
    assert p.max_num_seqs in (4, 8)
    # a run directory alone works too
    assert len(read_points(sweep / "runs" / "c0-synthetic-conc1")) == 1


def test_load_sweep_skips_unfinished_and_explains_bad_dirs(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, configs=1, loads=(1, 2))
    index = json.loads((sweep / "index.json").read_text())
    index["points"][1]["status"] = "running"
    (sweep / "index.json").write_text(json.dumps(index))
    assert len(read_points(sweep)) == 1
    with pytest.raises(SpecError, match="no sweep index.json"):
        read_points(tmp_path / "nowhere")


def test_cpu_sweep_needs_calibration_gpu(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, configs=1, loads=(1, 4, 16), gpu=False)
    pts = read_points(sweep)
    assert all(p.gpu is None for p in pts)
    cal = fit(pts, gpu="cpu")
    assert cal.gpu == "cpu" and cal.points == 3
    assert cal.heldout_error_pct is not None


def _run_dir(tmp_path: Path, name: str, summary_energy: dict, manifest_extra: dict) -> Path:  # type: ignore[type-arg]
    run = tmp_path / name
    run.mkdir()
    summary = {
        "requests": {"ok": 10},
        "tokens": {"prompt": 1280, "output": 320},
        "latency": {"tpot_s": {"mean": 0.02}},
        "throughput": {"requests_per_s": 1.0, "output_tokens_per_s": 32.0},
        "energy": summary_energy,
    }
    manifest = {"spec": {"serve": {"model": "tiny", "tensor_parallel_size": 1}}, **manifest_extra}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_measured_point_uses_the_servers_gpus(tmp_path: Path) -> None:
    gpus = [{"index": 0, "name": "NVIDIA L4"}, {"index": 1, "name": "NVIDIA H100 80GB HBM3"}]
    scope = {"gpus": ["1"], "uuids": [None], "method": "explicit", "reason": "--gpus"}
    scoped = _run_dir(
        tmp_path,
        "scoped",
        {
            "available": True,
            "joules_per_output_token": 0.5,
            "per_gpu_joules": {"1": 1.0},
            "scope": scope,
        },
        {"gpus": gpus, "gpu_scope": scope},
    )
    p = read_points(scoped)[0]
    assert p.gpu == "h100" and p.energy_j_per_token == 0.5  # GPU 1's model, not GPU 0's
    # a summary from before scoping that counted both GPUs for a one-GPU server: unknown
    old = _run_dir(
        tmp_path,
        "old",
        {
            "available": True,
            "joules_per_output_token": 0.9,
            "per_gpu_joules": {"0": 1.0, "1": 1.0},
        },
        {"gpus": gpus},
    )
    assert read_points(old)[0].energy_j_per_token is None


def test_one_point_calibration_fixes_decode_efficiency_and_says_what_it_does_not() -> None:
    """A server that behaves like the model with eta_B = 0.6 (other factors at their defaults),
    measured once at a memory-bound decode batch: fit_one recovers eta_B exactly, leaves the rest
    at the defaults, and its notes say what one point cannot pin down."""
    from profiler.capacity.calibrate import fit_one

    true = Efficiency(mem_bw_fraction=0.6)
    point = next(p for p in synthetic_points(true) if p.run_dir == "llama-3.1-8b-tp1-b8")
    cal = fit_one(point)
    base = Efficiency()
    assert cal.points == 1 and cal.identified == ["mem_bw_fraction"] and cal.gpu == "h100"
    assert cal.fitted.mem_bw_fraction == pytest.approx(0.6, rel=1e-9)
    assert cal.fitted.compute_fraction == base.compute_fraction
    assert cal.fitted.step_overhead_s == base.step_overhead_s
    assert cal.fitted.collective_latency_s == base.collective_latency_s
    assert cal.fit_error_pct == pytest.approx(0.0, abs=1e-9)
    assert cal.heldout == [] and cal.heldout_error_pct is None
    text = " ".join(cal.notes)
    assert "fixes mem_bw_fraction = 0.600 at a batch of 8.0 streams" in text
    assert "does not pin down prefill efficiency (eta_F)" in text
    assert "how TPOT grows with the batch" in text
    # a TPOT below the fixed costs: the factor goes to its bound and the notes say so
    fast = point.model_copy(update={"tpot_s": 1e-4, "output_tokens_per_s": 8 / 1e-4})
    assert any("below the default fixed costs" in n for n in fit_one(fast).notes)
    with pytest.raises(SpecError, match="no GPU recorded"):
        fit_one(point.model_copy(update={"gpu": None}))


def test_plan_calibrates_on_one_run_directory(tmp_path: Path) -> None:
    from profiler.capacity.planner import plan
    from profiler.capacity.result import PlanRequest

    sweep = make_sweep(tmp_path, configs=1, loads=(4,))
    run = sweep / "runs" / "c0-synthetic-conc4"
    result = plan(
        PlanRequest(
            model="tiny",
            gpus=["h100"],
            calibration=run,
            input_len=128,
            output_len=32,
            target_rps=2,
            scaling=False,
        )
    )
    assert len(result.calibration) == 1
    c = result.calibration[0]
    assert c.points == 1 and c.identified in (["mem_bw_fraction"], ["compute_fraction"])
    assert result.efficiency["h100"] == c.fitted
    assert any(n.startswith("One measured point") for n in result.notes)
    assert any("does not pin down" in n for n in result.notes)
