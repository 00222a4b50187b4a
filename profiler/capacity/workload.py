"""Mean request shape for planning, from a workload YAML (name or file) or explicit lengths."""

from __future__ import annotations

from profiler.capacity.sizing import WorkloadShape
from profiler.distributions import LengthDist
from profiler.errors import SpecError
from profiler.spec import WorkloadSpec

DEFAULT_INPUT_LEN = 1024.0
DEFAULT_OUTPUT_LEN = 256.0


def length_mean(d: LengthDist) -> float:
    """Mean of a LengthDist, with its [min, max] clipping applied to the centre."""
    if d.kind == "fixed":
        assert d.value is not None
        mean = float(d.value)
    elif d.kind == "uniform":
        return (d.min + d.max) / 2
    elif d.kind in ("normal", "lognormal"):
        assert d.mean is not None
        mean = d.mean
    else:
        assert d.values is not None
        vals = [min(max(v, d.min), d.max) for v in d.values]
        w = d.weights or [1.0] * len(vals)
        return sum(v * x for v, x in zip(vals, w, strict=True)) / sum(w)
    return float(min(max(mean, d.min), d.max))


def shape_of(spec: WorkloadSpec) -> WorkloadShape:
    """Weighted means over the workload's scenarios. Output length is per sample; the shared
    prefix counts in the prompt and as prefix-cached (vLLM caches prefixes by default)."""
    total = sum(s.weight for s in spec.scenarios)
    inp = (
        sum(s.weight * (length_mean(s.input) + s.shared_prefix_len) for s in spec.scenarios) / total
    )
    out = sum(s.weight * length_mean(s.output) for s in spec.scenarios) / total
    n = sum(s.weight * s.n for s in spec.scenarios) / total
    cached = sum(s.weight * s.shared_prefix_len for s in spec.scenarios) / total
    return WorkloadShape(input_len=inp, output_len=out, n=n, cached_prefix_len=cached)


def load_workload(name: str) -> WorkloadSpec:
    """A workload file path, or the name of a shipped workload (``infprof workloads``)."""
    from profiler.load.workload import workload_from_name_or_path

    return workload_from_name_or_path(name)


def resolve_shape(
    workload: str | None,
    input_len: float | None,
    output_len: float | None,
    n: float | None,
    cached_prefix_len: float | None = None,
) -> tuple[WorkloadShape, str]:
    """Explicit lengths override the workload's means; with neither, a chat-like default of
    1024 prompt and 256 output tokens. Returns the shape and a label."""
    if workload is not None:
        spec = load_workload(workload)
        base = shape_of(spec)
        label = spec.name
    else:
        base = WorkloadShape(input_len=DEFAULT_INPUT_LEN, output_len=DEFAULT_OUTPUT_LEN)
        label = "custom" if input_len is not None or output_len is not None else "default"
    shape = WorkloadShape(
        input_len=input_len if input_len is not None else base.input_len,
        output_len=output_len if output_len is not None else base.output_len,
        n=n if n is not None else base.n,
        cached_prefix_len=cached_prefix_len
        if cached_prefix_len is not None
        else base.cached_prefix_len,
    )
    if shape.input_len < 1 or shape.output_len < 1 or shape.n < 1:
        raise SpecError(
            "input/output lengths and n must be at least 1", "check --input-len/--output-len/--n"
        )
    return shape, label
