"""Distributions a workload draws from: token lengths (``LengthDist``) and seconds
(``TimeDist``, think times), with the checks they share."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Dist(_Strict):
    """What every distribution shares: the fields its ``kind`` needs (``NEEDS``), ``min <=
    max``, and an ``empirical`` kind's ``values`` (each at least ``LOW``) and ``weights``."""

    NEEDS: ClassVar[dict[str, list[str]]]
    LOW: ClassVar[float]
    WHAT: ClassVar[str]
    kind: str
    min: float
    max: float
    mean: float | None = Field(default=None, gt=0)
    sigma: float | None = Field(default=None, ge=0)
    values: list[Any] | None = None
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _check(self) -> _Dist:
        missing = [k for k in self.NEEDS.get(self.kind, ["values"]) if getattr(self, k) is None]
        if missing:
            raise ValueError(f"kind '{self.kind}' needs {', '.join(missing)}")
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is larger than max ({self.max})")
        if self.kind == "empirical":
            if not self.values or any(v < self.LOW for v in self.values):
                raise ValueError(f"values must be a non-empty list of {self.WHAT}")
            if self.weights is not None and len(self.weights) != len(self.values):
                raise ValueError("weights must have as many entries as values")
        return self


class LengthDist(_Dist):
    """A token-length distribution. ``fixed`` takes ``value``; ``uniform`` ``min``/``max``;
    ``normal`` ``mean``/``std``; ``lognormal`` ``mean`` (of the lengths) and ``sigma``;
    ``empirical`` ``values`` with optional ``weights``. Samples are clipped to ``[min, max]``."""

    NEEDS = {
        "fixed": ["value"],
        "uniform": [],
        "normal": ["mean", "std"],
        "lognormal": ["mean", "sigma"],
    }
    LOW, WHAT = 1, "positive token counts"
    kind: Literal["fixed", "uniform", "normal", "lognormal", "empirical"] = "fixed"
    value: int | None = Field(default=None, ge=1)
    min: int = Field(default=1, ge=1)
    max: int = Field(default=1_000_000, ge=1)
    std: float | None = Field(default=None, ge=0)
    values: list[int] | None = None

    @classmethod
    def fixed(cls, n: int) -> LengthDist:
        return cls(kind="fixed", value=n)

    def upper(self) -> int:
        """Largest length this distribution can produce (for max-model-len checks)."""
        if self.kind == "fixed":
            assert self.value is not None
            return self.value
        if self.kind == "empirical":
            assert self.values is not None
            return min(max(self.values), self.max)
        return self.max


class TimeDist(_Dist):
    """A distribution of seconds (think times). ``fixed`` takes ``value`` (0 allowed);
    ``uniform`` ``min``/``max``; ``exponential`` ``mean``; ``lognormal`` ``mean`` and ``sigma``;
    ``empirical`` ``values`` with optional ``weights``. Samples are clipped to ``[min, max]``."""

    NEEDS = {"fixed": [], "uniform": [], "exponential": ["mean"], "lognormal": ["mean", "sigma"]}
    LOW, WHAT = 0, "non-negative seconds"
    kind: Literal["fixed", "uniform", "exponential", "lognormal", "empirical"] = "fixed"
    value: float = Field(default=0.0, ge=0)
    min: float = Field(default=0.0, ge=0)
    max: float = Field(default=3600.0, ge=0)
    values: list[float] | None = None

    def mean_s(self) -> float:
        """The mean (before clipping, except for ``uniform`` and ``fixed``)."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "uniform":
            return (self.min + self.max) / 2
        if self.kind == "empirical":
            assert self.values is not None
            w = self.weights or [1.0] * len(self.values)
            return sum(v * x for v, x in zip(self.values, w, strict=True)) / sum(w)
        assert self.mean is not None
        return min(max(self.mean, self.min), self.max)
