"""``infprof plan --json`` pinned: the planner's numbers for a few configurations, stored under
tests/unit/golden/ from the code before the capacity modules were split (issue 16), so a
refactor that moves code cannot move a number. A deliberate model change regenerates them:
``INFPROF_WRITE_GOLDEN=1 pytest tests/unit/test_capacity_golden.py``, and says why in its commit."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from profiler.cli.main import cli
from tests.fakes.synthetic_runs import make_sweep

GOLDEN = Path(__file__).parent / "golden"

PLANS: dict[str, list[str]] = {
    # dense, three GPUs, interconnect checks and the test-time scaling section
    "dense_70b": [
        "--model", "llama-3.1-70b", "--gpu", "h100,h200,l40s", "--target-rps", "10",
        "--slo", "ttft=2,tpot=0.05",
    ],
    # MoE with expert-parallel layouts, EPLB, and disaggregated prefill/decode pools
    "moe_disagg": [
        "--model", "deepseek-v3", "--gpu", "h200,b200", "--target-rps", "5", "--eplb",
        "--slo", "ttft=3,tpot=0.08", "--disaggregated", "--no-scaling",
        "--max-gpus-per-replica", "16",
    ],
    # a closed loop (fixed concurrency) with a sliding-window model
    "concurrency_local_attention": [
        "--model", "gpt-oss-120b", "--gpu", "h100", "--concurrency", "64",
        "--input-len", "2000", "--output-len", "500", "--no-scaling",
        "--layout", "tp1,tp2,tp4,tp8,dp8xep8",
    ],
}  # fmt: skip


def _plan(args: list[str]) -> dict[str, Any]:
    res = CliRunner().invoke(cli, ["plan", *args, "--json"])
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def _check(name: str, got: dict[str, Any]) -> None:
    path = GOLDEN / f"plan_{name}.json"
    if os.environ.get("INFPROF_WRITE_GOLDEN"):
        path.write_text(json.dumps(got, sort_keys=True) + "\n")
    assert got == json.loads(path.read_text())


@pytest.mark.parametrize("name", sorted(PLANS))
def test_plan_json_is_unchanged(name: str) -> None:
    _check(name, _plan(PLANS[name]))


def test_calibrated_plan_json_is_unchanged(tmp_path: Path) -> None:
    """Calibrated on a synthetic sweep (seeded): the fit, its held-out error and the measured
    rows. The sweep's temporary path is replaced by <sweep> before comparing."""
    sweep = make_sweep(tmp_path, configs=1, loads=(1, 4, 16))
    got = _plan(
        [
            "--model", "tiny", "--gpu", "h100", "--calibration", str(sweep),
            "--input-len", "128", "--output-len", "32", "--target-rps", "2", "--no-scaling",
        ]
    )  # fmt: skip
    _check("calibrated", json.loads(json.dumps(got).replace(str(sweep), "<sweep>")))
