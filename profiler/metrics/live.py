"""Prometheus export of one run: request metrics fed by the load driver's hooks plus the
latest telemetry samples, served live (``--metrics-port``) and/or written at the end
(``--textfile``, ``--pushgateway``)."""

from __future__ import annotations

import socket
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from profiler.serving.endpoint import Endpoint
    from profiler.spec import RunSpec
    from profiler.store.rundir import RunDir


class LiveExport:
    """Prometheus export of one run: request metrics from the driver's hooks and the latest
    telemetry samples, served live (``--metrics-port``) and/or written at the end."""

    def __init__(
        self, spec: RunSpec, run_id: str, model: str, telemetry: list[Any], gpus: Any
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
        )

        def latest() -> dict[Any, Any]:
            merged: dict[Any, Any] = {}
            for rec in telemetry:
                merged.update(rec.latest())
            return merged

        self.registry.register(
            TelemetryCollector(latest, labels, gpus=gpu_identities({"gpus": gpus}))
        )
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


def start_live(
    spec: RunSpec,
    rd: RunDir,
    endpoint: Endpoint,
    manifest: dict[str, Any],
    stack: ExitStack,
    telemetry: list[Any],
) -> LiveExport | None:
    if spec.metrics_port is None and spec.textfile is None and not spec.pushgateway:
        return None
    live = LiveExport(spec, rd.path.name, endpoint.model, telemetry, manifest.get("gpus") or [])
    if spec.metrics_port is not None:
        manifest["metrics_url"] = live.serve()
        rd.write_json("manifest.json", manifest)
        stack.callback(live.close)
    return live
