"""infprof compare: bootstrap CIs and regression gating (exit 7) on synthetic run directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from profiler.analysis.bootstrap import weighted_percentile
from profiler.analysis.compare import compare_runs, compare_samples
from profiler.analysis.compare_metrics import bootstrap, parse_metric_options
from profiler.analysis.run_sample import RunSample
from profiler.cli.main import cli
from profiler.errors import EXIT_REGRESSION, SpecError
from tests.fakes.synthetic_runs import make_repeats, make_run, run_effects


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
        str(runs["base"]),
        str(runs["slow"]),
        "--metric",
        "ttft_p50:10%",
        "--min-effect",
        "10%",
        "--resamples",
        "300",
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
    res = compare_runs(
        runs["base"], runs["slow"], gates={"ttft_p50": 1.0}, resamples=200, min_effect=0.1
    )
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
        min_effect=0.05,
    )
    by = {m.name: m for m in res.metrics}
    assert by["error_rate"].delta is not None and by["error_rate"].delta > 0.1
    assert by["error_rate"].verdict == "regression"
    assert by["requests_per_s"].verdict == "regression"  # fewer successes in the same window
    assert set(res.regressions) == {"error_rate", "requests_per_s"}
    assert by["slo_attainment"].a is not None  # SLO taken from A's spec


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
    assert by["slo_attainment"].a == pytest.approx(
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
        ba = bootstrap([a], "ttft_p50", 400, np.random.default_rng([trial, 0]))
        bb = bootstrap([b], "ttft_p50", 400, np.random.default_rng([trial, 1]))
        assert ba is not None and bb is not None
        lo, hi = np.percentile(bb - ba, [2.5, 97.5])
        covered += int(lo <= true_delta <= hi)
    assert covered >= 34
    again = bootstrap([_sample(np.arange(100.0))], "ttft_p50", 100, np.random.default_rng(7))
    once = bootstrap([_sample(np.arange(100.0))], "ttft_p50", 100, np.random.default_rng(7))
    assert again is not None and once is not None and np.array_equal(again, once)


def test_cluster_bootstrap_keeps_groups_whole() -> None:
    # two requests with constant gaps: any resample's median is one of 1, 2 (a mix) or 3
    values = np.array([1.0] * 5 + [3.0] * 5)
    one = _sample(np.ones(2))
    one.itl_values, one.itl_lengths = values, np.array([5, 5])
    out = bootstrap([one], "itl_p50", 200, np.random.default_rng(0))
    assert out is not None
    assert set(np.unique(out)) <= {1.0, 2.0, 3.0}
    assert {1.0, 3.0} <= set(np.unique(out))


def test_parse_metric_options() -> None:
    assert parse_metric_options(["ttft_p99:10%", "goodput", "error_rate:0.01"]) == {
        "ttft_p99": pytest.approx(0.10),
        "slo_met_rps": 0.05,
        "error_rate": 0.01,
    }
    # the old SLO metric names stay accepted as aliases
    assert parse_metric_options(["goodput_rps:10%", "goodput_fraction:0.02"]) == {
        "slo_met_rps": pytest.approx(0.10),
        "slo_attainment": 0.02,
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


# ------------------------------------------------------------------ run-to-run variance
# A server whose speed drifts between runs: every run's TTFT and TPOT are scaled by a run
# effect exp(N(0, 0.08)), several times the within-run CI of a 300-request run (about +-3%).
# A is drift seed 0 (run effects 0.95, 1.06, 1.04, 0.89), B is seed 1 (1.14, 1.18, 0.99, 0.90):
# the same configuration; their first runs differ by 19% from drift alone.
DRIFT_GATES = {"ttft_p50": 0.05, "tpot_p50": 0.05, "e2e_p50": 0.05, "itl_p50": 0.05}


@pytest.fixture(scope="module")
def drift(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("drift")
    return {
        "a": make_repeats(root, "a", runs=4, seed=0, n=300),
        "b": make_repeats(root, "b", runs=4, seed=1, n=300),
        # every B run 20% slower; B's own drift (seed 3: 0.92, 0.91, 1.01, 0.96) works against it
        "slow": make_repeats(root, "slow", runs=4, seed=3, slowdown=1.2, n=300),
    }


def _reps(d: Path) -> list[Path]:
    return sorted(d.glob("rep-*"))


def test_single_run_drift_is_worse_but_not_a_regression(drift: dict[str, Path]) -> None:
    """One run per side: the within-run bootstrap calls pure drift significantly worse (the
    interval covers only within-run noise), so without --min-effect nothing is gated."""
    res = compare_runs(drift["a"] / "rep-01", drift["b"] / "rep-01", gates=DRIFT_GATES)
    by = {m.name: m for m in res.metrics}
    assert by["ttft_p50"].verdict == "worse" and by["tpot_p50"].verdict == "worse"
    assert by["ttft_p50"].ci_low is not None and by["ttft_p50"].ci_low > 0
    assert res.regressions == []
    assert res.interval == "within-run"
    assert res.note is not None and "within-run" in res.note and "--min-effect" in res.note


def test_repeats_with_drift_give_no_gated_verdict(drift: dict[str, Path]) -> None:
    """Four runs per side of one configuration: the hierarchical bootstrap (runs, then
    requests) sees the run-to-run spread and calls nothing worse."""
    res = compare_runs(_reps(drift["a"]), _reps(drift["b"]), gates=DRIFT_GATES)
    assert res.interval == "hierarchical"
    assert res.runs_a == [str(p) for p in _reps(drift["a"])]
    by = {m.name: m for m in res.metrics}
    for name in DRIFT_GATES:
        assert by[name].verdict not in ("worse", "regression"), by[name]
        assert by[name].ci_low is not None and by[name].ci_low < 0 < (by[name].ci_high or 0)
    assert res.regressions == []
    assert len(by["ttft_p50"].a_per_run) == 4
    # the same data treated as single runs: the within-run intervals call most pairs worse
    worse = 0
    for ra, rb in zip(_reps(drift["a"]), _reps(drift["b"]), strict=True):
        one = compare_runs(ra, rb, resamples=300)
        worse += next(m for m in one.metrics if m.name == "tpot_p50").verdict == "worse"
    assert worse >= 2


def test_repeats_catch_a_real_slowdown(drift: dict[str, Path]) -> None:
    res = compare_runs(
        _reps(drift["a"]), _reps(drift["slow"]), gates={"ttft_p50": 0.1, "tpot_p50": 0.1}
    )
    by = {m.name: m for m in res.metrics}
    assert by["ttft_p50"].verdict == "regression" and by["tpot_p50"].verdict == "regression"
    assert set(res.regressions) == {"ttft_p50", "tpot_p50"}
    assert res.note is not None and "few runs" in res.note  # 4 runs a side: still few


def test_hierarchical_false_alarms_are_rare() -> None:
    """Twelve drifting scenarios of one configuration (three runs a side, run effect sd 8%):
    the within-run interval of one pair of runs excludes 0 in most, the hierarchical interval
    over the three runs in few."""
    within = hier = 0
    for s in range(12):
        ea, eb = run_effects(3, 0.08, 2 * s), run_effects(3, 0.08, 2 * s + 1)
        rng = np.random.default_rng(s)
        a = [_sample(rng.lognormal(np.log(0.05 * e), 0.3, 300)) for e in ea]
        b = [_sample(rng.lognormal(np.log(0.05 * e), 0.3, 300)) for e in eb]
        one = compare_samples(a[:1], b[:1], resamples=400, seed=s)
        three = compare_samples(a, b, resamples=400, seed=s)
        within += next(m for m in one.metrics if m.name == "ttft_p50").significant is True
        hier += next(m for m in three.metrics if m.name == "ttft_p50").significant is True
    assert within >= 7
    assert hier <= 2


def test_hierarchical_bootstrap_resamples_runs() -> None:
    """Two runs, one all 1.0 and one all 3.0: drawing runs with replacement gives pools of
    run 1 only (median 1) and run 2 only (3) as well as mixes (2); requests alone never would."""
    runs = [_sample(np.ones(50)), _sample(np.full(50, 3.0))]
    out = bootstrap(runs, "ttft_p50", 400, np.random.default_rng(0))
    assert out is not None
    assert set(np.unique(out)) <= {1.0, 2.0, 3.0}
    share = {v: float(np.mean(out == v)) for v in (1.0, 2.0, 3.0)}
    assert 0.15 < share[1.0] < 0.35 and 0.15 < share[3.0] < 0.35 and 0.4 < share[2.0] < 0.6
    # one run: an ordinary bootstrap of its requests
    solo = bootstrap(runs[:1], "ttft_p50", 50, np.random.default_rng(0))
    assert solo is not None and set(np.unique(solo)) == {1.0}


def test_weighted_percentile_matches_numpy_on_the_expanded_sample() -> None:
    rng = np.random.default_rng(3)
    values = np.sort(rng.lognormal(0, 1, 40))
    weights = rng.integers(0, 4, size=(25, 40))
    weights[:, 0] += 1  # no empty row
    for q in (0.0, 1.0, 50.0, 90.0, 99.0, 100.0):
        got = weighted_percentile(values, weights, q)
        want = [np.percentile(np.repeat(values, w), q) for w in weights]
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_rates_pool_bins_over_runs() -> None:
    a, b = _sample(np.ones(10)), _sample(np.ones(10))
    a.bins, b.bins = {"requests_per_s": np.full(10, 2.0)}, {"requests_per_s": np.full(10, 4.0)}
    a.window_s = b.window_s = 10.0
    res = compare_samples([a, b], [a, b], resamples=50)
    rps = next(m for m in res.metrics if m.name == "requests_per_s")
    assert rps.a == pytest.approx(3.0)  # 60 requests in 20 s
    assert rps.a_per_run == [pytest.approx(2.0), pytest.approx(4.0)]


def test_cli_repeat_directories_and_lists(drift: dict[str, Path]) -> None:
    a, b, slow = (str(drift[k]) for k in ("a", "b", "slow"))
    gate = ["--metric", "ttft_p50:10%", "--metric", "tpot_p50:10%", "--resamples", "300"]
    code, out = _invoke(a, b, *gate)
    assert code == 0, out
    assert "hierarchical" in out
    code, out = _invoke(a, slow, *gate)
    assert code == EXIT_REGRESSION, out
    assert "regression in" in out and "tpot_p50" in out
    # the same runs listed one by one: A1 A2 ... --vs B1 B2 ...
    listed = [str(p) for p in _reps(drift["a"])] + ["--vs"] + [str(p) for p in _reps(drift["slow"])]
    code2, out2 = _invoke(*listed, *gate, "--json")
    assert code2 == EXIT_REGRESSION
    data = json.loads(out2[: out2.rindex("}") + 1])
    assert data["runs_b"] == [str(p) for p in _reps(drift["slow"])]
    assert data["interval"] == "hierarchical"
    assert set(data["regressions"]) == {"ttft_p50", "tpot_p50"}


def test_cli_single_run_needs_min_effect(drift: dict[str, Path]) -> None:
    a1, b1 = str(drift["a"] / "rep-01"), str(drift["b"] / "rep-01")
    code, out = _invoke(a1, b1, "--metric", "tpot_p50:5%", "--resamples", "300", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["interval"] == "within-run" and data["min_effect"] is None
    assert "within-run" in data["note"] and data["regressions"] == []
    code, out = _invoke(a1, b1, "--metric", "tpot_p50:5%", "--resamples", "300")
    assert code == 0 and "within-run" in out and "--min-effect" in out
    # an effect the user accepts as real on one run each: +19% beyond --min-effect 10%
    code, out = _invoke(a1, b1, "--metric", "tpot_p50:5%", "--min-effect", "10%")
    assert code == EXIT_REGRESSION, out
    code, out = _invoke(a1, b1, "--metric", "tpot_p50:5%", "--min-effect", "25%")
    assert code == 0, out


def test_cli_bad_run_lists(drift: dict[str, Path], tmp_path: Path) -> None:
    code, out = _invoke(str(drift["a"]))
    assert code == 2 and "--vs" in out
    code, out = _invoke(str(drift["a"]), str(drift["b"]), str(drift["slow"]))
    assert code == 2 and "--vs" in out
    code, out = _invoke(str(drift["a"]), "--vs")
    assert code == 2
    code, out = _invoke(str(drift["a"]), str(drift["b"]), "--min-effect", "lots")
    assert code == 2 and "--min-effect" in out
    (tmp_path / "empty").mkdir()
    code, out = _invoke(str(drift["a"]), str(tmp_path / "empty"))
    assert code == 5 and "no request records" in out


def test_slo_metrics_renamed(runs: dict[str, Path]) -> None:
    res = compare_runs(runs["base"], runs["same"], resamples=50)
    names = [m.name for m in res.metrics]
    assert "slo_met_rps" in names and "slo_attainment" in names
    assert not any(n.startswith("goodput") for n in names)
    code, out = _invoke(str(runs["base"]), str(runs["same"]), "--metric", "goodput_fraction:5%")
    assert code == 0, out
    assert "slo_attainment" in out
