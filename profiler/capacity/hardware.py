"""Hardware catalog: GPUs and fabrics, read from ``profiler/data/hardware.yaml``.

Units at the boundary: the YAML speaks vendor units (TFLOP/s, GB, TB/s, Gb/s); the typed
properties here are base units (FLOP/s, bytes, bytes/s) and every name says which.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from profiler.capacity.names import match_nvml_name
from profiler.errors import SpecError

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # safe either way; C is faster
HARDWARE_FILE = "hardware.yaml"
_M = TypeVar("_M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GpuSpec(_Strict):
    key: str = ""
    name: str
    aliases: list[str] = Field(default_factory=list)
    nvml_names: list[str] = Field(default_factory=list)
    bf16_tflops: float = Field(gt=0)
    fp8_tflops: float | None = Field(default=None, gt=0)
    int8_tops: float | None = Field(default=None, gt=0)
    fp4_tflops: float | None = Field(default=None, gt=0)
    memory_gb: float = Field(gt=0)
    hbm_tb_per_s: float = Field(gt=0)
    nvlink_gb_per_s: float = Field(ge=0, description="bidirectional per GPU; 0: none")
    scale_up_gpus: int | None = Field(
        default=None, ge=1, description="GPUs in one NVLink/PCIe domain (None: gpus_per_node)"
    )
    pcie_gen: Literal[3, 4, 5, 6]
    nic_gbit_per_s: float = Field(gt=0)
    gpus_per_node: int = Field(ge=1)
    price_per_hour: float = Field(ge=0)
    tdp_w: float = Field(gt=0)
    source: str = ""
    planning: bool = True

    @property
    def bf16_flops(self) -> float:
        return self.bf16_tflops * 1e12

    @property
    def fp8_flops(self) -> float | None:
        return None if self.fp8_tflops is None else self.fp8_tflops * 1e12

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9

    @property
    def hbm_bytes_per_s(self) -> float:
        return self.hbm_tb_per_s * 1e12

    @property
    def domain_gpus(self) -> int:
        """GPUs one scale-up fabric connects (an NVLink domain; a PCIe node)."""
        return self.scale_up_gpus or self.gpus_per_node

    def compute_dtype(self, dtype: str) -> str:
        """The tensor-core precision GEMMs on weights of ``dtype`` run at here: the weight's
        own where the GPU has that path (FP8 on Hopper/Ada/Blackwell, FP4 on Blackwell, INT8
        W8A8), else BF16 (weight-only kernels dequantize: Marlin FP8/INT4 on Ampere, MXFP4 on
        Hopper), TF32 for FP32."""
        if dtype == "fp32":
            return "tf32"
        if dtype == "fp8" and self.fp8_tflops is not None:
            return "fp8"
        if dtype in ("nvfp4", "mxfp4") and self.fp4_tflops is not None:
            return "fp4"
        if dtype == "int8" and self.int8_tops is not None:
            return "int8"
        return "bf16"

    def peak_flops(self, dtype: str) -> float:
        """Peak dense FLOP/s of GEMMs on weights of ``dtype`` (``compute_dtype`` says which
        tensor-core rate that is)."""
        rate = {
            "tf32": self.bf16_tflops / 2,  # TF32: half of BF16 on these parts
            "bf16": self.bf16_tflops,
            "fp8": self.fp8_tflops,
            "fp4": self.fp4_tflops,
            "int8": self.int8_tops,
        }[self.compute_dtype(dtype)]
        assert rate is not None
        return rate * 1e12

    def default_scale_up(self) -> str:
        """The fabric between GPUs of one node: NVLink when the part has it, else PCIe."""
        if self.nvlink_gb_per_s > 0:
            return f"nvlink-{int(self.nvlink_gb_per_s)}"
        return f"pcie-gen{min(self.pcie_gen, 5)}"

    def default_scale_out(self) -> str:
        return (
            "ib-400"
            if self.nic_gbit_per_s >= 400
            else "ib-200"
            if self.nic_gbit_per_s >= 200
            else "eth-10"
        )


class Interconnect(_Strict):
    key: str = ""
    label: str
    kind: Literal["scale_up", "scale_out"]
    gb_per_s: float = Field(gt=0, description="per GPU per direction")
    latency_s: float = Field(ge=0)
    source: str = ""

    @property
    def bytes_per_s(self) -> float:
        return self.gb_per_s * 1e9


class HardwareCatalog(_Strict):
    gpus: dict[str, GpuSpec]
    interconnects: dict[str, Interconnect]
    sensitivity: list[str]

    def gpu(self, name: str) -> GpuSpec:
        found = _lookup(name, self.gpus)
        if found is None:
            avail = ", ".join(k for k, g in self.gpus.items() if g.planning)
            raise SpecError(f"unknown GPU '{name}'", f"use one of: {avail}")
        return found

    def interconnect(self, name: str) -> Interconnect:
        key = name.strip().lower().replace("_", "-")
        if key in self.interconnects:
            return self.interconnects[key]
        avail = ", ".join(self.interconnects)
        raise SpecError(f"unknown interconnect '{name}'", f"use one of: {avail}")

    def gpu_for_nvml_name(self, nvml_name: str) -> GpuSpec | None:
        """Map an NVML device name ('NVIDIA H100 80GB HBM3') to a catalog entry (the longest
        of its ``nvml_names`` that ends where a word ends: profiler/capacity/names.py)."""
        key = match_nvml_name(nvml_name, {k: g.nvml_names for k, g in self.gpus.items()})
        return self.gpus[key] if key is not None else None


def _norm(s: str) -> str:
    return s.strip().lower().replace("_", "-").replace(" ", "-")


def _lookup(name: str, table: dict[str, GpuSpec]) -> GpuSpec | None:
    key = _norm(name)
    if key in table:
        return table[key]
    for g in table.values():
        if key in (_norm(a) for a in g.aliases) or key == _norm(g.name):
            return g
    return None


def validate_catalog(data: object, model: type[_M], where: str) -> _M:
    """``model`` from a catalog file's data; ``SpecError`` naming the file and the field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise SpecError.from_validation(
            e, "{where}: field '{loc}': {msg}", "correct '{loc}' in {where}", where=where
        ) from None


