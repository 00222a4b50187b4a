"""Latency distributions of a run's requests as mergeable sketches: summary.json's
``latency``, ``dispatch_lag_s`` and ``queue_wait_s``, and what ``--workers`` processes ship to
the parent. Distributions come from ``QuantileSketch`` (exact up to a threshold, a DDSketch
above it); the per-request values are ``profiler.measures``' definitions. A base module: the
load's workers fill these sketches (``load/workers``, ``load/spread``), the analysis reads them
(``analysis/request_summary``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from profiler import measures
from profiler.sketches import QuantileSketch

LATENCY_KEYS = (
    "ttft_s",
    "tpot_s",
    "itl_s",
    "e2e_s",
    "ttft_from_intended_s",
    "e2e_from_intended_s",
)
SKETCH_KEYS = (*LATENCY_KEYS, "dispatch_lag_s", "queue_wait_s")


@dataclass
class LatencySketches:
    """A partial summary: the distributions of ``SKETCH_KEYS`` as mergeable sketches. A
    worker, a Ray actor or a host sketches its own requests (``latency_sketches``, or
    ``store/record_columns.sketch_records``), ships ``to_dict()`` (JSON-safe, a few KB once past the exact threshold),
    and the receiver merges them: the merge equals the sketches of all the requests."""

    sketches: dict[str, QuantileSketch] = field(
        default_factory=lambda: {k: QuantileSketch() for k in SKETCH_KEYS}
    )

    def merge(self, other: LatencySketches) -> None:
        for k, sk in other.sketches.items():
            self.sketches.setdefault(k, QuantileSketch(sk.relative_accuracy)).merge(sk)

    def distributions(self) -> dict[str, dict[str, Any]]:
        return {k: sk.distribution().to_dict() for k, sk in self.sketches.items()}

    def to_dict(self) -> dict[str, Any]:
        return {k: sk.to_dict() for k, sk in self.sketches.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencySketches:
        return cls({k: QuantileSketch.from_dict(v) for k, v in d.items()})


def latency_sketches(cols: measures.Columns, ok: np.ndarray, in_win: np.ndarray) -> LatencySketches:
    """The latency distributions of the successful requests in ``ok`` (ITL shares streamed
    from ``cols.itl_source``), and dispatch lag and queue wait of the requests in ``in_win``."""
    ttft, tpot, e2e = measures.latencies(cols)
    ttft_i, e2e_i = measures.from_intended(cols)
    out = LatencySketches()
    sk = out.sketches
    sk["ttft_s"].add(ttft[ok])
    sk["tpot_s"].add(tpot[ok])
    sk["e2e_s"].add(e2e[ok])
    sk["ttft_from_intended_s"].add(ttft_i[ok])
    sk["e2e_from_intended_s"].add(e2e_i[ok])
    lag = measures.dispatch_lag(cols.intended_start_s, cols.send_s, cols.queue_wait_s)
    sk["dispatch_lag_s"].add(lag[in_win])
    if cols.queue_wait_s is not None:
        sk["queue_wait_s"].add(cols.queue_wait_s[in_win])
    for gaps, toks in cols.itl_source(measures.selected_by_id(cols.id, ok)):
        add_itl_shares(sk["itl_s"], gaps, toks)
    return out


def add_itl_shares(sketch: QuantileSketch, gaps: np.ndarray, toks: np.ndarray | None) -> None:
    """Count each gap as its chunk's tokens' shares (``measures.itl_shares``): a chunk of k
    tokens is one value of weight k rather than k copies."""
    values, weights = measures.itl_shares(gaps, toks)
    sketch.add(values, weights=weights)
