"""QuantileSketch: exact below its threshold, within the stated relative error above it,
mergeable (the merge is the sketch of the union) and serialisable."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from profiler.sketches import (
    EXACT_MAX_VALUES,
    RELATIVE_ACCURACY,
    Distribution,
    QuantileSketch,
)

QS = (0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999)


def _latencies(n: int, seed: int = 0) -> np.ndarray:
    """Decode-like gaps with a heavy tail: a gamma body, lognormal stalls, some exact zeros."""
    rng = np.random.default_rng(seed)
    v = rng.gamma(4.0, 0.005, size=n)
    stall = rng.random(n) < 0.02
    v[stall] = rng.lognormal(-1.0, 1.0, size=int(stall.sum()))
    v[rng.random(n) < 0.001] = 0.0
    return v


def _assert_within_bound(sketch: QuantileSketch, values: np.ndarray) -> None:
    exact = np.quantile(values, QS, method="lower")  # the order statistic DDSketch bounds
    for q, want in zip(QS, exact, strict=True):
        got = sketch.quantile(q)
        assert got is not None
        assert abs(got - want) <= RELATIVE_ACCURACY * abs(want) * (1 + 1e-9), (q, got, want)


def test_exact_at_and_below_the_threshold() -> None:
    v = _latencies(5000)
    s = QuantileSketch(exact_max=5000)
    for part in np.array_split(v, 7):
        s.add(part)
    assert s.exact
    assert s.distribution() == Distribution.of(v)
    assert s.distribution().method == "exact" and s.distribution().relative_error == 0.0
    s.add([0.01])  # one value more than the threshold: binned from now on
    assert not s.exact
    d = s.distribution()
    assert d.method == "ddsketch" and d.relative_error == RELATIVE_ACCURACY
    assert d.count == 5001


def test_default_threshold_is_exact_for_a_million_values() -> None:
    v = _latencies(EXACT_MAX_VALUES, seed=3)
    s = QuantileSketch.of(v)
    assert s.exact and s.distribution() == Distribution.of(v)


def test_relative_error_above_the_threshold_against_numpy() -> None:
    v = _latencies(3_000_000, seed=1)
    s = QuantileSketch()
    for part in np.array_split(v, 13):
        s.add(part)
    assert not s.exact
    _assert_within_bound(s, v)
    d = s.distribution()
    assert d.count == v.size
    assert d.max == v.max()
    assert d.mean == pytest.approx(v.mean(), rel=1e-12)
    for name, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
        want = np.percentile(v, q, method="lower")
        assert abs(getattr(d, name) - want) <= RELATIVE_ACCURACY * want * (1 + 1e-9)


def test_negative_and_zero_values_within_bound() -> None:
    rng = np.random.default_rng(4)
    v = np.concatenate([rng.normal(0.0, 0.01, 200_000), np.zeros(1000)])  # dispatch lags
    s = QuantileSketch(exact_max=0)
    s.add(v)
    _assert_within_bound(s, v)
    assert s.distribution().max == v.max()


def test_merge_equals_the_sketch_of_the_union() -> None:
    v = _latencies(1_500_000, seed=2)
    union = QuantileSketch.of(v)
    parts = np.split(v, [1000, 400_000, 1_200_000])  # one part small enough to stay exact
    merged = QuantileSketch()
    for p in parts:
        merged.merge(QuantileSketch.of(p))
    assert not merged.exact
    for q in QS:
        assert merged.quantile(q) == union.quantile(q)
    assert merged.count == union.count == v.size
    assert merged.max == union.max and merged.min == union.min
    assert merged.sum == pytest.approx(union.sum, rel=1e-12)
    _assert_within_bound(merged, v)


def test_merging_exact_sketches_stays_exact_below_the_threshold() -> None:
    a, b = _latencies(300, seed=5), _latencies(200, seed=6)
    m = QuantileSketch(exact_max=500)
    m.merge(QuantileSketch.of(a, exact_max=500))
    m.merge(QuantileSketch.of(b, exact_max=500))
    assert m.exact
    assert m.distribution() == Distribution.of(np.concatenate([a, b]))
    m.merge(QuantileSketch.of([0.5], exact_max=500))
    assert not m.exact and m.count == 501


def test_merge_refuses_another_accuracy() -> None:
    with pytest.raises(ValueError, match="relative accuracy"):
        QuantileSketch(0.01).merge(QuantileSketch.of([1.0], relative_accuracy=0.02))


@pytest.mark.parametrize("exact_max", [0, 10_000])
def test_weights_count_a_value_several_times(exact_max: int) -> None:
    rng = np.random.default_rng(7)
    v = rng.uniform(0.001, 0.1, 2000)
    w = rng.integers(1, 5, 2000)
    a = QuantileSketch(exact_max=exact_max)
    a.add(v, weights=w)
    b = QuantileSketch.of(np.repeat(v, w), exact_max=exact_max)
    assert a.count == b.count == int(w.sum())
    for q in QS:
        assert a.quantile(q) == pytest.approx(b.quantile(q), rel=1e-12)
    assert a.sum == pytest.approx(b.sum, rel=1e-12)


def test_nan_and_infinities_are_dropped() -> None:
    s = QuantileSketch.of([0.1, np.nan, np.inf, -np.inf, 0.3])
    assert s.distribution() == Distribution.of([0.1, 0.3])
    assert QuantileSketch.of([np.nan]).distribution().count == 0


@pytest.mark.parametrize("exact_max", [0, 10_000])
def test_serialised_form_round_trips_and_merges(exact_max: int) -> None:
    v = _latencies(5000, seed=8)
    s = QuantileSketch.of(v[:3000], exact_max=exact_max)
    wire = json.loads(json.dumps(s.to_dict()))  # JSON-safe
    back = QuantileSketch.from_dict(wire)
    assert back.distribution() == s.distribution()
    assert pickle.loads(pickle.dumps(s)).distribution() == s.distribution()
    back.merge(
        QuantileSketch.from_dict(
            json.loads(json.dumps(QuantileSketch.of(v[3000:], exact_max=exact_max).to_dict()))
        )
    )
    whole = QuantileSketch.of(v, exact_max=exact_max)
    for q in QS:
        assert back.quantile(q) == pytest.approx(whole.quantile(q), rel=1e-12)


def test_bins_stay_few_whatever_the_count() -> None:
    """Memory is the bins: a few thousand counters for values spanning a microsecond to a
    minute, however many values were added."""
    s = QuantileSketch(exact_max=0)
    rng = np.random.default_rng(9)
    for _ in range(5):
        s.add(10 ** rng.uniform(-6, 2, 1_000_000))
    bins = s.to_dict()["bins"]["positive"]["counts"]
    assert sum(bins) == 5_000_000
    assert len(bins) < 2000


def test_empty_sketch() -> None:
    s = QuantileSketch()
    assert s.distribution() == Distribution.of([])
    assert s.quantile(0.5) is None
    assert QuantileSketch.from_dict(s.to_dict()).count == 0


def test_ddsketch_view_agrees() -> None:
    """The library's own sketch built from the bins gives the same quantiles."""
    v = _latencies(50_000, seed=10)
    s = QuantileSketch.of(v, exact_max=0)
    dd = s.to_ddsketch()
    assert dd.count == v.size
    for q in (0.5, 0.99):
        assert s.quantile(q) == pytest.approx(dd.get_quantile_value(q), rel=1e-12)
