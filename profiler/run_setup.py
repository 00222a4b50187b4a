"""What a run sets up around its load (``runner.execute``): the endpoint's capabilities,
telemetry (NVML, host, the server's /metrics) started before the server and stopped after it,
the GPUs the figures cover (``gpu_scope``), and the Prometheus window pulled afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from profiler.clock import RunClock
from profiler.load.driver import DriverResult
from profiler.serving.endpoint import Endpoint
from profiler.spec import RunSpec, ServeSpec
from profiler.store.rundir import RunDir
from profiler.store.schema import Manifest

if TYPE_CHECKING:
    from profiler.load.capabilities import Capabilities


def capabilities(
    spec: RunSpec, endpoint: Endpoint, launched: bool, status: Callable[[str], None]
) -> Capabilities:
    """What the endpoint accepts (profiler/load/capabilities.py): vLLM's full request for a
    server infprof launched, ``--server-kind``'s preset, else probed before the load."""
    from profiler.load.capabilities import Needs
    from profiler.load.preflight import resolve
    from profiler.load.probes import PROBE_TIMEOUT_S

    caps = resolve(
        endpoint,
        Needs.of(spec.workload),
        server_kind=spec.endpoint.server_kind if spec.endpoint is not None else "auto",
        launched=launched,
        tokenizer=tokenizer_for(spec, endpoint),
        timeout_s=min(spec.request_timeout_s, PROBE_TIMEOUT_S),
    )
    status(caps.summary_line())
    for note in caps.notes:
        status(f"server capabilities: {note}")
    return caps


def tokenizer_for(spec: RunSpec, endpoint: Endpoint) -> str | None:
    """--tokenizer, else the served model's own when its name is a local model directory."""
    from profiler.load.tokens import model_tokenizer

    return spec.tokenizer or model_tokenizer(endpoint.model)


def start_telemetry(
    spec: RunSpec,
    clock: RunClock,
    journal: Any,
    server_pids: Callable[[], Iterable[int]],
    manifest: Manifest,
) -> Any:
    from profiler.telemetry.host import HostSampler
    from profiler.telemetry.inventory import collect as collect_inventory
    from profiler.telemetry.nvml_sampler import NvmlSampler
    from profiler.telemetry.recorder import TelemetryRecorder

    inv = collect_inventory()
    manifest.record_inventory(inv)
    if spec.sample_interval_s is None:
        return None
    samplers: list[Any] = [HostSampler(server_pids=server_pids)]
    if inv.get("available"):
        samplers.insert(0, NvmlSampler(process_pids=lambda: set(server_pids())))
    rec = TelemetryRecorder(samplers, spec.sample_interval_s, clock, sink=journal_sink(journal))
    rec.start()
    return rec


def choose_gpu_scope(
    spec: RunSpec, manifest: Manifest, server_spec: ServeSpec | None, server_tree: bool
) -> dict[str, Any]:
    """manifest.json ``gpu_scope``: the server's GPUs and how they were chosen
    (``profiler.telemetry.gpu_scope``); method 3 is recorded pending and decided in ``_finish``."""
    from profiler.telemetry import gpu_scope, nvml

    seen = manifest.nvml
    if seen is None or not seen.available:
        reason = (seen.reason if seen else None) or "NVML unavailable"
        return {"gpus": [], "uuids": [], "method": "all", "reason": f"no GPU seen: {reason}"}
    serve = spec.serve or server_spec
    env = None
    world = None
    if serve is not None:
        from profiler.serving.vllm_command import server_env

        env = server_env(serve)
        world = server_gpu_count(serve)
    scope = gpu_scope.choose(
        gpu_scope.GpuInfo.from_inventory(manifest.gpus or []),
        explicit=spec.gpus,
        server_env=env,
        world_size=world,
        server_tree=server_tree,
        mig_parent=nvml.mig_parent_index,
    )
    return scope.as_dict()


def server_gpu_count(serve: ServeSpec) -> int | None:
    """GPUs a launched vLLM takes from the front of its visible list (tp x pp x dp); None when
    its flags place workers otherwise (Ray, several nodes, a local DP size)."""
    args = serve.extra_args
    elsewhere = {"--nnodes", "-n", "--headless", "--data-parallel-size-local", "-dpl"}
    if "ray" in args or any(a.endswith("=ray") or a.split("=")[0] in elsewhere for a in args):
        return None
    return serve.tensor_parallel_size * serve.pipeline_parallel_size * serve.data_parallel_size


def journal_sink(journal: Any) -> Callable[[list[Any]], None]:
    return lambda batch: journal.extend(s._asdict() for s in batch)


def start_server_metrics(spec: RunSpec, clock: RunClock, journal: Any, endpoint: Endpoint) -> Any:
    """Scrape the server's /metrics on its own thread once the server is up."""
    from profiler.telemetry.recorder import TelemetryRecorder
    from profiler.telemetry.vllm_metrics import VllmMetricsSampler

    assert spec.sample_interval_s is not None
    url = (
        spec.endpoint.metrics_url
        if spec.endpoint and spec.endpoint.metrics_url
        else endpoint.metrics_url
    )
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else None
    rec = TelemetryRecorder(
        [VllmMetricsSampler(url, headers=headers)],
        max(spec.sample_interval_s, 0.5),
        clock,
        sink=journal_sink(journal),
    )
    rec.start()
    return rec


def pull_prometheus(spec: RunSpec, rd: RunDir, clock: RunClock, result: DriverResult) -> None:
    from profiler.metrics.prom_query import pull_window

    assert spec.prometheus_url is not None
    samples = pull_window(
        spec.prometheus_url,
        clock.to_wall(result.load_start_s),
        clock.to_wall(result.load_end_s),
        step_s=max(spec.sample_interval_s or 1.0, 1.0),
        clock_wall_start=clock.wall_start,
    )
    journal = rd.sample_journal()
    try:
        journal.extend(s._asdict() for s in samples)
    finally:
        journal.close()
