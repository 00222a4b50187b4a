"""``infprof plan``: JSON contract, human output, one-line errors and the 5-second budget."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from profiler.cli.main import cli
from profiler.cli.plan import parse_rate
from tests.fakes.synthetic_runs import make_sweep

CONFIG_KEYS = {
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
    "gpus_per_replica",
    "replicas",
    "parallelism",
    "tokens_per_s_per_user",
    "cost_per_million_output_tokens",
    "joules_per_output_token",
    "required_scale_up_gb_per_s",
    "required_scale_out_gb_per_s",
    "interconnects",
    "bottleneck",
    "sources",
    "best",
}


def _run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, ["plan", *args])
    return res.exit_code, res.stdout, res.stderr


def test_json_output_contract() -> None:
    code, out, _ = _run("--model", "llama-3.1-70b", "--gpu", "h100", "--target-rps", "10", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["configurations"]
    for c in data["configurations"]:
        assert set(c) >= CONFIG_KEYS
        assert c["source"] in ("measured", "modelled")
        assert set(c["sources"].values()) <= {"measured", "modelled"}
        for x in c["interconnects"]:
            assert {"interconnect", "meets_slo", "tpot_s", "used"} <= set(x)
    assert sum(c["best"] for c in data["configurations"]) == 1
    assert data["best"]["best"] is True
    tts = data["test_time_scaling"]
    assert [r["output_len"] for r in tts["by_output_len"]] == [
        256,
        512,
        1024,
        2048,
        4096,
        8192,
        16384,
        32768,
    ]
    assert [r["n"] for r in tts["by_n"]] == [1, 2, 4, 8, 16]
    assert data["load"]["target_rps"] == 10.0


def test_human_output_has_tables() -> None:
    code, out, _ = _run(
        "--model",
        "deepseek-v3",
        "--gpu",
        "h800",
        "--target-rps",
        "10",
        "--slo",
        "ttft=2,tpot=0.05",
        "--no-scaling",
    )
    assert code == 0
    assert "best:" in out and "Interconnect sensitivity" in out and "configurations" in out
    assert "test-time scaling" not in out


def test_users_rate_and_gpu_list() -> None:
    code, out, _ = _run(
        "--model", "llama-3.1-8b", "--gpu", "h100,l40s", "--gpu", "a100", "--users", "10000",
        "--rate-per-user", "30/day", "--peak-factor", "3", "--slo", "tpot=0.05", "--price", "l40s=0.5", "--json", "--no-scaling",
    )  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert data["gpus"] == ["h100", "l40s", "a100"]
    assert data["load"]["target_rps"] == pytest.approx(10000 * 30 / 86400 * 3)
    assert data["prices"]["l40s"] == 0.5


def test_workload_file_sets_the_shape(tmp_path: Path) -> None:
    wl = tmp_path / "reason.yaml"
    wl.write_text(
        "name: reason\nscenarios:\n  - input: {kind: fixed, value: 900}\n"
        "    output: {kind: uniform, min: 2000, max: 6000}\n    n: 2\n"
    )
    code, out, _ = _run(
        "--model",
        "llama-3.1-8b",
        "--workload",
        str(wl),
        "--target-rps",
        "1",
        "--json",
        "--no-scaling",
    )
    assert code == 0
    w = json.loads(out)["workload"]
    assert (w["name"], w["input_len"], w["output_len"], w["n"]) == ("reason", 900, 4000, 2)


def test_calibration_sweep_marks_measured(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, configs=1, loads=(1, 4, 16))
    code, out, err = _run(
        "--model", "tiny", "--gpu", "h100", "--calibration", str(sweep), "--input-len", "128",
        "--output-len", "32", "--target-rps", "2", "--json", "--no-scaling",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["calibration"][0]["points"] == 3
    assert data["calibration"][0]["heldout_error_pct"] is not None
    measured = [c for c in data["configurations"] if c["source"] == "measured"]
    assert measured and all(c["tp"] == 1 and c["pp"] == 1 for c in measured)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "gpt-9"], "unknown model 'gpt-9' (fix: use one of: llama-3.1-8b"),
        (["--model", "tiny", "--gpu", "v100"], "unknown GPU 'v100' (fix: use one of: h100"),
        (["--model", "tiny", "--slo", "latency=3"], "--slo: cannot read"),
        (["--model", "tiny", "--users", "10"], "--users needs --rate-per-user"),
        (
            ["--model", "tiny", "--users", "10", "--rate-per-user", "often"],
            "--rate-per-user: cannot read",
        ),
        (["--model", "tiny", "--price", "h100"], "--price: cannot read"),
        (["--model", "tiny", "--interconnect", "wifi"], "unknown interconnect 'wifi'"),
        (
            ["--model", "tiny", "--workload", "no-such-workload"],
            "unknown workload 'no-such-workload'",
        ),
        (
            ["--model", "tiny", "--target-rps", "1", "--users", "5", "--rate-per-user", "1/s"],
            "--target-rps and --users",
        ),
    ],
)
def test_invalid_inputs_give_one_line_errors(args: list[str], needle: str) -> None:
    code, out, err = _run(*args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("infprof: error: ")
    assert needle in lines[0]


def test_parse_rate_units() -> None:
    assert parse_rate("10/day") == pytest.approx(10 / 86400)
    assert parse_rate("2/h") == pytest.approx(2 / 3600)
    assert parse_rate("3/min") == pytest.approx(0.05)
    assert parse_rate("0.5/s") == 0.5
    assert parse_rate("0.25") == 0.25
    assert parse_rate("10/days") == pytest.approx(10 / 86400)


@pytest.mark.parametrize(("model", "gpu"), [("llama-3.1-70b", "h100"), ("deepseek-v3", "h800")])
def test_acceptance_commands_answer_in_under_5_s(model: str, gpu: str) -> None:
    root = Path(__file__).resolve().parents[2]
    t0 = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "profiler",
            "plan",
            "--model",
            model,
            "--gpu",
            gpu,
            "--target-rps",
            "10",
            "--json",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["configurations"]
    assert elapsed < 5.0, f"took {elapsed:.2f} s"
    assert "matplotlib" not in proc.stderr


def test_shipped_workload_by_name() -> None:
    code, out, err = _run(
        "--model",
        "llama-3.1-8b",
        "--workload",
        "reasoning",
        "--target-rps",
        "1",
        "--json",
        "--no-scaling",
    )
    assert code == 0, err
    w = json.loads(out)["workload"]
    assert w["name"] == "reasoning" and w["output_len"] > w["input_len"]
