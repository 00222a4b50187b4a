"""``run_sweep``: every point of a sweep, one run directory each, resumable.

Per server configuration the server is launched once, lazily (``profiler.sweep.servers``): a
configuration whose points are all finished is never relaunched on resume. Each point then
runs against it as an endpoint (``runner.execute`` with ``RunSpec.endpoint``). With
``SweepSpec.endpoint`` there is one configuration, the endpoint, and nothing is launched.
The index (in the directory ``profiler.sweep.sweep_dir`` makes or reopens) is saved
atomically after each point; Ctrl-C (or SIGTERM, via the CLI) stops the sweep after recording
what finished, and ``--resume`` continues from there.

With ``SweepSpec.repeat`` N > 1 each point runs N times against the same server, under
``runs/<point>/rep-01..``; the point records each repeat (saved after each, so a resumed sweep
runs only the missing ones), its ``summary`` is the median of the repeats' figures and
``across_repeats`` their median, min, max and spread. ``run_dir`` names the first repeat, for
readers that take one run per point.

Where a point runs is the executor's business (``SweepHooks.executor``): none runs it here, on
this host, against the configuration's server (``--executor local``); a ``PointExecutor``
(``profiler.sweep.ray_executor``, ``--executor ray``) runs each point, its own server included,
wherever it places it, and ships the run directory back. Either way each point (and repeat)
records ``node``, ``gpus`` and ``timing``; a remote one also its ``attempts``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from profiler import cpus
from profiler.analysis.knee import sweep_knees
from profiler.analysis.repeats import across_repeats, median_figures, rep_id
from profiler.capacity.dtypes import served_dtypes
from profiler.errors import InfprofError, RunInterrupted
from profiler.run_server import Host, probe_host
from profiler.spec import RunSpec, ServeSpec
from profiler.sweep.index import LiveIndex, key_numbers
from profiler.sweep.jobs import (
    PointExecutor,
    PointJob,
    done_repeats,
    is_settled,
    job_spec,
    load_of,
    local_info,
    pending_jobs,
)
from profiler.sweep.points import point_run_spec, serve_spec
from profiler.sweep.search import slo_search
from profiler.sweep.servers import ConfigFailed, ConfigServer, ServerFactory, vllm_factory
from profiler.sweep.spec import SweepSpec, config_id, config_label, load_label, point_id
from profiler.sweep.sweep_dir import clear_stale

__all__ = ["SweepHooks", "run_sweep"]

PointRunner = Callable[[RunSpec], Any]  # returns an object with run_dir, summary, ended, reason


@dataclass
class SweepHooks:
    on_status: Callable[[str], None] | None = None
    run_point: PointRunner | None = None
    server_factory: ServerFactory | None = None
    before_point: Callable[[], None] | None = None  # e.g. the CLI re-arms its SIGTERM handler
    executor: PointExecutor | None = None  # None: each point runs here (--executor local)


@dataclass(frozen=True)
class _Run:
    """One run of a point: its workload and load, its directory (``runs_dir/run_id``, which is
    ``runs/<rel>`` of the sweep) and how the status line names it (``where``, ``label``)."""

    workload: str
    load: dict[str, Any]
    runs_dir: Path
    run_id: str
    rel: str
    where: str
    label: str


def run_sweep(
    spec: SweepSpec, sweep_dir: Path, hooks: SweepHooks | None = None, *, retry_failed: bool = False
) -> dict[str, Any]:
    """Run every point not yet finished; returns the index data."""
    hooks = hooks or SweepHooks()
    status = hooks.on_status or (lambda _m: None)
    index = LiveIndex.load_or_new(sweep_dir, spec.sweep_id)
    index.set_status("running")
    ctx = _Context(spec, sweep_dir, index, hooks, status, retry_failed)
    try:
        if hooks.executor is not None:
            hooks.executor.prefetch(pending_jobs(spec, sweep_dir, index, retry_failed))
        for ci, config in enumerate(spec.configs()):
            ctx.run_config(config_id(ci), config)
    except (KeyboardInterrupt, RunInterrupted):
        index.set_status("interrupted")
        done = sum(1 for p in index.points if p["status"] == "done")
        raise RunInterrupted(
            f"sweep interrupted; {done} point{'' if done == 1 else 's'} done and kept in {sweep_dir}",
            f"continue with `infprof sweep --resume {sweep_dir}`",
        ) from None
    finally:
        if hooks.executor is not None:
            hooks.executor.close()
    index.data["knees"] = sweep_knees(index.points)
    index.set_status("complete")
    return index.data


class _Context:
    def __init__(
        self,
        spec: SweepSpec,
        sweep_dir: Path,
        index: LiveIndex,
        hooks: SweepHooks,
        status: Callable[[str], None],
        retry_failed: bool,
    ) -> None:
        self.spec, self.sweep_dir, self.index, self.hooks = spec, sweep_dir, index, hooks
        self.status, self.retry_failed = status, retry_failed
        self.total = (
            len(spec.configs())
            * len(spec.workloads)
            * (len(spec.loads) if spec.search is None else 1)
        )
        self.counter = 0
        self.host: Host | None = None

    def _host(self) -> Host:
        """The host's GPUs and cores, probed once (NVML) when the first server is named."""
        if self.host is None:
            self.host = probe_host()
        return self.host

    # ------------------------------------------------------------ per configuration
    def run_config(self, cfg_id: str, config: dict[str, Any]) -> None:
        serve = None if self.spec.endpoint else serve_spec(self.spec, config, self._host())
        factory = self.hooks.server_factory or vllm_factory
        server = ConfigServer(
            factory if serve is not None else None, serve, self.sweep_dir / "configs" / cfg_id
        )
        entry: dict[str, Any] = {
            "id": cfg_id,
            "config": config,
            "label": config_label(config),
            "status": "pending",
            "reason": None,
            # the precisions served (--quantization, --kv-cache-dtype, --dtype): calibration
            # reads them, so an FP8 sweep is fitted as FP8
            "dtypes": served_dtypes(serve.model_dump() if serve is not None else None),
        }
        try:
            for workload in self.spec.workloads:
                if self.spec.search == "slo":
                    self._search(cfg_id, config, workload, server)
                else:
                    for value in self.spec.loads:
                        self.counter += 1
                        self.point(cfg_id, config, workload, load_of(self.spec, value), server)
        finally:
            server.close()
            old = next((c for c in self.index.data["configs"] if c["id"] == cfg_id), None)
            self.index.set_config({**entry, **server.record(old, self.sweep_dir)})

    def _search(
        self, cfg_id: str, config: dict[str, Any], workload: str, server: ConfigServer
    ) -> None:
        def probe(rate: float) -> dict[str, Any]:
            self.counter += 1
            point = self.point(
                cfg_id, config, workload, {"kind": "rate", "value": rate}, server, probe=True
            )
            return point.get("summary") or {"slo_attainment": None, "error_rate": 1.0}

        s = self.spec
        res = slo_search(
            probe,
            start_rate=s.start_rate,
            target_fraction=s.target_fraction,
            tolerance=s.tolerance,
            max_probes=s.max_probes,
            max_rate=s.max_rate,
        )
        best_point = (
            self.index.find(point_id(cfg_id, workload, {"kind": "rate", "value": res.best_rate}))
            if res.best_probe()
            else None
        )
        at_best = (best_point or {}).get("summary") or {}
        entry = {
            "config_id": cfg_id,
            "config": config,
            "label": config_label(config),
            "workload": workload,
            "slo": s.slo.model_dump(),
            "target_fraction": s.target_fraction,
            **res.to_dict(),
            "best_point": best_point["id"] if best_point else None,
            "slo_met_rps_at_best": at_best.get("slo_met_rps"),
            "output_tokens_per_s_at_best": at_best.get("output_tokens_per_s"),
        }
        self.index.set_search(entry)
        best_txt = f"{res.best_rate:g} req/s" if res.best_rate is not None else "none"
        self.status(
            f"{cfg_id} {config_label(config)} / {workload}: goodput (highest rate meeting the SLOs): {best_txt} ({res.stopped})"
        )

    # ------------------------------------------------------------ one point
    def point(
        self,
        cfg_id: str,
        config: dict[str, Any],
        workload: str,
        load: dict[str, Any],
        server: ConfigServer,
        *,
        probe: bool = False,
    ) -> dict[str, Any]:
        pid = point_id(cfg_id, workload, load)
        old = self.index.find(pid)
        if is_settled(old, self.retry_failed):
            assert old is not None
            return old
        where = f"[{self.counter}/{self.total}]" if not probe else f"[probe {self.counter}]"
        label = f"{cfg_id} {config_label(config)} / {workload} / {load_label(load)}"
        point: dict[str, Any] = {
            "id": pid,
            "config_id": cfg_id,
            "config": config,
            "load": load,
            "workload": workload,
            "run_dir": f"runs/{pid}",
            "status": "failed",
            "probe": probe,
            "ended": None,
            "reason": None,
            "summary": None,
        }
        run = _Run(workload, load, self.sweep_dir / "runs", pid, pid, where, label)
        if self.spec.repeat > 1:
            return self._repeats(point, old, run, server)
        result, reason, info = self._attempt(run, server)
        point.update(info)
        if result is None:
            point["reason"] = reason
            self.index.record_point(point)
            self.status(f"{where} {label}: failed ({reason})")
            return point
        point.update(_outcome(result, server))
        self.index.record_point(point)
        k = point["summary"]
        self.status(
            f"{where} {label}: {_num(k['requests_per_s'])} req/s, {_num(k['output_tokens_per_s'])} tok/s, "
            f"ttft p50 {_ms(k['ttft_p50_s'])}, tpot p50 {_ms(k['tpot_p50_s'])}"
            + ("" if point["status"] == "done" else f" ({result.ended}: {result.reason})")
        )
        return point

    def _repeats(
        self, point: dict[str, Any], old: dict[str, Any] | None, run: _Run, server: ConfigServer
    ) -> dict[str, Any]:
        """``--repeat N``: the point's runs under runs/<point>/rep-01..; the index keeps each
        repeat and, once all are done, the median of their figures as the point's summary and
        their spread under ``across_repeats``. Done repeats are never rerun on resume."""
        n, pid = self.spec.repeat, point["id"]
        reps = done_repeats(old)
        point.update(run_dir=f"runs/{pid}/{rep_id(1, n)}", status="partial")
        for i in range(1, n + 1):
            if i in reps:
                continue
            rid = rep_id(i, n)
            rep_run = replace(
                run,
                runs_dir=run.runs_dir / pid,
                run_id=rid,
                rel=f"{pid}/{rid}",
                where=f"{run.where} repeat {i}/{n}",
            )
            result, reason, info = self._attempt(rep_run, server)
            rep: dict[str, Any] = {
                "index": i,
                "run_dir": f"runs/{pid}/{rid}",
                "status": "failed",
                "ended": None,
                "reason": reason,
                "summary": None,
                **info,
            }
            if result is not None:
                rep.update(_outcome(result, server))
            reps[i] = rep
            point["repeats"] = [reps[k] for k in sorted(reps)]
            if rep["status"] != "done":
                point.update(
                    status="failed", ended=rep["ended"], reason=f"repeat {i}: {rep['reason']}"
                )
                self.index.record_point(point)
                self.status(f"{run.where} {run.label}: repeat {i}/{n} failed ({rep['reason']})")
                return point
            self.index.record_point(point)  # an interruption keeps the finished repeats
        summaries = [reps[k]["summary"] for k in sorted(reps)]
        point.update(status="done", ended="completed", reason=None)
        point.update(summary=median_figures(summaries), across_repeats=across_repeats(summaries))
        self.index.record_point(point)
        k, spread = point["summary"], point["across_repeats"]
        tpot = spread.get("tpot_p50_s") or {}
        self.status(
            f"{run.where} {run.label}: {n} repeats, median {_num(k['requests_per_s'])} req/s, "
            f"ttft p50 {_ms(k['ttft_p50_s'])}, tpot p50 {_ms(k['tpot_p50_s'])} "
            f"(range {_ms(tpot.get('min'))} to {_ms(tpot.get('max'))})"
        )
        return point

    def _attempt(self, run: _Run, server: ConfigServer) -> tuple[Any, str | None, dict[str, Any]]:
        """Run one run of a point: (result, None, info), or (None, why it could not run, info);
        ``info`` says where and when it ran (the index entry's node, gpus, timing). With an
        executor the point runs where it places it, its own server launched there."""
        server.used = True
        if self.hooks.before_point:
            self.hooks.before_point()
        remote = self.hooks.executor is not None and self.hooks.run_point is None
        try:
            run_spec = self._run_spec(run, server, remote)
        except ConfigFailed as e:
            return None, str(e), {}
        except InfprofError as e:
            server.check_alive()
            return None, e.one_line(), {}
        clear_stale(self.sweep_dir, run.rel)
        self.status(f"{run.where} {run.label}")
        if remote:
            assert self.hooks.executor is not None
            result, reason, info = self.hooks.executor.run(PointJob(run.rel, run_spec))
        else:
            started = time.time()
            try:
                result = self._run_here(run_spec, server)
            except RunInterrupted:
                raise
            except InfprofError as e:
                server.check_alive()
                return None, e.one_line(), {}
            reason = None
            info = local_info(getattr(result, "run_dir", None), started, time.time())
        if result is not None and result.ended == "interrupted":
            raise RunInterrupted(f"point {run.rel} interrupted", None)
        return result, reason, info

    def _run_spec(self, run: _Run, server: ConfigServer, remote: bool) -> RunSpec:
        """The point's RunSpec: against the configuration's server here (launched on first
        use) or the sweep's endpoint; for an executor, one that launches its server itself."""
        s = self.spec
        if remote:
            return job_spec(s, run.workload, run.load, server.serve, run.runs_dir, run.run_id)
        url = server.url() if server.serve is not None else str(s.endpoint)
        model = server.serve.name if server.serve is not None else s.model
        return point_run_spec(s, run.workload, run.load, url, model, run.runs_dir, run.run_id)

    def _run_here(self, run_spec: RunSpec, server: ConfigServer) -> Any:
        if self.hooks.run_point is not None:
            return self.hooks.run_point(run_spec)
        # the load generator keeps the cores the launched server was kept off
        with cpus.beside(server.serve.cpus if server.serve is not None else None):
            return _execute(run_spec, server.pids, server.serve)


def _outcome(result: Any, server: ConfigServer) -> dict[str, Any]:
    """What a finished run of a point records: how it ended and its key numbers. Checks the
    server survived it (a dead one fails the configuration's later points)."""
    server.check_alive()
    return {
        "ended": result.ended,
        "reason": result.reason,
        "summary": key_numbers(result.summary),
        "status": "done" if result.ended == "completed" else "failed",
    }


def _execute(
    run_spec: RunSpec, server_pids: Callable[[], list[int]], serve: ServeSpec | None = None
) -> Any:
    from profiler.runner import RunHooks, execute

    return execute(run_spec, RunHooks(server_pids=server_pids, server_spec=serve))


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f} ms"
