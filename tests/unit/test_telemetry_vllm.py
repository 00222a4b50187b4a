"""vLLM /metrics parsing (V1 and V0 names) and scraping a loopback HTTP server."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from profiler.telemetry import fields
from profiler.telemetry.vllm_metrics import VllmMetricsSampler, metrics_url, parse_metrics

# Written from vllm/v1/metrics/loggers.py names (see shared/reference/telemetry.md section 3):
# two data-parallel engines, counters exposed with _total, histograms with _sum/_count.
V1_TEXT = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 3.0
vllm:num_requests_running{engine="1",model_name="tiny"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny"} 1.0
vllm:num_requests_waiting{engine="1",model_name="tiny"} 0.0
# HELP vllm:num_requests_waiting_by_reason Waiting requests by reason.
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{engine="0",model_name="tiny",reason="capacity"} 99.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="tiny"} 0.25
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="tiny"} 4.0
vllm:num_preemptions_total{engine="1",model_name="tiny"} 1.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="tiny"} 1000.0
vllm:prompt_tokens_total{engine="1",model_name="tiny"} 500.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="tiny"} 2000.0
vllm:generation_tokens_total{engine="1",model_name="tiny"} 1000.0
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="tiny"} 800.0
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="tiny"} 200.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="tiny"} 7.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="tiny"} 3.0
vllm:request_success_total{engine="1",finished_reason="length",model_name="tiny"} 5.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="tiny"} 5.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} 10.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="tiny"} 10.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="tiny"} 2.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="+Inf",model_name="tiny"} 5.0
vllm:time_to_first_token_seconds_count{engine="1",model_name="tiny"} 5.0
vllm:time_to_first_token_seconds_sum{engine="1",model_name="tiny"} 1.0
# HELP vllm:inter_token_latency_seconds Histogram of inter-token latency in seconds.
# TYPE vllm:inter_token_latency_seconds histogram
vllm:inter_token_latency_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} 100.0
vllm:inter_token_latency_seconds_count{engine="0",model_name="tiny"} 100.0
vllm:inter_token_latency_seconds_sum{engine="0",model_name="tiny"} 2.5
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} 10.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="tiny"} 10.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="tiny"} 15.0
# HELP vllm:request_queue_time_seconds Histogram of time spent in WAITING phase for request.
# TYPE vllm:request_queue_time_seconds histogram
vllm:request_queue_time_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} 0.0
vllm:request_queue_time_seconds_count{engine="0",model_name="tiny"} 0.0
vllm:request_queue_time_seconds_sum{engine="0",model_name="tiny"} 0.0
"""

