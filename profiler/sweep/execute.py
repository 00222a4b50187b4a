"""``run_sweep``: every point of a sweep, one run directory each, resumable.

Per server configuration the server is launched once (``VllmServer``), lazily: a
configuration whose points are all finished is never relaunched on resume. Each point then
runs against it as an endpoint (``runner.execute`` with ``RunSpec.endpoint``). With
``SweepSpec.endpoint`` there is one configuration, the endpoint, and nothing is launched.
The index is saved atomically after each point; Ctrl-C (or SIGTERM, via the CLI) stops the
sweep after recording what finished, and ``--resume`` continues from there.

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

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler import cpus
from profiler.analysis.repeats import across_repeats, median_figures, rep_id
from profiler.capacity.dtypes import served_dtypes
from profiler.errors import InfprofError, RunInterrupted, SpecError
from profiler.spec import RunSpec, ServeSpec
from profiler.sweep.index import SPEC, SweepIndex, key_numbers
from profiler.sweep.jobs import PointExecutor, PointJob, job_spec, local_info, pending_jobs
from profiler.sweep.knees import knees
from profiler.sweep.points import point_run_spec, serve_spec
from profiler.sweep.search import slo_search
from profiler.sweep.spec import SweepSpec, config_id, config_label, load_label, point_id

log = logging.getLogger(__name__)

__all__ = ["PointExecutor", "PointJob", "SweepHooks", "prepare_sweep_dir", "run_sweep"]

PointRunner = Callable[[RunSpec], Any]  # returns an object with run_dir, summary, ended, reason
ServerFactory = Callable[[ServeSpec, Path], Any]  # VllmServer-like: start/wait_ready/url/alive/stop


@dataclass
class SweepHooks:
    on_status: Callable[[str], None] | None = None
    run_point: PointRunner | None = None
    server_factory: ServerFactory | None = None
    before_point: Callable[[], None] | None = None  # e.g. the CLI re-arms its SIGTERM handler
    executor: PointExecutor | None = None  # None: each point runs here (--executor local)


def prepare_sweep_dir(spec: SweepSpec, sweep_dir: Path, *, resume: bool) -> SweepSpec:
    """Create the sweep directory or reopen it. Reopening needs ``resume`` or the same spec;
    the saved spec wins on resume."""
    from profiler.yaml_spec import load_yaml_model  # YAML is a superset of JSON

    saved = sweep_dir / SPEC
    if saved.exists():
        old = load_yaml_model(saved, SweepSpec)
        if resume or old.same_work(spec):
            return old
        raise SpecError(
            f"{sweep_dir} already holds a different sweep",
            f"resume it with `infprof sweep --resume {sweep_dir}`, or choose another --out",
        )
    if resume:
        raise SpecError(
            f"{sweep_dir} is not a sweep directory (no {SPEC})",
            "pass a directory written by infprof sweep",
        )
    from profiler.store.rundir import write_json_atomic

    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from profiler.errors import StorageError

        raise StorageError(
            f"cannot create {sweep_dir}: {e.strerror}", "choose a writable --out"
        ) from None
    write_json_atomic(saved, spec.model_dump(mode="json"))
    return spec


class _Server:
    """The configuration's server, started on first use and stopped at the end."""

    def __init__(
        self, factory: ServerFactory | None, serve: ServeSpec | None, log_dir: Path
    ) -> None:
        self.factory, self.serve, self.log_dir = factory, serve, log_dir
        self.server: Any = None
        self.error: str | None = None
        self.startup_s: float | None = None
        self.log_path: Path | None = None
        self.used = False  # a point was attempted with this configuration in this session

    def url(self) -> str:
        if self.error:
            raise _ConfigFailed(self.error)
        if self.server is None:
            assert self.serve is not None and self.factory is not None
            self.log_dir.mkdir(parents=True, exist_ok=True)
            n = len(list(self.log_dir.glob("server*.log")))
            self.log_path = self.log_dir / ("server.log" if n == 0 else f"server-{n + 1}.log")
            server = self.factory(self.serve, self.log_path)
            try:
                server.start()
                self.startup_s = server.wait_ready()
            except InfprofError as e:
                self.error = f"server did not start: {e.one_line()}"
                _stop(server)
                raise _ConfigFailed(self.error) from None
            except BaseException:
                _stop(server)
                raise
            self.server = server
        return str(self.server.url)

    def pids(self) -> list[int]:
        """The launched server's process tree (empty for an attached endpoint)."""
        return list(self.server.pids()) if self.server is not None else []

    def check_alive(self) -> None:
        if self.server is not None and not self.server.alive():
            self.error = f"the server exited (code {self.server.returncode}); see {self.log_path}"

    def close(self) -> None:
        if self.server is not None:
            _stop(self.server)
            self.server = None


class _ConfigFailed(Exception):
    pass


def _stop(server: Any) -> None:
    try:
        server.stop()
    except Exception as e:  # teardown must not hide the sweep's own outcome
        log.warning("stopping the server failed: %s", e)


