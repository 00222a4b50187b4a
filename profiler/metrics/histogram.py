"""A histogram for the load generator's hot path, exposed exactly like prometheus_client's.

``Histogram.observe`` takes a lock per bucket increment and per sum update, about 2 us a
call on a small core; a request of 500 tokens makes 500 ITL observations on the load
generator's event loop. ``BatchHistogram.observe_many`` counts a whole request's values in
one vectorised pass under one lock, and ``observe`` is a bisect and one lock. On scrape the
family is ``exposition.Prerendered``: the ``name_bucket{...,le="..."} `` prefixes are built
once, so a scrape formats only the counts. The text is byte-identical to a prometheus_client
``Histogram`` with the same labels and buckets (``_bucket``, ``_count``, ``_sum``, and the
``_created`` gauge), which tests/unit/test_metrics_run.py checks.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from profiler.metrics.exposition import Prerendered, go_float, header, series_prefix


class BatchHistogram(Collector):
    """One labelled histogram series (``labels`` fixed at construction)."""

    def __init__(
        self, name: str, doc: str, labels: Mapping[str, str], buckets: Sequence[float]
    ) -> None:
        self.name, self.doc = name, doc
        self._labels = dict(labels)
        self._bounds = [*sorted(float(b) for b in buckets if b != math.inf), math.inf]
        self._np_bounds = np.array(self._bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._created = time.time()
        self._lock = threading.Lock()
        self._bucket_labels = [{**self._labels, "le": go_float(b)} for b in self._bounds]
        self._prefixes = [series_prefix(name + "_bucket", lb) for lb in self._bucket_labels]
        self._count_prefix = series_prefix(name + "_count", self._labels)
        self._sum_prefix = series_prefix(name + "_sum", self._labels)
        self._created_text = header(name + "_created", doc, "gauge") + (
            f"{series_prefix(name + '_created', self._labels)}{go_float(self._created)}\n"
        )
        self._header = header(name, doc, "histogram")

    def observe(self, value: float) -> None:
        if value != value:  # NaN: no bucket would hold it
            return
        i = bisect.bisect_left(self._bounds, value)  # bucket i holds values <= bound i
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def observe_many(self, values: Sequence[float]) -> None:
        if not len(values):
            return
        arr = np.asarray(values, dtype=np.float64)
        arr = arr[~np.isnan(arr)]
        counts = np.bincount(
            np.searchsorted(self._np_bounds, arr, side="left"), minlength=len(self._bounds)
        ).tolist()
        total = float(arr.sum())
        with self._lock:
            c = self._counts
            for i, n in enumerate(counts):
                if n:
                    c[i] += n
            self._sum += total

    def describe(self) -> Iterable[Metric]:
        return [Metric(self.name, self.doc, "histogram")]

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        cumulative: list[float] = []
        acc = 0
        for n in counts:
            acc += n
            cumulative.append(float(acc))
        count = cumulative[-1]
        lines = [f"{p}{go_float(v)}\n" for p, v in zip(self._prefixes, cumulative, strict=True)]
        lines.append(f"{self._count_prefix}{go_float(count)}\n")
        lines.append(f"{self._sum_prefix}{go_float(total)}\n")
        text = self._header + "".join(lines) + self._created_text
        name, labels, bucket_labels, created = (
            self.name,
            self._labels,
            self._bucket_labels,
            self._created,
        )

        def rows() -> list[tuple[str, Mapping[str, str], float]]:
            out: list[tuple[str, Mapping[str, str], float]] = [
                (name + "_bucket", lb, v) for lb, v in zip(bucket_labels, cumulative, strict=True)
            ]
            out += [(name + "_count", labels, count), (name + "_sum", labels, total)]
            out.append((name + "_created", labels, created))
            return out

        return [Prerendered(self.name, self.doc, "histogram", text, rows)]
