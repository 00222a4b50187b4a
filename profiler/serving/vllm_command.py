"""The command that launches a vLLM OpenAI-compatible server, before any process exists: its
argv (``build_argv``: only the flags the spec sets, never a shell string), the interpreter
(``server_python``), the faults visible before spawning (``validate_spec``), its environment
(``server_env``) and the vLLM version an interpreter has (``vllm_version``, without importing
vLLM). ``profiler.serving.vllm.VllmServer`` runs it.

Environment of the server: ``env`` (default ``os.environ``), then ``PYTHONUNBUFFERED=1`` (so a
crash log is complete), then on a machine without NVIDIA devices ``VLLM_CPU_KVCACHE_SPACE=1``
(GiB of KV cache; vLLM-CPU otherwise sizes it from free memory, which on a shared CI box can be
tiny or huge), each only when not already set, then ``spec.env`` overrides all.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from profiler.errors import SpecError
from profiler.serving.tinymodel import TINY_LOAD_FORMAT, is_tiny_model
from profiler.spec import ServeSpec

VLLM_MODULE = "vllm.entrypoints.openai.api_server"
CPU_KVCACHE_SPACE_GIB = "1"

ArgvBuilder = Callable[[ServeSpec, int, str], list[str]]


def build_argv(spec: ServeSpec, port: int, python: str) -> list[str]:
    """The server's argv (never a shell string): only the flags ``spec`` sets, then extra_args."""
    argv = [python, "-m", VLLM_MODULE, "--model", spec.model]
    argv += ["--served-model-name", spec.name]
    argv += ["--host", spec.host, "--port", str(port)]
    argv += ["--tensor-parallel-size", str(spec.tensor_parallel_size)]
    argv += ["--pipeline-parallel-size", str(spec.pipeline_parallel_size)]
    argv += ["--data-parallel-size", str(spec.data_parallel_size)]
    if spec.enable_expert_parallel:
        argv.append("--enable-expert-parallel")
    optional: list[tuple[str, object]] = [
        ("--max-model-len", spec.max_model_len),
        ("--gpu-memory-utilization", spec.gpu_memory_utilization),
        ("--max-num-seqs", spec.max_num_seqs),
        ("--max-num-batched-tokens", spec.max_num_batched_tokens),
        ("--load-format", spec.load_format),
        ("--dtype", spec.dtype),
    ]
    for flag, value in optional:
        if value is not None:
            argv += [flag, str(value)]
    if spec.enforce_eager:
        argv.append("--enforce-eager")
    if spec.tokenizer is not None:
        argv += ["--tokenizer", spec.tokenizer]
    return argv + list(spec.extra_args)


def server_python(spec: ServeSpec) -> str:
    return spec.python or sys.executable


def validate_spec(spec: ServeSpec) -> None:
    """Faults we can see before spawning anything (vLLM would take a minute to report them)."""
    for what, value in (("model", spec.model), ("tokenizer", spec.tokenizer)):
        if value is not None and _looks_local(value) and not Path(value).expanduser().exists():
            raise SpecError(
                f"{what} path {value} does not exist",
                "pass an existing model directory or a Hugging Face id like org/name"
                + (
                    "; `infprof model tiny` makes the embedded default model"
                    if what == "model"
                    else ""
                ),
            )
    model_dir = Path(spec.model).expanduser()
    if model_dir.is_dir() and is_tiny_model(model_dir) and spec.load_format != TINY_LOAD_FORMAT:
        raise SpecError(
            f"{spec.model} is an embedded model (config and tokenizer), which has no weights",
            f"serve it with --load-format {TINY_LOAD_FORMAT}",
        )
    if spec.cpus and hasattr(os, "sched_getaffinity"):
        allowed = os.sched_getaffinity(0)
        if not set(spec.cpus) <= allowed:
            raise SpecError(
                f"server CPUs {sorted(spec.cpus)} are not all available to this process",
                f"choose among {sorted(allowed)}",
            )


def _looks_local(value: str) -> bool:
    """A path, not a Hugging Face id (``org/name`` has exactly one slash and no prefix)."""
    return (
        value.startswith(("/", "./", "../", "~", "."))
        or value.endswith("/")
        or value.count("/") >= 2
        or Path(value).expanduser().exists()
    )


def _has_nvidia_device() -> bool:
    dev = Path("/dev")
    try:
        return any(p.name[6:].isdigit() for p in dev.glob("nvidia[0-9]*"))
    except OSError:
        return False


def server_env(spec: ServeSpec, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if not _has_nvidia_device():
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_SPACE_GIB)
        if spec.cpus:  # vllm-cpu binds its OpenMP threads itself: keep them on the same cores
            env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, sorted(spec.cpus)))
    env.update(spec.env)
    return env


# ---------------------------------------------------------------- versions
@functools.lru_cache(maxsize=16)
def vllm_dist(python: str) -> tuple[str, str] | None:
    """(distribution name, version) of vLLM in ``python``'s environment, without importing it."""
    script = (
        "import importlib.metadata as m\n"
        "for n in ('vllm', 'vllm-cpu'):\n"
        "    try:\n"
        "        print(n, m.version(n)); break\n"
        "    except m.PackageNotFoundError:\n"
        "        pass\n"
    )
    try:
        out = subprocess.run(
            [python, "-c", script], capture_output=True, text=True, timeout=30, check=False
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return (out[0], out[1]) if len(out) == 2 else None


def vllm_version(python: str | None = None) -> str | None:
    """vLLM's version in ``python``'s environment (default: this interpreter), or None."""
    dist = vllm_dist(python or sys.executable)
    return dist[1] if dist else None
