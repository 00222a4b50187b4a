"""The one place distributions are computed: count, mean, p50/p90/p95/p99, max. A base
module (numpy and ddsketch only): the load's workers fill sketches, the analysis reads them.

``Distribution.of`` is exact (numpy) for values already in memory. ``QuantileSketch`` serves
data of any size in bounded memory: it is exact while it holds at most ``EXACT_MAX_VALUES``
values, and beyond that keeps DDSketch bins (the ``ddsketch`` package's logarithmic mapping)
whose quantiles are within ``RELATIVE_ACCURACY`` of the true value. Sketches merge: the merge
of two sketches is the sketch of the union, so workers and hosts can each sketch their own
requests and ship the small serialisable form (``to_dict``) instead of raw values.
"""

from __future__ import annotations

import base64
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

QUANTILES = (50, 90, 95, 99)

# A distribution of at most this many values is exact (numpy's linear interpolation); its
# values take at most 8 MB. Above it the quantiles come from the sketch's bins.
EXACT_MAX_VALUES = 1_000_000
# DDSketch's alpha: a sketched quantile q is within this fraction of the exact value x_q,
# |q - x_q| <= alpha * |x_q|, where x_q is the order statistic at rank floor(q * (count - 1))
# (numpy's ``method="lower"``; between neighbouring order statistics numpy's default linear
# interpolation differs from it by no more than their spacing). Count, mean and max are exact.
RELATIVE_ACCURACY = 0.005

SKETCH_FORMAT = "infprof.quantile_sketch/1"


def quantile_method() -> dict[str, Any]:
    """summary.json's statement of how its distributions' quantiles are computed (each
    distribution also names its own ``method`` and ``relative_error``)."""
    return {
        "exact_max_values": EXACT_MAX_VALUES,
        "above": "ddsketch",
        "relative_error": RELATIVE_ACCURACY,
        "note": (
            "a distribution of at most exact_max_values values has exact quantiles (numpy, "
            "linear interpolation); a larger one comes from a DDSketch whose quantiles are "
            "within relative_error of the exact order statistic at rank floor(q * (count - 1)); "
            "count, mean and max are always exact"
        ),
    }


