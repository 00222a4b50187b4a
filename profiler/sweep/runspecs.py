"""RunSpecs and ServeSpecs of a sweep's points, built with the same code as ``infprof run``
(``profiler.runspec.build_run_spec``) so a point is exactly the run its flags describe."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from profiler.spec import RunSpec, ServeSpec
from profiler.sweep.spec import SweepSpec

SEARCH_SECONDS_PER_PROBE = 15.0  # probes without --num-requests/--duration: ~15 s of load
SEARCH_MIN_REQUESTS = 30


def _options(spec: SweepSpec, workload: str, **extra: Any) -> Any:
    from profiler.runspec import RunOptions

    slo = spec.slo
    if slo and "fraction" not in slo:
        slo = f"{slo},fraction={spec.target_fraction}"
    return RunOptions(
        workload=workload,
        num_requests=spec.num_requests,
        duration=spec.duration_s,
        input_len=spec.input_len,
        output_len=spec.output_len,
        slo=slo,
        warmup=spec.warmup_s,
        cooldown=spec.cooldown_s,
        request_timeout=spec.request_timeout_s,
        ready_timeout=spec.ready_timeout_s,
        sample_interval=spec.sample_interval_s,
        no_telemetry=spec.sample_interval_s is None,
        seed=spec.seed,
        **extra,
    )


def serve_spec(spec: SweepSpec, config: dict[str, Any]) -> ServeSpec:
    """The server of one configuration (the largest max-model-len its workloads need)."""
    from profiler.runspec import build_run_spec

    best: ServeSpec | None = None
    for workload in spec.workloads:
        opts = _options(
            spec,
            workload,
            model=spec.model,
            tp=config["tp"],
            pp=config["pp"],
            dp=config["dp"],
            expert_parallel=config["ep"],
            max_num_seqs=config["max_num_seqs"],
            max_num_batched_tokens=config["max_num_batched_tokens"],
            max_model_len=spec.max_model_len,
            gpu_memory_utilization=spec.gpu_memory_utilization,
            load_format=spec.load_format,
            dtype=spec.dtype,
            serve_arg=tuple(spec.serve_args),
            concurrency=1,
        )
        opts.gpus = ",".join(spec.gpus) if spec.gpus else None  # places the server on them
        serve = build_run_spec(opts).serve
        assert serve is not None
        if best is None or (serve.max_model_len or 0) > (best.max_model_len or 0):
            best = serve
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
    from profiler.runspec import build_run_spec

    kw: dict[str, Any] = {}
    if load["kind"] == "concurrency":
        kw["concurrency"] = int(load["value"])
    else:
        kw.update(rate=float(load["value"]), arrival=spec.arrival)
    opts = _options(
        spec,
        workload,
        endpoint=url,
        model=model,
        api_key_env=spec.api_key_env,
        tokenizer=_tokenizer(spec, model),
        out=runs_dir,
        run_id=pid,
        gpus=",".join(spec.gpus) if spec.gpus else None,
        **kw,
    )
    if spec.search == "slo" and spec.num_requests is None and spec.duration_s is None:
        opts.num_requests = max(
            SEARCH_MIN_REQUESTS, math.ceil(float(load["value"]) * SEARCH_SECONDS_PER_PROBE)
        )
    return build_run_spec(opts)


def _tokenizer(spec: SweepSpec, served: str | None = None) -> str | None:
    """``--tokenizer``; for a server the sweep launches, by default the model's own (each point
    attaches to the server as an endpoint, so ``build_run_spec`` cannot see the model): the
    embedded shape a GPU host serves (by its served name), else the tiny model."""
    if spec.tokenizer or spec.endpoint:
        return spec.tokenizer
    from profiler.runspec import default_tokenizer
    from profiler.serving import shapes, tinymodel

    if spec.model is None and served is not None and served in shapes.SHAPES:
        return default_tokenizer(str(shapes.default_dir(served)))
    return default_tokenizer(spec.model or str(tinymodel.default_dir()))
