"""The per-node exporter behind ``infprof exporter``: NVML and host samplers on a recorder, a
registry with ``TelemetryCollector`` (and ``DcgmCollector`` when asked), served over HTTP.

No load, no run: ``hostname`` is the only static label. When NVML is unavailable the node
still exports host metrics, and ``NodeExporter.nvml_reason`` says why there are no GPUs.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from profiler.clock import RunClock
from profiler.metrics.collector import GpuIdentity, TelemetryCollector, gpu_identities
from profiler.metrics.dcgm import DcgmCollector
from profiler.metrics.exporter import ExporterHandle, serve, write_textfile
from profiler.telemetry.sample import Sampler


@dataclass(frozen=True)
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = 9400
    interval_s: float = 1.0
    dcgm_compatible: bool = False
    dcgm_hostname_label: str = "Hostname"
    hostname: str | None = None
    per_core: bool = False
    textfile: Path | None = None
    gpus: tuple[str, ...] | None = None  # NVML indices or UUIDs to export (None: every GPU)


class NodeExporter:
    """Samplers + recorder + registry (+ HTTP endpoint once ``serve()`` is called)."""

    def __init__(self, cfg: NodeConfig) -> None:
        from profiler.telemetry.host import HostSampler
        from profiler.telemetry.nvml_sampler import NvmlSampler
        from profiler.telemetry.recorder import TelemetryRecorder

        self.cfg = cfg
        self.hostname = cfg.hostname or socket.gethostname()
        indices = None
        if cfg.gpus is not None:  # an unknown GPU is a SpecError naming --gpus
            from profiler.telemetry.gpu_scope import check_here

            indices = check_here(list(cfg.gpus))
        nvml = NvmlSampler(indices, interval_s=cfg.interval_s)
        self.nvml_reason: str | None = None
        samplers: list[Sampler] = [HostSampler(per_core=cfg.per_core)]
        self.gpus: dict[str, GpuIdentity] = {}
        if nvml.available:
            samplers.insert(0, nvml)
            self.gpus = _identities()
            if indices is not None:
                self.gpus = {k: v for k, v in self.gpus.items() if int(k) in indices}
        else:
            self.nvml_reason = str(nvml.state.get("reason") or "NVML unavailable")
            nvml.close()
        self.recorder = TelemetryRecorder(samplers, cfg.interval_s, RunClock(), keep=False)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(
            TelemetryCollector(self.recorder.latest, {"hostname": self.hostname}, gpus=self.gpus)
        )
        if cfg.dcgm_compatible:
            self.registry.register(
                DcgmCollector(
                    self.recorder.latest,
                    self.hostname,
                    gpus=self.gpus,
                    hostname_label=cfg.dcgm_hostname_label,
                )
            )
        self.handle: ExporterHandle | None = None

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    def start(self, *, http: bool = True) -> NodeExporter:
        """Start sampling, then (``http``) the endpoint once the first tick has landed (at
        most two intervals), so the first scrape is never empty."""
        self.recorder.start()
        deadline = time.monotonic() + min(2 * self.cfg.interval_s, 5.0)
        while not self.recorder.latest() and time.monotonic() < deadline:
            time.sleep(0.01)
        if http:
            self.handle = serve(self.registry, self.cfg.host, self.cfg.port)
        return self

    def render(self) -> bytes:
        """The exposition text as a scrape would see it now."""
        return generate_latest(self.registry)

    def write_textfile(self) -> Path | None:
        if self.cfg.textfile is None:
            return None
        return write_textfile(self.cfg.textfile, self.registry)

    def run_until(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set, rewriting the textfile (if any) every interval."""
        while not stop.wait(self.cfg.interval_s):
            self.write_textfile()

    def close(self) -> None:
        """Stop the endpoint, then the samplers (their final tick); idempotent."""
        if self.handle is not None:
            self.handle.close()
        self.recorder.stop()

    def __enter__(self) -> NodeExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _identities() -> dict[str, GpuIdentity]:
    from profiler.telemetry.inventory import collect

    return gpu_identities(collect(smi_topo=lambda: None))


def once(cfg: NodeConfig) -> tuple[bytes, str | None]:
    """Two ticks an interval apart (rates and utilizations need a previous reading), then the
    exposition text and why there are no GPU metrics (None when NVML answered); the textfile
    is written when configured."""
    node = NodeExporter(cfg)
    node.start(http=False)
    threading.Event().wait(cfg.interval_s)
    node.close()  # the final tick is the second reading
    node.write_textfile()
    return node.render(), node.nvml_reason
