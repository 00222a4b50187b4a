"""A custom Prometheus collector over the latest telemetry samples.

On every scrape ``TelemetryCollector`` takes one snapshot of the recorder's latest samples and
turns each into a series; only the rendered label block of each series is kept between
scrapes. Names are ``infprof_<family>_<metric>`` where the family follows the sample's source
and ``metric`` is the canonical field name from ``profiler.telemetry.fields`` (it already
carries its unit, and ``_total`` on counters):

- source ``nvml`` -> ``infprof_gpu_*``, labels ``gpu`` (index), ``uuid``, ``gpu_model``;
  per-link samples (device ``"<gpu>/<link>"``) add ``link``;
- source ``host`` -> ``infprof_host_*``, label ``device`` (core ``cpu<N>``, interface,
  ``server``/``client``) when the sample has one;
- source ``vllm`` -> ``infprof_server_*``, label ``engine`` when the sample has one;

plus the static labels given (``hostname``, and ``run_id``/``workload``/``model`` in a run).

Samples whose value is ``None`` are skipped. Every GPU seen gets ``infprof_gpu_up`` (the
sampler's own ``up`` sample, or 1 when it answered without error); while a GPU is down only
``up`` is exported, so stale readings from before the loss do not linger.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from profiler.metrics.exposition import Prerendered, go_float, header, series_prefix
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
    """GPU index (as a string) -> identity, from ``profiler.telemetry.inventory.collect()``'s
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


class _Entry(NamedTuple):
    family: tuple[str, str]  # (source, metric)
    sample: str
    labels: dict[str, str]
    prefix: str  # 'name{labels} '
    gpu: str | None  # GPU index for nvml samples
    is_up: bool


_MISSING: Any = object()


class _Spec(NamedTuple):
    family: str  # Metric name (counters without _total)
    sample: str  # exposed sample name
    kind: str
    help: str


