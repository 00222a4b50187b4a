"""A hierarchical bootstrap, vectorised with numpy: resample runs with replacement, then the
units (requests, whole requests, time bins) inside each drawn run, and recompute a statistic
on the pooled units.

A resample is held as integer *counts*: how often each unit of the side (all its runs' units,
concatenated) was drawn. A run drawn ``m`` times contributes ``m x n`` draws among its ``n``
units (``m`` independent within-run bootstraps pooled), so a resample of one run is the
ordinary bootstrap and a resample of many runs carries their run-to-run spread. Statistics are
computed on counts directly: a weighted mean, or a percentile of the expanded multiset
(``weighted_percentile``), so resamples of different total size need no padding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

MAX_CELLS = 4_000_000  # resample x unit cells held at once (memory bound per chunk)

# stat(counts, runs_drawn) -> one value per resample; counts is (k, units), runs_drawn (k, runs)
Stat = Callable[[np.ndarray, np.ndarray], np.ndarray]


def hierarchical(
    sizes: Sequence[int],
    resamples: int,
    rng: np.random.Generator,
    stat: Stat,
    *,
    cells_per_row: int | None = None,
) -> np.ndarray:
    """``resamples`` values of ``stat`` over a side whose runs hold ``sizes`` units each
    (every size > 0). ``cells_per_row`` bounds the chunk size when ``stat`` expands the counts
    (ITL: one cell per token gap, not per request)."""
    runs = len(sizes)
    total = int(sum(sizes))
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    rows = max(1, MAX_CELLS // max(cells_per_row or total, total, 1))
    out: list[np.ndarray] = []
    done = 0
    while done < resamples:
        k = min(rows, resamples - done)
        drawn = rng.multinomial(runs, np.full(runs, 1.0 / runs), size=k)  # (k, runs)
        counts = np.empty((k, total), dtype=np.int32)  # a unit is drawn < 2**31 times
        for i, n in enumerate(sizes):
            row = np.repeat(np.arange(k), drawn[:, i] * n)
            unit = rng.integers(0, n, size=row.size)
            counts[:, offsets[i] : offsets[i + 1]] = np.bincount(
                row * n + unit, minlength=k * n
            ).reshape(k, n)
        out.append(stat(counts, drawn))
        done += k
    return np.concatenate(out)


def weighted_percentile(sorted_values: np.ndarray, weights: np.ndarray, q: float) -> np.ndarray:
    """Percentile ``q`` of each row's multiset, ``sorted_values[j]`` repeated ``weights[r, j]``
    times, exactly as ``np.percentile`` (linear method) would give on the expanded row.

    numpy's own ``weights=`` supports only the inverted-CDF method, which would not match the
    point estimates (``Distribution``, linear); expanding every resample would cost memory."""
    cum = np.cumsum(weights, axis=1, dtype=np.int64)
    total = cum[:, -1]
    h = q / 100.0 * (total - 1)
    lo = np.floor(h)
    frac = h - lo
    hi = np.minimum(lo + 1, total - 1)
    # the value at 0-based position p of the expanded row is the first with cum > p; a binary
    # search per row (one per resample) costs far less than comparing whole rows
    i_lo = np.empty(cum.shape[0], dtype=np.int64)
    i_hi = np.empty(cum.shape[0], dtype=np.int64)
    for r, row in enumerate(cum):
        i_lo[r], i_hi[r] = np.searchsorted(row, (lo[r], hi[r]), side="right")
    v_lo, v_hi = sorted_values[i_lo], sorted_values[i_hi]
    return v_lo + frac * (v_hi - v_lo)  # type: ignore[no-any-return]
