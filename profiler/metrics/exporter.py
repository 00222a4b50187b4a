"""Getting metrics out: a live HTTP endpoint, or the batch-job paths.

- ``serve``: ``/metrics`` over HTTP from a daemon thread (``infprof run --metrics-port``,
  ``infprof exporter``), bound to 127.0.0.1 unless told otherwise. Port 0 picks a free port;
  the handle reports it. Same WSGI server as prometheus_client's ``start_http_server``, with
  the caching renderer of ``profiler.metrics.exposition`` (text format 0.0.4 only: no
  OpenMetrics negotiation, no gzip; Prometheus accepts both).
- Batch path (a run is a batch job; prometheus.io/docs/practices/pushing):
  ``write_textfile`` writes the final metrics atomically for node-exporter's textfile
  collector (the file must end in ``.prom``); ``push`` sends them once to a Pushgateway.
  Prefer the textfile: the Pushgateway never forgets a series and hides the job's ``up``.
"""

from __future__ import annotations

import logging
import socket
import threading
import urllib.error
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, push_to_gateway, write_to_textfile

from profiler.errors import EndpointError, SpecError, StorageError
from profiler.metrics.exposition import CONTENT_TYPE, Renderer

log = logging.getLogger(__name__)


@dataclass
class ExporterHandle:
    """A running ``/metrics`` endpoint; ``close()`` stops it (idempotent)."""

    host: str
    port: int
    _server: Any = field(repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ExporterHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a stuck scraper never blocks shutdown


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return None


def metrics_app(registry: CollectorRegistry) -> Callable[..., list[bytes]]:
    """WSGI app: ``GET`` any path -> the registry in text format 0.0.4, rendered by
    ``exposition.Renderer`` (byte-identical to prometheus_client's, cheaper per scrape)."""
    renderer = Renderer(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "OPTIONS":
            start_response("200 OK", [("Allow", "OPTIONS,GET")])
            return [b""]
        if method != "GET":
            start_response("405 Method Not Allowed", [("Allow", "OPTIONS,GET")])
            return [f"# HTTP 405: {method}; use OPTIONS or GET\n".encode()]
        if environ.get("PATH_INFO") == "/favicon.ico":
            start_response("200 OK", [])
            return [b""]
        body = renderer.render()
        start_response(
            "200 OK", [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))]
        )
        return [body]

    return app


def serve(registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0) -> ExporterHandle:
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread (a thread per
    scrape)."""
    if not 0 <= port <= 65535:
        raise SpecError(
            f"metrics port {port} is out of range",
            "use a port between 1 and 65535 (0 picks a free one)",
        )
    server_cls = _IPv6Server if ":" in host else _Server
    try:
        server = make_server(
            host, port, metrics_app(registry), server_class=server_cls, handler_class=_QuietHandler
        )
    except OSError as e:
        raise SpecError(
            f"cannot listen on {host}:{port} for /metrics: {e.strerror or e}",
            "choose another port (0 picks a free one) or stop whatever holds it",
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="infprof-metrics-http", daemon=True)
    thread.start()
    return ExporterHandle(host=host, port=int(server.server_port), _server=server, _thread=thread)


def write_textfile(path: str | Path, registry: CollectorRegistry) -> Path:
    """Write the registry's metrics to ``path`` atomically (temporary file + rename in the same
    directory), for node-exporter's ``--collector.textfile.directory``."""
    p = Path(path)
    if p.suffix != ".prom":
        log.warning(
            "textfile %s does not end in .prom; node-exporter's textfile collector reads only *.prom",
            p,
        )
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(p), registry)
    except OSError as e:
        raise StorageError(
            f"cannot write the metrics textfile {p}: {e.strerror or e}",
            "check the directory exists and is writable",
        ) from None
    return p


def push(
    url: str,
    job: str,
    registry: CollectorRegistry,
    grouping_key: Mapping[str, str] | None = None,
    *,
    timeout_s: float = 10.0,
) -> None:
    """Push the registry once to a Pushgateway at ``url`` (``http://host:9091`` or
    ``host:9091``) under ``job`` and ``grouping_key`` (e.g. ``{"run_id": ...}``), replacing
    that group (HTTP PUT)."""
    try:
        push_to_gateway(
            url,
            job=job,
            registry=registry,
            grouping_key=dict(grouping_key or {}),
            timeout=timeout_s,
        )
    except urllib.error.HTTPError as e:
        raise EndpointError(
            f"Pushgateway {url} refused the metrics: HTTP {e.code} {e.reason}",
            "check the URL points at a Pushgateway (default port 9091) and its logs",
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise EndpointError(
            f"cannot push metrics to Pushgateway {url}: {reason}",
            "check the Pushgateway is running and reachable (e.g. --pushgateway http://HOST:9091)",
        ) from None
