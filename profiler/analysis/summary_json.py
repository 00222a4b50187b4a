"""The whole ``summary.json`` of a run, computed from what is on disk, so ``infprof report`` and
a run that ended abnormally produce the same summary as the run itself. It assembles the
sections: requests (``request_summary``), telemetry (``telemetry_sections``), nodes, sessions,
workers' clocks and the roofline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from profiler.analysis.request_columns import RequestColumns
from profiler.analysis.request_summary import summarize_requests
from profiler.spec import RunSpec
from profiler.store.rundir import read_records, read_samples
from profiler.store.schema import Manifest, Summary


def summarize_run(
    run_path: Path, *, spec: RunSpec | None = None, health: dict[str, Any] | None = None
) -> dict[str, Any]:
    """summary.json from what is on disk (so ``infprof report`` reproduces it)."""
    recorded = Manifest.load(run_path) if (run_path / Manifest.FILE).exists() else Manifest()
    if spec is None and recorded.spec is not None:
        spec = RunSpec.model_validate(recorded.spec.to_dict())
    if (run_path / "requests.parquet").exists():
        cols = RequestColumns.from_run_dir(run_path)
        table = pq.read_table(run_path / "requests.parquet", columns=["tokens_estimated"])
        est = table.column(0).to_numpy(zero_copy_only=False).astype(bool)
    else:
        records = read_records(run_path)
        cols = RequestColumns.from_records(records)
        est = np.array([r.tokens_estimated for r in records], dtype=bool)
    ok = cols.outcome == "ok"  # the columns' outcomes, in the same row order
    estimated = int(est.sum())
    summary = summarize_requests(
        cols,
        run_id=recorded.run_id or run_path.name,
        warmup_s=spec.warmup_s if spec else 0.0,
        cooldown_s=spec.cooldown_s if spec else 0.0,
        slo=spec.slo if spec else None,
        open_loop=spec.arrival.kind != "concurrency" if spec else None,
    )
    summary["workload"] = spec.workload.name if spec else None
    summary["model"] = recorded.model
    if health is None and (run_path / Summary.FILE).exists():
        client = Summary.load(run_path).client
        health = client.to_dict() if client is not None else None
    summary["client"] = dict(health or {"saturated": None, "reason": "client health not recorded"})
    summary["client"]["token_counting"] = token_counting(
        int(ok.sum()), int((est & ok).sum()), spec.tokenizer if spec else None
    )
    summary["tokens_estimated_requests"] = estimated
    from profiler.analysis.node_summary import summarize_nodes
    from profiler.analysis.telemetry_sections import summarize_telemetry

    samples = read_samples(run_path)
    summary.update(
        summarize_telemetry(
            samples,
            summary["window"]["start"],
            summary["window"]["end"],
            summary["tokens"]["output"],
            recorded.nvml.to_dict()
            if recorded.nvml is not None
            else {"available": False, "reason": "not recorded"},
            gpu_scope=recorded.gpu_scope,
            gpus=recorded.gpus,
        )
    )
    summary["nodes"] = summarize_nodes(
        samples,
        summary["window"]["start"],
        summary["window"]["end"],
        summary["tokens"]["output"],
        spec.prometheus_url if spec else None,
    )
    from profiler.analysis.turns import session_sections

    summary.update(session_sections(run_path, cols, summary, samples))
    from profiler.analysis.clock_offsets import clock_section

    summary["workers_clock"] = clock_section(recorded.workers)
    from profiler.analysis.roofline import summarize_roofline

    summary["roofline"] = summarize_roofline(recorded, summary, spec)
    return summary


def token_counting(ok: int, ok_estimated: int, tokenizer: str | None) -> str | None:
    """How the output tokens of the ok requests were counted: ``usage`` (the server reported
    them per chunk for every one), ``tokenizer`` (some chunks were counted with the model's
    tokenizer), ``chunks`` (some chunks counted as one token each); ``None`` with no ok request."""
    if ok == 0:
        return None
    if ok_estimated == 0:
        return "usage"
    return "tokenizer" if tokenizer else "chunks"
