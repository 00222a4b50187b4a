"""--calibration reads results people already have: vllm bench serve result JSON, GuideLLM
benchmark reports and AIPerf exports (fixtures use the documented field names: vllm
benchmarks/serve.py's result dict, GuideLLM's benchmarks[].metrics.<metric>.successful
distributions, AIPerf's profile_export_aiperf.json), as well as infprof sweeps; an unknown
file is an error naming it; a model the planner cannot size is an error, not a silently
uncalibrated plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profiler.capacity.calibrate import predict_tpot
from profiler.capacity.deployment import Efficiency, Layout
from profiler.capacity.importers import kind_of, load_calibration
from profiler.capacity.measured import MeasuredPoint
from profiler.capacity.planner import plan
from profiler.capacity.result import PlanRequest
from profiler.errors import SpecError
from tests.fakes.synthetic_runs import make_sweep

TRUE = Efficiency(mem_bw_fraction=0.6, compute_fraction=0.45, step_overhead_s=2e-3)


def _tpot(conc: int, tp: int = 1) -> float:
    p = MeasuredPoint(
        model="llama-3.1-8b",
        gpu="h100",
        tp=tp,
        input_len=1024,
        output_len=256,
        output_tokens_per_s=float(conc),
        tpot_s=1.0,
    )
    return predict_tpot(p, TRUE)


def vllm_result(conc: int) -> dict[str, object]:
    """The fields vllm bench serve --save-result writes (vllm/benchmarks/serve.py)."""
    tpot = _tpot(conc)
    out_tps = conc / tpot
    done = 200
    return {
        "date": "20250101-000000",
        "endpoint_type": "openai",
        "backend": "openai",
        "label": None,
        "model_id": "meta-llama/Llama-3.1-8B-Instruct",
        "tokenizer_id": "meta-llama/Llama-3.1-8B-Instruct",
        "num_prompts": done,
        "request_rate": "inf",
        "burstiness": 1.0,
        "max_concurrency": conc,
        "duration": done * 256 / out_tps,
        "completed": done,
        "failed": 0,
        "total_input_tokens": done * 1024,
        "total_output_tokens": done * 256,
        "request_throughput": out_tps / 256,
        "request_goodput": None,
        "output_throughput": out_tps,
        "total_token_throughput": out_tps * 5,
        "max_output_tokens_per_s": out_tps * 1.2,
        "max_concurrent_requests": conc,
        "mean_ttft_ms": 80.0,
        "median_ttft_ms": 75.0,
        "std_ttft_ms": 5.0,
        "p99_ttft_ms": 120.0,
        "mean_tpot_ms": tpot * 1e3,
        "median_tpot_ms": tpot * 1e3,
        "std_tpot_ms": 0.1,
        "p99_tpot_ms": tpot * 1.1e3,
        "mean_itl_ms": tpot * 1e3,
        "median_itl_ms": tpot * 1e3,
        "std_itl_ms": 0.1,
        "p99_itl_ms": tpot * 1.2e3,
        "mean_e2el_ms": 80 + 255 * tpot * 1e3,
        "median_e2el_ms": 80 + 255 * tpot * 1e3,
        "std_e2el_ms": 1.0,
        "p99_e2el_ms": 90 + 255 * tpot * 1.1e3,
    }


def _dist(mean: float, p50: float | None = None) -> dict[str, object]:
    return {
        "successful": {
            "mean": mean,
            "median": p50 if p50 is not None else mean,
            "std_dev": 0.0,
            "count": 100,
            "total_sum": mean * 100,
            "percentiles": {"p50": p50 or mean, "p90": mean * 1.1, "p99": mean * 1.3},
        },
        "errored": {"mean": 0.0},
        "incomplete": {"mean": 0.0},
        "total": {"mean": mean},
    }


def guidellm_report(concs: list[int]) -> dict[str, object]:
    """GuideLLM's benchmarks JSON: benchmarks[].metrics.<metric>.successful.<stat>."""
    benchmarks = []
    for c in concs:
        tpot = _tpot(c)
        out = c / tpot
        benchmarks.append(
            {
                "type_": "generative_benchmark",
                "args": {"strategy": {"type_": "concurrent", "streams": c}},
                "duration": 60.0,
                "metrics": {
                    "requests_per_second": _dist(out / 256),
                    "request_concurrency": _dist(float(c)),
                    "request_latency": _dist(0.08 + 255 * tpot),
                    "prompt_token_count": _dist(1024.0),
                    "output_token_count": _dist(256.0),
                    "time_to_first_token_ms": _dist(80.0, 75.0),
                    "time_per_output_token_ms": _dist(tpot * 1e3),
                    "inter_token_latency_ms": _dist(tpot * 1e3),
                    "output_tokens_per_second": _dist(out),
                    "tokens_per_second": _dist(out * 5),
                },
            }
        )
    return {"args": {"model": "meta-llama/Llama-3.1-8B-Instruct"}, "benchmarks": benchmarks}


