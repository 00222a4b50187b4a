"""Calibration inputs people already have: an infprof sweep or run directory, a ``vllm bench
serve --save-result`` JSON file, a GuideLLM benchmarks report (JSON) or an AIPerf
``profile_export_aiperf.json``. Each becomes MeasuredPoints; a file in none of these formats is
an error naming the file.

Field mapping (documented formats; docs/capacity.md, "Calibration"):

| MeasuredPoint | vllm bench serve | GuideLLM (benchmarks[i].metrics) | AIPerf |
|---|---|---|---|
| input_len | total_input_tokens / completed | prompt_token_count.successful.mean | input_sequence_length.avg |
| output_len | total_output_tokens / completed | output_token_count.successful.mean | output_sequence_length.avg |
| requests_per_s | request_throughput | requests_per_second.successful.mean | request_throughput.avg |
| output_tokens_per_s | output_throughput | output_tokens_per_second.successful.mean | output_token_throughput.avg |
| tpot_s (mean) | mean_tpot_ms / 1e3 | time_per_output_token_ms.successful.mean / 1e3 | inter_token_latency.avg / 1e3 |
| ttft_s (p50) | median_ttft_ms | time_to_first_token_ms.successful.median | time_to_first_token.p50 |
| load | max_concurrency or request_rate | args.profile / strategy streams | input_config.loadgen.concurrency |
| model | model_id | args.model | input_config.endpoint.model_names[0] |

None of these files records the GPU or the parallel layout: ``--calibration-gpu`` and
``--calibration-layout`` (default TP1) supply them; ``--calibration-model`` names the model
when the file does not (or names one the planner cannot size). ``vllm bench serve --metadata``
keys ``gpu``, ``tp``/``tensor_parallel_size``, ``pp``, ``dp``, ``weight_dtype``, ``kv_dtype``
are read when present.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from profiler.capacity.deployment import Layout
from profiler.capacity.measured import MeasuredPoint, load_sweep
from profiler.errors import SpecError
from profiler.store.nested import dig as _get


def _num(x: Any) -> float | None:
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def _read(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"{path}: cannot read ({e.strerror})", "check the path") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        try:  # vllm bench serve --append-result writes one JSON object per line
            return [json.loads(ln) for ln in lines]
        except json.JSONDecodeError:
            raise SpecError(
                f"{path}: not JSON, so not a vllm bench serve, GuideLLM or AIPerf result",
                "pass a sweep or run directory, or one of those JSON files",
            ) from None


def kind_of(data: Any) -> str | None:
    """'vllm' | 'guidellm' | 'aiperf' | None for a parsed result file."""
    if isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        return "vllm" if all(kind_of(x) == "vllm" for x in data) else None
    if not isinstance(data, dict):
        return None
    if "output_throughput" in data and ("mean_tpot_ms" in data or "completed" in data):
        return "vllm"
    if isinstance(data.get("benchmarks"), list) and any(
        isinstance(b, dict) and isinstance(b.get("metrics"), dict) for b in data["benchmarks"]
    ):
        return "guidellm"
    records = data.get("records")
    metrics: dict[str, Any] = records if isinstance(records, dict) else data
    if isinstance(metrics.get("request_throughput"), dict) and isinstance(
        metrics.get("time_to_first_token"), dict
    ):
        return "aiperf"
    return None


def _point(where: str, **kw: Any) -> MeasuredPoint:
    try:
        return MeasuredPoint(**kw, run_dir=where)
    except ValidationError as e:
        raise SpecError.from_validation(
            e,
            "{where}: cannot use as a measured point ({loc}: {msg})",
            "check the result file",
            where=where,
        ) from None


def _layout_kw(layout: Layout | None, meta: dict[str, Any]) -> dict[str, int]:
    if layout is not None:
        return {"tp": layout.tp, "pp": layout.pp, "dp": layout.dp, "ep": layout.ep}
    tp = int(_num(meta.get("tp") or meta.get("tensor_parallel_size")) or 1)
    pp = int(_num(meta.get("pp") or meta.get("pipeline_parallel_size")) or 1)
    dp = int(_num(meta.get("dp") or meta.get("data_parallel_size")) or 1)
    return {"tp": tp, "pp": pp, "dp": dp, "ep": 1}


def _vllm(d: dict[str, Any], where: str, model: str | None, layout: Layout | None) -> MeasuredPoint:
    done = _num(d.get("completed")) or 0.0
    if done <= 0:
        raise SpecError(f"{where}: no completed requests", "use a benchmark that finished")
    name = model or d.get("model_id") or d.get("label")
    if not name:
        raise SpecError(f"{where}: names no model", "pass --calibration-model")
    conc = _num(d.get("max_concurrency"))
    rate = d.get("request_rate")
    load_kind, load_value = (
        ("concurrency", conc)
        if conc
        else ("rate", _num(rate))
        if rate not in (None, "inf")
        else (None, None)
    )

    def pct(metric: str) -> dict[str, float]:
        out = {}
        for key, field in (("p50", "median"), ("p90", "p90"), ("p95", "p95"), ("p99", "p99")):
            v = _num(d.get(f"{field}_{metric}_ms"))
            if v is not None:
                out[key] = v / 1e3
        return out

    tpot = _num(d.get("mean_tpot_ms"))
    return _point(
        where,
        model=str(name),
        gpu=d.get("gpu"),
        **_layout_kw(layout, d),
        weight_dtype=d.get("weight_dtype"),
        kv_dtype=d.get("kv_dtype"),
        input_len=max((_num(d.get("total_input_tokens")) or 0.0) / done, 1.0),
        output_len=max((_num(d.get("total_output_tokens")) or 0.0) / done, 1.0),
        load_kind=load_kind,
        load_value=load_value,
        requests_per_s=_num(d.get("request_throughput")),
        output_tokens_per_s=_num(d.get("output_throughput")),
        ttft_s=None if d.get("median_ttft_ms") is None else float(d["median_ttft_ms"]) / 1e3,
        tpot_s=None if tpot is None else tpot / 1e3,
        ttft_pct_s=pct("ttft"),
        tpot_pct_s=pct("tpot"),
        workload=d.get("label"),
    )


def _guidellm(
    report: dict[str, Any], where: str, model: str | None, layout: Layout | None
) -> list[MeasuredPoint]:
    out = []
    top_model = _get(report, "args", "model") or _get(report, "metadata", "model")
    for i, b in enumerate(report["benchmarks"]):
        if not isinstance(b, dict) or not isinstance(b.get("metrics"), dict):
            continue
        m = b["metrics"]

        def ok(metric: str, stat: str = "mean", _m: dict[str, Any] = m) -> float | None:
            return _num(_get(_m, metric, "successful", stat))

        def pct(metric: str, _m: dict[str, Any] = m) -> dict[str, float]:
            ps = _get(_m, metric, "successful", "percentiles") or {}
            return {
                k: float(ps[k]) / 1e3 for k in ("p50", "p90", "p95", "p99") if ps.get(k) is not None
            }

        name = model or _get(b, "args", "model") or _get(b, "config", "model") or top_model
        if not name:
            raise SpecError(f"{where}: names no model", "pass --calibration-model")
        streams = _num(
            _get(b, "args", "strategy", "streams")
            or _get(b, "config", "strategy", "streams")
            or _get(b, "scheduler", "strategy", "streams")
        )
        rate = _num(_get(b, "args", "strategy", "rate") or _get(b, "config", "strategy", "rate"))
        tpot = ok("time_per_output_token_ms")
        ttft = ok("time_to_first_token_ms", "median")
        rps = ok("requests_per_second")
        out_tps = ok("output_tokens_per_second")
        if rps is None or out_tps is None:
            continue
        out.append(
            _point(
                f"{where}#benchmarks[{i}]",
                model=str(name),
                **_layout_kw(layout, {}),
                input_len=max(ok("prompt_token_count") or 1.0, 1.0),
                output_len=max(ok("output_token_count") or 1.0, 1.0),
                load_kind="concurrency" if streams else "rate" if rate else None,
                load_value=streams or rate,
                requests_per_s=rps,
                output_tokens_per_s=out_tps,
                ttft_s=None if ttft is None else ttft / 1e3,
                tpot_s=None if tpot is None else tpot / 1e3,
                ttft_pct_s=pct("time_to_first_token_ms"),
                tpot_pct_s=pct("time_per_output_token_ms"),
            )
        )
    if not out:
        raise SpecError(
            f"{where}: GuideLLM report without a benchmark that has requests_per_second and "
            "output_tokens_per_second",
            "pass a finished GuideLLM report",
        )
    return out


def _aiperf(
    d: dict[str, Any], where: str, model: str | None, layout: Layout | None
) -> MeasuredPoint:
    m = d["records"] if isinstance(d.get("records"), dict) else d

    def avg(metric: str, stat: str = "avg") -> float | None:
        return _num(_get(m, metric, stat))

    def pct(metric: str) -> dict[str, float]:
        return {
            k: float(v) / 1e3
            for k in ("p50", "p90", "p95", "p99")
            if (v := _get(m, metric, k)) is not None
        }

    names = _get(d, "input_config", "endpoint", "model_names") or []
    name = model or (names[0] if isinstance(names, list) and names else None)
    if not name:
        raise SpecError(f"{where}: names no model", "pass --calibration-model")
    conc = _num(_get(d, "input_config", "loadgen", "concurrency"))
    rate = _num(_get(d, "input_config", "loadgen", "request_rate"))
    itl = avg("inter_token_latency")
    ttft = avg("time_to_first_token", "p50")
    return _point(
        where,
        model=str(name),
        **_layout_kw(layout, {}),
        input_len=max(avg("input_sequence_length") or 1.0, 1.0),
        output_len=max(avg("output_sequence_length") or 1.0, 1.0),
        load_kind="concurrency" if conc else "rate" if rate else None,
        load_value=conc or rate,
        requests_per_s=avg("request_throughput"),
        output_tokens_per_s=avg("output_token_throughput"),
        ttft_s=None if ttft is None else ttft / 1e3,
        tpot_s=None if itl is None else itl / 1e3,
        ttft_pct_s=pct("time_to_first_token"),
        tpot_pct_s=pct("inter_token_latency"),
    )


def load_file(
    path: Path, model: str | None = None, layout: Layout | None = None
) -> list[MeasuredPoint]:
    """The measured points of one vllm bench serve / GuideLLM / AIPerf result file."""
    data = _read(path)
    kind = kind_of(data)
    where = str(path)
    if kind == "vllm":
        items = data if isinstance(data, list) else [data]
        return [
            _vllm(x, f"{where}#{i}" if len(items) > 1 else where, model, layout)
            for i, x in enumerate(items)
        ]
    if kind == "guidellm":
        return _guidellm(data, where, model, layout)
    if kind == "aiperf":
        return [_aiperf(data, where, model, layout)]
    raise SpecError(
        f"{where}: not a sweep or run directory, nor a vllm bench serve, GuideLLM or AIPerf "
        "result file",
        "pass infprof sweep/run output, a vllm bench serve --save-result JSON, a GuideLLM "
        "benchmarks JSON or an AIPerf profile_export_aiperf.json",
    )


def load_calibration(
    path: Path, gpu: str | None = None, model: str | None = None, layout: Layout | None = None
) -> list[MeasuredPoint]:
    """Measured points from a sweep or run directory (infprof) or a result file (vllm bench
    serve, GuideLLM, AIPerf). ``gpu``/``model``/``layout`` fill what a file does not record."""
    path = Path(path)
    if path.is_dir():
        points = load_sweep(path, gpu=gpu)
        if model:
            points = [p.model_copy(update={"model": model}) for p in points]
        return points
    if not path.exists():
        raise SpecError(f"{path}: no such file or directory", "check the --calibration path")
    from profiler.capacity.hardware import load_hardware

    hw = load_hardware()
    points = load_file(path, model=model, layout=layout)
    out = []
    for p in points:
        key = gpu or p.gpu
        if key is not None:  # a --metadata gpu=H100 names it: map it to the catalog
            key = hw.gpu(key).key
        out.append(p.model_copy(update={"gpu": key}))
    return out