def run_sweep(
    spec: SweepSpec, sweep_dir: Path, hooks: SweepHooks | None = None, *, retry_failed: bool = False
) -> dict[str, Any]:
    """Run every point not yet finished; returns the index data."""
    hooks = hooks or SweepHooks()
    status = hooks.on_status or (lambda _m: None)
    index = SweepIndex.load_or_new(sweep_dir, spec.sweep_id)
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
    index.data["knees"] = knees(index.points)
    index.set_status("complete")
    return index.data


class _Context:
    def __init__(
        self,
        spec: SweepSpec,
        sweep_dir: Path,
        index: SweepIndex,
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

    # ------------------------------------------------------------ per configuration
    def run_config(self, cfg_id: str, config: dict[str, Any]) -> None:
        serve = None if self.spec.endpoint else serve_spec(self.spec, config)
        factory = self.hooks.server_factory or _vllm_factory
        server = _Server(
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
                        load = {
                            "kind": self.spec.load_kind,
                            "value": _load_value(self.spec.load_kind, value),
                        }
                        self.counter += 1
                        self.point(cfg_id, config, workload, load, server)
        finally:
            server.close()
            started = server.log_path is not None
            old = next((c for c in self.index.data["configs"] if c["id"] == cfg_id), None)
            if server.error:
                entry.update(status="failed", reason=server.error)
            elif server.used:
                entry.update(status="ok")
            elif old is not None:  # nothing ran this time: keep what is known
                entry.update(status=old.get("status"), reason=old.get("reason"))
            entry["server_log"] = (
                str(server.log_path.relative_to(self.sweep_dir))
                if server.log_path
                else (old or {}).get("server_log")
            )
            entry["startup_s"] = server.startup_s if started else (old or {}).get("startup_s")
            self.index.set_config(entry)

    def _search(self, cfg_id: str, config: dict[str, Any], workload: str, server: _Server) -> None:
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
        best = res.best_probe()
        best_point = (
            self.index.find(point_id(cfg_id, workload, {"kind": "rate", "value": res.best_rate}))
            if best
            else None
        )
        entry = {
            "config_id": cfg_id,
            "config": config,
            "label": config_label(config),
            "workload": workload,
            "slo": s.slo.model_dump(),
            "target_fraction": s.target_fraction,
            **res.to_dict(),
            "best_point": best_point["id"] if best_point else None,
            "slo_met_rps_at_best": (best_point or {}).get("summary", {}).get("slo_met_rps"),
            "output_tokens_per_s_at_best": (best_point or {})
            .get("summary", {})
            .get("output_tokens_per_s"),
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
        server: _Server,
        *,
        probe: bool = False,
    ) -> dict[str, Any]:
        pid = point_id(cfg_id, workload, load)
        old = self.index.find(pid)
        if old is not None and (
            old["status"] == "done" or (old["status"] == "failed" and not self.retry_failed)
        ):
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
        if self.spec.repeat > 1:
            return self._repeats(point, old, workload, load, server, where, label)
        result, reason, info = self._attempt(
            workload, load, server, self.sweep_dir / "runs", pid, pid, where, label
        )
        point.update(info)
        if result is None:
            point["reason"] = reason
            self.index.record_point(point)
            self.status(f"{where} {label}: failed ({reason})")
            return point
        point.update(ended=result.ended, reason=result.reason, summary=key_numbers(result.summary))
        point["status"] = "done" if result.ended == "completed" else "failed"
        server.check_alive()
        self.index.record_point(point)
        k = point["summary"]
        self.status(
            f"{where} {label}: {_num(k['requests_per_s'])} req/s, {_num(k['output_tokens_per_s'])} tok/s, "
            f"ttft p50 {_ms(k['ttft_p50_s'])}, tpot p50 {_ms(k['tpot_p50_s'])}"
            + ("" if point["status"] == "done" else f" ({result.ended}: {result.reason})")
        )
        return point

    def _repeats(
        self,
        point: dict[str, Any],
        old: dict[str, Any] | None,
        workload: str,
        load: dict[str, Any],
        server: _Server,
        where: str,
        label: str,
    ) -> dict[str, Any]:
        """``--repeat N``: the point's runs under runs/<point>/rep-01..; the index keeps each
        repeat and, once all are done, the median of their figures as the point's summary and
        their spread under ``across_repeats``. Done repeats are never rerun on resume."""
        n, pid = self.spec.repeat, point["id"]
        reps = {r["index"]: r for r in (old or {}).get("repeats") or [] if r["status"] == "done"}
        point.update(run_dir=f"runs/{pid}/{rep_id(1, n)}", status="partial")
        for i in range(1, n + 1):
            if i in reps:
                continue
            rid = rep_id(i, n)
            result, reason, info = self._attempt(
                workload,
                load,
                server,
                self.sweep_dir / "runs" / pid,
                rid,
                f"{pid}/{rid}",
                f"{where} repeat {i}/{n}",
                label,
            )
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
                server.check_alive()
                rep.update(ended=result.ended, reason=result.reason)
                rep.update(summary=key_numbers(result.summary))
                rep["status"] = "done" if result.ended == "completed" else "failed"
            reps[i] = rep
            point["repeats"] = [reps[k] for k in sorted(reps)]
            if rep["status"] != "done":
                point.update(
                    status="failed", ended=rep["ended"], reason=f"repeat {i}: {rep['reason']}"
                )
                self.index.record_point(point)
                self.status(f"{where} {label}: repeat {i}/{n} failed ({rep['reason']})")
                return point
            self.index.record_point(point)  # an interruption keeps the finished repeats
        summaries = [reps[k]["summary"] for k in sorted(reps)]
        point.update(status="done", ended="completed", reason=None)
        point.update(summary=median_figures(summaries), across_repeats=across_repeats(summaries))
        self.index.record_point(point)
        k, spread = point["summary"], point["across_repeats"]
        tpot = spread.get("tpot_p50_s") or {}
        self.status(
            f"{where} {label}: {n} repeats, median {_num(k['requests_per_s'])} req/s, "
            f"ttft p50 {_ms(k['ttft_p50_s'])}, tpot p50 {_ms(k['tpot_p50_s'])} "
            f"(range {_ms(tpot.get('min'))} to {_ms(tpot.get('max'))})"
        )
        return point

    def _attempt(
        self,
        workload: str,
        load: dict[str, Any],
        server: _Server,
        runs_dir: Path,
        run_id: str,
        rel: str,
        where: str,
        label: str,
    ) -> tuple[Any, str | None, dict[str, Any]]:
        """Run one run of a point: (result, None, info), or (None, why it could not run, info);
        ``info`` says where and when it ran (the index entry's node, gpus, timing)."""
        server.used = True
        if self.hooks.before_point:
            self.hooks.before_point()
        if self.hooks.executor is not None and self.hooks.run_point is None:
            return self._remote_attempt(
                workload, load, server.serve, runs_dir, run_id, rel, where, label
            )
        info: dict[str, Any] = {}
        try:
            url = server.url() if server.serve is not None else str(self.spec.endpoint)
            model = server.serve.name if server.serve is not None else self.spec.model
            run_spec = point_run_spec(self.spec, workload, load, url, model, runs_dir, run_id)
            _clear_stale(self.sweep_dir, rel)
            self.status(f"{where} {label}")
            started = time.time()
            if self.hooks.run_point is not None:
                result = self.hooks.run_point(run_spec)
            else:
                # the load generator keeps the cores the launched server was kept off
                with cpus.beside(server.serve.cpus if server.serve is not None else None):
                    result = _execute(run_spec, server.pids, server.serve)
            info = local_info(getattr(result, "run_dir", None), started, time.time())
        except _ConfigFailed as e:
            return None, str(e), info
        except RunInterrupted:
            raise
        except InfprofError as e:
            server.check_alive()
            return None, e.one_line(), info
        if result.ended == "interrupted":
            raise RunInterrupted(f"point {rel} interrupted", None)
        return result, None, info

    def _remote_attempt(
        self,
        workload: str,
        load: dict[str, Any],
        serve: ServeSpec | None,
        runs_dir: Path,
        run_id: str,
        rel: str,
        where: str,
        label: str,
    ) -> tuple[Any, str | None, dict[str, Any]]:
        """The point runs where the executor places it, its server launched there."""
        assert self.hooks.executor is not None
        try:
            job = PointJob(rel, job_spec(self.spec, workload, load, serve, runs_dir, run_id))
        except InfprofError as e:
            return None, e.one_line(), {}
        _clear_stale(self.sweep_dir, rel)
        self.status(f"{where} {label}")
        result, reason, info = self.hooks.executor.run(job)
        if result is not None and result.ended == "interrupted":
            raise RunInterrupted(f"point {rel} interrupted", None)
        return result, reason, info


def _vllm_factory(serve: ServeSpec, log_path: Path) -> Any:
    from profiler.serving.vllm import VllmServer

    return VllmServer(serve, log_path)


def _execute(
    run_spec: RunSpec, server_pids: Callable[[], list[int]], serve: ServeSpec | None = None
) -> Any:
    from profiler.runner import RunHooks, execute

    return execute(run_spec, RunHooks(server_pids=server_pids, server_spec=serve))


def _clear_stale(sweep_dir: Path, rel: str) -> None:
    """A point (or one repeat of it, ``<point>/rep-02``) that is being (re)run must not find
    its old directory: move it aside, to ``stale/<point>-<n>`` (``stale/<point>-rep-02-<n>``)."""
    run = sweep_dir / "runs" / rel
    if not run.exists():
        return
    pid = rel.replace("/", "-")
    stale = sweep_dir / "stale"
    stale.mkdir(exist_ok=True)
    n = 1
    while (stale / f"{pid}-{n}").exists():
        n += 1
    shutil.move(str(run), str(stale / f"{pid}-{n}"))


def _load_value(kind: str, value: float) -> float | int:
    return int(value) if kind == "concurrency" else float(value)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f} ms"