def aiperf_export(conc: int) -> dict[str, object]:
    """AIPerf's profile_export_aiperf.json: one object per metric with unit/avg/percentiles."""
    tpot = _tpot(conc)
    out = conc / tpot
    return {
        "request_throughput": {"unit": "requests/sec", "avg": out / 256},
        "output_token_throughput": {"unit": "tokens/sec", "avg": out},
        "time_to_first_token": {"unit": "ms", "avg": 80.0, "p50": 75.0, "p90": 90.0, "p99": 120.0},
        "inter_token_latency": {
            "unit": "ms",
            "avg": tpot * 1e3,
            "p50": tpot * 1e3,
            "p99": tpot * 1.2e3,
        },
        "input_sequence_length": {"unit": "tokens", "avg": 1024.0},
        "output_sequence_length": {"unit": "tokens", "avg": 256.0},
        "request_count": {"unit": "requests", "avg": 200.0},
        "benchmark_duration": {"unit": "sec", "avg": 60.0},
        "input_config": {
            "endpoint": {"model_names": ["meta-llama/Llama-3.1-8B-Instruct"], "streaming": True},
            "loadgen": {"concurrency": conc},
        },
    }


def test_formats_are_recognised() -> None:
    assert kind_of(vllm_result(8)) == "vllm"
    assert kind_of([vllm_result(8), vllm_result(32)]) == "vllm"
    assert kind_of(guidellm_report([8])) == "guidellm"
    assert kind_of(aiperf_export(8)) == "aiperf"
    assert kind_of({"hello": 1}) is None


def test_vllm_bench_serve_fields_map(tmp_path: Path) -> None:
    f = tmp_path / "vllm.json"
    f.write_text(json.dumps(vllm_result(16)))
    (p,) = load_calibration(f, gpu="h100", layout=Layout(tp=2))
    assert p.model == "meta-llama/Llama-3.1-8B-Instruct" and p.gpu == "h100" and p.tp == 2
    assert p.input_len == 1024 and p.output_len == 256
    assert p.load_kind == "concurrency" and p.load_value == 16
    assert p.tpot_s == pytest.approx(_tpot(16)) and p.ttft_s == pytest.approx(0.075)
    assert p.tpot_pct_s["p99"] == pytest.approx(_tpot(16) * 1.1)
    assert p.output_tokens_per_s == pytest.approx(16 / _tpot(16))


def test_guidellm_and_aiperf_fields_map(tmp_path: Path) -> None:
    g = tmp_path / "guidellm.json"
    g.write_text(json.dumps(guidellm_report([4, 32])))
    pts = load_calibration(g, gpu="h100")
    assert [p.load_value for p in pts] == [4, 32]
    assert pts[1].tpot_s == pytest.approx(_tpot(32)) and pts[1].input_len == 1024
    assert pts[0].tpot_pct_s["p90"] == pytest.approx(_tpot(4) * 1.1)
    a = tmp_path / "profile_export_aiperf.json"
    a.write_text(json.dumps(aiperf_export(64)))
    (p,) = load_calibration(a, gpu="h100")
    assert p.model.endswith("Llama-3.1-8B-Instruct") and p.load_value == 64
    assert p.tpot_s == pytest.approx(_tpot(64)) and p.ttft_s == pytest.approx(0.075)


