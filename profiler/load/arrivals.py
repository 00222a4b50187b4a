"""Arrival schedules: when each request is meant to start, computed from a seed, as the
``LoadPlan`` the driver runs.

Open-loop kinds return offsets (seconds from the start of the load); the closed loop returns
none (a request starts when a slot frees). ``max_concurrency`` caps in-flight requests of any
open loop; the driver enforces it and counts the wait as dispatch lag.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from profiler.errors import SpecError
from profiler.load.traces import TraceRow
from profiler.spec import ArrivalSpec, RunSpec

BLOCK = 4096


@dataclass
class LoadPlan:
    """What to send, concretely: the one shape between an ``ArrivalSpec`` and the driver.
    Closed loop: ``concurrency`` requests in flight; open loop: ``offsets_s`` (seconds from the
    start of the load), optionally capped at ``max_concurrency`` in flight; a trace's rows."""

    workload: str
    num_requests: int | None = None
    duration_s: float | None = None
    concurrency: int | None = None
    offsets_s: np.ndarray | None = None
    max_concurrency: int | None = None
    # the intended request rate ``t_s`` seconds into the load (None: closed loop)
    target_rate: Callable[[float], float | None] | None = None
    start_s: float | None = None  # origin of offsets_s on the run clock (default: now)
    trace_rows: list[TraceRow] | None = None
    # sessions (profiler.load.session_loop): the requests are SessionPlans; ``concurrency``
    # is then the number of users, ``offsets_s`` the session starts
    sessions: bool = False
    answer_encoder: Callable[[list[str]], list[list[int]]] | None = None


def _constant_rate(rate: float | None, _t_s: float) -> float | None:
    return rate


def _ramp_rate(r0: float, r1: float, horizon_s: float, t_s: float) -> float:
    frac = min(max(t_s / horizon_s, 0.0), 1.0) if horizon_s else 1.0
    return r0 + (r1 - r0) * frac


def load_plan(run: RunSpec) -> LoadPlan:
    """The plan of a run: its arrival's schedule, for its workload, requests and duration."""
    return schedule(run.arrival, run.num_requests, run.duration_s, workload=run.workload.name)


def schedule(
    spec: ArrivalSpec, num_requests: int | None, duration_s: float | None, *, workload: str
) -> LoadPlan:
    """The arrival schedule of ``spec`` for ``workload``, reproducible from ``spec.seed``.

    Open loops stop at ``num_requests`` or ``duration_s``, whichever comes first (one of them
    is required; a trace may also run to its end). Renewal processes start at 0, then add
    sampled gaps: constant ``1/rate``; Poisson exponential; gamma with shape ``burstiness``
    and scale ``1/(rate*burstiness)`` (vLLM's convention: CV^2 = 1/burstiness). The ramp is
    deterministic: request i starts where the integrated rate reaches i, over the duration
    (or over the time ``num_requests`` take at the mean of the two rates).
    """
    plan = partial(
        LoadPlan, workload, num_requests, duration_s, max_concurrency=spec.max_concurrency
    )
    if spec.kind in ("concurrency", "users"):  # closed loops (a user keeps a slot per session)
        closed = spec.concurrency if spec.kind == "concurrency" else spec.users
        return plan(
            concurrency=closed, max_concurrency=None, target_rate=partial(_constant_rate, None)
        )
    if spec.kind == "trace":
        assert spec.trace is not None
        rows = read_trace(spec.trace, spec.trace_format, spec.trace_block_tokens)
        offsets = np.array([r.timestamp_s for r in rows], dtype=np.float64) * spec.time_scale
        offsets, rows = _limit(offsets, rows, num_requests, duration_s)
        span = float(offsets[-1] - offsets[0]) if offsets.size > 1 else 0.0
        rate = (offsets.size - 1) / span if span > 0 else None
        return plan(offsets_s=offsets, trace_rows=rows, target_rate=partial(_constant_rate, rate))
    if num_requests is None and duration_s is None:
        raise SpecError(
            f"arrival '{spec.kind}' needs a number of requests or a duration",
            "set num_requests or duration_s (--num-requests / --duration)",
        )
    rng = np.random.default_rng(spec.seed)  # PCG64
    assert spec.rate is not None
    rate = spec.rate
    if spec.kind == "ramp":
        assert spec.rate_start is not None
        horizon = duration_s or 2.0 * (num_requests or 0) / (spec.rate_start + rate)
        offsets = _ramp(spec.rate_start, rate, horizon, num_requests, duration_s)
        return plan(
            offsets_s=offsets, target_rate=partial(_ramp_rate, spec.rate_start, rate, horizon)
        )
    offsets = _renewal(spec.kind, rate, spec.burstiness, rng, num_requests, duration_s)
    return plan(offsets_s=offsets, target_rate=partial(_constant_rate, rate))


def _gaps(
    kind: str, rate: float, burstiness: float, rng: np.random.Generator, size: int
) -> np.ndarray:
    if kind == "constant":
        return np.full(size, 1.0 / rate)
    if kind == "poisson":
        return rng.exponential(1.0 / rate, size)
    # gamma: mean 1/rate, shape = burstiness (CV^2 = 1/burstiness); shape 1 is Poisson
    return rng.gamma(burstiness, 1.0 / (rate * burstiness), size)


