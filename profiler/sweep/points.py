"""A sweep's points mapped to what runs them: the server of a configuration (``serve_spec``)
and the RunSpec of a point (``point_run_spec``), typed field to field from the SweepSpec with
the pieces ``infprof run`` builds its spec with (``profiler.run_options``), so a point is the
run the same flags would give."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from profiler.run_flags import RunOptions
from profiler.run_options import (
    arrival_for,
    dataset_tokenizer,
    load_amount,
    override_workload,
)
from profiler.run_server import Host
from profiler.spec import EndpointSpec, RunSpec, ServeSpec, WorkloadSpec
from profiler.sweep.spec import SweepSpec

SEARCH_SECONDS_PER_PROBE = 15.0  # probes without --num-requests/--duration: ~15 s of load
SEARCH_MIN_REQUESTS = 30
# SweepSpec fields a run takes by the same name: for its server (RunOptions), for its RunSpec
_SERVER_FIELDS = (
    "model",
    "max_model_len",
    "gpu_memory_utilization",
    "load_format",
    "dtype",
    "gpus",
)
_RUN_FIELDS = ("warmup_s", "cooldown_s", "request_timeout_s", "sample_interval_s", "seed", "gpus")


def _workload(spec: SweepSpec, workload: str) -> WorkloadSpec:
    from profiler.load.workload import workload_from_name_or_path

    wl = workload_from_name_or_path(workload)
    return override_workload(wl, input_len=spec.input_len, output_len=spec.output_len)


def serve_spec(spec: SweepSpec, config: dict[str, Any], host: Host) -> ServeSpec:
    """The server of one configuration on ``host`` (the largest max-model-len its workloads
    need). Pure, like ``build_run_spec``: the embedded model is made where the sweep launches
    the server (``sweep/servers.vllm_factory``, or the point's ``runner.execute`` on Ray)."""
    from profiler.run_server import place_on_gpus, target

    opts = RunOptions(
        **{k: getattr(spec, k) for k in _SERVER_FIELDS},
        **{k: v for k, v in config.items() if k != "ep"},  # tp, pp, dp, max_num_...
        expert_parallel=config["ep"],
        serve_arg=tuple(spec.serve_args),
        ready_timeout=spec.ready_timeout_s,
    )
    best: ServeSpec | None = None
    for workload in spec.workloads:
        wl = _workload(spec, workload)
        serve, _ = target(
            opts, wl, arrival_for(wl, RunOptions(seed=spec.seed, concurrency=1)), host
        )
        assert serve is not None
        if best is None or (serve.max_model_len or 0) > (best.max_model_len or 0):
            best = serve
    assert best is not None
    if spec.gpus:  # places the server on them
        best = place_on_gpus(spec.gpus, best)[1]
        assert best is not None
    return best


def point_run_spec(
    spec: SweepSpec,
    workload: str,
    load: dict[str, Any],
    url: str,
    model: str | None,
    runs_dir: Path,
    pid: str,
) -> RunSpec:
    """The run of one point, against the configuration's server at ``url``."""
    from pydantic import ValidationError

    from profiler.errors import SpecError

    wl = _workload(spec, workload)
    value = float(load["value"])
    if load["kind"] == "concurrency":
        level = RunOptions(seed=spec.seed, concurrency=int(value))
    else:
        level = RunOptions(seed=spec.seed, rate=value, arrival=spec.arrival)
    arrival = arrival_for(wl, level)
    num_requests, duration = spec.num_requests, spec.duration_s
    if spec.search == "slo" and num_requests is None and duration is None:
        num_requests = max(SEARCH_MIN_REQUESTS, math.ceil(value * SEARCH_SECONDS_PER_PROBE))
    num_requests, duration = load_amount(wl, num_requests, duration)
    tokenizer = _tokenizer(spec, model)
    try:
        return RunSpec(
            run_id=pid,
            out_dir=runs_dir,
            workload=dataset_tokenizer(wl, tokenizer),
            arrival=arrival,
            num_requests=num_requests,
            duration_s=duration,
            endpoint=EndpointSpec(url=url, model=model, api_key_env=spec.api_key_env),
            tokenizer=tokenizer,
            slo=spec.slo,
            **{k: getattr(spec, k) for k in _RUN_FIELDS},
        )
    except ValidationError as e:
        raise SpecError.from_validation(
            e, "sweep point {pid}: {loc}: {msg}", "see `infprof sweep --help`", pid=pid
        ) from None


def _tokenizer(spec: SweepSpec, served: str | None = None) -> str | None:
    """``--tokenizer``; for a server the sweep launches, by default the model's own (each point
    attaches to the server as an endpoint, so the point cannot see the model): the embedded
    shape a GPU host serves (by its served name), else the tiny model."""
    if spec.tokenizer or spec.endpoint:
        return spec.tokenizer
    from profiler.run_server import model_dir_tokenizer
    from profiler.serving import shapes, tinymodel

    if spec.model is None and served is not None and served in shapes.SHAPES:
        return model_dir_tokenizer(str(shapes.default_dir(served)))
    return model_dir_tokenizer(spec.model or str(tinymodel.default_dir()))
