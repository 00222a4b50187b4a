"""Measured points: one finished run of a sweep, reduced to what the capacity model needs.

A sweep directory holds ``index.json`` = {"points": [{"config": {"tp", "pp", "dp", "ep",
"max_num_seqs"}, "load": {"kind", "value"}, "workload", "run_dir", "status"}]} and each run
directory its ``summary.json`` and ``manifest.json``. Tests (and other tools) can build
MeasuredPoint objects directly instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from profiler.capacity.dtypes import served_dtypes
from profiler.errors import SpecError, StorageError
from profiler.store.schema import (
    Artifact,
    Distribution,
    Energy,
    IndexPoint,
    Manifest,
    SpecServe,
    SpecWorkload,
    Summary,
    SweepIndex,
    Throughput,
    Tokens,
)

D = TypeVar("D", bound=Artifact)
Size = Annotated[int, Field(ge=1)]  # a parallel size (tp, pp, dp, ep)


class MeasuredPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="catalog name, Hugging Face id or model path as served")
    gpu: str | None = Field(default=None, description="hardware catalog key; None if unknown")
    tp: Size = 1
    pp: Size = 1
    dp: Size = 1
    ep: Size = 1
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    weight_dtype: str | None = Field(
        default=None, description="--quantization's precision (None: the checkpoint's)"
    )
    kv_dtype: str | None = Field(default=None, description="None: auto (the activation dtype)")
    activation_dtype: str | None = Field(default=None, description="--dtype (None: auto)")
    input_len: float = Field(gt=0, description="mean prompt tokens")
    output_len: float = Field(gt=0, description="mean output tokens per sample")
    n: float = Field(default=1.0, ge=1)
    load_kind: str | None = None
    load_value: float | None = None
    requests_per_s: float | None = None
    output_tokens_per_s: float | None = None
    ttft_s: float | None = Field(default=None, description="p50")
    tpot_s: float | None = Field(default=None, description="mean (Little's law needs the mean)")
    ttft_pct_s: dict[str, float] = Field(default_factory=dict, description="p50/p90/p95/p99")
    tpot_pct_s: dict[str, float] = Field(default_factory=dict)
    energy_j_per_token: float | None = None
    dispatch_lag_p90_s: float | None = None
    workload: str | None = None
    run_dir: str | None = None

    def label(self) -> str:
        parts = [f"tp{self.tp}"] + [
            f"{k}{v}" for k, v in (("pp", self.pp), ("dp", self.dp), ("ep", self.ep)) if v > 1
        ]
        load = (
            f" {self.load_kind}={self.load_value:g}"
            if self.load_kind and self.load_value is not None
            else ""
        )
        return f"{self.model} {'/'.join(parts)}{load}"

    def decoding_streams(self) -> float:
        """Mean streams decoding at once in the replica, by Little's law: output tok/s x TPOT
        (each stream emits one token per TPOT). Falls back to the offered concurrency."""
        if self.output_tokens_per_s and self.tpot_s:
            return self.output_tokens_per_s * self.tpot_s
        if self.load_kind == "concurrency" and self.load_value:
            return self.load_value * self.n
        return 1.0

    def latency_at(self, metric: str, fraction: float) -> float | None:
        """The percentile matching an SLO's target fraction (p50/p90/p95/p99)."""
        table = self.ttft_pct_s if metric == "ttft" else self.tpot_pct_s
        for q, key in ((0.5, "p50"), (0.9, "p90"), (0.95, "p95"), (0.99, "p99")):
            if fraction <= q + 1e-9 and key in table:
                return table[key]
        if table:
            return table.get("p99", max(table.values()))
        return self.ttft_s if metric == "ttft" else self.tpot_s


def _load(cls: type[D], path: Path) -> D:
    """A run's or sweep's file through its model; SpecError (a --calibration input) when it
    cannot be read."""
    try:
        return cls.load(path)
    except StorageError as e:
        raise SpecError(
            e.message, "check the sweep directory; re-run the sweep or fix the file"
        ) from None


def _gpu_key(manifest: Manifest) -> str | None:
    """The catalog key of the server's first GPU (manifest.json ``gpu_scope``; else GPU 0)."""
    from profiler.capacity.hardware import load_hardware

    gpus = manifest.gpus or []
    if not gpus:
        return None
    mine = manifest.scope_gpus() or []
    first = next((g for g in gpus if mine and str(g.get("index")) == str(mine[0])), gpus[0])
    g = load_hardware().gpu_for_nvml_name(str(first.get("name") or ""))
    return g.key if g else None


def _n_of(workload: SpecWorkload | None) -> float:
    scen = (workload.scenarios if workload else None) or []
    if not scen:
        return 1.0
    tot = sum(float(s.get("weight", 1.0)) for s in scen)
    return sum(float(s.get("weight", 1.0)) * float(s.get("n", 1)) for s in scen) / tot