@dataclass(frozen=True, slots=True)
class Distribution:
    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    max: float | None
    # how p50..p99 were computed: "exact" (numpy) or "ddsketch" (within relative_error of
    # the exact value; count, mean and max are exact either way)
    method: str = "exact"
    relative_error: float = 0.0

    @classmethod
    def of(cls, values: Any, *, overwrite: bool = False) -> Distribution:
        """Exact distribution of ``values`` (any sequence or array; NaN and None are dropped).
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


class _Bins:
    """Counts of one sign's DDSketch keys in a dense numpy array (``first`` is the key of
    index 0). The vectorised form of ``ddsketch.DenseStore``: that store's ``add`` takes one
    value per Python call, about a microsecond each, far too slow for a billion gaps."""

    __slots__ = ("counts", "first")

    def __init__(self, first: int = 0, counts: np.ndarray | None = None) -> None:
        self.first = first
        self.counts = np.zeros(0, dtype=np.int64) if counts is None else counts

    def add(self, first: int, counts: np.ndarray) -> None:
        if counts.size == 0:
            return
        if self.counts.size == 0:
            self.first, self.counts = first, counts.astype(np.int64, copy=True)
            return
        lo = min(self.first, first)
        hi = max(self.first + self.counts.size, first + counts.size)
        if lo != self.first or hi != self.first + self.counts.size:
            grown = np.zeros(hi - lo, dtype=np.int64)
            grown[self.first - lo : self.first - lo + self.counts.size] = self.counts
            self.first, self.counts = lo, grown
        self.counts[first - self.first : first - self.first + counts.size] += counts

    def nonzero(self) -> tuple[np.ndarray, np.ndarray]:
        idx = np.flatnonzero(self.counts)
        return idx + self.first, self.counts[idx]

    def to_dict(self) -> dict[str, Any]:
        idx = np.flatnonzero(self.counts)
        if idx.size == 0:
            return {"first_key": 0, "counts": []}
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        return {"first_key": self.first + lo, "counts": self.counts[lo:hi].tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _Bins:
        return cls(int(d["first_key"]), np.asarray(d["counts"], dtype=np.int64))


class QuantileSketch:
    """Count, sum, min, max and quantiles of a stream of values in bounded memory.

    Exact while it holds at most ``exact_max`` values; past that every value is counted in its
    DDSketch bin (logarithmic mapping with ``relative_accuracy``, the ``ddsketch`` package's
    ``LogarithmicMapping``: bin ``k`` holds (gamma^(k-1), gamma^k], gamma = (1+a)/(1-a)) and the
    values are dropped, so memory is a few thousand counters whatever the count. ``add`` takes
    numpy batches (and integer weights: a value counted ``w`` times). NaN and infinities are
    dropped. ``merge`` adds another sketch of the same accuracy: the result equals the sketch
    of the union. ``to_dict``/``from_dict`` give a JSON-safe form to ship between processes."""

    __slots__ = (
        "relative_accuracy",
        "exact_max",
        "count",
        "sum",
        "min",
        "max",
        "_values",
        "_pos",
        "_neg",
        "_zero",
        "_mult",
        "_min_possible",
    )

    def __init__(
        self, relative_accuracy: float = RELATIVE_ACCURACY, exact_max: int | None = None
    ) -> None:
        from ddsketch.mapping import LogarithmicMapping

        mapping = LogarithmicMapping(relative_accuracy)  # validates 0 < a < 1
        self.relative_accuracy = float(relative_accuracy)
        self.exact_max = EXACT_MAX_VALUES if exact_max is None else int(exact_max)
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self._values: list[np.ndarray] | None = []  # None once binned
        self._pos = _Bins()
        self._neg = _Bins()
        self._zero = 0
        # key(v) = ceil(log2(v) * mult), as LogarithmicMapping.key computes it per value
        self._mult = math.log(2) / math.log1p(2 * relative_accuracy / (1 - relative_accuracy))
        self._min_possible = mapping.min_possible

    # ------------------------------------------------------------------ building
    @classmethod
    def of(cls, values: Any, **kw: Any) -> QuantileSketch:
        s = cls(**kw)
        s.add(values)
        return s

    @property
    def exact(self) -> bool:
        return self._values is not None

    def add(self, values: Any, weights: Any = None) -> None:
        """Count every value of ``values`` (``weights[i]`` times, integers >= 1, if given)."""
        v = np.asarray(values, dtype=np.float64).ravel()
        w = None if weights is None else np.asarray(weights, dtype=np.int64).ravel()
        if w is not None and w.shape != v.shape:
            raise ValueError(f"weights has {w.size} entries for {v.size} values")
        finite = np.isfinite(v)
        if not finite.all():
            v = v[finite]
            w = None if w is None else w[finite]
        if w is not None:
            keep = w > 0
            if not keep.all():
                v, w = v[keep], w[keep]
            if w.size and int(w.max()) == 1:
                w = None
        if v.size == 0:
            return
        n = int(v.size) if w is None else int(w.sum())
        if self._values is not None:  # exact: the count is the number of values held
            if self.count + n <= self.exact_max:
                self._values.append(v.copy() if w is None else np.repeat(v, w))
            else:
                self._to_bins()
        if self._values is None:
            self._bin(v, w)
        self.count += n
        self.sum += float(v.sum()) if w is None else float(np.dot(v, w))
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))

    def _to_bins(self) -> None:
        values, self._values = self._values, None
        for a in values or []:
            self._bin(a, None)

    def _bin(self, v: np.ndarray, w: np.ndarray | None) -> None:
        lo, hi = float(v.min()), float(v.max())
        if lo > self._min_possible:
            self._bin_sign(self._pos, v, w)
            return
        if hi < -self._min_possible:
            self._bin_sign(self._neg, -v, w)
            return
        pos, neg = v > self._min_possible, v < -self._min_possible
        zero = ~(pos | neg)
        self._zero += int(np.count_nonzero(zero)) if w is None else int(w[zero].sum())
        for store, sel, sign in ((self._pos, pos, 1.0), (self._neg, neg, -1.0)):
            if sel.any():
                self._bin_sign(store, sign * v[sel], None if w is None else w[sel])

    def _bin_sign(self, store: _Bins, v: np.ndarray, w: np.ndarray | None) -> None:
        """Count positive values ``v`` into ``store`` by their keys (one vectorised pass)."""
        k = np.log2(v)
        k *= self._mult
        np.ceil(k, out=k)
        keys = k.astype(np.int64)
        del k
        first = int(keys.min())
        keys -= first
        counts = np.bincount(keys, weights=w)
        store.add(first, counts if w is None else counts.astype(np.int64))

    def merge(self, other: QuantileSketch) -> None:
        """Add ``other``'s values to this sketch (both must have the same accuracy)."""
        if other.relative_accuracy != self.relative_accuracy:
            raise ValueError(
                f"cannot merge sketches of relative accuracy {self.relative_accuracy} and "
                f"{other.relative_accuracy}"
            )
        if other.count == 0:
            return
        if (
            self._values is not None
            and other._values is not None
            and self.count + other.count <= self.exact_max
        ):
            self._values.extend(a.copy() for a in other._values)
        else:
            if self._values is not None:
                self._to_bins()
            if other._values is not None:
                for a in other._values:
                    self._bin(a, None)
            else:
                self._pos.add(other._pos.first, other._pos.counts)
                self._neg.add(other._neg.first, other._neg.counts)
                self._zero += other._zero
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    # ------------------------------------------------------------------ reading
    def distribution(self) -> Distribution:
        if self.count == 0:
            return Distribution(0, None, None, None, None, None, None)
        if self._values is not None:
            arr = self._values[0] if len(self._values) == 1 else np.concatenate(self._values)
            return Distribution.of(arr, overwrite=len(self._values) > 1)
        p = [self.quantile(q / 100) for q in QUANTILES]
        return Distribution(
            count=self.count,
            mean=self.sum / self.count,
            p50=p[0],
            p90=p[1],
            p95=p[2],
            p99=p[3],
            max=self.max,
            method="ddsketch",
            relative_error=self.relative_accuracy,
        )

    def quantile(self, q: float) -> float | None:
        """The value at quantile ``q`` (0..1): exact (linear interpolation) while exact, else
        DDSketch's estimate, clamped to the exact [min, max]."""
        if self.count == 0:
            return None
        if self._values is not None:
            return float(np.quantile(np.concatenate(self._values), q))
        value = self.to_ddsketch().get_quantile_value(q)
        assert value is not None
        return min(max(float(value), self.min), self.max)

    def to_ddsketch(self) -> Any:
        """The binned values as a ``ddsketch.DDSketch`` (its quantile lookup, its protobuf
        form via ``ddsketch.pb.proto`` where protobuf is installed); its sum, min and max are
        those of the bins' representative values, not the exact ones kept here."""
        from ddsketch import DDSketch
        from ddsketch.mapping import LogarithmicMapping

        if self._values is not None:
            s = QuantileSketch(self.relative_accuracy, exact_max=0)
            s.merge(self)
            return s.to_ddsketch()
        dd = DDSketch(self.relative_accuracy)
        mapping = LogarithmicMapping(self.relative_accuracy)  # the one DDSketch(a) uses
        for store, sign in ((self._pos, 1.0), (self._neg, -1.0)):
            keys, counts = store.nonzero()
            for key, c in zip(keys.tolist(), counts.tolist(), strict=True):
                dd.add(sign * mapping.value(key), float(c))
        if self._zero:
            dd.add(0.0, float(self._zero))
        return dd

    # ------------------------------------------------------------------ serialised form
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (``SKETCH_FORMAT``): exact values as base64 little-endian float64,
        or the bins as key ranges with counts."""
        exact = None
        if self._values is not None:
            arr = np.concatenate(self._values) if self._values else np.zeros(0)
            exact = base64.b64encode(arr.astype("<f8").tobytes()).decode("ascii")
        return {
            "format": SKETCH_FORMAT,
            "relative_accuracy": self.relative_accuracy,
            "exact_max": self.exact_max,
            "count": self.count,
            "sum": self.sum,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
            "exact_values_f64": exact,
            "bins": None
            if exact is not None
            else {
                "positive": self._pos.to_dict(),
                "negative": self._neg.to_dict(),
                "zero": self._zero,
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantileSketch:
        if d.get("format") != SKETCH_FORMAT:
            raise ValueError(
                f"not a quantile sketch of format {SKETCH_FORMAT}: {d.get('format')!r}"
            )
        s = cls(float(d["relative_accuracy"]), int(d["exact_max"]))
        s.count, s.sum = int(d["count"]), float(d["sum"])
        if s.count:
            s.min, s.max = float(d["min"]), float(d["max"])
        if d.get("exact_values_f64") is not None:
            raw = base64.b64decode(d["exact_values_f64"])
            s._values = [np.frombuffer(raw, dtype="<f8").astype(np.float64)]
        else:
            s._values = None
            bins = d["bins"]
            s._pos = _Bins.from_dict(bins["positive"])
            s._neg = _Bins.from_dict(bins["negative"])
            s._zero = int(bins["zero"])
        return s

    def __getstate__(self) -> dict[str, Any]:
        return self.to_dict()

    def __setstate__(self, state: dict[str, Any]) -> None:
        other = QuantileSketch.from_dict(state)
        for name in QuantileSketch.__slots__:
            setattr(self, name, getattr(other, name))
