"""Every node of a Ray cluster sampled during a run (``infprof run --executor ray``): one
sampler actor per alive node runs the local samplers there (NVML for its GPUs, psutil for its
host) on that node's clock shifted onto the driver's run clock by a measured offset
(``profiler.clock.measure_offset``), and the driver drains them into the run's sample journal.

Samples are stored in the shape ``profiler.metrics.prom_query`` gives an exporter's series,
with source ``ray``: a GPU field as metric ``gpu_<field>`` on device ``"<node>/<gpu>"``, a host
field as ``host_<field>`` on ``"<node>"`` or ``"<node>/<device>"``. So the summary's ``nodes``
section (``profiler.analysis.node_summary``) reads them as it reads ``--prometheus-url``'s.
``<node>`` is the host name, with the start of the Ray node id appended where two nodes share
a host name (several nodes on one machine).

Importable without Ray and without pydantic; Ray is imported when samplers start.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from profiler.clock import RunClock, measure_offset
from profiler.telemetry.sample import Sample
from profiler.ticker import Ticker

log = logging.getLogger(__name__)

SOURCE = "ray"
DRAIN_INTERVAL_S = 1.0
OFFSET_PROBES = 8


def as_node_sample(node: str, s: Sample) -> Sample | None:
    """A local sampler's sample as a node series (None for a source with no node shape)."""
    if s.source == "nvml":
        return Sample(s.t_s, SOURCE, f"{node}/{s.device}", f"gpu_{s.metric}", s.value, s.error)
    if s.source == "host":
        device = f"{node}/{s.device}" if s.device else node
        return Sample(s.t_s, SOURCE, device, f"host_{s.metric}", s.value, s.error)
    return None


class _NodeSampler:
    """Runs on one node (a Ray actor): samples its GPUs and host, buffers until drained."""

    def __init__(self, node: str, interval_s: float) -> None:
        self.node = node
        self.interval_s = interval_s
        self._buf: list[Sample] = []
        self._lock = threading.Lock()
        self._rec: Any = None

    def now(self) -> float:
        return time.perf_counter()

    def start(self, run_base_s: float, wall_start: float) -> dict[str, Any]:
        """Sample on the driver's run clock, which starts at ``run_base_s`` on this node's."""
        from profiler.telemetry.host import HostSampler
        from profiler.telemetry.nvml_sampler import NvmlSampler
        from profiler.telemetry.recorder import TelemetryRecorder

        samplers: list[Any] = [HostSampler(per_core=False)]
        nv = NvmlSampler(interval_s=self.interval_s)
        state = nv.state
        if nv.available:
            samplers.insert(0, nv)
        else:
            nv.close()
        clock = RunClock(base=run_base_s, wall_start=wall_start)
        self._rec = TelemetryRecorder(samplers, self.interval_s, clock, sink=self._put).start()
        return {"nvml": state}

    def _put(self, batch: list[Sample]) -> None:
        out = [x for x in (as_node_sample(self.node, s) for s in batch) if x is not None]
        with self._lock:
            self._buf.extend(out)

    def drain(self) -> list[Sample]:
        with self._lock:
            out, self._buf = self._buf, []
        return out

    def stop(self) -> list[Sample]:
        if self._rec is not None:
            self._rec.stop()
        return self.drain()


@functools.lru_cache(maxsize=1)
def _actor_class() -> Any:
    import ray

    return ray.remote(num_cpus=0, max_restarts=0)(_NodeSampler)


def node_names(nodes: list[Any]) -> list[str]:
    """One name per node: its host name, made unique by its node id where hosts repeat."""
    counts = Counter(n.name for n in nodes)
    return [n.name if counts[n.name] == 1 else f"{n.name}-{n.node_id[:8]}" for n in nodes]


class NodeSamplers:
    """The driver's side: drains every node's sampler into the run's sample journal."""

    def __init__(self, ray: Any, actors: list[tuple[str, Any]], journal: Any) -> None:
        self.ray, self.actors, self.journal = ray, actors, journal
        self._ticker = Ticker(lambda: self._collect("drain"), DRAIN_INTERVAL_S, "infprof-ray-nodes")

    def start(self) -> NodeSamplers:
        self._ticker.start()
        return self

    def _collect(self, method: str) -> None:
        refs = [(name, getattr(a, method).remote()) for name, a in self.actors]
        for name, ref in refs:
            try:
                batch = self.ray.get(ref, timeout=30)
            except Exception as e:  # a node lost mid-run: its samples so far are kept
                log.warning("node sampler on %s: %s", name, str(e).splitlines()[0] if str(e) else e)
                continue
            try:
                self.journal.extend(s._asdict() for s in batch)
            except Exception as e:  # the journal's own error ends the run elsewhere
                log.warning("cannot journal node samples: %s", e)

    def stop(self) -> None:
        self._ticker.stop(timeout_s=30)
        self._collect("stop")
        for _, a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # already gone with its node
                pass


def _remote_now(ray: Any, actor: Any) -> Callable[[], float]:
    return lambda: float(ray.get(actor.now.remote()))


def start_node_samplers(spec: Any, clock: RunClock, journal: Any, manifest: Any) -> NodeSamplers:
    """A sampler actor on every alive node of the cluster at ``spec.ray_address``; the
    manifest's ``ray`` section (``store.schema.Manifest.record_ray``) names the nodes, their
    GPUs and clock offsets."""
    from profiler.cluster import alive_nodes, connect, on_node

    ray = connect(spec.ray_address)
    nodes = alive_nodes(ray)
    names = node_names(nodes)
    cls = _actor_class()
    interval = float(spec.sample_interval_s)
    actors = [
        (name, cls.options(scheduling_strategy=on_node(n.node_id)).remote(name, interval))
        for name, n in zip(names, nodes, strict=True)
    ]
    entries = []
    for (name, actor), n in zip(actors, nodes, strict=True):
        # the node's clock minus the driver's (perf_counter, the run clock's source)
        off, unc = measure_offset(_remote_now(ray, actor), time.perf_counter, OFFSET_PROBES)
        state = ray.get(actor.start.remote(off + clock.base, clock.wall_start), timeout=120)
        entries.append(
            {
                "name": name,
                "node_id": n.node_id,
                "node_ip": n.ip,
                "gpus": n.gpus,
                "cpus": n.cpus,
                "nvml": state.get("nvml"),
                "clock_offset_s": off,
                "clock_uncertainty_s": unc,
            }
        )
    manifest.record_ray(spec.ray_address, entries)
    return NodeSamplers(ray, actors, journal).start()
