"""``infprof sweep --executor ray``: each point is a Ray task on the user's cluster.

A point's task asks for the GPUs its layout needs (``num_gpus = tp x pp x dp``, on one node)
and one CPU for its client. On the node Ray placed it on, it launches the configuration's vLLM
with the ``CUDA_VISIBLE_DEVICES`` Ray gave it, runs the load from that node
(``runner.execute``), and returns its run directory packed; the driver unpacks it under
``<sweep>/runs/<point>``. Every grid point (and repeat) not yet done is submitted at once, so
points run in parallel as far as the cluster's GPUs allow; the index records them in sweep
order, each with its node, GPUs and timing (queued, started, ended on the driver's wall clock).

While a point runs, its request journals stream to the driver (``profiler.store.ray_journal``)
under ``<sweep>/attempts/<point>-a<k>/``. A node lost mid-point (its task fails with a Ray
system error, not an error of the point itself) is retried up to ``max_retries`` times; the
lost attempt stays in ``attempts/`` with the records that reached the driver, and the point
records it under ``attempts`` (status ``lost``) and counts it in ``lost_attempts``. A finished
attempt's streamed copy is removed: the run directory it shipped is complete.
"""

from __future__ import annotations

import functools
import io
import logging
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.cluster import NodeInfo, alive_nodes, connect, driver_node_id
from profiler.errors import InfprofError, SpecError
from profiler.serving.ray_cluster import gpus_needed, layout_label
from profiler.spec import RunSpec
from profiler.store.ray_journal import ATTEMPT_FILE, is_request_journal
from profiler.sweep.jobs import PointJob, timing

log = logging.getLogger(__name__)

ATTEMPTS_DIR = "attempts"
DEFAULT_MAX_RETRIES = 2
CLIENT_CPUS = 1.0
POLL_S = 0.5


@dataclass
class PointResult:
    """What ``runner.execute`` returned on the node, its run directory now on the driver."""

    run_dir: Path
    summary: dict[str, Any]
    ended: str
    reason: str | None


def point_resources(run_spec: RunSpec) -> dict[str, float]:
    """What a point's task asks Ray for: its server's GPUs, a CPU for its client (per load
    worker)."""
    gpus = gpus_needed(run_spec.serve) if run_spec.serve is not None else 0
    return {"num_gpus": float(gpus), "num_cpus": CLIENT_CPUS * run_spec.workers}


def unplaceable(run_spec: RunSpec, nodes: list[NodeInfo]) -> str | None:
    """Why no node of the cluster can ever take this point (its GPUs must be on one node)."""
    res = point_resources(run_spec)
    need = res["num_gpus"]
    if need and not any(n.gpus >= need for n in nodes):
        assert run_spec.serve is not None
        most = max((n.gpus for n in nodes), default=0.0)
        return (
            f"{layout_label(run_spec.serve)} needs {need:g} GPUs on one node; the Ray cluster's "
            f"largest node has {most:g} (a point's server runs on one node: use "
            f"`infprof run --executor ray` for a layout spanning nodes)"
        )
    if not any(n.cpus >= res["num_cpus"] for n in nodes):
        return f"no node of the Ray cluster has {res['num_cpus']:g} CPUs for the point's client"
    return None


# ---------------------------------------------------------------------- on the node
def _run_point(run_spec_json: str, key: str, attempt: int, collector: Any) -> dict[str, Any]:
    """The task: run the point here, stream its journals to the driver, return its run
    directory packed (also when the run failed: its manifest and server log say why)."""
    from profiler.cluster import here
    from profiler.runner import RunHooks, execute
    from profiler.store.ray_journal import Forwarder

    where = here()
    started = time.time()
    collector.start.remote(key, {"attempt": attempt, **where})
    tmp = Path(tempfile.mkdtemp(prefix="infprof-point-"))
    spec = embedded_model_here(RunSpec.model_validate_json(run_spec_json))
    spec = spec.model_copy(update={"out_dir": tmp})
    assert spec.run_id is not None
    run_dir = tmp / spec.run_id
    fwd = Forwarder(collector, key, run_dir).start()
    out: dict[str, Any] = {"placement": where, "started_at": started}
    try:
        result = execute(spec, RunHooks())
        out.update(ok=True, ended=result.ended, reason=result.reason, summary=result.summary)
    except InfprofError as e:
        out.update(ok=False, reason=e.one_line())
    finally:
        fwd.stop()
        out["records_streamed"] = fwd.lines_sent
        out["ended_at"] = time.time()
    try:
        out["tar"] = pack(run_dir) if run_dir.is_dir() else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def embedded_model_here(spec: RunSpec) -> RunSpec:
    """An embedded model (the tiny model, a GPU shape: config and tokenizer, dummy weights)
    is made on the driver, under its INFPROF_HOME; a node without that directory makes its own
    copy and the spec points at it. Any other model path must exist on every node."""
    serve = spec.serve
    if serve is None or Path(serve.model).exists():
        return spec
    from profiler.serving import shapes, tinymodel

    if serve.served_model_name == tinymodel.TINY_NAME:
        made = tinymodel.make_tiny_model()
    elif serve.served_model_name in shapes.SHAPES:
        made = shapes.make_shape_model(serve.served_model_name)
    else:
        return spec  # vLLM says the path is missing, in the point's server.log

    def moved(path: str | None) -> str | None:
        return (
            str(made) + path[len(serve.model) :] if path and path.startswith(serve.model) else path
        )

    new_serve = serve.model_copy(update={"model": str(made), "tokenizer": moved(serve.tokenizer)})
    return spec.model_copy(update={"serve": new_serve, "tokenizer": moved(spec.tokenizer)})


