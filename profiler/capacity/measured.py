"""Measured points: one finished run of a sweep, reduced to what the capacity model needs.

A sweep directory holds ``index.json`` = {"points": [{"config": {"tp", "pp", "dp", "ep",
"max_num_seqs"}, "load": {"kind", "value"}, "workload", "run_dir", "status"}]} and each run
directory its ``summary.json`` and ``manifest.json``. Tests (and other tools) can build
MeasuredPoint objects directly instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from profiler.capacity.dtypes import served_dtypes
from profiler.errors import SpecError
from profiler.store.nested import dig as _get


class MeasuredPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="catalog name, Hugging Face id or model path as served")
    gpu: str | None = Field(default=None, description="hardware catalog key; None if unknown")
    tp: int = Field(default=1, ge=1)
    pp: int = Field(default=1, ge=1)
    dp: int = Field(default=1, ge=1)
    ep: int = Field(default=1, ge=1)
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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise SpecError(
            f"{path}: cannot read ({e.strerror})", "check the sweep directory"
        ) from None
    except json.JSONDecodeError as e:
        raise SpecError(
            f"{path}: line {e.lineno} is not valid JSON", "re-run the sweep or fix the file"
        ) from None


def _gpu_key(manifest: dict[str, Any]) -> str | None:
    """The catalog key of the server's first GPU (manifest.json ``gpu_scope``; else GPU 0)."""
    from profiler.capacity.hardware import load_hardware

    gpus = manifest.get("gpus") or []
    if not isinstance(gpus, list) or not gpus:
        return None
    mine = _get(manifest, "gpu_scope", "gpus") or []
    first = next(
        (g for g in gpus if isinstance(g, dict) and mine and str(g.get("index")) == str(mine[0])),
        gpus[0],
    )
    name = first.get("name") if isinstance(first, dict) else str(first)
    g = load_hardware().gpu_for_nvml_name(str(name or ""))
    return g.key if g else None


def _n_of(manifest: dict[str, Any]) -> float:
    scen = (
        _get(manifest, "spec", "workload", "scenarios")
        or _get(manifest, "workload", "scenarios")
        or []
    )
    if not isinstance(scen, list) or not scen:
        return 1.0
    tot = sum(float(s.get("weight", 1.0)) for s in scen)
    return sum(float(s.get("weight", 1.0)) * float(s.get("n", 1)) for s in scen) / tot


