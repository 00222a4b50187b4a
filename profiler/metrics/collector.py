"""A custom Prometheus collector over the latest telemetry samples.

On every scrape ``TelemetryCollector`` takes one snapshot of the recorder's latest samples and
turns each into a series; nothing is stored between scrapes. Names are ``infprof_<family>_<metric>``
where the family follows the sample's source and ``metric`` is the canonical field name from
``profiler.telemetry.fields`` (it already carries its unit, and ``_total`` on counters):

=========  ===============  ======================================================
source     family           labels (plus the static ones: hostname, run_id, ...)
=========  ===============  ======================================================
``nvml``   ``infprof_gpu_``     ``gpu`` (index), ``uuid``, ``gpu_model``; per-link samples
                            (device ``"<gpu>/<link>"``) add ``link``
``host``   ``infprof_host_``    ``device`` (core ``cpu<N>``, interface, ``server``/``client``)
                            when the sample has one
``vllm``   ``infprof_server_``  ``engine`` when the sample has one
=========  ===============  ======================================================

Samples whose value is ``None`` are skipped. Every GPU seen gets ``infprof_gpu_up`` (the
sampler's own ``up`` sample, or 1 when it answered without error); while a GPU is down only
``up`` is exported, so stale readings from before the loss do not linger.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from profiler.telemetry.fields import BY_SOURCE, Kind
from profiler.telemetry.sample import Sample

PREFIX = "infprof_"
FAMILY: dict[str, str] = {"nvml": "gpu", "host": "host", "vllm": "server"}
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_BAD_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_]")

LatestFn = Callable[[], Mapping[tuple[str, str, str], Sample]]


@dataclass(frozen=True)
class GpuIdentity:
    """What a GPU is, for labels: ``uuid``, ``model`` (``gpu_model``), optional PCI bus id."""

    uuid: str = ""
    model: str = ""
    pci_bus_id: str = ""


GpusArg = Mapping[str, GpuIdentity] | Callable[[], Mapping[str, GpuIdentity]] | None


def gpu_identities(inventory: Mapping[str, Any]) -> dict[str, GpuIdentity]:
    """GPU index (as a string) -> identity, from ``profiler.telemetry.nvml.inventory()``'s
    dict (``{"gpus": [{"index", "uuid", "name", "pci_bus_id"}, ...]}``); tolerant of missing
    keys, so an inventory without GPUs gives ``{}``."""
    out: dict[str, GpuIdentity] = {}
    for g in inventory.get("gpus") or []:
        if not isinstance(g, Mapping) or g.get("index") is None:
            continue
        out[str(g["index"])] = GpuIdentity(
            uuid=str(g.get("uuid") or ""),
            model=str(g.get("name") or ""),
            pci_bus_id=str(g.get("pci_bus_id") or ""),
        )
    return out


def check_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    """Static labels as a plain dict of strings; empty values dropped; bad names rejected."""
    out: dict[str, str] = {}
    for k, v in (labels or {}).items():
        if not _LABEL_RE.match(k) or k.startswith("__"):
            raise ValueError(f"invalid Prometheus label name: {k!r}")
        if v is not None and str(v) != "":
            out[k] = str(v)
    return out


# Sample metrics whose name would break Prometheus conventions once exported: ``_count``,
# ``_sum`` and ``_bucket`` belong to histograms and summaries (promtool flags them).
RENAMED: dict[tuple[str, str], str] = {("host", "process_count"): "processes"}
_RESERVED_SUFFIXES = ("_count", "_sum", "_bucket", "_created", "_info")


def metric_name(source: str, metric: str) -> str | None:
    """The exported name of a sample metric (``None`` for a source the collector skips).
    Counters keep their ``_total``; the family object strips it (see ``_family``). Names that
    end in a suffix Prometheus reserves get ``_value`` appended, unless ``RENAMED`` says better."""
    fam = FAMILY.get(source)
    if fam is None:
        return None
    name = RENAMED.get((source, metric)) or _BAD_NAME_CHARS.sub("_", metric)
    if name.endswith(_RESERVED_SUFFIXES):
        name += "_value"
    return f"{PREFIX}{fam}_{name}"


def _kinds() -> dict[tuple[str, str], tuple[Kind, str]]:
    return {(src, f.name): (f.kind, f.help) for src, fields in BY_SOURCE.items() for f in fields}


class _Families:
    """Metric families of one scrape, created on first use."""

    def __init__(self, kinds: Mapping[tuple[str, str], tuple[Kind, str]]) -> None:
        self._kinds = kinds
        self._cache: dict[tuple[str, str], tuple[Metric, str]] = {}

    def add(self, source: str, metric: str, labels: dict[str, str], value: float) -> None:
        key = (source, metric)
        entry = self._cache.get(key)
        if entry is None:
            entry = self._cache[key] = self._family(source, metric)
        fam, sample_name = entry
        fam.add_sample(sample_name, labels, value)

    def _family(self, source: str, metric: str) -> tuple[Metric, str]:
        name = metric_name(source, metric)
        assert name is not None
        kind, help_text = self._kinds.get((source, metric), (None, ""))
        if kind is None:
            kind = "counter" if metric.endswith("_total") else "gauge"
        help_text = help_text or f"{source} sample {metric}"
        if kind == "counter":
            base = name.removesuffix("_total")
            return Metric(base, help_text, "counter"), base + "_total"
        return Metric(name, help_text, "gauge"), name

    def __iter__(self) -> Iterator[Metric]:
        """Families sorted by name, so the exposition is stable across scrapes."""
        return iter(sorted((fam for fam, _ in self._cache.values()), key=lambda m: m.name))


class TelemetryCollector(Collector):
    """Exports the latest telemetry samples on each scrape.

    ``latest`` returns ``{(source, device, metric): Sample}`` (``TelemetryRecorder.latest``);
    ``labels`` are added to every series (``hostname``, and ``run_id``/``model``/``workload``
    during a run); ``gpus`` maps a GPU index to its identity (a mapping, or a callable read
    on every scrape). ``sources`` limits which sample sources are exported."""

    def __init__(
        self,
        latest: LatestFn,
        labels: Mapping[str, str] | None = None,
        *,
        gpus: GpusArg = None,
        sources: Iterable[str] = ("nvml", "host", "vllm"),
    ) -> None:
        self._latest = latest
        self._static = check_labels(labels)
        self._gpus = gpus
        self._sources = frozenset(s for s in sources if s in FAMILY)
        self._kinds = _kinds()

    def describe(self) -> Iterable[Metric]:
        return []  # names depend on the samples; nothing to check at registration

    def _gpu_map(self) -> Mapping[str, GpuIdentity]:
        g = self._gpus
        if g is None:
            return {}
        return g() if callable(g) else g

    def collect(self) -> Iterable[Metric]:
        snap = self._latest()
        gpus = self._gpu_map()
        fams = _Families(self._kinds)
        static = self._static
        gpu_labels: dict[str, dict[str, str]] = {}
        up: dict[str, float] = {}  # gpu -> the sampler's own up value
        answered: set[str] = set()  # gpus with at least one good value
        gpu_values: list[tuple[str, str, str, float]] = []  # gpu, link, metric, value

        for (source, device, metric), s in snap.items():
            if source not in self._sources:
                continue
            if source == "nvml":
                gpu, _, link = device.partition("/")
                if gpu not in gpu_labels:
                    ident = gpus.get(gpu) or GpuIdentity()
                    gpu_labels[gpu] = {
                        "gpu": gpu,
                        "uuid": ident.uuid,
                        "gpu_model": ident.model,
                        **static,
                    }
                if metric == "up" and not link:
                    if s.value is not None:
                        up[gpu] = float(s.value)
                    continue
                if s.value is None or (isinstance(s.value, float) and math.isnan(s.value)):
                    continue
                if s.error is None:
                    answered.add(gpu)
                gpu_values.append((gpu, link, metric, float(s.value)))
                continue
            if s.value is None:
                continue
            if source == "host":
                labels = {"device": device, **static} if device else dict(static)
            else:
                labels = {"engine": device, **static} if device else dict(static)
            fams.add(source, metric, labels, float(s.value))

        up_value = {g: up.get(g, 1.0 if g in answered else 0.0) for g in gpu_labels}
        for gpu, link, metric, value in gpu_values:
            if up_value[gpu] < 1.0:
                continue  # the GPU is down: its last readings are stale
            labels = gpu_labels[gpu]
            if link:
                labels = {**labels, "link": link}
            fams.add("nvml", metric, labels, value)
        for gpu in sorted(gpu_labels, key=_index_key):
            fams.add("nvml", "up", gpu_labels[gpu], up_value[gpu])
        return list(fams)


def _index_key(gpu: str) -> tuple[int, str]:
    return (int(gpu), "") if gpu.isdigit() else (1 << 30, gpu)
