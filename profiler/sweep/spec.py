"""What a sweep is asked to do: a grid of server configurations x load levels x workloads, or
an SLO search per configuration. Saved as ``sweep.json`` in the sweep directory so
``--resume`` redoes exactly the same sweep."""

from __future__ import annotations

import itertools
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from profiler.spec import SloSpec

SWEEP_SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _unset() -> list[int | None]:
    return [None]


class SweepGrid(_Strict):
    """Server settings to cross. ``None`` in a list leaves vLLM's default."""

    tp: list[int] = Field(default_factory=lambda: [1])
    pp: list[int] = Field(default_factory=lambda: [1])
    dp: list[int] = Field(default_factory=lambda: [1])
    ep: list[bool] = Field(default_factory=lambda: [False])
    max_num_seqs: list[int | None] = Field(default_factory=lambda: _unset())
    max_num_batched_tokens: list[int | None] = Field(default_factory=lambda: _unset())

    def configs(self) -> list[dict[str, Any]]:
        keys = ("tp", "pp", "dp", "ep", "max_num_seqs", "max_num_batched_tokens")
        values = [getattr(self, k) for k in keys]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


class SweepSpec(_Strict):
    schema_version: int = SWEEP_SCHEMA_VERSION
    sweep_id: str
    model: str | None = None
    endpoint: str | None = None
    api_key_env: str | None = None
    tokenizer: str | None = None  # counts streamed tokens when the server reports no usage
    grid: SweepGrid = Field(default_factory=SweepGrid)
    serve_args: list[str] = Field(default_factory=list)
    load_kind: Literal["concurrency", "rate"] = "concurrency"
    loads: list[float] = Field(default_factory=list)
    arrival: Literal["constant", "poisson", "gamma"] = "poisson"
    workloads: list[str] = Field(default_factory=lambda: ["default"], min_length=1)
    num_requests: int | None = Field(default=None, ge=1)
    duration_s: float | None = Field(default=None, gt=0)
    input_len: int | None = Field(default=None, ge=1)
    output_len: int | None = Field(default=None, ge=1)
    slo: SloSpec = Field(default_factory=SloSpec)  # its target_fraction is the search's too
    search: Literal["slo"] | None = None
    start_rate: float = Field(default=1.0, gt=0)
    tolerance: float = Field(default=0.05, gt=0, lt=1)
    max_probes: int = Field(default=12, ge=2)
    max_rate: float | None = Field(default=None, gt=0)
    warmup_s: float = Field(default=0.0, ge=0)
    cooldown_s: float = Field(default=0.0, ge=0)
    seed: int = 0
    repeat: int = Field(default=1, ge=1)  # runs per point (the same spec each time)
    sample_interval_s: float | None = Field(default=0.5, gt=0)
    request_timeout_s: float = Field(default=600.0, gt=0)
    ready_timeout_s: float = Field(default=600.0, gt=0)
    max_model_len: int | None = Field(default=None, ge=1)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    load_format: str | None = None
    dtype: str | None = None
    gpus: list[str] | None = None  # the servers' GPUs (NVML indices or UUIDs), as run --gpus

    @model_validator(mode="before")
    @classmethod
    def _older(cls, data: Any) -> Any:
        """sweep.json before the SLO was a model: ``slo`` its --slo text (a ``fraction=`` in
        it measured the points) and ``target_fraction`` beside it (what the search aimed at)."""
        if not isinstance(data, dict) or "target_fraction" not in data:
            return data
        data = dict(data)
        fraction = data.pop("target_fraction")
        slo = data.get("slo")
        if slo is None or isinstance(slo, str):
            slo = SloSpec.parse(slo)
            if "target_fraction" not in slo.model_fields_set and fraction is not None:
                slo = slo.model_copy(update={"target_fraction": fraction})
            data["slo"] = slo
        return data

    @property
    def target_fraction(self) -> float:
        """The share of requests that must meet the SLOs (a point's and the search's)."""
        return self.slo.target_fraction

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        if self.search == "slo":
            if not self.slo.is_set():
                raise ValueError("--search slo needs --slo ttft=..,tpot=..")
        elif not self.loads:
            raise ValueError("give load levels: --concurrency 1,4,16 or --rate 1,2,4")
        if self.load_kind == "concurrency" and any(v != int(v) or v < 1 for v in self.loads):
            raise ValueError("concurrency levels must be whole numbers >= 1")
        if any(v <= 0 for v in self.loads):
            raise ValueError("load levels must be positive")
        return self

    def configs(self) -> list[dict[str, Any]]:
        if self.endpoint:
            return [{"endpoint": self.endpoint}]
        return self.grid.configs()

    def same_work(self, other: SweepSpec) -> bool:
        """Whether ``other`` asks for the same points (the sweep id may differ)."""
        mine = self.model_dump(exclude={"sweep_id"})
        theirs = other.model_dump(exclude={"sweep_id"})
        return mine == theirs


def config_id(index: int) -> str:
    return f"c{index}"


def config_label(config: dict[str, Any]) -> str:
    """Short human name: ``tp2 pp1 dp1 seqs16`` (defaults left out where they add nothing)."""
    if "endpoint" in config:
        return f"endpoint {config['endpoint']}"
    parts = [f"tp{config['tp']}", f"pp{config['pp']}", f"dp{config['dp']}"]
    if config.get("ep"):
        parts.append("ep")
    if config.get("max_num_seqs") is not None:
        parts.append(f"seqs{config['max_num_seqs']}")
    if config.get("max_num_batched_tokens") is not None:
        parts.append(f"btok{config['max_num_batched_tokens']}")
    return " ".join(parts)


def load_label(load: dict[str, Any]) -> str:
    v = load["value"]
    return f"concurrency {int(v)}" if load["kind"] == "concurrency" else f"rate {v:g}/s"


def point_id(cfg_id: str, workload: str, load: dict[str, Any]) -> str:
    """Directory name of one point: ``c0-chat-conc4`` or ``c1-default-rate2.5``."""
    slug = (
        re.sub(r"[^A-Za-z0-9]+", "-", workload.rsplit("/", 1)[-1].removesuffix(".yaml")).strip("-")
        or "w"
    )
    v = load["value"]
    tag = f"conc{int(v)}" if load["kind"] == "concurrency" else f"rate{v:g}"
    return f"{cfg_id}-{slug[:40]}-{tag}"
