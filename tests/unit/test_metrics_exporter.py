"""serve / write_textfile / push: the live endpoint and the batch-job paths (loopback only)."""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from profiler.errors import EndpointError, SpecError, StorageError
from profiler.metrics.exporter import push, serve, write_textfile


def _registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("infprof_requests", "requests", ["outcome"], registry=reg).labels(outcome="ok").inc(3)
    return reg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_on_port_zero_reports_the_port_and_closes() -> None:
    with serve(_registry(), "127.0.0.1", 0) as h:
        assert h.port > 0 and h.url == f"http://127.0.0.1:{h.port}/metrics"
        body = urllib.request.urlopen(h.url, timeout=5).read().decode()
        fams = {f.name: f for f in text_string_to_metric_families(body)}
        assert fams["infprof_requests"].samples[0].value == 3
    h.close()  # idempotent
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", h.port), timeout=1):
        pass


def test_serve_on_a_busy_port_is_a_spec_error() -> None:
    with serve(_registry(), "127.0.0.1", 0) as h:
        with pytest.raises(SpecError) as e:
            serve(_registry(), "127.0.0.1", h.port)
        assert str(h.port) in e.value.message and e.value.fix


def test_serve_rejects_an_impossible_port() -> None:
    with pytest.raises(SpecError):
        serve(_registry(), "127.0.0.1", 70000)


def test_textfile_is_written_atomically_and_parses(tmp_path: Path) -> None:
    path = write_textfile(tmp_path / "sub" / "infprof.prom", _registry())
    assert path.exists()
    assert [p.name for p in path.parent.iterdir()] == ["infprof.prom"]  # no temporary file left
    fams = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    assert fams["infprof_requests"].samples[0].value == 3


def test_textfile_in_an_unwritable_place_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError):
        write_textfile(blocker / "m.prom", _registry())


class _Gateway(http.server.BaseHTTPRequestHandler):
    got: list[tuple[str, str, bytes]] = []
    status = 200

    def do_PUT(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).got.append(("PUT", self.path, body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def gateway() -> Iterator[tuple[str, type[_Gateway]]]:
    handler = type("Handler", (_Gateway,), {"got": [], "status": 200})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


def test_push_puts_the_metrics_under_job_and_grouping_key(
    gateway: tuple[str, type[_Gateway]],
) -> None:
    url, handler = gateway
    push(url, "infprof", _registry(), {"run_id": "r1"})
    method, path, body = handler.got[0]
    assert method == "PUT" and path == "/metrics/job/infprof/run_id/r1"
    assert b"infprof_requests_total" in body


def test_push_refused_is_an_endpoint_error(gateway: tuple[str, type[_Gateway]]) -> None:
    url, handler = gateway
    handler.status = 400
    with pytest.raises(EndpointError) as e:
        push(url, "infprof", _registry())
    assert "400" in e.value.message


def test_push_to_nothing_is_an_endpoint_error() -> None:
    with pytest.raises(EndpointError) as e:
        push(f"http://127.0.0.1:{_free_port()}", "infprof", _registry(), timeout_s=2)
    assert e.value.fix


def test_the_endpoint_serves_text_format_identical_to_prometheus_client() -> None:
    from prometheus_client import Gauge, generate_latest

    reg = _registry()
    Gauge("vllm:num_requests_running", "colons stay colons", registry=reg).set(2)
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    with serve(reg, "127.0.0.1", 0) as h:
        resp = urllib.request.urlopen(
            urllib.request.Request(h.url, headers={"Accept": accept, "Accept-Encoding": "gzip"}),
            timeout=5,
        )
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert resp.read() == generate_latest(reg)
        opts = urllib.request.urlopen(urllib.request.Request(h.url, method="OPTIONS"), timeout=5)
        assert opts.status == 200 and "GET" in opts.headers["Allow"]
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(
                urllib.request.Request(h.url, data=b"x", method="POST"), timeout=5
            )
        assert e.value.code == 405
