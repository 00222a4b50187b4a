"""The one place distributions are computed: count, mean, p50/p90/p95/p99, max."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

QUANTILES = (50, 90, 95, 99)


@dataclass(frozen=True, slots=True)
class Distribution:
    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: Any) -> Distribution:
        """Distribution of ``values`` (any sequence or array; NaN and None are dropped).
        Percentiles use numpy's default linear interpolation."""
        arr = np.asarray(values, dtype=np.float64) if not isinstance(values, np.ndarray) else values
        if arr.dtype != np.float64:
            arr = arr.astype(np.float64)
        arr = arr[~np.isnan(arr)]
        if arr.size == 0:
            return cls(0, None, None, None, None, None, None)
        p = np.percentile(arr, QUANTILES)
        return cls(
            count=int(arr.size),
            mean=float(arr.mean()),
            p50=float(p[0]),
            p90=float(p[1]),
            p95=float(p[2]),
            p99=float(p[3]),
            max=float(arr.max()),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