def point_from_run(
    run_dir: Path, entry: dict[str, Any] | None = None, gpu: str | None = None
) -> MeasuredPoint | None:
    """Reduce one run directory (with its sweep index entry) to a MeasuredPoint; None if the
    run has no completed requests."""
    entry = entry or {}
    summary = _read_json(run_dir / "summary.json")
    manifest = (
        _read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").is_file() else {}
    )
    serve = _get(manifest, "spec", "serve") or manifest.get("serve") or {}
    cfg = entry.get("config") or {}
    dtypes = entry.get("dtypes") or served_dtypes(serve if isinstance(serve, dict) else {})
    ok = _get(summary, "requests", "ok") or 0
    if not ok:
        return None
    n = _n_of(manifest)
    # mean lengths per request; summaries before these keys counted the tokens of the ok
    # requests in the window, so the totals over the count are the means there
    prompt = _get(summary, "tokens", "prompt_mean_per_request")
    if prompt is None:
        prompt = (_get(summary, "tokens", "prompt") or 0) / ok
    output = _get(summary, "tokens", "output_mean_per_request")
    if output is None:
        output = (_get(summary, "tokens", "output") or 0) / ok
    lat = summary.get("latency") or {}

    def pct(metric: str) -> dict[str, float]:
        d = lat.get(metric) or {}
        return {k: float(d[k]) for k in ("p50", "p90", "p95", "p99") if d.get(k) is not None}

    tp_mean = _get(lat, "tpot_s", "mean")
    energy = _get(summary, "energy", "joules_per_output_token")
    load = entry.get("load") or {}
    tp = int(cfg.get("tp") or serve.get("tensor_parallel_size") or 1)
    pp = int(cfg.get("pp") or serve.get("pipeline_parallel_size") or 1)
    dp = int(cfg.get("dp") or serve.get("data_parallel_size") or 1)
    counted = _get(summary, "energy", "per_gpu_joules") or {}
    if _get(summary, "energy", "scope") is None and len(counted) > tp * pp * dp:
        energy = None  # a summary from before GPU scoping counted GPUs the server did not use
    ep = cfg.get("ep")  # a sweep grid says true/false (vLLM's --enable-expert-parallel)
    if ep is None or isinstance(ep, bool):
        on = bool(serve.get("enable_expert_parallel")) if ep is None else ep
        ep = tp * dp if on else 1
    endpoint = _get(manifest, "spec", "endpoint") or {}
    try:
        return MeasuredPoint(
            model=str(
                serve.get("model") or endpoint.get("model") or entry.get("model") or "unknown"
            ),
            gpu=gpu or _gpu_key(manifest),
            tp=tp,
            pp=pp,
            dp=dp,
            ep=int(ep),
            max_num_seqs=cfg.get("max_num_seqs") or serve.get("max_num_seqs"),
            max_num_batched_tokens=cfg.get("max_num_batched_tokens")
            or serve.get("max_num_batched_tokens"),
            weight_dtype=dtypes.get("weight"),
            kv_dtype=dtypes.get("kv"),
            activation_dtype=dtypes.get("dtype"),
            input_len=max(prompt, 1.0),
            output_len=max(output / n, 1.0),
            n=n,
            load_kind=load.get("kind"),
            load_value=load.get("value"),
            requests_per_s=_get(summary, "throughput", "requests_per_s"),
            output_tokens_per_s=_get(summary, "throughput", "output_tokens_per_s"),
            ttft_s=_get(lat, "ttft_s", "p50"),
            tpot_s=tp_mean if tp_mean is not None else _get(lat, "tpot_s", "p50"),
            ttft_pct_s=pct("ttft_s"),
            tpot_pct_s=pct("tpot_s"),
            energy_j_per_token=energy,
            dispatch_lag_p90_s=_get(summary, "dispatch_lag_s", "p90"),
            workload=entry.get("workload")
            or _get(manifest, "spec", "workload", "name")
            or _get(manifest, "workload", "name"),
            run_dir=str(run_dir),
        )
    except ValidationError as e:
        raise SpecError.from_validation(
            e,
            "{where}: cannot use as a measured point ({loc}: {msg})",
            "check summary.json",
            where=run_dir,
        ) from None


def load_sweep(sweep_dir: Path, gpu: str | None = None) -> list[MeasuredPoint]:
    """Every finished point of a sweep directory (``index.json``), or one run directory."""
    sweep_dir = Path(sweep_dir)
    if (sweep_dir / "summary.json").is_file() and not (sweep_dir / "index.json").is_file():
        p = point_from_run(sweep_dir, gpu=gpu)
        return [p] if p else []
    index = _read_json(sweep_dir / "index.json") if (sweep_dir / "index.json").is_file() else None
    if not isinstance(index, dict) or not isinstance(index.get("points"), list):
        raise SpecError(
            f"{sweep_dir}: no sweep index.json with a 'points' list",
            "pass a directory made by infprof sweep",
        )
    out: list[MeasuredPoint] = []
    configs = {
        c.get("id"): c for c in index.get("configs") or [] if isinstance(c, dict) and c.get("id")
    }
    for entry in index["points"]:
        if not isinstance(entry, dict) or entry.get("status") != "done" or not entry.get("run_dir"):
            continue
        recorded = (configs.get(entry.get("config_id")) or {}).get("dtypes")
        if recorded and "dtypes" not in entry:
            entry = {**entry, "dtypes": recorded}
        run = sweep_dir / str(entry["run_dir"])
        if not (run / "summary.json").is_file():
            continue
        p = point_from_run(run, entry, gpu=gpu)
        if p is not None:
            out.append(p)
    return out
