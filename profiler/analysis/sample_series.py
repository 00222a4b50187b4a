"""A run's telemetry samples as series, one per (source, device, metric), read over the
measured window ``[start, end]`` on the run clock: the values inside it, a counter's increase
across it (resets ignored, interpolated at the edges), an event counter's count between the
scrapes around it, and how much of it a series covers; plus the reducers the summary.json
sections share (``mean``, ``peak``, ``max_of``, ``sum_all``, ``per_token``), each ``None``
where nothing was measured.

The ``gpu``, ``energy``, ``host`` and ``server`` sections
(``profiler.analysis.telemetry_sections``) and each node of the ``nodes`` section
(``profiler.analysis.node_summary``) read samples through it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from profiler.telemetry.sample import Sample

Series = tuple[np.ndarray, np.ndarray]  # (t_s, value), sorted by t_s


class SampleSeries:
    """Samples grouped by (source, device, metric); errors counted separately."""

    def __init__(self, samples: Iterable[Sample], start: float, end: float) -> None:
        self.start, self.end = start, end
        raw: dict[tuple[str, str, str], tuple[list[float], list[float]]] = defaultdict(
            lambda: ([], [])
        )
        self.errors: dict[tuple[str, str], list[str]] = defaultdict(list)
        for s in samples:
            if s.error is not None:
                if start <= s.t_s <= end:
                    self.errors[(s.source, s.device)].append(s.error)
                continue
            if s.value is None or s.value != s.value:  # None or NaN
                continue
            ts, vs = raw[(s.source, s.device, s.metric)]
            ts.append(s.t_s)
            vs.append(s.value)
        self.series: dict[tuple[str, str, str], Series] = {}
        for key, (ts, vs) in raw.items():
            t, v = np.asarray(ts, dtype=np.float64), np.asarray(vs, dtype=np.float64)
            order = np.argsort(t, kind="stable")
            self.series[key] = (t[order], v[order])

    def devices(self, source: str) -> list[str]:
        devs = {d for (s, d, _) in self.series if s == source} | {
            d for (s, d) in self.errors if s == source
        }
        return sorted((d for d in devs if "/" not in d), key=lambda d: (len(d), d))

    def window(self, source: str, device: str, metric: str) -> np.ndarray:
        t, v = self.series.get((source, device, metric), (np.empty(0), np.empty(0)))
        return v[(t >= self.start) & (t <= self.end)]

    def all(self, source: str, device: str, metric: str) -> np.ndarray:
        return self.series.get((source, device, metric), (np.empty(0), np.empty(0)))[1]

    def increase(self, source: str, device: str, metric: str) -> float | None:
        """Increase of a counter over the window (resets ignored); None without coverage."""
        t, v = self.series.get((source, device, metric), (np.empty(0), np.empty(0)))
        if t.size < 2 or t[-1] < self.start or t[0] > self.end:
            return None
        cum = np.concatenate(([0.0], np.cumsum(np.clip(np.diff(v), 0.0, None))))
        a, b = max(self.start, t[0]), min(self.end, t[-1])
        if b <= a:
            return None
        return float(np.interp(b, t, cum) - np.interp(a, t, cum))

    def count(self, source: str, device: str, metric: str) -> int | None:
        """A counter's own increase between the last scrape at or before the window start and
        the first scrape at or after the window end (the nearest scrapes inside when the series
        starts or stops within the window), as a whole number. After a drop (a restart) the new
        value counts as increase, as Prometheus' ``increase`` does. None without two scrapes."""
        t, v = self.series.get((source, device, metric), (np.empty(0), np.empty(0)))
        if t.size < 2 or t[-1] < self.start or t[0] > self.end:
            return None
        first = max(int(np.searchsorted(t, self.start, side="right")) - 1, 0)
        last = min(int(np.searchsorted(t, self.end, side="left")), t.size - 1)
        if last <= first:
            return None
        seg = v[first : last + 1]
        step = np.diff(seg)
        return int(round(float(np.where(step >= 0, step, seg[1:]).sum())))

    def coverage(self, source: str, device: str, metric: str) -> float:
        """Fraction of the window the series spans."""
        t = self.series.get((source, device, metric), (np.empty(0), np.empty(0)))[0]
        span = self.end - self.start
        if t.size == 0 or span <= 0:
            return 0.0
        return float(max(0.0, min(self.end, t[-1]) - max(self.start, t[0])) / span)


def mean(v: np.ndarray) -> float | None:
    return float(v.mean()) if v.size else None


def peak(v: np.ndarray) -> float | None:
    return float(v.max()) if v.size else None


def max_of(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def sum_all(values: Iterable[float | None]) -> float | None:
    vals = list(values)
    if not vals or any(x is None for x in vals):
        return None
    return float(sum(x for x in vals if x is not None))


def per_token(x: float | None, tokens: int) -> float | None:
    return x / tokens if x is not None and tokens > 0 else None
