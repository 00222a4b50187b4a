"""Real-GPU checks: marker ``gpu``, skipped when NVML cannot initialise.

Imports only ``profiler.telemetry.*`` and ``profiler.clock`` (no pydantic, no vLLM, no numpy
needed). The measured values are collected by the tests into ``config._infprof_gpu_rows`` and
printed as a table at the end of the session, and written to ``$OUT/gpu_telemetry.md`` and
``.json`` when ``OUT`` is set (``tests/gpu/run.sh``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

_REASON: list[str | None] = []


def nvml_unavailable_reason() -> str | None:
    if not _REASON:
        try:
            from profiler.telemetry.nvml import nvml_state

            state = nvml_state()
            _REASON.append(None if state.get("available") else str(state.get("reason")))
        except Exception as e:  # an import or loader failure is a reason to skip too
            _REASON.append(f"{type(e).__name__}: {e}")
    return _REASON[0]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a real NVIDIA GPU with NVML")
    config._infprof_gpu_rows = []  # type: ignore[attr-defined]
    config._infprof_gpu_info = {}  # type: ignore[attr-defined]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [it for it in items if it.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    reason = nvml_unavailable_reason()
    if reason is not None:
        for it in gpu_items:
            it.add_marker(pytest.mark.skip(reason=f"NVML unavailable: {reason}"))


def format_table(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = ["# infprof GPU telemetry checks", ""]
    for k, v in info.items():
        lines.append(f"- {k}: {v}")
    lines += ["", "| check | measured | expected | result |", "|---|---|---|---|"]
    for r in rows:
        ok = r.get("ok")
        result = "info" if ok is None else ("PASS" if ok else "FAIL")
        lines.append(f"| {r['check']} | {r['measured']} | {r.get('expected', '')} | {result} |")
    return "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rows = getattr(config, "_infprof_gpu_rows", [])
    info = getattr(config, "_infprof_gpu_info", {})
    if not rows and not info:
        return
    text = format_table(rows, info)
    terminalreporter.write_sep("=", "GPU telemetry measured")
    terminalreporter.write(text)
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_telemetry.md").write_text(text)
        (Path(out) / "gpu_telemetry.json").write_text(
            json.dumps({"info": info, "rows": rows}, indent=2, default=str)
        )