# An older (V0-era) server: gpu_cache_usage_perc, time_per_output_token_seconds,
# gpu_prefix_cache_* names; one engine, no engine label.
V0_TEXT = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="old"} 4.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="old"} 2.0
# TYPE vllm:num_requests_swapped gauge
vllm:num_requests_swapped{model_name="old"} 0.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="old"} 0.75
# TYPE vllm:cpu_cache_usage_perc gauge
vllm:cpu_cache_usage_perc{model_name="old"} 0.0
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{model_name="old"} 6.0
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{model_name="old"} 10.0
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{model_name="old"} 20.0
# TYPE vllm:gpu_prefix_cache_queries_total counter
vllm:gpu_prefix_cache_queries_total{model_name="old"} 40.0
# TYPE vllm:gpu_prefix_cache_hits_total counter
vllm:gpu_prefix_cache_hits_total{model_name="old"} 10.0
# TYPE vllm:time_per_output_token_seconds histogram
vllm:time_per_output_token_seconds_bucket{le="+Inf",model_name="old"} 4.0
vllm:time_per_output_token_seconds_count{model_name="old"} 4.0
vllm:time_per_output_token_seconds_sum{model_name="old"} 0.2
"""

SERVER_NAMES = {f.name for f in fields.SERVER_FIELDS}


def test_v1_text_sums_engines_and_averages_kv_usage() -> None:
    m = parse_metrics(V1_TEXT)
    assert set(m) <= SERVER_NAMES
    assert m["num_requests_running"] == 5.0
    assert m["num_requests_waiting"] == 1.0  # waiting_by_reason is a different series
    assert m["kv_cache_usage_ratio"] == pytest.approx(0.375)
    assert m["num_preemptions_total"] == 5.0
    assert m["prompt_tokens_total"] == 1500.0 and m["generation_tokens_total"] == 3000.0
    assert m["prefix_cache_queries_total"] == 800.0 and m["prefix_cache_hits_total"] == 200.0
    assert m["request_success_total"] == 15.0  # summed over finished_reason too
    assert m["ttft_seconds_mean"] == pytest.approx(3.0 / 15.0)
    assert m["itl_seconds_mean"] == pytest.approx(0.025)
    assert m["e2e_seconds_mean"] == pytest.approx(1.5)
    assert "queue_seconds_mean" not in m  # no observations yet: no mean, not zero


def test_v0_names_are_the_fallback() -> None:
    m = parse_metrics(V0_TEXT)
    assert m["kv_cache_usage_ratio"] == pytest.approx(0.75)
    assert m["itl_seconds_mean"] == pytest.approx(0.05)
    assert m["prefix_cache_queries_total"] == 40.0 and m["prefix_cache_hits_total"] == 10.0
    assert m["num_preemptions_total"] == 6.0 and m["num_requests_running"] == 4.0
    assert "request_success_total" not in m


def test_percent_kv_usage_from_a_deviant_server_is_scaled() -> None:
    m = parse_metrics(
        '# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc{model_name="x"} 42.0\n'
    )
    assert m["kv_cache_usage_ratio"] == pytest.approx(0.42)


def test_metrics_url() -> None:
    assert metrics_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/metrics"
    assert metrics_url("http://h:1/") == "http://h:1/metrics"


class _Handler(http.server.BaseHTTPRequestHandler):
    body = V1_TEXT
    status = 200
    seen_auth: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).seen_auth.append(self.headers.get("Authorization"))
        data = self.body.encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"seen_auth": []})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/metrics", handler
    finally:
        srv.shutdown()
        srv.server_close()


def test_scrape_loopback_server(server: tuple[str, type[_Handler]]) -> None:
    url, handler = server
    s = VllmMetricsSampler(url, timeout_s=5.0, headers={"Authorization": "Bearer k"})
    out = s.sample(1.5)
    s.close()
    got = {x.metric: x for x in out}
    assert got["up"].value == 1.0 and got["up"].error is None
    assert got["kv_cache_usage_ratio"].value == pytest.approx(0.375)
    assert {x.source for x in out} == {"vllm"} and {x.device for x in out} == {""}
    assert all(x.t_s == 1.5 for x in out)
    assert handler.seen_auth == ["Bearer k"]


def test_http_error_and_garbage_are_samples(server: tuple[str, type[_Handler]]) -> None:
    url, handler = server
    handler.status = 503
    out = VllmMetricsSampler(url, timeout_s=5.0).sample(0.0)
    assert len(out) == 1 and out[0].metric == "up" and out[0].value == 0.0
    assert "HTTP 503" in (out[0].error or "")
    handler.status, handler.body = 200, "vllm:x{unterminated 1\n"
    out = VllmMetricsSampler(url, timeout_s=5.0).sample(0.0)
    assert out[0].metric == "up" and out[0].value == 0.0 and out[0].error


def test_unreachable_endpoint_is_a_sample_not_a_raise() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = VllmMetricsSampler(f"http://127.0.0.1:{port}/metrics", timeout_s=1.0).sample(2.0)
    assert len(out) == 1
    assert out[0].metric == "up" and out[0].value == 0.0 and out[0].t_s == 2.0
    assert "refused" in (out[0].error or "").lower()
