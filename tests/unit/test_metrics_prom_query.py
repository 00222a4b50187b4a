"""pull_window against a loopback stand-in for Prometheus' HTTP API (canned query_range)."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from profiler.errors import EndpointError, SpecError
from profiler.metrics.prom_query import MAX_POINTS, pull_window, series_identity


class _Prom(http.server.BaseHTTPRequestHandler):
    queries: list[dict[str, str]] = []
    reply: Any = None
    status = 200

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        q = {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}
        type(self).queries.append(q)
        reply = type(self).reply(q) if callable(type(self).reply) else type(self).reply
        data = json.dumps(reply).encode()
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def prom() -> Iterator[tuple[str, type[_Prom]]]:
    handler = type("H", (_Prom,), {"queries": [], "reply": None, "status": 200})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


def _matrix(*series: tuple[dict[str, str], list[tuple[float, str]]]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [{"metric": m, "values": [[t, v] for t, v in vals]} for m, vals in series],
        },
    }


GPU = {
    "__name__": "infprof_gpu_power_watts",
    "gpu": "1",
    "hostname": "host-b",
    "instance": "10.0.0.2:9400",
    "job": "infprof-exporter",
    "uuid": "GPU-x",
    "gpu_model": "H100",
}
VLLM = {
    "__name__": "vllm:request_success_total",
    "instance": "10.0.0.9:8000",
    "job": "vllm",
    "engine": "0",
    "model_name": "m",
    "finished_reason": "stop",
}


def test_points_become_samples_on_the_run_clock(prom: tuple[str, type[_Prom]]) -> None:
    url, h = prom
    h.reply = lambda q: (
        _matrix((GPU, [(1000.0, "300"), (1001.0, "NaN")]))
        if "gpu" in q["query"]
        else _matrix((VLLM, [(1000.5, "7")]))
        if "vllm" in q["query"]
        else _matrix()
    )
    samples = pull_window(url, 1000.0, 1001.0, 1.0, clock_wall_start=990.0)
    assert [(s.t_s, s.source, s.device, s.metric, s.value) for s in samples] == [
        (10.0, "prometheus", "host-b/1", "gpu_power_watts", 300.0),
        (
            10.5,
            "prometheus",
            "10.0.0.9:8000/0/finished_reason=stop",
            "vllm:request_success_total",
            7.0,
        ),
        (11.0, "prometheus", "host-b/1", "gpu_power_watts", None),
    ]
    assert len(h.queries) == 3  # gpu, host, vllm selectors
    assert h.queries[0]["start"] == "1000.000" and h.queries[0]["step"] == "1"
    assert "_bucket" in h.queries[2]["query"]  # vLLM buckets excluded


def test_long_windows_are_fetched_in_chunks_and_deduplicated(prom: tuple[str, type[_Prom]]) -> None:
    url, h = prom
    h.reply = lambda q: _matrix((GPU, [(float(q["start"]), "1"), (float(q["end"]), "2")]))
    end = 2.5 * MAX_POINTS
    samples = pull_window(url, 0.0, end, 1.0, 0.0, selectors=['{__name__=~"infprof_gpu_.+"}'])
    assert len(h.queries) == 3
    starts = [float(q["start"]) for q in h.queries]
    ends = [float(q["end"]) for q in h.queries]
    assert starts[0] == 0 and ends[-1] == end
    assert all(e - s <= MAX_POINTS for s, e in zip(starts, ends, strict=True))
    assert len({(s.t_s, s.device, s.metric) for s in samples}) == len(samples)


def test_duplicate_scrapes_of_one_gpu_collapse(prom: tuple[str, type[_Prom]]) -> None:
    url, h = prom
    from_run = {
        **GPU,
        "job": "infprof-run",
        "instance": "127.0.0.1:9464",
        "run_id": "r1",
        "model": "m",
    }
    h.reply = _matrix((GPU, [(5.0, "1")]), (from_run, [(5.0, "1")]))
    assert len(pull_window(url, 5.0, 5.0, 1.0, 0.0, selectors=["x"])) == 1


def test_series_identity() -> None:
    assert series_identity(
        {"__name__": "infprof_host_cpu_utilization_ratio", "hostname": "a", "instance": "i"}
    ) == ("host_cpu_utilization_ratio", "a")
    assert series_identity(
        {"__name__": "infprof_host_network_rx_bytes_total", "hostname": "a", "device": "eth0"}
    ) == ("host_network_rx_bytes_total", "a/eth0")
    assert series_identity(
        {
            "__name__": "infprof_gpu_nvlink_tx_bytes_total",
            "instance": "n:9400",
            "gpu": "3",
            "link": "2",
        }
    ) == ("gpu_nvlink_tx_bytes_total", "n:9400/3/link=2")
    assert series_identity(
        {"__name__": "vllm:kv_cache_usage_perc", "instance": "v:8000", "model_name": "m"}
    ) == ("vllm:kv_cache_usage_perc", "v:8000")


def test_errors_say_what_to_fix(prom: tuple[str, type[_Prom]]) -> None:
    url, h = prom
    h.status, h.reply = (
        400,
        {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"},
    )
    with pytest.raises(EndpointError) as e:
        pull_window(url, 0, 10, 1, 0)
    assert "parse error" in e.value.message
    h.status, h.reply = 200, {"status": "success", "data": {"resultType": "vector", "result": []}}
    with pytest.raises(EndpointError):
        pull_window(url, 0, 10, 1, 0)
    with pytest.raises(EndpointError) as e:
        pull_window("127.0.0.1:1", 0, 10, 1, 0, timeout_s=2)
    assert "--prometheus-url" in (e.value.fix or "")
    with pytest.raises(SpecError):
        pull_window(url, 0, 10, 0, 0)
    with pytest.raises(SpecError):
        pull_window(url, 10, 0, 1, 0)