def test_plan_calibrates_on_vllm_bench_results(tmp_path: Path) -> None:
    f = tmp_path / "sweep.jsonl"  # vllm bench serve --append-result: one JSON per line
    f.write_text("\n".join(json.dumps(vllm_result(c)) for c in (1, 8, 32, 128)))
    r = plan(
        PlanRequest(
            model="llama-3.1-8b",
            gpus=["h100"],
            input_len=1024,
            output_len=256,
            calibration=f,
            calibration_gpu="h100",
            scaling=False,
        )
    )
    (c,) = r.calibration
    assert c.points == 4 and c.fitted.mem_bw_fraction == pytest.approx(0.6, rel=0.05)


def test_unknown_file_is_an_error_naming_it(tmp_path: Path) -> None:
    f = tmp_path / "mystery.json"
    f.write_text(json.dumps({"rows": [1, 2]}))
    with pytest.raises(SpecError, match="mystery.json: not a sweep or run directory"):
        load_calibration(f)
    g = tmp_path / "notes.txt"
    g.write_text("hello\nworld\n")
    with pytest.raises(SpecError, match="notes.txt: not JSON"):
        load_calibration(g)
    with pytest.raises(SpecError, match="no such file"):
        load_calibration(tmp_path / "missing.json")


def test_an_unknown_model_in_a_sweep_is_an_error(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, configs=1, loads=(1, 4))
    for run in (sweep / "runs").iterdir():
        m = json.loads((run / "manifest.json").read_text())
        m.setdefault("spec", {})["serve"] = {"model": "acme/never-heard-of-it-7b"}
        (run / "manifest.json").write_text(json.dumps(m))
    req = PlanRequest(
        model="llama-3.1-8b",
        gpus=["h100"],
        calibration=sweep,
        calibration_gpu="h100",
        scaling=False,
    )
    with pytest.raises(SpecError, match="acme/never-heard-of-it-7b' cannot be sized") as e:
        plan(req)
    assert "--calibration-model" in (e.value.fix or "")
    # naming the model makes it usable
    r = plan(req.model_copy(update={"calibration_model": "llama-3.1-8b"}))
    assert r.calibration


def test_a_field_of_the_wrong_shape_is_an_error_naming_file_and_field(tmp_path: Path) -> None:
    """A field infprof reads that is not what the format documents: the error names the file
    and the field (not a model named "['a', 'b']", nor a number read as missing)."""
    report = guidellm_report([4])
    report["args"] = {"model": ["a", "b"]}
    g = tmp_path / "guidellm.json"
    g.write_text(json.dumps(report))
    with pytest.raises(SpecError, match=r"guidellm\.json: field args\.model"):
        load_calibration(g, gpu="h100")
    export = aiperf_export(8)
    export["time_to_first_token"] = {"unit": "ms", "avg": 80.0, "p50": "fast"}
    a = tmp_path / "profile_export_aiperf.json"
    a.write_text(json.dumps(export))
    with pytest.raises(SpecError, match=r"aiperf\.json: field time_to_first_token\.p50"):
        load_calibration(a, gpu="h100")
    bench = guidellm_report([4])
    bench["benchmarks"][0]["metrics"]["time_per_output_token_ms"] = {"successful": 3}  # type: ignore[index]
    g.write_text(json.dumps(bench))
    with pytest.raises(
        SpecError, match=r"field benchmarks\[0\]\.metrics\.time_per_output_token_ms\.successful"
    ):
        load_calibration(g, gpu="h100")


def test_a_file_that_names_no_model_says_so(tmp_path: Path) -> None:
    report = guidellm_report([4])
    del report["args"]
    g = tmp_path / "guidellm.json"
    g.write_text(json.dumps(report))
    with pytest.raises(SpecError, match="guidellm.json: names no model"):
        load_calibration(g, gpu="h100")
    export = aiperf_export(8)
    export["input_config"] = {"loadgen": {"concurrency": 8}}
    a = tmp_path / "profile_export_aiperf.json"
    a.write_text(json.dumps(export))
    with pytest.raises(SpecError, match="aiperf.json: names no model"):
        load_calibration(a, gpu="h100")