def _renewal(
    kind: str,
    rate: float,
    burstiness: float,
    rng: np.random.Generator,
    num: int | None,
    duration: float | None,
) -> np.ndarray:
    """Offsets of a renewal process: the first request at 0, then the sampled gaps."""
    if kind == "constant":  # exact multiples, no accumulated rounding
        count = num if num is not None else int(math.ceil((duration or 0) * rate)) + 1
        offsets = np.arange(count, dtype=np.float64) / rate
        return offsets if duration is None else offsets[offsets < duration]
    if num is not None:
        gaps = _gaps(kind, rate, burstiness, rng, num)
        offsets = np.concatenate(([0.0], np.cumsum(gaps[:-1])))
        return offsets if duration is None else offsets[offsets < duration]
    assert duration is not None
    parts, t = [np.zeros(1)], 0.0
    while t < duration:
        block = t + np.cumsum(_gaps(kind, rate, burstiness, rng, BLOCK))
        parts.append(block)
        t = float(block[-1])
    offsets = np.concatenate(parts)
    return offsets[offsets < duration]


def _ramp(
    r0: float, r1: float, horizon: float, num: int | None, duration: float | None
) -> np.ndarray:
    """Deterministic arrivals whose rate rises linearly from r0 to r1 over ``horizon`` seconds
    (then stays at r1): request i starts where the integrated rate reaches i."""
    slope = (r1 - r0) / horizon if horizon > 0 else 0.0
    at_horizon = r0 * horizon + slope * horizon**2 / 2
    count = (
        num
        if num is not None
        else int(math.ceil(at_horizon + r1 * max((duration or 0) - horizon, 0))) + 1
    )
    i = np.arange(count, dtype=np.float64)
    if abs(slope) < 1e-12:
        t = i / r0
    else:
        t = (-r0 + np.sqrt(np.maximum(r0 * r0 + 2 * slope * i, 0.0))) / slope
    beyond = i > at_horizon
    t[beyond] = horizon + (i[beyond] - at_horizon) / r1
    return t if duration is None else t[t < duration]


def _limit(
    offsets: np.ndarray, rows: list[TraceRow], num: int | None, duration: float | None
) -> tuple[np.ndarray, list[TraceRow]]:
    keep = len(offsets)
    if duration is not None:
        keep = int(np.searchsorted(offsets, duration, side="left"))
    if num is not None:
        keep = min(keep, num)
    return offsets[:keep], rows[:keep]


def read_trace(path: Path, fmt: str = "auto", block_tokens: int = 512) -> list[TraceRow]:
    """A trace, shifted to start at 0 and sorted by time. infprof's own format: JSONL or CSV
    with ``timestamp`` (seconds; absolute or relative), optional ``input_len``, ``output_len``,
    ``prefix_id``. ``fmt`` ``auto`` recognises Mooncake, Azure LLM inference and BurstGPT
    traces too (``profiler.load.traces``)."""
    if not path.exists():
        raise SpecError(f"trace file {path} does not exist", "pass an existing JSONL or CSV file")
    rows: list[TraceRow] = []
    try:
        from profiler.load import traces

        if fmt == "auto":
            fmt = traces.detect(path)
        if fmt != "infprof":
            rows = traces.read_foreign(path, fmt, block_tokens)
        elif path.suffix.lower() == ".csv":
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                if "timestamp" not in (reader.fieldnames or []):
                    raise SpecError(
                        f"{path}:1: no 'timestamp' column (found: {', '.join(reader.fieldnames or []) or 'nothing'})",
                        "the header needs timestamp and optionally input_len, output_len, "
                        "prefix_id (an Azure or BurstGPT trace: --trace-format azure|burstgpt)",
                    )
                for line_no, d in enumerate(reader, start=2):
                    rows.append(_row(d, path, line_no))
        else:
            with open(path) as f:
                for line_no, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        d = json.loads(line)
                    except json.JSONDecodeError:
                        raise SpecError(
                            f"{path}:{line_no}: not a JSON object", "one JSON object per line"
                        ) from None
                    if not isinstance(d, dict):
                        raise SpecError(
                            f"{path}:{line_no}: not a JSON object", "one JSON object per line"
                        )
                    rows.append(_row(d, path, line_no))
    except OSError as e:
        raise SpecError(f"cannot read trace {path}: {e.strerror}", "check the path") from None
    if not rows:
        raise SpecError(f"trace {path} has no rows", "add rows with a timestamp field")
    rows.sort(key=lambda r: r.timestamp_s)
    t0 = rows[0].timestamp_s
    return [
        TraceRow(
            r.timestamp_s - t0, r.input_len, r.output_len, r.prefix_id, r.hash_ids, r.block_tokens
        )
        for r in rows
    ]


def _row(d: dict[str, object], path: Path, line_no: int) -> TraceRow:
    def num(key: str, cast: type, required: bool = False) -> object:
        v = d.get(key)
        if v in (None, ""):
            if required:
                raise SpecError(
                    f"{path}:{line_no}: field '{key}' is missing",
                    f"every row needs '{key}' (seconds)",
                )
            return None
        try:
            out = cast(v)
        except (TypeError, ValueError):
            raise SpecError(
                f"{path}:{line_no}: field '{key}' = {v!r} is not a number", f"fix '{key}'"
            ) from None
        if cast is int and out < 1:
            raise SpecError(f"{path}:{line_no}: field '{key}' must be >= 1", f"fix '{key}'")
        return out

    ts = num("timestamp", float, required=True)
    pid = d.get("prefix_id")
    return TraceRow(
        float(ts),  # type: ignore[arg-type]
        num("input_len", int),  # type: ignore[arg-type]
        num("output_len", int),  # type: ignore[arg-type]
        None if pid in (None, "") else str(pid),
    )
