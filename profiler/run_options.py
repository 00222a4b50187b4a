"""Build a RunSpec from ``infprof run`` options (the server side: ``profiler.run_server``).
Precedence: defaults < workload file < environment (INFPROF_RUN_* through Click) < flags. The
only place run flags meet the spec; building is pure (see ``run_server.Host``)."""

from __future__ import annotations

from pydantic import ValidationError

from profiler.distributions import LengthDist
from profiler.errors import SpecError
from profiler.run_flags import RunOptions
from profiler.run_server import Host, check_tokenizer, default_tokenizer, place_on_gpus, target
from profiler.spec import ArrivalSpec, DatasetSpec, RunSpec, WorkloadSpec

DEFAULT_NUM_REQUESTS = 200
DEFAULT_CONCURRENCY = 16
DEFAULT_WORKLOAD = "default"
GPU_DEFAULT_WORKLOAD = "gpu-default"
"""Workload of a run that launches its server on a GPU host and names none (1,000 requests of
1,024/256 tokens, 256 in flight): the CPU default would leave a GPU idle."""


# options a RunSpec field takes as they are: by the same name, or with its unit
_SAME_NAME = (
    "run_id",
    "slo",
    "metrics_port",
    "metrics_host",
    "textfile",
    "pushgateway",
    "prometheus_url",
    "workers",
    "ray_address",
    "seed",
    "max_error_rate",
)
_SECONDS = {"warmup": "warmup_s", "cooldown": "cooldown_s", "request_timeout": "request_timeout_s"}


def build_run_spec(host: Host, o: RunOptions) -> RunSpec:
    """The RunSpec of ``o`` on ``host``: reads the workload, dataset and tokenizer files it
    names, writes nothing (``run_server.prepare_run`` does, before the launch)."""
    wl = resolve_workload(o.workload, host, o)
    arrival = arrival_for(wl, o)
    num_requests, duration = load_amount(wl, o.num_requests, o.duration)
    serve, endpoint = target(o, wl, arrival, host)
    gpus = None
    if o.gpus is not None:
        gpus, serve = place_on_gpus(o.gpus, serve)
    tokenizer = (
        check_tokenizer(o.tokenizer)
        if o.tokenizer
        else (default_tokenizer(serve) if serve is not None else None)
    )
    try:
        return RunSpec(
            **{k: getattr(o, k) for k in _SAME_NAME},
            **{field: getattr(o, k) for k, field in _SECONDS.items()},
            out_dir=o.out,
            workload=dataset_tokenizer(wl, tokenizer),
            arrival=arrival,
            num_requests=num_requests,
            duration_s=duration,
            serve=serve,
            endpoint=endpoint,
            tokenizer=tokenizer,
            sample_interval_s=None if o.no_telemetry else o.sample_interval,
            executor="ray" if o.executor == "ray" else "local",
            gpus=gpus,
        )
    except ValidationError as e:
        raise SpecError.from_validation(
            e, "run options: {loc}: {msg}", "see `infprof run --help`"
        ) from None


def resolve_workload(name: str | None, host: Host, o: RunOptions) -> WorkloadSpec:
    """The workload ``name`` (default: by host and target) with ``o``'s overrides."""
    from profiler.load.workload import workload_from_name_or_path

    gpu_host = o.endpoint is None and host.has_gpus
    wl = workload_from_name_or_path(
        name or (GPU_DEFAULT_WORKLOAD if gpu_host else DEFAULT_WORKLOAD)
    )
    return override_workload(
        wl,
        dataset=_dataset_spec(o),
        input_len=o.input_len,
        output_len=o.output_len,
        n=o.n_samples,
        api=o.api,
    )


def load_amount(
    wl: WorkloadSpec, num_requests: int | None, duration_s: float | None
) -> tuple[int | None, float | None]:
    """Requests and seconds of load: the options', else the workload's, else the default."""
    num = num_requests or wl.num_requests
    duration = duration_s or wl.duration_s
    if num is None and duration is None:
        num = DEFAULT_NUM_REQUESTS
    return num, duration


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


def dataset_tokenizer(wl: WorkloadSpec, tokenizer: str | None) -> WorkloadSpec:
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


def override_workload(
    wl: WorkloadSpec,
    *,
    dataset: DatasetSpec | None = None,
    input_len: int | None = None,
    output_len: int | None = None,
    n: int | None = None,
    api: str | None = None,
) -> WorkloadSpec:
    """``wl`` with every scenario's dataset, lengths, samples or API overridden."""
    if input_len is None and output_len is None and n is None and api is None and dataset is None:
        return wl
    scenarios = []
    for s in wl.scenarios:
        upd: dict[str, object] = {}
        if dataset is not None:
            upd["dataset"] = dataset
        elif output_len is not None and s.dataset is not None:
            upd["dataset"] = s.dataset.model_copy(update={"output_len": "scenario"})
        if input_len is not None:
            upd["input"] = LengthDist.fixed(input_len)
        if output_len is not None:
            upd["output"] = LengthDist.fixed(output_len)
        if n is not None:
            upd["n"] = n
        if api is not None:
            upd["api"] = api
        scenarios.append(s.model_copy(update=upd))
    return wl.model_copy(update={"scenarios": scenarios})


def arrival_for(wl: WorkloadSpec, o: RunOptions) -> ArrivalSpec:
    """The workload's arrival with the load options applied (``--users``, ``--concurrency``,
    ``--rate`` [``--arrival``], ``--trace``, ...)."""
    users, concurrency, rate, arrival, trace = o.users, o.concurrency, o.rate, o.arrival, o.trace
    base = (
        wl.arrival.model_dump()
        if wl.arrival is not None
        else {"kind": "concurrency", "concurrency": DEFAULT_CONCURRENCY}
    )
    upd: dict[str, object] = {"seed": o.seed}
    if users is not None:
        if rate is not None or concurrency is not None:
            raise SpecError(
                "--users cannot be combined with --rate or --concurrency",
                "use --users N (closed loop of users) or --rate R (open-loop arrivals)",
            )
        upd.update(kind="users", users=users)
    elif (
        wl.has_sessions()
        and base.get("kind") == "concurrency"
        and concurrency is None
        and rate is None
        and arrival is None
        and trace is None
    ):
        # a session workload's own closed loop: its concurrency is the number of users
        upd.update(kind="users", users=base.get("concurrency") or DEFAULT_CONCURRENCY)
    if concurrency is not None and rate is None:
        upd.update(kind="concurrency", concurrency=concurrency)
    if rate is not None:
        upd.update(kind=arrival or "poisson", rate=rate)
        if concurrency is not None:  # rate with a concurrency cap
            upd["max_concurrency"] = concurrency
    elif arrival is not None:
        upd["kind"] = arrival
    if trace is not None:
        upd.update(kind="trace", trace=trace)
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
