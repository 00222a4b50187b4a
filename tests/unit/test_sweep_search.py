"""SLO search on synthetic probes with a known saturation rate (no server)."""

from __future__ import annotations

from typing import Any

import pytest

from profiler.spec import TARGET_FRACTION
from profiler.sweep.search import round_rate, slo_search


def server(capacity: float, *, loose_slo: bool = False) -> tuple[Any, list[float]]:
    """A probe of a server serving at most ``capacity`` req/s; above it the queue grows and
    requests miss the TTFT SLO (unless ``loose_slo``: everything meets it, but throughput
    stops rising)."""
    calls: list[float] = []

    def probe(rate: float) -> dict[str, Any]:
        calls.append(rate)
        achieved = min(rate, capacity)
        over = max(0.0, rate / capacity - 1)
        fraction = 1.0 if loose_slo else max(0.0, 1.0 - 4 * over) if over > 0 else 0.99
        return {
            "requests_per_s": achieved,
            "slo_attainment": fraction,
            "error_rate": 0.0,
        }

    return probe, calls


@pytest.mark.parametrize("capacity", [0.37, 3.0, 7.3, 25.0, 130.0])
def test_finds_capacity_within_tolerance(capacity: float) -> None:
    probe, calls = server(capacity)
    res = slo_search(probe, start_rate=1.0, target_fraction=0.9, tolerance=0.05, max_probes=20)
    assert res.best_rate is not None
    # passes up to capacity x (1 + 0.1/4) with this probe; within 10% of capacity
    assert capacity * 0.9 <= res.best_rate <= capacity * 1.03
    assert (
        res.failed_rate is not None and (res.failed_rate - res.best_rate) / res.failed_rate <= 0.05
    )
    assert len(calls) == len(set(calls)) == len(res.probes)  # no rate probed twice
    assert "converged" in res.stopped


def test_stops_doubling_once_throughput_stops_rising() -> None:
    probe, calls = server(10.0, loose_slo=True)
    res = slo_search(
        probe, target_fraction=TARGET_FRACTION, start_rate=1.0, tolerance=0.05, max_probes=20
    )
    # 1..16 pass (throughput still rises 8 -> 10); 32 serves no more than 16: saturated, so
    # the doubling stops there instead of running on while the loose SLO keeps passing
    assert calls[:6] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    assert max(calls) == 32.0
    assert res.saturated_rate is not None and res.saturated_rate <= 32.0
    assert res.best_rate is not None and 16.0 <= res.best_rate < 32.0
    assert any("throughput stopped rising" in p.reason for p in res.probes)


def test_collapse_and_errors_count_as_saturation() -> None:
    def probe(rate: float) -> dict[str, Any]:
        if rate > 4:
            return {"requests_per_s": 1.0, "slo_attainment": 0.0, "error_rate": 0.8}
        return {"requests_per_s": rate, "slo_attainment": 1.0, "error_rate": 0.0}

    res = slo_search(probe, target_fraction=TARGET_FRACTION, start_rate=1.0, tolerance=0.1)
    assert res.saturated_rate is not None and 4.0 < res.saturated_rate <= 8.0
    assert res.best_rate is not None and 4.0 <= res.best_rate <= 4.4


def test_halves_when_start_rate_fails() -> None:
    probe, calls = server(2.0)
    res = slo_search(
        probe, target_fraction=TARGET_FRACTION, start_rate=32.0, tolerance=0.05, max_probes=20
    )
    assert calls[:5] == [32.0, 16.0, 8.0, 4.0, 2.0]
    assert res.best_rate is not None and 1.8 <= res.best_rate <= 2.06


def test_nothing_passes() -> None:
    def probe(rate: float) -> dict[str, Any]:
        return {"requests_per_s": rate, "slo_attainment": 0.5, "error_rate": 0.0}

    res = slo_search(probe, target_fraction=TARGET_FRACTION, start_rate=1.0, min_rate=0.1)
    assert res.best_rate is None
    assert "no rate" in res.stopped
    assert all(p.rate >= 0.1 for p in res.probes)


def test_max_probes_and_max_rate() -> None:
    probe, calls = server(1000.0)
    res = slo_search(probe, target_fraction=TARGET_FRACTION, start_rate=1.0, max_probes=4)
    assert len(calls) == 4 and res.best_rate == 8.0 and "probes" in res.stopped
    probe, calls = server(1000.0)
    res = slo_search(probe, target_fraction=TARGET_FRACTION, start_rate=1.0, max_rate=5.0)
    assert calls == [1.0, 2.0, 4.0, 5.0] and res.best_rate == 5.0


@pytest.mark.parametrize("section", ["slo_attainment", "goodput"])
def test_accepts_nested_summaries(section: str) -> None:
    """summary.json's nested form; ``goodput`` is the section's name in older runs."""

    def probe(rate: float) -> dict[str, Any]:
        ok = rate <= 6
        return {
            "throughput": {"requests_per_s": min(rate, 6.0)},
            "latency": {},
            "error_rate": 0.0,
            section: {"fraction": 0.95 if ok else 0.3},
        }

    res = slo_search(probe, target_fraction=TARGET_FRACTION, start_rate=1.0, tolerance=0.05)
    assert res.best_rate is not None and 5.7 <= res.best_rate <= 6.0
    # the search's result is DistServe's goodput: the highest rate meeting the target
    assert res.to_dict()["goodput_rps"] == res.best_rate


def test_accepts_flat_key_numbers_of_older_indexes() -> None:
    def probe(rate: float) -> dict[str, Any]:
        return {"requests_per_s": rate, "goodput_fraction": 1.0 if rate <= 3 else 0.6}

    res = slo_search(probe, target_fraction=TARGET_FRACTION, start_rate=1.0, tolerance=0.05)
    assert res.best_rate is not None and 2.85 <= res.best_rate <= 3.0


def test_round_rate() -> None:
    assert round_rate(3.140625) == 3.14
    assert round_rate(1234.5) == 1230.0


def test_a_probe_passes_by_measures_meets_target(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pass test is ``profiler.measures.meets_target`` (one definition of reaching the
    SLO attainment target), not a comparison of the search's own."""
    from profiler import measures
    from profiler.sweep.search import judge

    asked: list[tuple[float, float]] = []

    def strict(fraction: float, target_fraction: float) -> bool:
        asked.append((fraction, target_fraction))
        return fraction > target_fraction

    monkeypatch.setattr(measures, "meets_target", strict)
    summary = {"requests_per_s": 1.0, "slo_attainment": 0.9, "error_rate": 0.0}
    probe, saturated = judge(1.0, summary, 0.9, None)
    assert asked == [(0.9, 0.9)]
    assert not probe.passed and not saturated


def test_the_target_fraction_is_the_callers() -> None:
    """The search aims at the fraction its caller gives (the sweep's SLO, whose default is
    spec.TARGET_FRACTION): it has no default of its own to drift from that one."""
    probe, _ = server(8.0)
    with pytest.raises(TypeError, match="target_fraction"):
        slo_search(probe, start_rate=1.0)  # type: ignore[call-arg]
    usual = slo_search(probe, start_rate=1.0, target_fraction=TARGET_FRACTION, tolerance=0.02)
    loose = slo_search(probe, start_rate=1.0, target_fraction=0.5, tolerance=0.02)
    assert usual.best_rate is not None and loose.best_rate is not None
    assert usual.best_rate < loose.best_rate
