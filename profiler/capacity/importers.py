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
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from profiler.capacity.deployment import Layout
from profiler.capacity.measured import MeasuredPoint, read_points
from profiler.errors import SpecError

_F = TypeVar("_F", bound=BaseModel)


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


# ------------------------------------------------------------ the foreign formats' fields
class _Foreign(BaseModel):
    """The fields infprof reads from another tool's result file; the rest is kept unread."""

    model_config = ConfigDict(extra="allow")


class _Percentiles(_Foreign):
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None

    def seconds(self) -> dict[str, float]:
        """The percentiles given (milliseconds in these files) in seconds."""
        ps = self.model_dump(include={"p50", "p90", "p95", "p99"}, exclude_none=True)
        return {k: v / 1e3 for k, v in ps.items()}


class _AiperfMetric(_Percentiles):
    """An AIPerf metric: its average beside its percentiles."""

    avg: float | None = None


class _Stats(_Foreign):
    """A GuideLLM distribution (``<metric>.successful``)."""

    mean: float | None = None
    median: float | None = None
    percentiles: _Percentiles = Field(default_factory=_Percentiles)


class _Metric(_Foreign):
    successful: _Stats = Field(default_factory=_Stats)


class _Strategy(_Foreign):
    streams: float | None = None
    rate: float | None = None


class _Args(_Foreign):
    """GuideLLM's ``args`` / ``config`` / ``scheduler`` / ``metadata``: model and strategy."""

    model: str | None = None
    strategy: _Strategy = Field(default_factory=_Strategy)


class _Benchmark(_Foreign):
    metrics: dict[str, Any]  # metric name -> distributions by status (only some are read)
    args: _Args = Field(default_factory=_Args)
    config: _Args = Field(default_factory=_Args)
    scheduler: _Args = Field(default_factory=_Args)


class _GuideReport(_Foreign):
    args: _Args = Field(default_factory=_Args)
    metadata: _Args = Field(default_factory=_Args)
    benchmarks: list[Any]


class _Loadgen(_Foreign):
    concurrency: float | None = None
    request_rate: float | None = None


class _AiperfEndpoint(_Foreign):
    model_names: list[str] = Field(default_factory=list)


class _InputConfig(_Foreign):
    endpoint: _AiperfEndpoint = Field(default_factory=_AiperfEndpoint)
    loadgen: _Loadgen = Field(default_factory=_Loadgen)


class _AiperfExport(_Foreign):
    input_config: _InputConfig = Field(default_factory=_InputConfig)
    records: dict[str, Any] | None = None  # the metrics, in exports that nest them


def _as(model: type[_F], data: Any, where: str, field: str = "") -> _F:
    """``data`` as ``model``; SpecError naming the file and the field when it does not fit."""
    try:
        return model.model_validate({} if data is None else data)
    except ValidationError as e:
        raise SpecError.from_validation(
            e, "{where}: field {place}: {msg}", "check the result file", within=field, where=where
        ) from None


def _guidellm(
    data: dict[str, Any], where: str, model: str | None, layout: Layout | None
) -> list[MeasuredPoint]:
    out = []
    report = _as(_GuideReport, data, where)
    top_model = report.args.model or report.metadata.model
    for i, raw in enumerate(report.benchmarks):
        if not isinstance(raw, dict) or not isinstance(raw.get("metrics"), dict):
            continue
        at = f"benchmarks[{i}]"
        b = _as(_Benchmark, raw, where, at)

        def stats(metric: str, _b: _Benchmark = b, _at: str = at) -> _Stats:
            raw_metric = _b.metrics.get(metric)
            m = _as(_Metric, raw_metric, where, f"{_at}.metrics.{metric}")
            return m.successful

        name = model or b.args.model or b.config.model or top_model
        if not name:
            raise SpecError(f"{where}: names no model", "pass --calibration-model")
        streams = b.args.strategy.streams or b.config.strategy.streams
        streams = streams or b.scheduler.strategy.streams
        rate = b.args.strategy.rate or b.config.strategy.rate
        tpot = stats("time_per_output_token_ms").mean
        ttft = stats("time_to_first_token_ms").median
        rps = stats("requests_per_second").mean
        out_tps = stats("output_tokens_per_second").mean
        if rps is None or out_tps is None:
            continue
        ttft_d, tpot_d = stats("time_to_first_token_ms"), stats("time_per_output_token_ms")
        out.append(
            _point(
                f"{where}#{at}",
                model=str(name),
                **_layout_kw(layout, {}),
                input_len=max(stats("prompt_token_count").mean or 1.0, 1.0),
                output_len=max(stats("output_token_count").mean or 1.0, 1.0),
                load_kind="concurrency" if streams else "rate" if rate else None,
                load_value=streams or rate,
                requests_per_s=rps,
                output_tokens_per_s=out_tps,
                ttft_s=None if ttft is None else ttft / 1e3,
                tpot_s=None if tpot is None else tpot / 1e3,
                ttft_pct_s=ttft_d.percentiles.seconds(),
                tpot_pct_s=tpot_d.percentiles.seconds(),
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
    data: dict[str, Any], where: str, model: str | None, layout: Layout | None
) -> MeasuredPoint:
    d = _as(_AiperfExport, data, where)
    metrics = d.records if d.records is not None else data
    at = "records." if d.records is not None else ""

    def metric(name: str) -> _AiperfMetric:
        return _as(_AiperfMetric, metrics.get(name), where, f"{at}{name}")

    names = d.input_config.endpoint.model_names
    name = model or (names[0] if names else None)
    if not name:
        raise SpecError(f"{where}: names no model", "pass --calibration-model")
    conc, rate = d.input_config.loadgen.concurrency, d.input_config.loadgen.request_rate
    itl, ttft = metric("inter_token_latency"), metric("time_to_first_token")
    return _point(
        where,
        model=str(name),
        **_layout_kw(layout, {}),
        input_len=max(metric("input_sequence_length").avg or 1.0, 1.0),
        output_len=max(metric("output_sequence_length").avg or 1.0, 1.0),
        load_kind="concurrency" if conc else "rate" if rate else None,
        load_value=conc or rate,
        requests_per_s=metric("request_throughput").avg,
        output_tokens_per_s=metric("output_token_throughput").avg,
        ttft_s=None if ttft.p50 is None else ttft.p50 / 1e3,
        tpot_s=None if itl.avg is None else itl.avg / 1e3,
        ttft_pct_s=ttft.seconds(),
        tpot_pct_s=itl.seconds(),
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
        points = read_points(path, gpu=gpu)
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
