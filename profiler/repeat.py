"""``run_repeats(spec, n)``: ``infprof run --repeat N``, N runs of one RunSpec, each a complete
run directory under one parent::

    <out>/<run_id>/rep-01/ .. rep-NN/   run directories (as ``infprof run`` writes them)
    <out>/<run_id>/repeats.json         each repeat's status and key numbers, and per figure
                                        the median and spread across repeats
    <out>/<run_id>/server.log           the launched server's log (one server, every repeat)

Every repeat runs the same spec, seed included: the same prompts on the same schedule, so the
spread across repeats is the run-to-run variance of the server, not of the workload. A server
the run launches is started once and serves every repeat (each repeat attaches to it as an
endpoint, with the server's process tree sampled as the server's), so that variance is the
load's against one server configuration, not that of server starts. The repeats stop at the
first that does not complete. ``infprof compare`` takes the parent directory as one side.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler import cpus
from profiler.analysis.repeats import REPEATS, across_repeats, rep_id
from profiler.errors import ServerError, SpecError, StorageError
from profiler.runner import RunHooks, RunResult, execute
from profiler.spec import EndpointSpec, RunSpec, ServeSpec
from profiler.store.rundir import check_run_id, new_run_directory, new_run_id, write_json_atomic
from profiler.store.schema import Manifest, ServerRecord

ServerFactory = Callable[[ServeSpec, Path], Any]  # VllmServer-like: start/wait_ready/url/pids


@dataclass
class RepeatResult:
    run_dir: Path  # the parent directory
    results: list[RunResult]
    data: dict[str, Any]  # repeats.json

    @property
    def last(self) -> RunResult:
        return self.results[-1]


def run_repeats(
    spec: RunSpec,
    repeat: int,
    hooks: RunHooks | None = None,
    *,
    server_factory: ServerFactory | None = None,
) -> RepeatResult:
    if repeat < 2:
        raise SpecError(f"--repeat {repeat}: repeats need at least 2 runs", "e.g. --repeat 3")
    hooks = hooks or RunHooks()
    status = hooks.on_status or (lambda _m: None)
    from profiler.load.arrivals import load_plan

    load_plan(spec)  # a bad trace fails first
    parent = new_run_directory(spec.out_dir, check_run_id(spec.run_id or new_run_id()))
    data: dict[str, Any] = {
        "schema_version": 1,
        "run_id": parent.name,
        "repeat": repeat,
        "status": "running",
        "server": None,
        "runs": [],
        "across_repeats": {},
    }
    write_json_atomic(parent / REPEATS, data)
    results: list[RunResult] = []
    try:
        _run_all(spec, repeat, hooks, parent, data, results, server_factory, status)
    except BaseException as e:  # the parent says how the repeats ended, whatever ended them
        data["status"] = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        write_json_atomic(parent / REPEATS, data)
        raise
    data["status"] = "complete" if len(results) == repeat else "stopped"
    write_json_atomic(parent / REPEATS, data)
    return RepeatResult(parent, results, data)


def _run_all(
    spec: RunSpec,
    repeat: int,
    hooks: RunHooks,
    parent: Path,
    data: dict[str, Any],
    results: list[RunResult],
    server_factory: ServerFactory | None,
    status: Callable[[str], None],
) -> None:
    with _sigterm_as_interrupt(), _server(spec, parent, server_factory, status) as server:
        base = spec
        if server is not None:
            assert spec.serve is not None
            data["server"] = {
                "argv": list(getattr(server, "argv", None) or []) or None,
                "url": str(server.url),
                "startup_s": server.startup_s,
                "log": "server.log",
            }
            endpoint = EndpointSpec(url=str(server.url), model=spec.serve.name)
            base = spec.model_copy(update={"serve": None, "endpoint": endpoint})
        for i in range(1, repeat + 1):
            run_spec = base.model_copy(update={"out_dir": parent, "run_id": rep_id(i, repeat)})
            status(f"repeat {i}/{repeat}")
            run_hooks = RunHooks(
                on_progress=hooks.on_progress,
                on_status=hooks.on_status,
                on_ready=hooks.on_ready,
                server_pids=server.pids if server is not None else hooks.server_pids,
            )
            # the load generator keeps the cores the launched server was kept off
            with cpus.beside(spec.serve.cpus if server is not None and spec.serve else None):
                result = execute(run_spec, run_hooks)
            results.append(result)
            _mark_manifest(result.run_dir, i, repeat, spec.serve, data["server"])
            _record(data, parent, result)
            if result.ended != "completed":
                break
            if server is not None and not server.alive():
                raise ServerError(
                    f"the server exited (code {server.returncode}) after repeat {i} of {repeat}",
                    f"read {parent / 'server.log'}; completed repeats are kept in {parent}",
                )


@contextmanager
def _server(
    spec: RunSpec, parent: Path, factory: ServerFactory | None, status: Callable[[str], None]
) -> Iterator[Any]:
    """The launched server for every repeat (None for an endpoint), always stopped."""
    if spec.serve is None:
        yield None
        return
    if factory is None:
        from profiler.serving.vllm import VllmServer

        factory = VllmServer
    server = factory(spec.serve, parent / "server.log")
    try:
        status(f"starting vLLM ({spec.serve.model}) for every repeat; log: {parent / 'server.log'}")
        server.start()
        server.startup_s = server.wait_ready()
        status(f"server ready in {server.startup_s:.0f} s at {server.url}")
        yield server
    finally:
        server.stop()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM between repeats (server start, compaction) unwinds like Ctrl-C, so the shared
    server is always stopped; the runner installs its own handlers during a repeat."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _mark_manifest(
    run_dir: Path, index: int, of: int, serve: ServeSpec | None, server: dict[str, Any] | None
) -> None:
    """Tell a repeat's manifest which repeat it is and, for a shared launched server, the
    server's command line and spec (the repeat itself attached to it as an endpoint)."""
    try:
        manifest = Manifest.load(run_dir)
    except StorageError:
        return
    manifest.set(
        repeat={
            "index": index,
            "of": of,
            "serve": serve.model_dump(mode="json") if serve is not None else None,
        }
    )
    if server is not None:
        record = manifest.server.to_dict() if manifest.server else {}
        manifest.set(
            server=ServerRecord(**{**record, "argv": server["argv"], "log": "../server.log"})
        )
    manifest.save(run_dir)


def _record(data: dict[str, Any], parent: Path, result: RunResult) -> None:
    from profiler.sweep.index import key_numbers

    data["runs"].append(
        {
            "index": len(data["runs"]) + 1,
            "run_dir": result.run_dir.name,
            "ended": result.ended,
            "reason": result.reason,
            "summary": key_numbers(result.summary),
        }
    )
    done = [r["summary"] for r in data["runs"] if r["ended"] == "completed"]
    data["across_repeats"] = across_repeats(done)
    write_json_atomic(parent / REPEATS, data)
