"""Kneedle knee detection on synthetic saturating curves."""

from __future__ import annotations

import numpy as np
import pytest

from profiler.analysis.knee import find_knee
from tests.fakes.synthetic_runs import saturating


def test_knee_of_throughput_latency_curve_near_capacity() -> None:
    capacity = 10.0
    loads = [1, 2, 4, 6, 8, 9, 10, 11, 12, 14, 16, 20]
    pts = [saturating(x, capacity) for x in loads]
    thr = [p[0] for p in pts]
    lat = [p[1] for p in pts]
    knee = find_knee(thr, lat, curve="convex")
    assert knee is not None
    assert 0.7 * capacity <= knee.x <= capacity
    assert loads[knee.index] <= capacity * 1.1


def test_knee_of_concave_throughput_against_load() -> None:
    loads = np.linspace(0.5, 20, 40)
    achieved = 10 * (1 - np.exp(-loads / 4))  # bends around load ~ 4..8
    knee = find_knee(loads.tolist(), achieved.tolist(), curve="concave")
    assert knee is not None
    assert 3 <= knee.x <= 9


def test_no_knee_on_straight_or_short_curves() -> None:
    assert find_knee([1, 2, 3, 4], [2, 4, 6, 8], curve="convex") is None
    assert find_knee([1, 2], [1, 5]) is None
    assert find_knee([1, None, 3], [1, 2, None]) is None


def test_missing_values_are_skipped_and_index_is_callers() -> None:
    x = [None, 1.0, 2.0, 3.0, 3.5, 3.8]
    y = [9.0, 0.1, 0.12, 0.2, 1.0, 5.0]
    knee = find_knee(x, y, curve="convex")
    assert knee is not None
    assert x[knee.index] == knee.x and y[knee.index] == knee.y


def test_length_mismatch() -> None:
    with pytest.raises(ValueError):
        find_knee([1, 2, 3], [1, 2])
