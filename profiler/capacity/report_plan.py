"""The plan a report shows with ``infprof report --plan-model``: computed before the report
renders (the report only reads the result)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def report_plan(
    model: str,
    gpus: list[str],
    target_rps: float | None,
    slo: dict[str, Any] | None,
    calibration: Path | None,
) -> dict[str, Any]:
    """Run the planner; its JSON form, or an error as ``{"error": ...}`` so the report still
    renders (the plan section says why)."""
    from profiler.errors import InfprofError

    try:
        from profiler.capacity.planner import plan
        from profiler.capacity.result import PlanRequest
        from profiler.spec import SloSpec

        req = PlanRequest(
            model=model,
            gpus=gpus or ["h100"],
            target_rps=target_rps,
            slo=SloSpec.model_validate(slo or {}),
            calibration=calibration,
        )
        return plan(req).model_dump(mode="json")  # type: ignore[no-any-return]
    except InfprofError as e:
        return {"error": e.one_line()}
    except ValueError as e:  # pydantic validation
        return {"error": str(e).splitlines()[0]}
