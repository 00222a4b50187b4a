"""vLLM server metrics scraped from ``/metrics`` (source ``vllm``, device ``""``).

Parsed with ``prometheus_client.parser.text_string_to_metric_families``. Series are summed
across label sets (``engine`` for data-parallel engines, ``finished_reason``, ``model_name``);
the KV-cache usage is averaged across engines instead, since it is a per-engine fraction.
V0 names that older servers still emit are used when the V1 name is absent
(``gpu_cache_usage_perc``, ``time_per_output_token_seconds``, ``gpu_prefix_cache_*``).
Histograms give their mean so far (``_sum / _count``).

The scrape is blocking (urllib) with a short timeout: it runs in a telemetry thread of its own.
A failed scrape yields one ``up`` = 0 sample with the error, never an exception.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from profiler.telemetry.sample import Sample

SOURCE = "vllm"

# metric -> exposed sample names, newest first (the first one present wins)
GAUGES: dict[str, tuple[str, ...]] = {
    "num_requests_running": ("vllm:num_requests_running",),
    "num_requests_waiting": ("vllm:num_requests_waiting",),
}
COUNTERS: dict[str, tuple[str, ...]] = {
    "num_preemptions_total": ("vllm:num_preemptions_total",),
    "prompt_tokens_total": ("vllm:prompt_tokens_total",),
    "generation_tokens_total": ("vllm:generation_tokens_total",),
    "prefix_cache_queries_total": (
        "vllm:prefix_cache_queries_total",
        "vllm:gpu_prefix_cache_queries_total",
    ),
    "prefix_cache_hits_total": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
    "request_success_total": ("vllm:request_success_total",),
}
HISTOGRAM_MEANS: dict[str, tuple[str, ...]] = {
    "ttft_seconds_mean": ("vllm:time_to_first_token_seconds",),
    "itl_seconds_mean": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    "e2e_seconds_mean": ("vllm:e2e_request_latency_seconds",),
    "queue_seconds_mean": ("vllm:request_queue_time_seconds",),
}
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


def parse_metrics(text: str) -> dict[str, float]:
    """Exposition text -> our metric name -> value (absent metrics left out)."""
    sums: dict[str, float] = {}
    kv: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in KV_USAGE:
                kv.setdefault(s.name, []).append(float(s.value))
            else:
                sums[s.name] = sums.get(s.name, 0.0) + float(s.value)
    out: dict[str, float] = {}
    for metric, names in (GAUGES | COUNTERS).items():
        name = next((n for n in names if n in sums), None)
        if name is not None:
            out[metric] = sums[name]
    for metric, bases in HISTOGRAM_MEANS.items():
        base = next((b for b in bases if f"{b}_count" in sums), None)
        if base is not None and sums[f"{base}_count"] > 0 and f"{base}_sum" in sums:
            out[metric] = sums[f"{base}_sum"] / sums[f"{base}_count"]
    name = next((n for n in KV_USAGE if n in kv), None)
    if name is not None:
        usage = sum(kv[name]) / len(kv[name])
        # every vLLM version documents 0-1 ("1 means 100 percent"); a value above 1 can only
        # be a percentage from a server that departs from that
        out["kv_cache_usage_ratio"] = usage / 100.0 if usage > 1.0 else usage
    return out


def fetch_text(url: str, timeout_s: float, headers: dict[str, str] | None = None) -> str:
    """GET ``url`` (blocking, bounded by ``timeout_s``) and return the body as text."""
    req = urllib.request.Request(
        url, headers={"Accept": "text/plain; version=0.0.4", **(headers or {})}
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - the user's endpoint
        body: bytes = resp.read()
    return body.decode("utf-8", errors="replace")


class VllmMetricsSampler:
    source = SOURCE

    def __init__(
        self,
        metrics_url: str,
        timeout_s: float = 2.0,
        headers: dict[str, str] | None = None,
        fetch: Callable[[str, float, dict[str, str] | None], str] = fetch_text,
    ) -> None:
        self.metrics_url = metrics_url
        self.timeout_s = timeout_s
        self._headers = headers  # e.g. {"Authorization": "Bearer ..."} for a guarded endpoint
        self._fetch = fetch

    def sample(self, t_s: float) -> list[Sample]:
        try:
            text = self._fetch(self.metrics_url, self.timeout_s, self._headers)
            values = parse_metrics(text)
        except (
            Exception
        ) as e:  # unreachable, HTTP error, timeout, unparsable: a sample, not a raise
            return [Sample(t_s, SOURCE, "", "up", 0.0, f"{self.metrics_url}: {_reason(e)}")]
        out = [Sample(t_s, SOURCE, "", m, v) for m, v in values.items()]
        out.append(Sample(t_s, SOURCE, "", "up", 1.0))
        return out

    def close(self) -> None:
        return None


def _reason(e: Exception) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return f"{type(e).__name__}: {e}"


def metrics_url(base_url: str) -> str:
    """``http://host:port[/v1]`` -> ``http://host:port/metrics``."""
    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return f"{base}/metrics"