def point_from_run(
    run_dir: Path, entry: IndexPoint | None = None, gpu: str | None = None
) -> MeasuredPoint | None:
    """Reduce one run directory (with its sweep index entry) to a MeasuredPoint; None if the
    run has no completed requests."""
    entry = entry or IndexPoint(id=run_dir.name)
    summary = _load(Summary, run_dir / Summary.FILE)
    manifest = (
        _load(Manifest, run_dir / Manifest.FILE)
        if (run_dir / Manifest.FILE).is_file()
        else Manifest()
    )
    spec = manifest.recorded_spec()
    serve = spec.serve or SpecServe()
    cfg = entry.config or {}
    dtypes = entry.dtypes or served_dtypes(serve.to_dict())
    ok = (summary.requests.ok if summary.requests else None) or 0
    if not ok:
        return None
    n = _n_of(spec.workload)
    tokens = summary.tokens or Tokens()  # per-request means (older summaries: migrated)
    prompt = tokens.prompt_mean_per_request or 0.0
    output = tokens.output_mean_per_request or 0.0
    ttft, tpot = summary.lat("ttft_s"), summary.lat("tpot_s")

    def pct(d: Distribution) -> dict[str, float]:
        return {
            k: float(v) for k in ("p50", "p90", "p95", "p99") if (v := getattr(d, k)) is not None
        }

    energy_doc = summary.energy or Energy()
    energy = energy_doc.joules_per_output_token
    load = entry.load or {}
    tp = int(cfg.get("tp") or serve.tensor_parallel_size or 1)
    pp = int(cfg.get("pp") or serve.pipeline_parallel_size or 1)
    dp = int(cfg.get("dp") or serve.data_parallel_size or 1)
    if energy_doc.scope is None and len(energy_doc.per_gpu_joules or {}) > tp * pp * dp:
        energy = None  # a summary from before GPU scoping counted GPUs the server did not use
    ep = cfg.get("ep")  # a sweep grid says true/false (vLLM's --enable-expert-parallel)
    if ep is None or isinstance(ep, bool):
        on = bool(serve.enable_expert_parallel) if ep is None else ep
        ep = tp * dp if on else 1
    thr = summary.throughput or Throughput()
    try:
        return MeasuredPoint(
            model=str(
                serve.model
                or (spec.endpoint.model if spec.endpoint else None)
                or entry.model
                or "unknown"
            ),
            gpu=gpu or _gpu_key(manifest),
            tp=tp,
            pp=pp,
            dp=dp,
            ep=int(ep),
            max_num_seqs=cfg.get("max_num_seqs") or serve.max_num_seqs,
            max_num_batched_tokens=cfg.get("max_num_batched_tokens")
            or serve.max_num_batched_tokens,
            weight_dtype=dtypes.get("weight"),
            kv_dtype=dtypes.get("kv"),
            activation_dtype=dtypes.get("dtype"),
            input_len=max(prompt, 1.0),
            output_len=max(output / n, 1.0),
            n=n,
            load_kind=load.get("kind"),
            load_value=load.get("value"),
            requests_per_s=thr.requests_per_s,
            output_tokens_per_s=thr.output_tokens_per_s,
            ttft_s=ttft.p50,
            tpot_s=tpot.mean if tpot.mean is not None else tpot.p50,
            ttft_pct_s=pct(ttft),
            tpot_pct_s=pct(tpot),
            energy_j_per_token=energy,
            dispatch_lag_p90_s=summary.dispatch_lag_s.p90 if summary.dispatch_lag_s else None,
            workload=entry.workload or (spec.workload.name if spec.workload else None),
            run_dir=str(run_dir),
        )
    except ValidationError as e:
        raise SpecError.from_validation(
            e,
            "{where}: cannot use as a measured point ({loc}: {msg})",
            "check summary.json",
            where=run_dir,
        ) from None


def read_points(sweep_dir: Path, gpu: str | None = None) -> list[MeasuredPoint]:
    """Every finished point of a sweep directory (``index.json``), or one run directory."""
    sweep_dir = Path(sweep_dir)
    if (sweep_dir / Summary.FILE).is_file() and not (sweep_dir / SweepIndex.FILE).is_file():
        p = point_from_run(sweep_dir, gpu=gpu)
        return [p] if p else []
    if not (sweep_dir / SweepIndex.FILE).is_file():
        raise SpecError(
            f"{sweep_dir}: no sweep index.json with a 'points' list",
            "pass a directory made by infprof sweep",
        )
    index = _load(SweepIndex, sweep_dir / SweepIndex.FILE)
    out: list[MeasuredPoint] = []
    for entry in index.done_points():
        recorded = index.config(entry.config_id).get("dtypes")
        if recorded and entry.dtypes is None:
            entry = entry.model_copy(update={"dtypes": recorded})
        run = sweep_dir / str(entry.run_dir)
        if not (run / Summary.FILE).is_file():
            continue
        p = point_from_run(run, entry, gpu=gpu)
        if p is not None:
            out.append(p)
    return out
