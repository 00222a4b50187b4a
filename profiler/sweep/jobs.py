"""The executor seam of a sweep: a point's run as a job for an executor that runs it
elsewhere (``PointJob``, ``PointExecutor``; ``profiler.sweep.ray_executor`` is one), the jobs
of a sweep not yet done, and where and when a point ran (``node``, ``gpus``, ``timing`` in
the index)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from profiler.analysis.repeats import rep_id
from profiler.errors import InfprofError, StorageError
from profiler.run_server import probe_host
from profiler.spec import RunSpec, ServeSpec
from profiler.sweep.index import LiveIndex
from profiler.sweep.points import point_run_spec, serve_spec
from profiler.sweep.spec import SweepSpec, config_id, point_id

_NO_URL = "http://127.0.0.1:1"  # replaced by the launched server's own address


@dataclass(frozen=True)
class PointJob:
    """One run of a point for an executor: ``rel`` is its directory under ``runs/``
    (``<point>`` or ``<point>/rep-02``); ``run_spec`` launches the configuration's server
    itself (``serve``) or attaches to the sweep's endpoint."""

    rel: str
    run_spec: RunSpec


class PointExecutor(Protocol):
    """Runs points elsewhere (``profiler.sweep.ray_executor``)."""

    def prefetch(self, jobs: list[PointJob]) -> None:
        """Start every job it can ahead of time (they run in parallel as resources allow)."""

    def run(self, job: PointJob) -> tuple[Any, str | None, dict[str, Any]]:
        """Wait for ``job``: (result, None, info) with its run directory in place under
        ``runs/<rel>``, or (None, why, info). ``info`` goes into the index entry."""

    def close(self) -> None: ...


def job_spec(
    spec: SweepSpec,
    workload: str,
    load: dict[str, Any],
    serve: ServeSpec | None,
    runs_dir: Path,
    run_id: str,
) -> RunSpec:
    """The RunSpec of a point run elsewhere: against the sweep's endpoint, or launching the
    configuration's server itself (on the GPUs it is given there, not pinned to this host's
    cores)."""
    if serve is None:
        return point_run_spec(
            spec, workload, load, str(spec.endpoint), spec.model, runs_dir, run_id
        )
    run_spec = point_run_spec(spec, workload, load, _NO_URL, serve.name, runs_dir, run_id)
    return run_spec.model_copy(
        update={"endpoint": None, "serve": serve.model_copy(update={"cpus": None})}
    )


def load_of(spec: SweepSpec, value: float) -> dict[str, Any]:
    return {
        "kind": spec.load_kind,
        "value": int(value) if spec.load_kind == "concurrency" else float(value),
    }


def is_settled(old: dict[str, Any] | None, retry_failed: bool) -> bool:
    """Whether a point already in the index is left alone (done, or failed and not retried)."""
    return old is not None and (
        old["status"] == "done" or (old["status"] == "failed" and not retry_failed)
    )


def done_repeats(old: dict[str, Any] | None) -> dict[int, dict[str, Any]]:
    """The repeats of a point already in the index that are done, by their index (1..N):
    never rerun on resume."""
    return {r["index"]: r for r in (old or {}).get("repeats") or [] if r["status"] == "done"}


def pending_jobs(
    spec: SweepSpec, sweep_dir: Path, index: LiveIndex, retry_failed: bool
) -> list[PointJob]:
    """Every run of a grid point not yet done (an SLO search decides its probes one at a time,
    so it has none to start ahead); repeats already done are left out."""
    if spec.search is not None:
        return []
    jobs = []
    n = spec.repeat
    runs = sweep_dir / "runs"
    host = None if spec.endpoint else probe_host()
    for ci, config in enumerate(spec.configs()):
        cfg_id = config_id(ci)
        try:
            serve = None if host is None else serve_spec(spec, config, host)
        except InfprofError:
            continue  # reported when the configuration's turn comes
        for workload in spec.workloads:
            for value in spec.loads:
                load = load_of(spec, value)
                pid = point_id(cfg_id, workload, load)
                old = index.find(pid)
                if is_settled(old, retry_failed):
                    continue
                if n == 1:
                    todo = [(runs, pid, pid)]
                else:
                    done = done_repeats(old)
                    todo = [
                        (runs / pid, rep_id(i, n), f"{pid}/{rep_id(i, n)}")
                        for i in range(1, n + 1)
                        if i not in done
                    ]
                for runs_dir, run_id, rel in todo:
                    try:
                        jobs.append(
                            PointJob(rel, job_spec(spec, workload, load, serve, runs_dir, run_id))
                        )
                    except InfprofError:
                        continue  # reported when the point's turn comes
    return jobs


def local_info(run_dir: Path | None, started: float, ended: float) -> dict[str, Any]:
    """``node``, ``gpus`` and ``timing`` of a point run on this host (the GPUs are the run's
    GPU scope, from its manifest)."""
    gpus: list[str] = []
    if run_dir is not None:
        from profiler.store.schema import Manifest

        try:
            gpus = [str(g) for g in Manifest.load(Path(run_dir)).scope_gpus() or []]
        except StorageError:
            pass  # no manifest (the run failed before writing it): no GPUs to name
    return {"node": socket.gethostname(), "gpus": gpus, "timing": timing(started, started, ended)}


def timing(queued_at: float, started_at: float, ended_at: float) -> dict[str, float]:
    """When a point's run was queued, started and ended (Unix seconds on the driver's clock
    for the first, the node's for the others) and how long it ran."""
    return {
        "queued_at": queued_at,
        "started_at": started_at,
        "ended_at": ended_at,
        "wall_s": round(ended_at - started_at, 3),
    }
