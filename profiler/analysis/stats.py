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
    def of(cls, values: Any, *, overwrite: bool = False) -> Distribution:
        """Distribution of ``values`` (any sequence or array; NaN and None are dropped).
        Percentiles use numpy's default linear interpolation. ``overwrite=True`` lets numpy
        partition a caller-owned array in place instead of copying it (large ITL arrays)."""
        arr = np.asarray(values, dtype=np.float64) if not isinstance(values, np.ndarray) else values
        if arr.dtype != np.float64:
            arr = arr.astype(np.float64)
        nan = np.isnan(arr)
        if nan.any():
            arr = arr[~nan]
            overwrite = True
        del nan
        overwrite = overwrite and arr.flags.writeable
        if arr.size == 0:
            return cls(0, None, None, None, None, None, None)
        mean, top = float(arr.mean()), float(arr.max())
        p = np.percentile(arr, QUANTILES, overwrite_input=overwrite)
        return cls(
            count=int(arr.size),
            mean=mean,
            p50=float(p[0]),
            p90=float(p[1]),
            p95=float(p[2]),
            p99=float(p[3]),
            max=top,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
