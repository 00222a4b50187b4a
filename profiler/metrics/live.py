"""Prometheus export of one run: request metrics fed by the load driver's hooks plus the
latest telemetry samples, served live (``--metrics-port``) and/or written at the end
(``--textfile``, ``--pushgateway``)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from profiler.serving.endpoint import Endpoint
    from profiler.spec import RunSpec
    from profiler.store.rundir import RunDir
    from profiler.store.schema import Manifest


class LiveExport:
    """Prometheus export of one run: request metrics from the driver's hooks and the latest
    telemetry samples, served live (``--metrics-port``) and/or written at the end."""

    def __init__(
        self,
        spec: RunSpec,
        run_id: str,
        model: str,
        telemetry: list[Any],
        gpus: Any,
        scope: Callable[[], Mapping[str, Any] | None] | None = None,
    ) -> None:
        from prometheus_client import CollectorRegistry

        from profiler.metrics.collector import TelemetryCollector, gpu_identities
        from profiler.metrics.run_metrics import RunMetrics

        self.spec = spec
        self.registry = CollectorRegistry()
        labels = {
            "hostname": socket.gethostname(),
            "run_id": run_id,
            "workload": spec.workload.name,
            "model": model,
        }
        self.metrics = RunMetrics(
            self.registry,
            run_id=run_id,
            workload=spec.workload.name,
            model=model,
            hostname=labels["hostname"],
            slo=spec.slo,
            sessions=spec.workload.has_sessions(),
        )

        def latest() -> dict[Any, Any]:
            merged: dict[Any, Any] = {}
            for rec in telemetry:
                merged.update(rec.latest())
            return merged

        self.registry.register(
            TelemetryCollector(latest, labels, gpus=gpu_identities({"gpus": gpus}))
        )
        if scope is not None:
            self.registry.register(ScopeCollector(scope, labels))
        self.handle: Any = None

    def serve(self) -> str:
        from profiler.metrics.exporter import serve

        assert self.spec.metrics_port is not None
        self.handle = serve(self.registry, host=self.spec.metrics_host, port=self.spec.metrics_port)
        return f"http://{self.spec.metrics_host}:{self.handle.port}/metrics"

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def write_final(self, run_id: str) -> None:
        from profiler.metrics.exporter import push, write_textfile

        if self.spec.textfile is not None:
            write_textfile(self.spec.textfile, self.registry)
        if self.spec.pushgateway:
            push(self.spec.pushgateway, "infprof", self.registry, {"run_id": run_id})


class ScopeCollector:
    """``infprof_run_gpu_info{gpu, uuid, method}`` = 1 for each of the server's GPUs (manifest
    ``gpu_scope``, read on every scrape: a scope decided from the server's processes appears
    at the end of the run). The run's GPU series cover every GPU of the host; joining on this
    keeps the server's: ``... and on(hostname, gpu) infprof_run_gpu_info{run_id="..."}``."""

    NAME = "infprof_run_gpu_info"

    def __init__(self, scope: Callable[[], Mapping[str, Any] | None], labels: Mapping[str, str]):
        self._scope, self._labels = scope, dict(labels)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        keys = [*self._labels, "gpu", "uuid", "method"]
        fam = GaugeMetricFamily(self.NAME, "1 for each GPU the run's server uses", labels=keys)
        scope = self._scope() or {}
        uuids = list(scope.get("uuids") or [])
        for i, gpu in enumerate(scope.get("gpus") or []):
            uuid = uuids[i] if i < len(uuids) and uuids[i] else ""
            fam.add_metric([*self._labels.values(), str(gpu), uuid, str(scope.get("method"))], 1.0)
        yield fam


def start_live(
    spec: RunSpec,
    rd: RunDir,
    endpoint: Endpoint,
    manifest: Manifest,
    stack: ExitStack,
    telemetry: list[Any],
) -> LiveExport | None:
    if spec.metrics_port is None and spec.textfile is None and not spec.pushgateway:
        return None
    live = LiveExport(
        spec,
        rd.path.name,
        endpoint.model,
        telemetry,
        manifest.gpus or [],
        scope=lambda: manifest.gpu_scope,
    )
    if spec.metrics_port is not None:
        manifest.set(metrics_url=live.serve())
        manifest.save(rd.path)
        stack.callback(live.close)
    return live