class TelemetryCollector(Collector):
    """Exports the latest telemetry samples on each scrape.

    ``latest`` returns ``{(source, device, metric): Sample}`` (``TelemetryRecorder.latest``);
    ``labels`` are added to every series (``hostname``, and ``run_id``/``model``/``workload``
    during a run); ``gpus`` maps a GPU index to its identity (a mapping, or a callable read
    on every scrape). ``sources`` limits which sample sources are exported.

    Families are ``exposition.Prerendered``: the label block of every series is rendered once
    and cached, so a scrape formats only the values (see ``profiler.metrics.exposition``)."""

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
        self._specs: dict[tuple[str, str], _Spec] = {}
        self._labels: dict[tuple[str, str], dict[str, str]] = {}
        self._entries: dict[tuple[str, str, str], _Entry | None] = {}
        self._seen_gpus: Mapping[str, GpuIdentity] | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # names depend on the samples; nothing to check at registration

    def _gpu_map(self) -> Mapping[str, GpuIdentity]:
        g = self._gpus
        if g is None:
            return {}
        return g() if callable(g) else g

    def _spec(self, source: str, metric: str) -> _Spec:
        spec = self._specs.get((source, metric))
        if spec is None:
            name = metric_name(source, metric)
            assert name is not None
            kind, help_text = self._kinds.get((source, metric), (None, ""))
            if kind is None:
                kind = "counter" if metric.endswith("_total") else "gauge"
            help_text = help_text or f"{source} sample {metric}"
            if kind == "counter":
                base = name.removesuffix("_total")
                spec = _Spec(base, base + "_total", "counter", help_text)
            else:
                spec = _Spec(name, name, "gauge", help_text)
            self._specs[(source, metric)] = spec
        return spec

    def _series_labels(
        self, source: str, device: str, gpus: Mapping[str, GpuIdentity]
    ) -> dict[str, str]:
        key = (source, device)
        labels = self._labels.get(key)
        if labels is None:
            static = self._static
            if source == "nvml":
                gpu, _, link = device.partition("/")
                ident = gpus.get(gpu) or GpuIdentity()
                labels = {"gpu": gpu, "uuid": ident.uuid, "gpu_model": ident.model, **static}
                if link:
                    labels["link"] = link
            elif source == "host":
                labels = {"device": device, **static} if device else dict(static)
            else:
                labels = {"engine": device, **static} if device else dict(static)
            self._labels[key] = labels
        return labels

    def _entry(
        self, source: str, device: str, metric: str, gpus: Mapping[str, GpuIdentity]
    ) -> _Entry | None:
        """What a snapshot key becomes, computed once: family, labels, rendered prefix."""
        if source not in self._sources:
            return None
        spec = self._spec(source, metric)
        labels = self._series_labels(source, device, gpus)
        gpu = device.partition("/")[0] if source == "nvml" else None
        is_up = source == "nvml" and metric == "up" and "/" not in device
        return _Entry(
            (source, metric), spec.sample, labels, series_prefix(spec.sample, labels), gpu, is_up
        )

    def collect(self) -> Iterable[Metric]:
        snap = self._latest()
        gpus = self._gpu_map()
        if gpus != self._seen_gpus:  # identities changed: cached label blocks are stale
            self._labels.clear()
            self._entries.clear()
            self._seen_gpus = dict(gpus)
        entries = self._entries
        fams: dict[tuple[str, str], tuple[list[_Entry], list[float]]] = {}
        up: dict[str, float] = {}  # gpu -> the sampler's own up value
        gpus_seen: dict[str, None] = {}
        answered: set[str] = set()  # gpus with at least one good value
        pending: list[tuple[_Entry, float]] = []  # GPU values, kept only if the GPU is up

        for key, s in snap.items():
            e = entries.get(key, _MISSING)
            if e is _MISSING:
                e = entries[key] = self._entry(*key, gpus)
            if e is None:
                continue
            v = s.value
            gpu = e.gpu
            if gpu is None:
                if v is not None:
                    bucket = fams.get(e.family)
                    if bucket is None:
                        bucket = fams[e.family] = ([], [])
                    bucket[0].append(e)
                    bucket[1].append(float(v))
                continue
            gpus_seen[gpu] = None
            if e.is_up:
                if v is not None:
                    up[gpu] = float(v)
                continue
            if v is None or v != v:  # missing or NaN
                continue
            if s.error is None:
                answered.add(gpu)
            pending.append((e, float(v)))

        up_value = {g: up.get(g, 1.0 if g in answered else 0.0) for g in gpus_seen}
        for e, v in pending:
            if up_value[e.gpu] >= 1.0:  # type: ignore[index]  # a down GPU's readings are stale
                bucket = fams.get(e.family)
                if bucket is None:
                    bucket = fams[e.family] = ([], [])
                bucket[0].append(e)
                bucket[1].append(v)
        if gpus_seen:
            ups = fams.setdefault(("nvml", "up"), ([], []))
            for gpu in sorted(gpus_seen, key=_index_key):
                e = entries.get(("nvml", gpu, "up")) or self._entry("nvml", gpu, "up", gpus)
                entries[("nvml", gpu, "up")] = e
                assert e is not None
                ups[0].append(e)
                ups[1].append(up_value[gpu])
        out: list[Metric] = []
        for fkey, (es, vs) in fams.items():
            spec = self._spec(*fkey)
            text = header(spec.family, spec.help, spec.kind) + "".join(
                [f"{e.prefix}{go_float(v)}\n" for e, v in zip(es, vs, strict=True)]
            )
            out.append(Prerendered(spec.family, spec.help, spec.kind, text, _rows(es, vs)))
        out.sort(key=lambda m: m.name)
        return out


def _rows(
    es: list[_Entry], vs: list[float]
) -> Callable[[], list[tuple[str, Mapping[str, str], float]]]:
    return lambda: [(e.sample, e.labels, v) for e, v in zip(es, vs, strict=True)]


def _index_key(gpu: str) -> tuple[int, str]:
    return (int(gpu), "") if gpu.isdigit() else (1 << 30, gpu)
