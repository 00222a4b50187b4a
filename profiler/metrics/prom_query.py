"""Pull a run's window of GPU, host and server series back from Prometheus (multi-node runs).

``pull_window`` runs range queries (``/api/v1/query_range``) for every node's
``infprof_gpu_*``, ``infprof_host_*`` and ``vllm:*`` series (by default) and turns each point
into a ``Sample`` on the run clock, so a deployment spanning hosts lands in the same
``samples.parquet`` as the local samplers' data.

Mapping of a Prometheus series to a Sample:

- ``t_s`` = point time (Unix seconds) - ``clock_wall_start`` (the run clock's wall anchor).
- ``source`` = ``"prometheus"``.
- ``metric`` = the series name without the ``infprof_`` prefix, so the family stays in the
  name: ``gpu_power_watts``, ``host_cpu_utilization_ratio``, ``server_kv_cache_usage_ratio``;
  vLLM's own series keep their name (``vllm:kv_cache_usage_perc``).
- ``device`` = ``"<node>/<gpu>"`` for GPU series (``<node>`` is the ``hostname`` label, else
  ``instance``), ``"<node>"`` or ``"<node>/<device>"`` for host series, ``"<instance>"`` or
  ``"<instance>/<engine>"`` for vLLM; any other label that tells series apart is appended as
  ``"/<label>=<value>"`` (sorted), e.g. ``vllm:request_success_total`` gives
  ``"10.0.0.5:8000/0/finished_reason=stop"``.
- ``value`` = the point's value; NaN becomes ``None``.

vLLM histogram buckets (``_bucket``) are left out by default: they are many series and the
summary does not read them. Windows longer than Prometheus' 11,000 points per series are
fetched in chunks.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from profiler.errors import EndpointError, SpecError
from profiler.telemetry.sample import Sample

SOURCE = "prometheus"
DEFAULT_SELECTORS: tuple[str, ...] = (
    '{__name__=~"infprof_gpu_.+"}',
    '{__name__=~"infprof_host_.+"}',
    '{__name__=~"vllm:.+", __name__!~".+_bucket"}',
)
MAX_POINTS = 10_000  # Prometheus refuses more than 11,000 points per series in one query
# Labels that are identity, not distinction: never appended to the device.
_IDENTITY = frozenset(
    {
        "__name__",
        "job",
        "instance",
        "hostname",
        "gpu",
        "uuid",
        "gpu_model",
        "device",
        "engine",
        "model_name",
        "run_id",
        "model",
        "workload",
    }
)


def pull_window(
    prometheus_url: str,
    start_wall: float,
    end_wall: float,
    step_s: float,
    clock_wall_start: float,
    selectors: Sequence[str] | None = None,
    *,
    timeout_s: float = 30.0,
    headers: Mapping[str, str] | None = None,
) -> list[Sample]:
    """Samples for ``[start_wall, end_wall]`` (Unix seconds) every ``step_s`` seconds from the
    Prometheus at ``prometheus_url`` (e.g. ``http://prometheus:9090``), sorted by time.
    ``selectors`` replaces the default series selectors (PromQL, one query each)."""
    if step_s <= 0:
        raise SpecError(
            f"Prometheus step {step_s} s must be positive", "use e.g. 1 or the scrape interval"
        )
    if end_wall < start_wall:
        raise SpecError(
            "Prometheus window ends before it starts", "pass start <= end (Unix seconds)"
        )
    base = prometheus_url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        base = "http://" + base
    out: list[Sample] = []
    for sel in selectors or DEFAULT_SELECTORS:
        for lo, hi in _chunks(start_wall, end_wall, step_s):
            result = _query_range(base, sel, lo, hi, step_s, timeout_s, headers or {})
            for series in result:
                out.extend(_to_samples(series, clock_wall_start))
    out.sort(key=lambda s: (s.t_s, s.device, s.metric))
    return _dedupe(out)


def _chunks(start: float, end: float, step: float) -> list[tuple[float, float]]:
    span = MAX_POINTS * step
    chunks: list[tuple[float, float]] = []
    lo = start
    while True:
        hi = min(end, lo + span)
        chunks.append((lo, hi))
        if hi >= end:
            return chunks
        lo = hi + step


def _query_range(
    base: str,
    query: str,
    start: float,
    end: float,
    step: float,
    timeout_s: float,
    headers: Mapping[str, str],
) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query_range"
    body = urllib.parse.urlencode(
        {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
    ).encode()
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            payload = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        detail = _error_detail(e)
        raise EndpointError(
            f"Prometheus at {base} rejected the range query {query!r}: HTTP {e.code} {detail}",
            "check --prometheus-url points at the Prometheus server (not an exporter) and the query",
        ) from None
    except (urllib.error.URLError, OSError) as e:
        raise EndpointError(
            f"cannot reach Prometheus at {base}: {getattr(e, 'reason', None) or e}",
            "check --prometheus-url (e.g. http://prometheus:9090) and that it is reachable from here",
        ) from None
    except ValueError:
        raise EndpointError(
            f"Prometheus at {base} answered with something that is not JSON",
            "check --prometheus-url",
        ) from None
    if not isinstance(payload, dict) or payload.get("status") != "success":
        err = payload.get("error") if isinstance(payload, dict) else None
        raise EndpointError(
            f"Prometheus at {base} failed the range query {query!r}: {err}",
            "check the query and the server's logs",
        )
    data = payload.get("data") or {}
    if data.get("resultType") != "matrix":
        raise EndpointError(
            f"Prometheus at {base} returned {data.get('resultType')!r} for a range query",
            "check --prometheus-url",
        )
    result = data.get("result") or []
    return [s for s in result if isinstance(s, dict)]


def _error_detail(e: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(e.read())
        return str(payload.get("error") or e.reason)
    except Exception:
        return str(e.reason)


def series_identity(labels: Mapping[str, str]) -> tuple[str, str]:
    """``(metric, device)`` of a series, as documented in the module docstring."""
    name = labels.get("__name__", "")
    node = labels.get("hostname") or labels.get("instance") or ""
    if name.startswith("infprof_gpu_"):
        parts = [node, labels.get("gpu", "")]
    elif name.startswith("infprof_host_"):
        parts = [node] + ([labels["device"]] if labels.get("device") else [])
    else:
        parts = [labels.get("instance") or node] + (
            [labels["engine"]] if labels.get("engine") else []
        )
    extra = sorted((k, v) for k, v in labels.items() if k not in _IDENTITY and v != "")
    parts.extend(f"{k}={v}" for k, v in extra)
    metric = name.removeprefix("infprof_")
    return metric, "/".join(parts)


def _to_samples(series: Mapping[str, Any], clock_wall_start: float) -> list[Sample]:
    metric, device = series_identity(series.get("metric") or {})
    out: list[Sample] = []
    for point in series.get("values") or []:
        ts, raw = point
        v = float(raw)
        out.append(
            Sample(
                float(ts) - clock_wall_start, SOURCE, device, metric, None if math.isnan(v) else v
            )
        )
    return out


def _dedupe(samples: list[Sample]) -> list[Sample]:
    """Drop repeated (t, device, metric) points (chunk edges; overlapping selectors)."""
    seen: set[tuple[float, str, str]] = set()
    out: list[Sample] = []
    for s in samples:
        key = (round(s.t_s, 6), s.device, s.metric)
        if key in seen:
            continue
        seen.add(key)
        out.append(s)
    return out
