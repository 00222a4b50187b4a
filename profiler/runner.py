"""``execute(spec)``: one run end to end. The entry point behind ``infprof run`` and sweeps.

Order matters: the run directory is checked writable first (nothing is launched when it is
not), telemetry starts before the server (model-load memory is captured), the server is
stopped before the journals are compacted, and every completed record is on disk whatever
ends the run.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler import cpus
from profiler.analysis.summary_json import summarize_run
from profiler.clock import RunClock
from profiler.errors import InfprofError, StorageError
from profiler.load.arrivals import LoadPlan
from profiler.load.client import ClientOptions, StreamingClient
from profiler.load.driver import Driver, DriverResult, Progress
from profiler.load.loop import run as run_loop
from profiler.metrics.live import LiveExport, start_live
from profiler.run_server import prepare_run
from profiler.run_setup import (
    capabilities,
    choose_gpu_scope,
    pull_prometheus,
    start_server_metrics,
    start_telemetry,
    tokenizer_for,
)
from profiler.serving.endpoint import Endpoint, api_key_from_env, attach
from profiler.spec import RunSpec, ServeSpec
from profiler.store.manifest import initial_manifest
from profiler.store.record import RequestRecord
from profiler.store.rundir import RunDir, new_run_id
from profiler.store.schema import Manifest, ServerRecord, Summary

if TYPE_CHECKING:
    from profiler.load.capabilities import Capabilities

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    ended: str
    reason: str | None


@dataclass
class RunHooks:
    """Optional callbacks for the CLI (progress on stderr) and for tests."""

    on_progress: Callable[[Progress], None] | None = None
    on_status: Callable[[str], None] | None = None
    on_ready: Callable[[Endpoint], None] | None = None
    # the attached server's process tree when the caller launched it (sweeps): its CPU, memory
    # and GPU memory are then sampled as the server's, as for a server the run launches
    server_pids: Callable[[], Iterable[int]] | None = None
    # the attached server's spec when the caller launched it (sweeps): its CUDA_VISIBLE_DEVICES
    # and parallel sizes say which GPUs it uses, as for a server the run launches
    server_spec: ServeSpec | None = None


def execute(spec: RunSpec, hooks: RunHooks | None = None) -> RunResult:
    hooks = hooks or RunHooks()
    status = hooks.on_status or (lambda _m: None)
    from profiler.load.arrivals import load_plan

    # a bad trace file fails here: before the run directory, before any server is launched
    plan = load_plan(spec)
    datasets = [s.dataset for s in spec.workload.scenarios if s.dataset is not None]
    if datasets:  # so does a missing dataset file, column or tokenizer
        from profiler.load.datasets import check_datasets

        check_datasets(datasets)
    if spec.gpus is not None:  # so does a --gpus naming no GPU of this host
        from profiler.telemetry.gpu_scope import check_here

        check_here(spec.gpus)
    prepare_run(spec)  # the embedded model a launched server serves, made once the spec passed
    run_id = spec.run_id or new_run_id()
    rd = RunDir.create(spec.out_dir, run_id)
    clock = RunClock()
    manifest = initial_manifest(spec, run_id, clock)
    manifest.save(rd.path)

    with ExitStack() as stack:
        _terminate_as_interrupt(stack)
        sample_journal = rd.sample_journal()
        stack.callback(sample_journal.close)
        server = None
        pids: Callable[[], Iterable[int]] = hooks.server_pids or set
        telemetry: list[Any] = []
        host_nvml = start_telemetry(spec, clock, sample_journal, lambda: pids(), manifest)
        if host_nvml is not None:
            telemetry.append(host_nvml)
            stack.callback(host_nvml.stop)
        if spec.executor == "ray" and spec.sample_interval_s is not None:
            from profiler.telemetry.ray_nodes import start_node_samplers

            samplers = start_node_samplers(spec, clock, sample_journal, manifest)
            stack.callback(samplers.stop)
        tree = spec.serve is not None or hooks.server_pids is not None
        manifest.set(gpu_scope=choose_gpu_scope(spec, manifest, hooks.server_spec, tree))
        manifest.save(rd.path)
        try:
            if spec.serve is not None:
                from profiler.serving.vllm import VllmServer

                status(f"starting vLLM ({spec.serve.model}); log: {rd.file('server.log')}")
                server = stack.enter_context(VllmServer(spec.serve, rd.file("server.log")))
                pids = server.pids
                manifest.set(server=ServerRecord(argv=server.argv, url=server.url))
                manifest.save(rd.path)
                ready_s = server.wait_ready()
                manifest.set(server=ServerRecord(argv=server.argv, url=server.url, ready_s=ready_s))
                status(f"server ready in {ready_s:.0f} s at {server.url}")
                endpoint = Endpoint(url=server.url, model=spec.serve.name)
            else:
                assert spec.endpoint is not None
                key = api_key_from_env(spec.endpoint.api_key_env)
                endpoint = attach(spec.endpoint.url, spec.endpoint.model, key)
                manifest.set(server=ServerRecord(argv=None, url=endpoint.url))
            manifest.set(model=endpoint.model)
            manifest.save(rd.path)
            launched = spec.serve is not None or hooks.server_spec is not None
            caps = capabilities(spec, endpoint, launched, status)
            manifest.set(server_capabilities=caps.to_dict())
            manifest.save(rd.path)
            if spec.sample_interval_s is not None:
                server_metrics = start_server_metrics(spec, clock, sample_journal, endpoint)
                telemetry.append(server_metrics)
                stack.callback(server_metrics.stop)
            if hooks.on_ready:
                hooks.on_ready(endpoint)
            live = start_live(spec, rd, endpoint, manifest, stack, telemetry)
            server_cpus = spec.serve.cpus if spec.serve is not None else None
            with cpus.beside(server_cpus) as client_cpus:  # the event loop keeps its own cores
                if server_cpus and client_cpus:
                    manifest.set(cpus={"server": sorted(server_cpus), "client": client_cpus})
                    manifest.save(rd.path)
                result = _drive(spec, plan, rd, clock, endpoint, server, hooks, live, stack, caps)
        except InfprofError as e:
            manifest.end("failed", e.one_line(), time.time())
            manifest.save_quietly(rd.path)
            raise
        except KeyboardInterrupt:
            manifest.end("interrupted", "interrupted before the load started", time.time())
            manifest.save_quietly(rd.path)
            raise
    # server stopped, telemetry stopped, journals closed: compact and summarise
    try:
        run_result = _finish(spec, rd, clock, result, manifest, status)
    except StorageError as e:
        manifest.end("storage_error", e.one_line(), time.time())
        manifest.save_quietly(rd.path)
        raise
    if live is not None:
        live.write_final(rd.path.name)
    return run_result


def _terminate_as_interrupt(stack: ExitStack) -> None:
    """SIGTERM outside the load loop unwinds like Ctrl-C, so the server is always stopped."""
    if threading.current_thread() is not threading.main_thread():
        return
    old = signal.signal(signal.SIGTERM, signal.default_int_handler)
    stack.callback(signal.signal, signal.SIGTERM, old)


def _drive(
    spec: RunSpec,
    plan: LoadPlan,
    rd: RunDir,
    clock: RunClock,
    endpoint: Endpoint,
    server: Any,
    hooks: RunHooks,
    live: LiveExport | None,
    stack: ExitStack,
    caps: Capabilities,
) -> DriverResult:
    from profiler.load.guard import ErrorGuard
    from profiler.load.workload import iter_requests

    requests: Any = iter_requests(spec.workload, seed=spec.seed, trace_rows=plan.trace_rows)
    if spec.workload.has_sessions():  # turns of conversations (profiler.load.session_loop)
        from profiler.load.sessions import iter_sessions
        from profiler.load.tokens import load_encoder

        requests = iter_sessions(spec.workload, seed=spec.seed, limit=spec.num_requests)
        plan.sessions = True
        plan.answer_encoder = load_encoder(spec.tokenizer) if spec.tokenizer else None
    journal = rd.request_journal()
    stack.callback(journal.close)
    run_metrics = live.metrics if live is not None else None
    sinks: list[Callable[[RequestRecord], None]] = [lambda r: journal.append(r.to_journal())]
    if run_metrics is not None:
        sinks.append(run_metrics.on_record)
    opts = caps.client_options(
        ClientOptions(
            base_url=endpoint.url,
            model=endpoint.model,
            api_key=endpoint.api_key,
            request_timeout_s=spec.request_timeout_s,
            tokenizer=tokenizer_for(spec, endpoint),
        )
    )
    guard = ErrorGuard(clock.now, max_error_rate=spec.max_error_rate)
    sinks.append(guard.on_record)
    on_send = guard.on_send
    if run_metrics is not None:
        on_send = _both(run_metrics.on_send, guard.on_send)
    status = hooks.on_status or (lambda _m: None)
    status(f"load: {spec.workload.name}, {spec.arrival.label()}, endpoint {endpoint.url}")
    if spec.workers > 1:
        from profiler.load.workers import run_workers

        how = "Ray actors" if spec.executor == "ray" else "worker processes"
        status(f"spreading the load over {spec.workers} {how}")
        return run_workers(spec, plan, opts, clock, rd.path, server)

    async def main() -> DriverResult:
        loop = asyncio.get_running_loop()
        async with StreamingClient(opts, clock) as client:
            driver = Driver(client, clock, sinks, on_send=on_send, on_progress=hooks.on_progress)
            guard.bind(driver.abort)
            handled = []
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(
                        sig,
                        driver.abort,
                        "interrupted",
                        f"stopped by {signal.Signals(sig).name}",
                        "cancelled",
                    )
                    handled.append(sig)
                except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                    pass
            watch = asyncio.create_task(_watch_server(server, driver))
            rate_task = asyncio.create_task(_publish_live(plan, clock, driver, run_metrics))
            try:
                result = await driver.run(requests, plan)
                if result.ended == "endpoint_lost" and await _server_exited(server):
                    # connection failures can outrun the watch: the cause is the server's exit
                    result.ended, result.reason = "server_died", _server_died(server)
                return result
            finally:
                watch.cancel()
                rate_task.cancel()
                for sig in handled:
                    loop.remove_signal_handler(sig)

    old_int = signal.getsignal(signal.SIGINT)
    old_term = signal.getsignal(signal.SIGTERM)
    try:
        result, loop_name = run_loop(main())
        result.health.event_loop = loop_name
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
    try:
        journal.flush()  # the last records: a disk that fills now still ends the run honestly
    except StorageError as e:
        if result.ended == "completed":
            result.ended, result.reason = "storage_error", e.one_line()
    if run_metrics is not None:
        h = result.health
        run_metrics.on_client_health(h.loop_lag_p99_s, h.cpu_ratio, h.saturated)
    return result


async def _publish_live(plan: LoadPlan, clock: RunClock, driver: Driver, metrics: Any) -> None:
    """Once a second: the schedule's intended rate (it changes on a ramp) and the client's
    health over the last second (event-loop lag, CPU, saturation), for the live dashboards."""
    if metrics is None:
        return
    open_loop = plan.offsets_s is not None
    while True:
        await asyncio.sleep(1.0)
        rate = plan.target_rate(clock.now() - driver.start_s) if plan.target_rate else None
        metrics.on_target_rate(rate)
        h = driver.health_now(open_loop=open_loop)
        metrics.on_client_health(h.loop_lag_p99_s, h.cpu_ratio, h.saturated)


async def _watch_server(server: Any, driver: Driver) -> None:
    """Abort the load within a second when the launched server process exits."""
    if server is None:
        return
    while True:
        await asyncio.sleep(0.5)
        if not server.alive():
            driver.abort("server_died", _server_died(server), outcome="error")
            return


async def _server_exited(server: Any, within_s: float = 2.0) -> bool:
    """Whether the launched server has exited, or does within ``within_s``: a killed process
    closes its sockets before it can be reaped, so the connection failures that ended the load
    can come first (None: no launched server)."""
    if server is None:
        return False
    deadline = time.monotonic() + within_s
    while server.alive():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _server_died(server: Any) -> str:
    return f"the server process exited (code {server.returncode}) during the run; see server.log"


def _finish(
    spec: RunSpec,
    rd: RunDir,
    clock: RunClock,
    result: DriverResult,
    manifest: Manifest,
    status: Callable[[str], None],
) -> RunResult:
    if spec.prometheus_url:
        pull_prometheus(spec, rd, clock, result)
    if result.workers is not None:  # Ray load workers: nodes and clock offsets
        manifest.set(workers=result.workers)
        manifest.save(rd.path)
    rd.compact()
    summary = summarize_run(rd.path, spec=spec, health=result.health.to_dict())
    doc = Summary.of(summary)
    doc.save(rd.path)
    if result.ended == "completed":
        from profiler.load.guard import over_ceiling

        over = over_ceiling(summary, spec.max_error_rate)
        if over is not None:
            result.ended, result.reason = "error_rate", over
    scope = doc.gpu.scope if doc.gpu else None
    if manifest.scope_gpus() is None and scope is not None:
        # method 3 is known only now, from the samples: the manifest records the decision
        manifest.set(gpu_scope={k: v for k, v in scope.to_dict().items() if k != "other_gpus"})
    total = doc.requests.total if doc.requests else None
    excluded = doc.window.excluded_requests if doc.window else None
    manifest.end(
        result.ended,  # type: ignore[arg-type]  # load/driver's endings are among Ended
        result.reason,
        time.time(),
        requests_sent=result.sent,
        requests_recorded=(total or 0) + (excluded or 0),
    )
    manifest.save(rd.path)
    status(f"run directory: {rd.path}")
    return RunResult(rd.path, summary, result.ended, result.reason)


# ---------------------------------------------------------------------- pieces
def _both(a: Callable[[], None], b: Callable[[], None]) -> Callable[[], None]:
    def call() -> None:
        a()
        b()

    return call