@lru_cache(maxsize=1)
def load_hardware() -> HardwareCatalog:
    text = resources.files("profiler").joinpath("data", HARDWARE_FILE).read_text()
    return parse_hardware(yaml.load(text, Loader=_LOADER), f"profiler/data/{HARDWARE_FILE}")


def parse_hardware(data: object, where: str) -> HardwareCatalog:
    if not isinstance(data, dict):
        raise SpecError(
            f"{where}: expected a mapping at the top", "see profiler/data/hardware.yaml"
        )
    gpus = {
        k: validate_catalog({**v, "key": k}, GpuSpec, f"{where} gpus.{k}")
        for k, v in (data.get("gpus") or {}).items()
    }
    nets = {
        k: validate_catalog({**v, "key": k}, Interconnect, f"{where} interconnects.{k}")
        for k, v in (data.get("interconnects") or {}).items()
    }
    rest = {k: v for k, v in data.items() if k not in ("gpus", "interconnects")}
    cat = validate_catalog({"gpus": {}, "interconnects": {}, **rest}, HardwareCatalog, where)
    cat = cat.model_copy(update={"gpus": gpus, "interconnects": nets})
    for g in gpus.values():
        for fabric in (g.default_scale_up(), g.default_scale_out()):
            if fabric not in nets:
                raise SpecError(
                    f"{where} gpus.{g.key}: needs interconnect '{fabric}'",
                    "add it under interconnects",
                )
    for s in cat.sensitivity:
        if s not in nets:
            raise SpecError(
                f"{where} sensitivity: unknown interconnect '{s}'", "list keys of interconnects"
            )
    return cat


def parse_prices(items: list[str] | tuple[str, ...]) -> dict[str, float]:
    """``["h100=2.5", "h800=1.9,h200=3"]`` -> ``{"h100": 2.5, ...}`` with keys checked."""
    cat = load_hardware()
    out: dict[str, float] = {}
    for item in items:
        for part in item.split(","):
            if not part.strip():
                continue
            name, sep, value = part.partition("=")
            if not sep:
                raise SpecError(
                    f"--price: cannot read '{part}'", "write GPU=DOLLARS_PER_HOUR, e.g. h100=2.5"
                )
            try:
                price = float(value.strip().lstrip("$"))
            except ValueError:
                raise SpecError(f"--price: '{value}' is not a number", "e.g. h100=2.5") from None
            if price < 0:
                raise SpecError(
                    f"--price: negative price for {name}", "prices are dollars per GPU-hour"
                )
            out[cat.gpu(name).key] = price
    return out
