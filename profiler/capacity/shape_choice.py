"""Which embedded shape (profiler/serving/shapes.py) a GPU host serves when ``infprof run``
has no ``--model``: the largest whose weights, reserve and the run's KV cache fit the GPUs the
server uses, by the capacity model's memory arithmetic (profiler/capacity/models.py,
perf.reserve_bytes).

Per GPU the server uses (the first ``tp x pp`` GPUs, or those ``CUDA_VISIBLE_DEVICES`` names,
profiler/serving/shapes.serving_gpus):

    budget = min(free memory, u x total memory)     (NVML; u = vLLM's 0.9, or lower: see below)
    need   = weights / tp + reserve + KV cache for the run's batch
           = params x 2 bytes / tp
             + reserve_bytes (profiler/capacity/perf.py: 1 GiB + activations + logits)
             + batch x (prompt + output tokens) x KV bytes per token / tp
    8B shape when budget >= need(8B), else the 1B shape when budget >= weights + reserve + one
    sequence of max-model-len, else a SpecError (free the GPU or pass --model).

vLLM refuses to start when less than u x total memory is free, so when less than 90 % is free
(and ``--gpu-memory-utilization`` is not given) u is lowered to (free - 1 GiB) / total, rounded
down to 0.01, and passed to vLLM. The batch is the run's concurrency (its closed loop, or the
cap of an open loop; 256 otherwise). With the GPU default workload (256 in flight, 1,024 + 256 tokens) the 8B shape
needs 56.8 GiB per GPU (15.0 GiB weights, 1.8 GiB reserve, 40.0 GiB KV cache): an 80 GB H100
or a 141 GB H200 holds it, a 24 GB L4 or a 48 GB L40S gets the 1B shape (13.8 GiB: 2.3 GiB
weights, 1.5 GiB reserve, 10.0 GiB KV cache).
"""

from __future__ import annotations

import math
from typing import Any

from profiler.capacity.catalog import shape_spec
from profiler.capacity.deployment import reserve_bytes
from profiler.errors import SpecError
from profiler.serving.shapes import LLAMA_1B, LLAMA_8B, SHAPE_DTYPE, Shape

DEFAULT_GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default

RULE = (
    "per GPU used: budget = min(free, u x total), u = --gpu-memory-utilization, else 0.9 "
    "(vLLM's default) lowered to (free - 1 GiB)/total where less is free; the 8B shape when "
    "budget >= weights/(tp pp) + reserve + batch x (prompt + output) x KV bytes per token/"
    "(tp pp), else "
    "the 1B shape when its weights + reserve + one max-model-len sequence fit"
)


def _need(shape: Shape, kv_tokens: float, tp: int, pp: int, max_num_seqs: int) -> dict[str, float]:
    m = shape_spec(shape)
    weights = m.params_total * 2.0 / (tp * pp)  # bf16
    reserve = reserve_bytes(m, tp=tp, max_num_seqs=max_num_seqs)
    kv = kv_tokens * m.kv_bytes_per_token("bf16", tp=tp) / pp
    return {
        "weights_bytes": weights,
        "reserve_bytes": reserve,
        "kv_cache_bytes": kv,
        "kv_cache_tokens": kv_tokens,
        "total_bytes": weights + reserve + kv,
    }


