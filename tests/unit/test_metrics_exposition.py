"""The endpoint's renderer writes exactly what prometheus_client's generate_latest writes."""

from __future__ import annotations

import math

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    Summary,
    generate_latest,
)
from prometheus_client.metrics_core import GaugeMetricFamily

from profiler.metrics.collector import GpuIdentity, TelemetryCollector
from profiler.metrics.dcgm import DcgmCollector
from profiler.metrics.exposition import Renderer, go_float, render
from profiler.metrics.run_metrics import RunMetrics
from profiler.spec import SloSpec
from profiler.store.record import RequestRecord
from profiler.telemetry.sample import Sample
from tests.fakes.nvml_exporter_fake import every_metric_latest


def _full_registry() -> CollectorRegistry:
    snap = every_metric_latest(3)
    gpus = {
        "0": GpuIdentity("GPU-0", "NVIDIA H100", "0000:18:00.0"),
        "1": GpuIdentity("GPU-1", 'odd "model"\\name\n'),
    }
    reg = CollectorRegistry(auto_describe=False)
    reg.register(
        TelemetryCollector(lambda: snap, {"hostname": "n", "run_id": "r", "model": "m"}, gpus=gpus)
    )
    reg.register(DcgmCollector(lambda: snap, "n", gpus=gpus))
    m = RunMetrics(
        reg, run_id="r", workload="w", model="m", hostname="n", slo=SloSpec.parse("ttft=1")
    )
    m.on_target_rate(3.0)
    m.on_send()
    m.on_record(
        RequestRecord(
            id=1,
            workload="w",
            scenario="s",
            intended_start_s=0,
            send_s=0.001,
            first_token_s=0.2,
            last_token_s=0.4,
            end_s=0.4,
            prompt_tokens=7,
            output_tokens=3,
            chunk_times_s=[0.2, 0.3, 0.4],
            chunk_tokens=[1, 1, 1],
        )
    )
    return reg


def test_every_collector_renders_identically() -> None:
    reg = _full_registry()
    r = Renderer(reg)
    assert r.render() == generate_latest(reg)
    assert r.render() == generate_latest(reg)  # again, from the caches


def test_library_metric_types_and_odd_values_render_identically() -> None:
    reg = CollectorRegistry()
    Counter("c", "a counter\nwith \\ newline", ["a"], registry=reg).labels(a='x"y').inc(2)
    Gauge("g", "gauge", registry=reg).set(math.nan)
    Gauge("g_inf", "gauge", ["b"], registry=reg).labels(b="").set(-math.inf)
    Gauge("big", "gauge", registry=reg).set(123456789.0)
    Gauge("tiny", "gauge", registry=reg).set(1e-300)
    Gauge("intlike", "gauge", registry=reg).set(5)
    Histogram("h", "hist", registry=reg, buckets=(0.1, 1e7)).observe(3)
    Summary("s", "summary", registry=reg).observe(1.5)
    Info("i", "info", registry=reg).info({"version": "1"})
    assert render(reg) == generate_latest(reg)


def test_names_outside_the_legacy_set_fall_back_to_the_library() -> None:
    class Odd:
        def collect(self):  # type: ignore[no-untyped-def]
            fam = GaugeMetricFamily("ok_name", "doc", labels=["label.with.dot"])
            fam.add_metric(["v"], 1.0)
            yield fam

    reg = CollectorRegistry()
    reg.register(Odd())  # type: ignore[arg-type]
    assert render(reg) == generate_latest(reg)


@pytest.mark.parametrize(
    "value",
    [
        0.0,
        -0.0,
        1.0,
        0.5,
        1234567.0,
        1e6,
        999999.0,
        1e16,
        1e22,
        -5e9,
        2.5e-7,
        math.inf,
        -math.inf,
        math.nan,
        3,
    ],
)
def test_go_float_matches_the_library(value: float) -> None:
    from prometheus_client.utils import floatToGoString

    assert go_float(value) == floatToGoString(value)


def test_prerendered_families_still_answer_get_sample_value() -> None:
    snap = {("nvml", "0", "power_watts"): Sample(1.0, "nvml", "0", "power_watts", 300.0)}
    reg = CollectorRegistry(auto_describe=False)
    reg.register(TelemetryCollector(lambda: snap, {"hostname": "n"}))
    assert (
        reg.get_sample_value(
            "infprof_gpu_power_watts", {"gpu": "0", "uuid": "", "gpu_model": "", "hostname": "n"}
        )
        == 300.0
    )
