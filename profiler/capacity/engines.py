"""Engine profiles (``profiler/data/engines.yaml``): what a serving engine does by default that
the step model needs (how it sizes the KV cache, its batch and token limits, whether it overlaps
communication with compute, whether it balances experts) and the efficiency factors fitted to
its published results, per GPU and precision where data exists. ``--engine`` selects one; the
default is vLLM. A user's own ``--calibration`` replaces the fitted factors for the GPU it ran on.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from profiler.capacity.deployment import GIB, Efficiency
from profiler.capacity.hardware import GpuSpec, validate_catalog
from profiler.errors import SpecError

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
ENGINES_FILE = "engines.yaml"
CALIBRATIONS_FILE = "engine_calibrations.yaml"
DEFAULT_ENGINE = "vllm"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineCalibration(_Strict):
    """Efficiency factors fitted to an engine's published results on some GPUs/precisions."""

    gpus: list[str] = Field(default_factory=list, description="catalog keys; empty: any GPU")
    weight_dtypes: list[str] = Field(default_factory=list, description="empty: any precision")
    efficiency: dict[str, float]
    fitted_on: list[str] = Field(
        default_factory=list,
        description="ids of profiler/data/published.yaml rows it was fitted to",
    )
    source: str = ""

    def matches(self, gpu: str, weight_dtype: str) -> bool:
        return (not self.gpus or gpu in self.gpus) and (
            not self.weight_dtypes or weight_dtype in self.weight_dtypes
        )

    @property
    def specificity(self) -> int:
        return (2 if self.gpus else 0) + (1 if self.weight_dtypes else 0)


class LimitTier(_Strict):
    """Default batch limits on GPUs with at least ``min_memory_gib`` (and, when ``gpus`` is
    given, only those catalog keys)."""

    min_memory_gib: float = Field(ge=0)
    gpus: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    max_num_seqs: int = Field(ge=1)
    max_num_batched_tokens: int = Field(ge=64)


class EngineProfile(_Strict):
    key: str = ""
    label: str
    memory_mode: Literal["total", "free"] = Field(
        description="total: the KV cache gets u x memory minus weights (vLLM, SGLang); free: "
        "u x the memory left after weights (TensorRT-LLM's kv_cache_free_gpu_mem_fraction)"
    )
    gpu_memory_utilization: float = Field(gt=0, le=1)
    limits: list[LimitTier] = Field(min_length=1, description="first tier the GPU reaches wins")
    comm_overlap: float = Field(ge=0, le=1, description="default share of comm hidden")
    overlap_flag: str = Field(description="the engine's switch for two-batch overlap")
    overlap_when_on: float = Field(ge=0, le=1)
    eplb_flag: str
    efficiency: dict[str, float] = Field(default_factory=dict, description="engine-wide priors")
    calibrations: list[EngineCalibration] = Field(default_factory=list)
    source: str = ""

    def batch_limits(self, gpu: GpuSpec) -> tuple[int, int]:
        """(max_num_seqs, max_num_batched_tokens) this engine uses by default on ``gpu``."""
        for t in self.limits:
            if (
                gpu.memory_bytes >= t.min_memory_gib * GIB
                and (not t.gpus or gpu.key in t.gpus)
                and gpu.key not in t.exclude
            ):
                return t.max_num_seqs, t.max_num_batched_tokens
        last = self.limits[-1]
        return last.max_num_seqs, last.max_num_batched_tokens

    def settings(
        self,
        gpu: GpuSpec,
        max_num_seqs: int | None = None,
        max_num_batched_tokens: int | None = None,
        gpu_memory_utilization: float | None = None,
    ) -> dict[str, Any]:
        """The Deployment fields this engine sets on ``gpu``: batch limits and memory share
        (each given one wins over the engine's default) and how the share is counted."""
        seqs, tokens = self.batch_limits(gpu)
        return {
            "max_num_seqs": max_num_seqs or seqs,
            "max_num_batched_tokens": max_num_batched_tokens or tokens,
            "gpu_memory_utilization": gpu_memory_utilization or self.gpu_memory_utilization,
            "memory_mode": self.memory_mode,
        }

    def calibration_for(self, gpu: str, weight_dtype: str) -> EngineCalibration | None:
        found = [c for c in self.calibrations if c.matches(gpu, weight_dtype)]
        return max(found, key=lambda c: c.specificity) if found else None

    def efficiency_for(
        self, gpu: str, weight_dtype: str, base: Efficiency | None = None
    ) -> Efficiency:
        """Priors <- engine-wide factors <- the most specific calibration matching this GPU and
        precision."""
        eff = base or Efficiency()
        update: dict[str, Any] = dict(self.efficiency)
        update.setdefault("comm_overlap", self.comm_overlap)
        cal = self.calibration_for(gpu, weight_dtype)
        if cal is not None:
            update.update(cal.efficiency)
        return eff.model_copy(update=update)


class EngineCatalog(_Strict):
    engines: dict[str, EngineProfile]
    eplb_expert_skew: float = Field(ge=1)
    default_expert_skew: float = Field(ge=1)
    sources: dict[str, str] = Field(default_factory=dict)

    def engine(self, name: str | None) -> EngineProfile:
        key = (name or DEFAULT_ENGINE).strip().lower().replace("_", "-")
        key = {"trtllm": "tensorrt-llm", "trt-llm": "tensorrt-llm", "tensorrt": "tensorrt-llm"}.get(
            key, key
        )
        if key not in self.engines:
            raise SpecError(f"unknown engine '{name}'", f"use one of: {', '.join(self.engines)}")
        return self.engines[key]


@lru_cache(maxsize=1)
def load_engines() -> EngineCatalog:
    where = f"profiler/data/{ENGINES_FILE}"
    data = yaml.load(
        resources.files("profiler").joinpath("data", ENGINES_FILE).read_text(), Loader=_LOADER
    )
    if not isinstance(data, dict) or not isinstance(data.get("engines"), dict):
        raise SpecError(f"{where}: expected 'engines:' mapping", "see the shipped file")
    fitted: dict[str, list[Any]] = {}
    cal_file = resources.files("profiler").joinpath("data", CALIBRATIONS_FILE)
    if cal_file.is_file():
        fitted = yaml.load(cal_file.read_text(), Loader=_LOADER) or {}
    engines = {
        k: {**v, "key": k, "calibrations": list(v.get("calibrations") or []) + fitted.get(k, [])}
        for k, v in data["engines"].items()
    }
    cat = validate_catalog({**data, "engines": engines}, EngineCatalog, where)
    fields = set(Efficiency.model_fields)
    for e in cat.engines.values():
        for eff in [e.efficiency] + [c.efficiency for c in e.calibrations]:
            bad = set(eff) - fields
            if bad:
                raise SpecError(
                    f"{where} engines.{e.key}: unknown efficiency field(s) {', '.join(sorted(bad))}",
                    f"use: {', '.join(sorted(fields))}",
                )
            Efficiency(**eff)  # bounds (fractions at most 1) checked here
    return cat
