"""The ``workers_clock`` section of summary.json: how well the clocks of load workers on other
hosts (``--workers N --executor ray``) were put on the driver's run clock.

Each worker's records are corrected by its clock offset to the driver, measured at the start
and again at the end (``profiler.load.ray_workers``; the manifest's ``workers``). A request's
own latencies (TTFT, TPOT, ITL, E2E, dispatch lag) are differences on one worker's clock and
are exact whatever the offset; what the offset's error moves is where each worker's requests
sit against the others' and against the telemetry (the measured window, throughput, the
intended schedule). Above ``LIMIT_S`` the section carries a warning.
"""

from __future__ import annotations

from typing import Any

LIMIT_S = 1e-3


def clock_section(workers: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """From the manifest's ``workers`` (one entry per remote load worker, its clock offsets);
    None for a run without remote load workers."""
    if not workers:
        return None
    known = [
        float(w["clock_uncertainty_s"]) for w in workers if w.get("clock_uncertainty_s") is not None
    ]
    worst = max(known) if known else None
    drifts = [abs(float(w["clock_drift_s"])) for w in workers if w.get("clock_drift_s") is not None]
    warning = None
    if worst is None:
        warning = "the load workers' clock offsets were not measured: times across workers are not aligned"
    elif worst > LIMIT_S:
        warning = (
            f"load workers' clock offsets are uncertain by up to {worst * 1e3:.2f} ms "
            f"(above {LIMIT_S * 1e3:g} ms): each request's latencies are exact, but times across "
            "workers (the measured window, the schedule, the telemetry) may be off by that much"
        )
    return {
        "workers": len(workers),
        "nodes": len({w.get("node_id") for w in workers}),
        "uncertainty_max_s": worst,
        "drift_max_s": max(drifts) if drifts else None,
        "limit_s": LIMIT_S,
        "warning": warning,
    }
