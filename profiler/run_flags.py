"""The options of ``infprof run`` as plain values (``RunOptions``): what ``cli/run.py`` parsed
(declared once in ``cli/options.py``) and a sweep point sets (``sweep/points``), before
``run_options.build_run_spec`` and ``run_server`` turn them into a RunSpec."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from profiler.spec import SloSpec


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
    slo: SloSpec = field(default_factory=SloSpec)  # parsed from --slo at the CLI edge
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
    gpus: str | list[str] | None = None  # --gpus text, or ids already parsed (a sweep)
    server_kind: str = "auto"  # auto: probe the endpoint
    max_error_rate: float | None = None