def choose_shape(
    gpus: list[dict[str, Any]],
    *,
    batch: int,
    seq_tokens: int,
    max_model_len: int,
    gpu_memory_utilization: float | None = None,
    tp: int = 1,
    pp: int = 1,
) -> dict[str, Any]:
    """The shape to serve on ``gpus`` (NVML ``device_memory`` records of the GPUs the server
    uses) for a run with ``batch`` sequences of ``seq_tokens`` in flight, and why: a record for
    the manifest. Raises SpecError when not even the 1B shape fits."""
    known = [
        (float(g["memory_total_bytes"]), float(g["memory_free_bytes"]), g)
        for g in gpus
        if g.get("memory_total_bytes") and g.get("memory_free_bytes") is not None
    ]
    if not known:
        raise SpecError(
            "NVML reports no memory for the GPUs the server would use",
            "pass --model (and --max-model-len) to choose the model yourself",
        )
    # vLLM refuses to start when less than utilization x total is free: lower it to what is
    # free (less 1 GiB for its CUDA context), unless --gpu-memory-utilization says otherwise
    util = gpu_memory_utilization or min(
        [DEFAULT_GPU_MEMORY_UTILIZATION]
        + [math.floor(100 * max(free - 2.0**30, 0.0) / total) / 100 for total, free, _ in known]
    )
    lowered = gpu_memory_utilization is None and util < DEFAULT_GPU_MEMORY_UTILIZATION
    budget, tightest = min(
        ((min(free, util * total), g) for total, free, g in known), key=lambda b: b[0]
    )
    seqs = max(batch, 1)
    needs = {
        LLAMA_8B.name: _need(LLAMA_8B, seqs * seq_tokens, tp, pp, seqs),
        LLAMA_1B.name: _need(LLAMA_1B, seqs * seq_tokens, tp, pp, seqs),
    }
    minimal_1b = _need(LLAMA_1B, max_model_len, tp, pp, seqs)
    gib = 2.0**30
    where = f"GPU {tightest.get('index')} ({tightest.get('name')})"
    n8, n1 = needs[LLAMA_8B.name], needs[LLAMA_1B.name]
    batch_text = f"{seqs} sequences of {seq_tokens} tokens"
    util_text = (
        f" (--gpu-memory-utilization lowered to {util:.2f}: vLLM refuses to start when less than "
        f"{DEFAULT_GPU_MEMORY_UTILIZATION:g} of the memory is free)"
        if lowered
        else ""
    )
    if budget >= n8["total_bytes"]:
        shape = LLAMA_8B
        reason = (
            f"{where} can use {budget / gib:.1f} GiB: enough for the 8B shape's weights "
            f"({n8['weights_bytes'] / gib:.1f} GiB), reserve ({n8['reserve_bytes'] / gib:.1f} GiB) "
            f"and the KV cache of {batch_text} ({n8['kv_cache_bytes'] / gib:.1f} GiB), "
            f"{n8['total_bytes'] / gib:.1f} GiB in all{util_text}"
        )
    elif budget >= minimal_1b["total_bytes"]:
        shape = LLAMA_1B
        full = "holds" if budget >= n1["total_bytes"] else "does not hold"
        reason = (
            f"{where} can use {budget / gib:.1f} GiB, less than the 8B shape needs with the KV "
            f"cache of {batch_text} ({n8['total_bytes'] / gib:.1f} GiB); the 1B shape needs "
            f"{n1['total_bytes'] / gib:.1f} GiB for the same batch, so the budget {full} its "
            f"whole batch{util_text}"
        )
    else:
        raise SpecError(
            f"{where} has {budget / gib:.1f} GiB usable; even the 1B default model needs "
            f"{minimal_1b['total_bytes'] / gib:.1f} GiB",
            "free GPU memory (nvidia-smi shows who holds it), or pass --model / --endpoint",
        )
    return {
        "shape": shape.name,
        "architecture": shape.architecture,
        "dtype": SHAPE_DTYPE,
        "reason": reason,
        "rule": RULE,
        "gpu": {
            "index": tightest.get("index"),
            "name": tightest.get("name"),
            "memory_total_bytes": tightest.get("memory_total_bytes"),
            "memory_free_bytes": tightest.get("memory_free_bytes"),
        },
        "gpus_considered": len(known),
        "gpu_memory_utilization": util,
        "gpu_memory_utilization_lowered": lowered,
        "budget_bytes": budget,
        "batch": seqs,
        "seq_tokens": seq_tokens,
        "tp": tp,
        "pp": pp,
        "needs": needs,
    }
