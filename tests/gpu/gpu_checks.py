"""Helpers of the real-GPU checks (no test here): a row of the measured table and the NVML
index of torch's ``cuda:0``. Imports only ``profiler.telemetry`` (no pydantic)."""

from __future__ import annotations

import os
from typing import Any


def add_row(
    config: Any, check: str, measured: str, expected: str = "", ok: bool | None = None
) -> None:
    """One row of the table ``tests/gpu/conftest.py`` prints and writes to ``$OUT``."""
    config._infprof_gpu_rows.append(
        {"check": check, "measured": measured, "expected": expected, "ok": ok}
    )


def nvml_index(torch: Any, inv: dict[str, Any]) -> int:
    """NVML index of torch's cuda:0 (NVML ignores CUDA_VISIBLE_DEVICES)."""
    uuid = getattr(torch.cuda.get_device_properties(0), "uuid", None)
    if uuid is not None:
        want = str(uuid).lower().removeprefix("gpu-")
        for g in inv.get("gpus", []):
            if str(g.get("uuid") or "").lower().removeprefix("gpu-") == want:
                return int(g["index"])
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(first) if first.isdigit() else 0
