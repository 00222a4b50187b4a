"""infprof compare: bootstrap CIs and regression gating (exit 7) on synthetic run directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from profiler.analysis.compare import (
    RunSample,
    _bootstrap_clusters,
    bootstrap,
    compare_runs,
    parse_metric_options,
)
from profiler.cli.main import cli
from profiler.errors import EXIT_REGRESSION, SpecError
from tests.fakes.synthetic_runs import make_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "base": make_run(root, "base", gpu=False, n=300, ttft_s=0.05, seed=1),
        "same": make_run(root, "same", gpu=False, n=300, ttft_s=0.05, seed=2),
        "slow": make_run(root, "slow", gpu=False, n=300, ttft_s=0.08, seed=3),
        "fast": make_run(root, "fast", gpu=False, n=300, ttft_s=0.03, seed=4),
        "errors": make_run(
            root, "errors", gpu=False, n=300, ttft_s=0.05, error_fraction=0.2, seed=5
        ),
    }


def _invoke(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["compare", *args])
    return res.exit_code, res.output


def test_regression_exits_7(runs: dict[str, Path]) -> None:
    code, out = _invoke(
        str(runs["base"]), str(runs["slow"]), "--metric", "ttft_p50:10%", "--resamples", "300"
    )
    assert code == EXIT_REGRESSION, out
    assert "regression in ttft_p50" in out


def test_no_regression_exits_0(runs: dict[str, Path]) -> None:
    code, out = _invoke(
        str(runs["base"]), str(runs["same"]), "--metric", "ttft_p50:10%", "--metric", "e2e_p99:20%"
    )
    assert code == 0, out
    assert "ttft_p50" in out


def test_improvement_exits_0(runs: dict[str, Path]) -> None:
    code, out = _invoke(str(runs["base"]), str(runs["fast"]), "--metric", "ttft_p50:5%", "--json")
    assert code == 0, out
    data = json.loads(out)
    ttft = next(m for m in data["metrics"] if m["name"] == "ttft_p50")
    assert ttft["verdict"] == "better"
    assert ttft["ci_high"] < 0
    assert data["regressions"] == []


def test_threshold_above_change_is_not_a_regression(runs: dict[str, Path]) -> None:
    # +60% in TTFT is significant but below a 100% threshold
    res = compare_runs(runs["base"], runs["slow"], gates={"ttft_p50": 1.0}, resamples=200)
    d = next(m for m in res.metrics if m.name == "ttft_p50")
    assert d.verdict == "worse" and d.significant
    assert res.regressions == []


def test_ungated_worse_metric_does_not_fail(runs: dict[str, Path]) -> None:
    code, out = _invoke(str(runs["base"]), str(runs["slow"]), "--resamples", "200")
    assert code == 0, out


def test_throughput_and_error_rate_directions(runs: dict[str, Path]) -> None:
    res = compare_runs(
        runs["base"],
        runs["errors"],
        gates={"error_rate": 0.05, "requests_per_s": 0.05},
        resamples=300,
    )
    by = {m.name: m for m in res.metrics}
    assert by["error_rate"].delta is not None and by["error_rate"].delta > 0.1
    assert by["error_rate"].verdict == "regression"
    assert by["requests_per_s"].verdict == "regression"  # fewer successes in the same window
    assert set(res.regressions) == {"error_rate", "requests_per_s"}
    assert by["goodput_fraction"].a is not None  # SLO taken from A's spec


def test_point_estimates_match_summary(runs: dict[str, Path]) -> None:
    res = compare_runs(runs["base"], runs["same"], resamples=50)
    summary = json.loads((runs["base"] / "summary.json").read_text())
    by = {m.name: m for m in res.metrics}
    assert by["ttft_p99"].a == pytest.approx(summary["latency"]["ttft_s"]["p99"])
    assert by["itl_p50"].a == pytest.approx(summary["latency"]["itl_s"]["p50"])
    assert by["e2e_p50"].a == pytest.approx(summary["latency"]["e2e_s"]["p50"])
    assert by["output_tokens_per_s"].a == pytest.approx(
        summary["throughput"]["output_tokens_per_s"]
    )
    assert by["goodput_fraction"].a == pytest.approx(
        summary["slo_attainment"]["from_send"]["fraction"]
    )


def test_bootstrap_ci_covers_truth() -> None:
    """95% CIs of the median difference of two lognormal samples cover the true difference
    in most of 40 seeded trials, and are seeded (same seed, same interval)."""
    true_delta = np.exp(np.log(0.06)) - np.exp(np.log(0.05))  # medians of lognormal = exp(mu)
    covered = 0
    for trial in range(40):
        rng = np.random.default_rng(trial)
        a = _sample(rng.lognormal(np.log(0.05), 0.4, 400))
        b = _sample(rng.lognormal(np.log(0.06), 0.4, 400))
        ba = bootstrap(a, "ttft_p50", 400, np.random.default_rng([trial, 0]))
        bb = bootstrap(b, "ttft_p50", 400, np.random.default_rng([trial, 1]))
        assert ba is not None and bb is not None
        lo, hi = np.percentile(bb - ba, [2.5, 97.5])
        covered += int(lo <= true_delta <= hi)
    assert covered >= 34
    again = bootstrap(_sample(np.arange(100.0)), "ttft_p50", 100, np.random.default_rng(7))
    once = bootstrap(_sample(np.arange(100.0)), "ttft_p50", 100, np.random.default_rng(7))
    assert again is not None and once is not None and np.array_equal(again, once)


def test_cluster_bootstrap_keeps_groups_whole() -> None:
    # two groups with constant values: any resample's median is one of the two group values
    values = np.array([1.0] * 5 + [3.0] * 5)
    out = _bootstrap_clusters(values, np.array([5, 5]), 50.0, 200, np.random.default_rng(0))
    assert out is not None
    assert set(np.unique(out)) <= {1.0, 2.0, 3.0}
    assert {1.0, 3.0} <= set(np.unique(out))


def test_parse_metric_options() -> None:
    assert parse_metric_options(["ttft_p99:10%", "goodput", "error_rate:0.01"]) == {
        "ttft_p99": pytest.approx(0.10),
        "goodput_rps": 0.05,
        "error_rate": 0.01,
    }
    with pytest.raises(SpecError, match="unknown metric"):
        parse_metric_options(["latency"])
    with pytest.raises(SpecError, match="not a threshold"):
        parse_metric_options(["ttft_p50:fast"])


def test_not_a_run_dir(tmp_path: Path) -> None:
    code, out = _invoke(str(tmp_path), str(tmp_path))
    assert code == 5, out
    assert "no request records" in out


def _sample(ttft: np.ndarray) -> RunSample:
    n = ttft.size
    return RunSample(
        name="x",
        ok=np.ones(n, bool),
        meets_slo=None,
        window_s=10.0,
        bins={},
        ttft=ttft,
        tpot=ttft,
        e2e=ttft,
        itl_values=ttft,
        itl_lengths=np.ones(n, dtype=np.int64),
    )
