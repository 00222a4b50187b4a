"""``summary.json`` of a run, computed from what is on disk, so ``infprof report`` and a run
that ended abnormally produce the same summary as the run itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from profiler.analysis.summary import RequestColumns, summarize
from profiler.spec import RunSpec
from profiler.store.rundir import RunDir, read_records, read_samples


def summarize_run(
    run_path: Path, *, spec: RunSpec | None = None, health: dict[str, Any] | None = None
) -> dict[str, Any]:
    """summary.json from what is on disk (so ``infprof report`` reproduces it)."""
    manifest = RunDir(run_path).read_json("manifest.json") or {}
    if spec is None and manifest.get("spec"):
        spec = RunSpec.model_validate(manifest["spec"])
    if (run_path / "requests.parquet").exists():
        cols = RequestColumns.from_run_dir(run_path)
        estimated = int(
            pq.read_table(run_path / "requests.parquet", columns=["tokens_estimated"])
            .column(0)
            .to_numpy(zero_copy_only=False)
            .sum()
        )
    else:
        records = read_records(run_path)
        cols = RequestColumns.from_records(records)
        estimated = sum(1 for r in records if r.tokens_estimated)
    summary = summarize(
        cols,
        run_id=manifest.get("run_id", run_path.name),
        warmup_s=spec.warmup_s if spec else 0.0,
        cooldown_s=spec.cooldown_s if spec else 0.0,
        slo=spec.slo if spec else None,
    )
    summary["workload"] = spec.workload.name if spec else None
    summary["model"] = manifest.get("model")
    if health is None:
        previous = RunDir(run_path).read_json("summary.json") or {}
        health = previous.get("client")
    summary["client"] = health or {"saturated": None, "reason": "client health not recorded"}
    summary["tokens_estimated_requests"] = estimated
    from profiler.analysis.telemetry_summary import summarize_telemetry

    summary.update(
        summarize_telemetry(
            read_samples(run_path),
            summary["window"]["start"],
            summary["window"]["end"],
            summary["tokens"]["output"],
            manifest.get("nvml", {"available": False, "reason": "not recorded"}),
        )
    )
    return summary
