"""Pydantic models for what a run is asked to do: RunSpec, ServeSpec, WorkloadSpec, ArrivalSpec,
SloSpec (the length and time distributions a workload draws from: ``profiler.distributions``;
loading one from YAML: ``profiler.yaml_spec``). Precedence: defaults < workload file <
environment < flags (resolved in the CLI, ``profiler.run_options``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from profiler.distributions import LengthDist, TimeDist
from profiler.errors import SpecError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionSpec(_Strict):
    """A scenario whose requests are the turns of conversations (sessions). Each turn sends the
    conversation so far plus a new user message of ``input`` tokens (the first turn
    ``first_input``, when set) and asks for ``output`` tokens; a user pauses ``think_time_s``
    after each answer. ``history``: the earlier turns as the server ``answered`` them (the
    default: a turn waits for the previous answer), or as ``recorded`` (a dataset's own
    assistant replies, or synthetic ones of the requested lengths)."""

    turns: LengthDist = Field(default_factory=lambda: LengthDist.fixed(3))
    think_time_s: TimeDist = Field(default_factory=TimeDist)
    first_input: LengthDist | None = None
    history: Literal["answered", "recorded"] = "answered"


class DatasetSpec(_Strict):
    """Prompts from a local file (never downloaded). ``format``: ``sharegpt`` (JSON list of
    ``conversations`` with ``from``/``value``), ``openai-chat`` (JSONL of ``messages`` with
    ``role``/``content``), or ``jsonl`` / ``csv`` / ``parquet`` with a ``prompt_column`` and an
    optional ``output_len_column``; ``auto`` decides from the suffix and the first record.
    ``mode``: ``first-turn`` sends each conversation's first user message as one request,
    ``sessions`` replays whole conversations as sessions. Prompts are tokenized with
    ``tokenizer`` (a tokenizer.json or a model directory; default: the run's). Output lengths
    come from the dataset (the recorded reply's tokens, or the output column) unless
    ``output_len`` is ``scenario`` (the scenario's ``output`` distribution)."""

    path: Path
    format: Literal["auto", "sharegpt", "openai-chat", "jsonl", "csv", "parquet"] = "auto"
    mode: Literal["first-turn", "sessions"] = "first-turn"
    prompt_column: str = "prompt"
    output_len_column: str | None = None
    output_len: Literal["dataset", "scenario"] = "dataset"
    tokenizer: str | None = None
    shuffle: bool = True


# ---------------------------------------------------------------- workloads
class Scenario(_Strict):
    """One kind of request. A workload is one scenario or a weighted mix of several."""

    name: str = "default"
    weight: float = Field(default=1.0, gt=0)
    api: Literal["completions", "chat"] = "completions"
    input: LengthDist = Field(default_factory=lambda: LengthDist.fixed(128))
    output: LengthDist = Field(default_factory=lambda: LengthDist.fixed(128))
    n: int = Field(default=1, ge=1, le=16, description="parallel samples per prompt")
    shared_prefix_len: int = Field(default=0, ge=0, description="tokens of a common system prompt")
    num_prefixes: int = Field(default=1, ge=1, description="distinct shared prefixes")
    ignore_eos: bool = True
    temperature: float = Field(default=0.0, ge=0)
    reasoning: bool = False
    session: SessionSpec | None = Field(
        default=None, description="turns of conversations instead of independent requests"
    )
    dataset: DatasetSpec | None = Field(default=None, description="prompts from a local file")

    def is_session(self) -> bool:
        """Requests of this scenario are turns of sessions (a session spec or a dataset's whole
        conversations)."""
        return self.session is not None or (
            self.dataset is not None and self.dataset.mode == "sessions"
        )

    def max_context(self) -> int:
        """Largest prompt a request of this scenario can send (the last turn of the longest
        session holds every earlier turn and answer)."""
        prefix = self.shared_prefix_len
        if self.session is None:
            return self.input.upper() + prefix
        first = (self.session.first_input or self.input).upper()
        more = self.session.turns.upper() - 1
        return prefix + first + more * (self.input.upper() + self.output.upper())


class WorkloadSpec(_Strict):
    name: str
    description: str = ""
    scenarios: list[Scenario] = Field(min_length=1)
    num_requests: int | None = Field(default=None, ge=1)
    duration_s: float | None = Field(default=None, gt=0)
    arrival: ArrivalSpec | None = None

    def max_input(self) -> int:
        return max(s.max_context() for s in self.scenarios)

    def has_sessions(self) -> bool:
        return any(s.is_session() for s in self.scenarios)

    def max_output(self) -> int:
        return max(s.output.upper() for s in self.scenarios)


# ---------------------------------------------------------------- arrivals
class ArrivalSpec(_Strict):
    """How requests are started.

    - ``concurrency``: closed loop, ``concurrency`` requests in flight.
    - ``constant``: open loop, evenly spaced at ``rate`` req/s.
    - ``poisson``: open loop, exponential gaps at ``rate``.
    - ``gamma``: open loop, gamma gaps at ``rate``; ``burstiness`` < 1 is burstier than Poisson.
    - ``ramp``: open loop, rate rising linearly from ``rate_start`` to ``rate`` over the run.
    - ``trace``: replay ``trace`` (JSONL or CSV with ``timestamp`` and optional
      ``input_len``, ``output_len``, ``prefix_id``; or a Mooncake, Azure LLM inference or
      BurstGPT trace, see ``trace_format``), its times multiplied by ``time_scale``.
    - ``users``: closed loop of ``users`` users; each runs one session at a time and keeps
      its slot through the session's turns and think times (a plain workload: one request).
    With a session workload the open-loop kinds schedule session starts.
    ``max_concurrency`` caps in-flight requests for every open-loop kind.
    """

    kind: Literal["concurrency", "constant", "poisson", "gamma", "ramp", "trace", "users"] = (
        "concurrency"
    )
    rate: float | None = Field(default=None, gt=0)
    rate_start: float | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, ge=1)
    users: int | None = Field(default=None, ge=1, description="kind users: users in the loop")
    max_concurrency: int | None = Field(default=None, ge=1)
    burstiness: float = Field(default=1.0, gt=0)
    trace: Path | None = None
    time_scale: float = Field(default=1.0, gt=0)
    trace_format: Literal["auto", "infprof", "mooncake", "azure", "burstgpt"] = "auto"
    trace_block_tokens: int = Field(
        default=512, ge=1, description="tokens per Mooncake hash_ids block (the trace's 512)"
    )
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> ArrivalSpec:
        if self.kind == "concurrency" and self.concurrency is None:
            raise ValueError("kind 'concurrency' needs concurrency (requests in flight)")
        if self.kind in ("constant", "poisson", "gamma", "ramp") and self.rate is None:
            raise ValueError(f"kind '{self.kind}' needs rate (requests per second)")
        if self.kind == "ramp" and self.rate_start is None:
            raise ValueError("kind 'ramp' needs rate_start")
        if self.kind == "trace" and self.trace is None:
            raise ValueError("kind 'trace' needs trace (a JSONL or CSV file)")
        if self.kind == "users" and self.users is None:
            raise ValueError("kind 'users' needs users (users in the closed loop)")
        return self

    def label(self) -> str:
        if self.kind == "concurrency":
            return f"concurrency={self.concurrency}"
        if self.kind == "users":
            return f"users={self.users}"
        if self.kind == "trace":
            return f"trace={self.trace}"
        cap = f",cap={self.max_concurrency}" if self.max_concurrency else ""
        return f"{self.kind}={self.rate}/s{cap}"


WorkloadSpec.model_rebuild()


TARGET_FRACTION = 0.9
"""Share of requests that must meet the SLOs, unless ``fraction=`` or ``--target-fraction``."""


class SloSpec(_Strict):
    """Latency objectives in seconds; a request meets the SLO when it meets every one set."""

    ttft_s: float | None = Field(default=None, gt=0)
    tpot_s: float | None = Field(default=None, gt=0)
    e2e_s: float | None = Field(default=None, gt=0)
    target_fraction: float = Field(default=TARGET_FRACTION, gt=0, le=1)

    def is_set(self) -> bool:
        return any(v is not None for v in (self.ttft_s, self.tpot_s, self.e2e_s))

    @classmethod
    def parse(cls, text: str | None) -> SloSpec:
        """Parse ``ttft=0.5,tpot=0.05,e2e=10[,fraction=0.9]`` (seconds)."""
        if not text:
            return cls()
        keys = {"ttft": "ttft_s", "tpot": "tpot_s", "e2e": "e2e_s", "fraction": "target_fraction"}
        values: dict[str, float] = {}
        for part in text.split(","):
            if not part.strip():
                continue
            k, sep, v = part.partition("=")
            k = k.strip().lower().removesuffix("_s")
            if not sep or k not in keys:
                raise SpecError(
                    f"--slo: cannot read '{part}'",
                    "write it as ttft=SECONDS,tpot=SECONDS,e2e=SECONDS (any subset)",
                )
            try:
                values[keys[k]] = float(v)
            except ValueError:
                raise SpecError(
                    f"--slo: '{v}' is not a number of seconds", "e.g. ttft=0.5"
                ) from None
        try:
            return cls(**values)
        except ValidationError as e:
            raise SpecError.from_validation(
                e, "--slo: {field}{msg}", "SLO values are positive seconds"
            ) from None


# ---------------------------------------------------------------- serving
class ServeSpec(_Strict):
    """A vLLM server the profiler launches. Flags map one to one onto vLLM's CLI."""

    model: str
    served_model_name: str | None = None
    tokenizer: str | None = None
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535, description="None: a free port")
    tensor_parallel_size: int = Field(default=1, ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1)
    data_parallel_size: int = Field(default=1, ge=1)
    enable_expert_parallel: bool = False
    max_model_len: int | None = Field(default=None, ge=1)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    max_num_seqs: int | None = Field(default=None, ge=1)
    max_num_batched_tokens: int | None = Field(default=None, ge=1)
    load_format: str | None = None
    dtype: str | None = None
    enforce_eager: bool = False
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cpus: list[int] | None = Field(
        default=None,
        min_length=1,
        description="CPU cores the server's processes run on (None: not pinned); the load "
        "generator's event loop then runs on the other cores of this host",
    )
    ready_timeout_s: float = Field(default=600, gt=0)
    python: str | None = Field(default=None, description="interpreter that has vLLM installed")
    default_model: dict[str, Any] | None = Field(
        default=None,
        description="on a GPU host without --model: which embedded shape was made and why "
        "(profiler/capacity/shape_choice.py choose_shape); not a vLLM flag",
    )

    @property
    def name(self) -> str:
        return self.served_model_name or self.model


class EndpointSpec(_Strict):
    """An OpenAI-compatible server that is already running."""

    url: str
    model: str | None = None
    api_key_env: str | None = None
    metrics_url: str | None = None
    server_kind: Literal["auto", "vllm", "sglang", "trtllm", "openai", "generic"] = Field(
        default="auto",
        description="what the server accepts (profiler/load/capabilities.py); auto: probe it",
    )


class RunSpec(_Strict):
    run_id: str | None = None
    out_dir: Path = Path("runs")
    workload: WorkloadSpec
    arrival: ArrivalSpec
    num_requests: int | None = Field(default=None, ge=1)
    duration_s: float | None = Field(default=None, gt=0)
    warmup_s: float = Field(default=0.0, ge=0)
    cooldown_s: float = Field(default=0.0, ge=0)
    request_timeout_s: float = Field(default=600.0, gt=0)
    serve: ServeSpec | None = None
    endpoint: EndpointSpec | None = None
    tokenizer: str | None = Field(
        default=None,
        description="tokenizer.json (or a directory holding one) the client counts each chunk's "
        "tokens with when the server streams no per-chunk usage (None: one token per chunk)",
    )
    slo: SloSpec = Field(default_factory=SloSpec)
    sample_interval_s: float | None = Field(default=0.5, gt=0)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    prometheus_url: str | None = None
    textfile: Path | None = None
    pushgateway: str | None = None
    workers: int = Field(default=1, ge=1)
    executor: Literal["local", "ray"] = Field(
        default="local",
        description="ray: a launched server spans the Ray cluster's nodes (vLLM's Ray "
        "backend), every node's GPUs are sampled, and --workers are Ray actors on its nodes",
    )
    ray_address: str | None = None  # None: RAY_ADDRESS, else the cluster this node joined
    seed: int = 0
    max_error_rate: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="stop when more than this share of the last 30 requests failed, and fail a "
        "run whose whole error rate is above it (profiler/load/guard.py); None: no ceiling",
    )
    gpus: list[str] | None = Field(
        default=None,
        min_length=1,
        description="the server's GPUs (NVML indices or UUIDs): every GPU figure covers them; "
        "None: from the server's CUDA_VISIBLE_DEVICES or processes, else all (see gpu_scope)",
    )

    @model_validator(mode="after")
    def _check(self) -> RunSpec:
        if (self.serve is None) == (self.endpoint is None):
            raise ValueError("exactly one of serve and endpoint must be set")
        if self.num_requests is None and self.duration_s is None:
            raise ValueError("set num_requests or duration_s (or both)")
        if self.workload.has_sessions():
            if self.workers > 1:
                raise ValueError("a session workload runs in one load process: drop --workers")
            if self.arrival.kind == "concurrency":
                raise ValueError(
                    "a session workload needs users (--users N: a user keeps its slot through "
                    "its turns) or an open-loop session arrival (--rate)"
                )
        return self
