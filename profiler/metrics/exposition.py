"""A faster ``generate_latest`` for the live ``/metrics`` endpoint, byte-identical to it.

prometheus_client's text renderer validates and escapes every label of every sample on every
scrape (about 10-25 us per series on a small cloud core). A node with 8 GPUs and every metric,
plus a run's latency histograms, is 600-900 series, so a scrape would cost 10-20 ms of CPU on
the machine being measured. The series of one exporter barely change between scrapes: the
same label sets come back every time with new values. ``render`` therefore caches the rendered
label block of each label set (and the HELP/TYPE header of each family) and only formats the
values. Output is the Prometheus text format 0.0.4 exactly as ``generate_latest`` writes it
(tests/unit/test_metrics_exposition.py compares the two byte for byte); a registry with any
name outside the legacy character set is handed to ``generate_latest`` itself.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LEGACY_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LEGACY_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")
_TYPE_MAP = {
    "counter": "counter",
    "gauge": "gauge",
    "histogram": "histogram",
    "summary": "summary",
    "info": "gauge",
    "stateset": "gauge",
    "gaugehistogram": "histogram",
    "unknown": "untyped",
    "untyped": "untyped",
}
MAX_CACHE = 200_000


class _NotLegacy(Exception):
    """A name that needs escaping: let prometheus_client render the registry."""


def go_float(d: float) -> str:
    """prometheus_client's ``floatToGoString``: Go's formatting of a float."""
    d = float(d)
    if d == math.inf:
        return "+Inf"
    if d == -math.inf:
        return "-Inf"
    if d != d:
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _escape_value(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_doc(doc: str) -> str:
    return doc.replace("\\", r"\\").replace("\n", r"\n")


def label_block(labels: Mapping[str, str]) -> str:
    """``{a="1",b="2"}`` as ``generate_latest`` writes it (sorted, escaped); ``""`` if none."""
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_value(v)}"' for k, v in sorted(labels.items())) + "}"


class Prerendered(Metric):
    """A family that carries its own exposition text (``text``: HELP, TYPE and sample lines)
    for ``Renderer``; ``samples`` are built on demand (from ``rows()``: sample name, labels,
    value) for every other consumer (``generate_latest``, ``write_to_textfile``,
    ``get_sample_value``)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        typ: str,
        text: str,
        rows: Callable[[], Iterable[tuple[str, Mapping[str, str], float]]],
    ) -> None:
        self._rows = rows
        super().__init__(name, documentation, typ)
        self.text = text

    @property  # type: ignore[override]
    def samples(self) -> list[Sample]:
        return [Sample(n, dict(labels), v) for n, labels, v in self._rows()]

    @samples.setter
    def samples(self, value: list[Sample]) -> None:  # Metric.__init__ assigns []
        if value:
            raise AttributeError("Prerendered samples are fixed")


def header(name: str, doc: str, typ: str) -> str:
    """HELP and TYPE lines of a family named ``name`` (counters: without ``_total``)."""
    shown = name + "_total" if typ == "counter" else name
    return f"# HELP {shown} {_escape_doc(doc)}\n# TYPE {shown} {_TYPE_MAP.get(typ, typ)}\n"


class Family:
    """Builds one ``Prerendered`` family. ``prefix`` is the cached ``name{labels} `` of the
    series (see ``series_prefix``); only the value is formatted per scrape."""

    __slots__ = ("name", "doc", "type", "rows", "parts")

    def __init__(self, name: str, doc: str, typ: str) -> None:
        self.name, self.doc, self.type = name, doc, typ
        self.rows: list[tuple[str, Mapping[str, str], float]] = []
        self.parts: list[str] = []

    def add(self, sample_name: str, labels: Mapping[str, str], value: float, prefix: str) -> None:
        self.rows.append((sample_name, labels, value))
        self.parts.append(f"{prefix}{go_float(value)}\n")

    def metric(self) -> Prerendered:
        rows = self.rows
        text = header(self.name, self.doc, self.type) + "".join(self.parts)
        return Prerendered(self.name, self.doc, self.type, text, lambda: rows)


def series_prefix(sample_name: str, labels: Mapping[str, str]) -> str:
    return f"{sample_name}{label_block(labels)} "


class Renderer:
    """Renders a registry; keeps the label and header caches between scrapes (thread-safe)."""

    def __init__(self, registry: Collector) -> None:
        self.registry = registry
        self._labels: dict[tuple[tuple[str, str], ...], str] = {}
        self._headers: dict[tuple[str, str, str], str] = {}
        self._names: set[str] = set()
        self._lock = threading.Lock()

    def _label_block(self, labels: dict[str, str]) -> str:
        key = tuple(labels.items())
        block = self._labels.get(key)
        if block is None:
            for k in labels:
                if not _LEGACY_LABEL.match(k):
                    raise _NotLegacy(k)
            block = label_block(labels)
            if len(self._labels) >= MAX_CACHE:
                self._labels.clear()
            self._labels[key] = block
        return block

    def _header(self, name: str, doc: str, mtype: str) -> str:
        key = (name, doc, mtype)
        head = self._headers.get(key)
        if head is None:
            if not _LEGACY_METRIC.match(name):
                raise _NotLegacy(name)
            head = f"# HELP {name} {_escape_doc(doc)}\n# TYPE {name} {mtype}\n"
            if len(self._headers) >= MAX_CACHE:
                self._headers.clear()
            self._headers[key] = head
        return head

    def _line(self, s: Any) -> str:
        name = s.name
        if name not in self._names:
            if not _LEGACY_METRIC.match(name):
                raise _NotLegacy(name)
            self._names.add(name)
        ts = "" if s.timestamp is None else f" {int(float(s.timestamp) * 1000):d}"
        return f"{name}{self._label_block(s.labels)} {go_float(s.value)}{ts}\n"

    def render(self) -> bytes:
        try:
            with self._lock:
                return self._render(self.registry.collect())
        except _NotLegacy:
            return generate_latest(self.registry)

    def _render(self, metrics: Iterable[Any]) -> bytes:
        out: list[str] = []
        line = self._line
        for metric in metrics:
            text = getattr(metric, "text", None)
            if text is not None:
                out.append(text)
                continue
            mname, mtype = metric.name, metric.type
            if mtype == "counter":
                mname += "_total"
            elif mtype == "info":
                mname += "_info"
            out.append(self._header(mname, metric.documentation, _TYPE_MAP.get(mtype, mtype)))
            om: dict[str, list[str]] = {}
            base = metric.name
            for s in metric.samples:
                n = s.name
                if n.startswith(base) and n[len(base) :] in _OM_SUFFIXES:
                    om.setdefault(n[len(base) :], []).append(line(s))
                else:
                    out.append(line(s))
            for suffix, lines in sorted(om.items()):
                out.append(self._header(base + suffix, metric.documentation, "gauge"))
                out.extend(lines)
        return "".join(out).encode("utf-8")


def render(registry: Collector) -> bytes:
    """One-off rendering (no cache kept); the endpoint keeps a ``Renderer``."""
    return Renderer(registry).render()