def pack(run_dir: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for path in sorted(run_dir.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(run_dir)), recursive=False)
    return buf.getvalue()


def unpack(data: bytes, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")


@functools.lru_cache(maxsize=1)
def _task() -> Any:
    import ray

    # retries are the driver's: it records each lost attempt
    return ray.remote(max_retries=0)(_run_point)


# ---------------------------------------------------------------------- on the driver
class RayPointExecutor:
    """The sweep's ``PointExecutor`` on a Ray cluster (see the module docstring)."""

    def __init__(
        self,
        sweep_dir: Path,
        address: str | None = None,
        *,
        max_retries: int = DEFAULT_MAX_RETRIES,
        status: Callable[[str], None] | None = None,
    ) -> None:
        self.sweep_dir = sweep_dir
        self.address = address
        self.max_retries = max_retries
        self.status = status or (lambda _m: None)
        self.ray: Any = None
        self.collector: Any = None
        self.nodes: list[NodeInfo] = []
        self._first: dict[str, tuple[Any, float]] = {}  # rel -> (first attempt's ref, queued)
        self._current: Any = None  # the attempt being waited for

    def open(self) -> RayPointExecutor:
        self.ray = connect(self.address)
        self.nodes = alive_nodes(self.ray)
        gpus = sum(n.gpus for n in self.nodes)
        self.status(
            f"Ray cluster: {len(self.nodes)} node{'' if len(self.nodes) == 1 else 's'}, "
            f"{gpus:g} GPUs; points run where Ray places them"
        )
        return self

    def _collector(self) -> Any:
        """The journal collector on the driver's node (started with the first point)."""
        if self.collector is None:
            from profiler.store.ray_journal import start_collector

            self.collector = start_collector(
                self.ray, self.sweep_dir / ATTEMPTS_DIR, driver_node_id(self.ray)
            )
        return self.collector

    def _submit(self, job: PointJob, attempt: int) -> Any:
        res = point_resources(job.run_spec)
        return (
            _task()
            .options(num_gpus=res["num_gpus"], num_cpus=res["num_cpus"], name=f"infprof:{job.rel}")
            .remote(
                job.run_spec.model_dump_json(), _key(job.rel, attempt), attempt, self._collector()
            )
        )

    def prefetch(self, jobs: list[PointJob]) -> None:
        for job in jobs:
            if unplaceable(job.run_spec, self.nodes) is None:
                self._first[job.rel] = (self._submit(job, 1), time.time())
        if jobs:
            self.status(f"submitted {len(self._first)} point runs to the Ray cluster")

    def run(self, job: PointJob) -> tuple[Any, str | None, dict[str, Any]]:
        why = unplaceable(job.run_spec, self.nodes)
        if why is not None:  # nodes may have joined since
            self.nodes = alive_nodes(self.ray)
            why = unplaceable(job.run_spec, self.nodes)
        if why is not None:
            return None, why, {}
        attempts: list[dict[str, Any]] = []
        for attempt in range(1, self.max_retries + 2):
            ref, queued = self._first.pop(job.rel, (None, 0.0)) if attempt == 1 else (None, 0.0)
            if ref is None:
                ref, queued = self._submit(job, attempt), time.time()
            try:
                out = self._wait(ref)
            except self.ray.exceptions.RayTaskError as e:  # the task's own code failed
                attempts.append(self._lost(job, attempt, queued, "error", _first_line(e)))
                return None, f"the point's task failed: {_first_line(e)}", _info(attempts)
            except self.ray.exceptions.RayError as e:  # its node or worker was lost
                lost = self._lost(job, attempt, queued, "lost", _first_line(e))
                attempts.append(lost)
                more = attempt <= self.max_retries
                self.status(
                    f"{job.rel}: attempt {attempt} lost on node {lost.get('node')} "
                    f"({lost['records_kept']} records kept in {lost['dir']})"
                    + ("; retrying" if more else "; no retries left")
                )
                continue
            return self._finished(job, attempt, queued, out, attempts)
        return (
            None,
            f"lost {len(attempts)} times (last: {attempts[-1]['reason']})",
            _info(attempts),
        )

    def _wait(self, ref: Any) -> Any:
        self._current = ref
        while True:
            ready, _ = self.ray.wait([ref], timeout=POLL_S)
            if ready:
                self._current = None
                return self.ray.get(ready[0])

    def _finished(
        self,
        job: PointJob,
        attempt: int,
        queued: float,
        out: dict[str, Any],
        attempts: list[dict[str, Any]],
    ) -> tuple[Any, str | None, dict[str, Any]]:
        dest = self.sweep_dir / "runs" / job.rel
        if out.get("tar"):
            unpack(out["tar"], dest)
        shutil.rmtree(self.sweep_dir / ATTEMPTS_DIR / _key(job.rel, attempt), ignore_errors=True)
        placement = out["placement"]
        entry = {
            "attempt": attempt,
            "status": "ok" if out["ok"] else "failed",
            **_where(placement),
            "timing": timing(queued, out["started_at"], out["ended_at"]),
        }
        attempts.append(entry)
        info = _info(attempts)
        info.update(_where(placement))
        info["timing"] = entry["timing"]
        if not out["ok"]:
            return None, out["reason"], info
        return PointResult(dest, out["summary"], out["ended"], out["reason"]), None, info

    def _lost(
        self, job: PointJob, attempt: int, queued: float, status: str, reason: str
    ) -> dict[str, Any]:
        """The record of an attempt that did not come back, with what reached the driver."""
        key = _key(job.rel, attempt)
        d = self.sweep_dir / ATTEMPTS_DIR / key
        placement: dict[str, Any] = {}
        try:
            import json

            placement = json.loads((d / ATTEMPT_FILE).read_text())
        except (OSError, ValueError):
            pass
        records = 0
        if d.is_dir():
            for p in d.iterdir():
                if is_request_journal(p.name):
                    with open(p, "rb") as f:
                        records += sum(1 for line in f if line.endswith(b"\n"))
        started = placement.get("started_at")
        return {
            "attempt": attempt,
            "status": status,
            "reason": reason,
            **_where(placement),
            "timing": timing(queued, started or queued, time.time()),
            "records_kept": records,
            "dir": f"{ATTEMPTS_DIR}/{key}",
        }

    def close(self) -> None:
        """Cancel every run not collected (an interrupted sweep). Not forced: a running point
        gets a KeyboardInterrupt, so it stops the server it launched, as a local run does."""
        if self.ray is None:
            return
        refs = [ref for ref, _ in self._first.values()]
        if self._current is not None:
            refs.append(self._current)
        for ref in refs:
            try:
                self.ray.cancel(ref, force=False)
            except Exception as e:  # already finished or gone
                log.debug("cancel failed: %s", e)
        self._first.clear()
        self._current = None


def _key(rel: str, attempt: int) -> str:
    return f"{rel.replace('/', '-')}-a{attempt}"


def _where(placement: dict[str, Any]) -> dict[str, Any]:
    return {
        "node": placement.get("hostname") or placement.get("node_ip"),
        "node_id": placement.get("node_id"),
        "node_ip": placement.get("node_ip"),
        "gpus": list(placement.get("gpus") or []),
    }


def _info(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "attempts": attempts,
        "lost_attempts": sum(1 for a in attempts if a["status"] == "lost"),
    }


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def make_executor(
    executor: str,
    sweep_dir: Path,
    address: str | None,
    max_retries: int,
    status: Callable[[str], None] | None,
) -> RayPointExecutor | None:
    """``--executor``: None for local, else a connected Ray executor."""
    if executor == "local":
        if address is not None:
            raise SpecError("--ray-address needs --executor ray", "add --executor ray")
        return None
    return RayPointExecutor(sweep_dir, address, max_retries=max_retries, status=status).open()
