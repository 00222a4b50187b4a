"""Session workloads for the planner: context growth, the prefix cache, and KV held by idle
sessions.

A session of T turns (``SessionSpec.turns``) with a shared system prompt of s tokens, a first
message of f tokens, later messages of u tokens and answers of o tokens sends, at turn k
(history as answered):
    P_k = s + f + (k - 1)(u + o)                       prompt tokens (the context so far)
Over all requests (a session contributes T of them):
    mean prompt     P = s + f + (u + o) E[T(T-1)/2] / E[T]
    ideal cached    C = P - (f + (E[T] - 1) u) / E[T]  (everything but the new message)
The planner prefills only the uncached share: ``cached_prefix_len = h P`` with h the
prefix-cache hit ratio over queried tokens, as vLLM's ``/metrics`` counts it: measured
(``--cache-hit-from RUN_DIR``: the run's ``prefix_cache.hit_ratio``), assumed
(``--cache-hit-ratio``) or, by default, the ideal C / P (every earlier turn still cached).

A cache hit needs the session's KV to survive its think time: KV capacity is held by every
live session, thinking ones included. Per decoding stream there are
    I = (E[T] - 1) theta / (E[T] a)                    thinking sessions
(theta the mean think time, a = o x TPOT the time a turn decodes; TPOT is the SLO's, else
``DEFAULT_TPOT_S``), each holding its context less the shared prompt (stored once):
    held per stream = I (P + o - s)   when h > 0 (no cache: nothing is kept)
which ``WorkloadShape.held_tokens_per_stream`` adds to each stream's KV footprint.

``annotate`` plans the same load without the cache (h = 0, nothing held) and records how many
GPUs the cache saves (``PlanResult.sessions``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from profiler.capacity.sizing import WorkloadShape
from profiler.distributions import LengthDist
from profiler.errors import SpecError, StorageError
from profiler.spec import WorkloadSpec

if TYPE_CHECKING:
    from profiler.capacity.result import PlanRequest, PlanResult

DEFAULT_TPOT_S = 0.05
_SAMPLES = 200_000


def _moments(dist: LengthDist) -> tuple[float, float]:
    """(E[X], E[X^2]) of a length distribution, from a large seeded sample (exact for fixed)."""
    if dist.kind == "fixed":
        assert dist.value is not None
        return float(dist.value), float(dist.value) ** 2
    from profiler.load.workload import sample_lengths

    x = sample_lengths(dist, np.random.default_rng(0), _SAMPLES).astype(np.float64)
    return float(x.mean()), float((x * x).mean())


def session_model(spec: WorkloadSpec, tpot_s: float | None) -> dict[str, float] | None:
    """Per-request means of a workload with session scenarios (None without any): prompt
    tokens, ideal cached tokens, output tokens, n, turns, think time, and the thinking
    sessions and their KV per decoding stream (before the cache ratio is applied)."""
    from profiler.capacity.workload import length_mean

    if not spec.has_sessions():
        return None
    if any(sc.dataset is not None for sc in spec.scenarios):
        raise SpecError(
            f"workload {spec.name}: the planner cannot size a dataset's sessions",
            "describe the sessions with lengths (session: turns, input, output) or pass "
            "--input-len/--output-len",
        )
    a_tpot = tpot_s or DEFAULT_TPOT_S
    sums: dict[str, float] = {}
    weight_total = 0.0
    for sc in spec.scenarios:
        s = float(sc.shared_prefix_len)
        u, o = length_mean(sc.input), length_mean(sc.output)
        sess = sc.session
        if sess is None:  # a one-turn scenario in the mix
            t1, t2, f, theta = 1.0, 1.0, u, 0.0
        else:
            t1, t2 = _moments(sess.turns)
            f = length_mean(sess.first_input) if sess.first_input else u
            theta = sess.think_time_s.mean_s()
        prompt = s + f + (u + o) * (t2 - t1) / 2 / t1
        cached = prompt - (f + (t1 - 1) * u) / t1
        thinking = (t1 - 1) * theta / (t1 * o * a_tpot) if o > 0 else 0.0
        w = sc.weight * t1  # requests of this scenario per session picked
        weight_total += w
        for key, v in (
            ("prompt", prompt),
            ("cached", cached),
            ("output", o),
            ("n", float(sc.n)),
            ("turns", t1),
            ("think_s", theta),
            ("thinking", thinking),
            ("held", thinking * (prompt + o - s)),
            ("shared_prefix", s),
            ("first_input", f),
            ("input_per_turn", u),
        ):
            sums[key] = sums.get(key, 0.0) + w * v
    return {k: v / weight_total for k, v in sums.items()}


def measured_hit_ratio(run_dir: Path) -> float:
    """The prefix-cache hit ratio a run measured on its server (summary.json)."""
    from profiler.store.schema import Summary

    path = Path(run_dir).expanduser() / Summary.FILE
    try:
        summary = Summary.load(path)
    except StorageError:
        raise SpecError(
            f"--cache-hit-from: cannot read {path}", "pass a run directory with a summary.json"
        ) from None
    ratio = summary.prefix_cache.hit_ratio if summary.prefix_cache else None
    if ratio is None and summary.server is not None:
        ratio = summary.server.prefix_cache_hit_ratio
    if ratio is None:
        raise SpecError(
            f"--cache-hit-from: {path} has no prefix-cache hit ratio",
            "use a run against vLLM with its /metrics scraped, or pass --cache-hit-ratio",
        )
    return float(ratio)


def session_shape(req: PlanRequest) -> tuple[WorkloadShape, str, dict[str, Any]] | None:
    """The planning shape of ``req``'s session workload (None: not a session workload, or its
    lengths are given explicitly), its label, and what the model assumed."""
    if req.workload is None or req.input_len is not None or req.output_len is not None:
        return None
    from profiler.capacity.workload import load_workload

    spec = load_workload(req.workload)
    m = session_model(spec, req.slo.tpot_s)
    if m is None:
        return None
    ideal = m["cached"] / m["prompt"] if m["prompt"] > 0 else 0.0
    if req.cache_hit_ratio is not None:
        ratio, source = req.cache_hit_ratio, "assumed"
    elif req.cache_hit_from is not None:
        ratio, source = measured_hit_ratio(req.cache_hit_from), "measured"
    else:
        ratio, source = ideal, "ideal"
    held = m["held"] if ratio > 0 else 0.0
    n = req.n if req.n is not None else m["n"]
    shape = WorkloadShape(
        input_len=m["prompt"],
        output_len=m["output"],
        n=n,
        cached_prefix_len=min(ratio, 1.0) * m["prompt"],
        held_tokens_per_stream=held,
    )
    info: dict[str, Any] = {
        "turns_mean": m["turns"],
        "shared_prefix_tokens": m["shared_prefix"],
        "first_input_tokens": m["first_input"],
        "input_tokens_per_turn": m["input_per_turn"],
        "output_tokens_per_turn": m["output"],
        "context_growth_per_turn": m["input_per_turn"] + m["output"],
        "prompt_tokens_mean": m["prompt"],
        "think_time_mean_s": m["think_s"],
        "cache_hit_ratio": ratio,
        "cache_hit_source": source,
        "ideal_cache_hit_ratio": ideal,
        "thinking_sessions_per_stream": m["thinking"] if ratio > 0 else 0.0,
        "held_tokens_per_stream": held,
        "turn_time_tpot_s": req.slo.tpot_s or DEFAULT_TPOT_S,
    }
    return shape, spec.name, info


def cache_shape(req: PlanRequest, shape: WorkloadShape, label: str) -> tuple[WorkloadShape, str]:
    """The planner's hook: a session workload's shape (``session_shape``); for another
    workload, ``--cache-hit-ratio``/``--cache-hit-from`` set the cached share of the prompt."""
    got = session_shape(req)
    if got is not None:
        return got[0], got[1]
    ratio = req.cache_hit_ratio
    if ratio is None and req.cache_hit_from is not None:
        ratio = measured_hit_ratio(req.cache_hit_from)
    if ratio is None:
        return shape, label
    return replace(shape, cached_prefix_len=min(ratio, 1.0) * shape.input_len), label


def annotate(
    req: PlanRequest, plan: Callable[[PlanRequest], PlanResult], result: PlanResult
) -> PlanResult:
    """Add ``sessions`` to a session workload's plan: the model's figures and the same plan
    without the prefix cache (how many GPUs the cache saves)."""
    got = session_shape(req)
    if got is None:
        return result
    _shape, _label, info = got
    if info["cache_hit_ratio"] > 0:
        base = plan(req.model_copy(update={"cache_hit_ratio": 0.0, "scaling": False}))
        info["without_cache"] = _headline(base)
    info["with_cache"] = _headline(result)
    w, wo = info["with_cache"], info.get("without_cache")
    if wo is not None and w["gpus_total"] is not None and wo["gpus_total"] is not None:
        info["gpus_saved_by_cache"] = wo["gpus_total"] - w["gpus_total"]
    result.sessions = info
    result.notes.append(_note(info))
    return result


def _headline(r: PlanResult) -> dict[str, Any]:
    b = r.best
    if b is None:
        return {"gpus_total": None, "max_rps_per_gpu": None, "parallelism": None}
    return {
        "gpus_total": b.gpus_total if r.load.get("target_rps") is not None else None,
        "max_rps_per_gpu": b.max_rps_per_replica / b.gpus_per_replica,
        "parallelism": b.parallelism,
        "gpu": b.gpu,
        "cost_per_hour": b.cost_per_hour,
    }


def _note(info: dict[str, Any]) -> str:
    ratio = info["cache_hit_ratio"]
    text = (
        f"Sessions: {info['turns_mean']:.1f} turns on average, context growing "
        f"{info['context_growth_per_turn']:.0f} tokens a turn to a mean prompt of "
        f"{info['prompt_tokens_mean']:.0f} tokens; prefix-cache hit ratio {ratio:.0%} "
        f"({info['cache_hit_source']}; every earlier turn cached: "
        f"{info['ideal_cache_hit_ratio']:.0%}); {info['thinking_sessions_per_stream']:.2f} "
        f"thinking sessions per decoding stream hold {info['held_tokens_per_stream']:.0f} KV "
        "tokens each stream's share."
    )
    w, wo = info.get("with_cache") or {}, info.get("without_cache")
    if wo is None:
        return text
    if w.get("gpus_total") is not None and wo.get("gpus_total") is not None:
        return text + (
            f" The cache changes the GPU count from {wo['gpus_total']} (no cache) to "
            f"{w['gpus_total']}."
        )
    if w.get("max_rps_per_gpu") and wo.get("max_rps_per_gpu"):
        return text + (
            f" The cache changes capacity from {wo['max_rps_per_gpu']:.3g} to "
            f"{w['max_rps_per_gpu']:.3g} req/s per GPU."
        )
    return text
