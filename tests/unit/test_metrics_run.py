"""RunMetrics: the driver's hooks update histograms, counters and gauges; thread safety."""

from __future__ import annotations

import shutil
import subprocess
import threading

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from profiler.measures import meets_slo as measures_meets_slo
from profiler.metrics.run_metrics import (
    LATENCY_BUCKETS_S,
    TOKEN_LATENCY_BUCKETS_S,
    RunMetrics,
)
from profiler.spec import SloSpec
from profiler.store.record import RequestRecord
from tests.fakes.synthetic_runs import streamed_record

L = {"run_id": "r1", "workload": "chat", "model": "tiny", "hostname": "client-1"}


def _ok(
    i: int = 0,
    ttft: float = 0.2,
    gaps: tuple[float, ...] = (0.02, 0.04),
    tokens: tuple[int, ...] = (1, 1, 2),
    out: int = 4,
) -> RequestRecord:
    send = 10.0 + i
    times = [send + ttft]
    for g in gaps:
        times.append(times[-1] + g)
    return streamed_record(
        i,
        send,
        times,
        tokens,
        intended_start_s=send - 0.001,
        prompt_tokens=100,
        output_tokens=out,
        workload="chat",
    )


def _failed(i: int, outcome: str = "error") -> RequestRecord:
    return RequestRecord(
        id=i,
        workload="chat",
        scenario="s",
        intended_start_s=1.0,
        send_s=1.5,
        end_s=2.0,
        outcome=outcome,
        error="boom",
    )  # type: ignore[arg-type]


def _v(reg: CollectorRegistry, name: str, **extra: str) -> float | None:
    return reg.get_sample_value(name, {**L, **extra})


def test_a_successful_record_feeds_every_histogram_and_counter() -> None:
    reg = CollectorRegistry()
    m = RunMetrics(reg, **L)
    m.on_send()
    assert _v(reg, "infprof_inflight_requests") == 1
    rec = _ok()
    m.on_record(rec)
    assert _v(reg, "infprof_inflight_requests") == 0
    assert _v(reg, "infprof_requests_sent_total") == 1
    assert _v(reg, "infprof_requests_total", outcome="ok") == 1
    assert (
        _v(reg, "infprof_requests_total", outcome="error") == 0
    )  # every outcome exists from the start
    assert _v(reg, "infprof_output_tokens_total") == 4
    assert _v(reg, "infprof_prompt_tokens_total") == 100
    assert _v(reg, "infprof_request_ttft_seconds_count") == 1
    assert _v(reg, "infprof_request_ttft_seconds_sum") == pytest.approx(0.2)
    assert _v(reg, "infprof_request_ttft_seconds_bucket", le="0.2") == 1
    assert _v(reg, "infprof_request_ttft_seconds_bucket", le="0.15") == 0
    assert _v(reg, "infprof_request_e2e_seconds_sum") == pytest.approx(0.26)
    # TPOT = (E2E - TTFT) / (4 - 1)
    assert _v(reg, "infprof_request_tpot_seconds_sum") == pytest.approx(0.06 / 3)
    # ITL shares: 0.02 (1 token) and 0.04 split over 2 tokens -> 0.02, 0.02, 0.02
    assert _v(reg, "infprof_request_itl_seconds_count") == 3
    assert _v(reg, "infprof_request_itl_seconds_sum") == pytest.approx(0.06)
    assert _v(reg, "infprof_dispatch_lag_seconds_count") == 1
    assert _v(reg, "infprof_dispatch_lag_seconds_sum") == pytest.approx(0.001)
    assert _v(reg, "infprof_slo_met_requests_total") == 0  # no SLO given
    assert _v(reg, "infprof_queue_wait_seconds_count") == 0  # no concurrency cap


def test_failed_requests_count_by_outcome_and_observe_no_latency() -> None:
    reg = CollectorRegistry()
    m = RunMetrics(reg, **L)
    for i, outcome in enumerate(["error", "timeout", "cancelled", "error"]):
        m.on_send()
        m.on_record(_failed(i, outcome))
    assert _v(reg, "infprof_requests_total", outcome="error") == 2
    assert _v(reg, "infprof_requests_total", outcome="timeout") == 1
    assert _v(reg, "infprof_requests_total", outcome="cancelled") == 1
    assert _v(reg, "infprof_request_ttft_seconds_count") == 0
    assert _v(reg, "infprof_request_e2e_seconds_count") == 0
    assert _v(reg, "infprof_dispatch_lag_seconds_count") == 4
    assert _v(reg, "infprof_inflight_requests") == 0


def test_a_never_sent_record_does_not_change_inflight() -> None:
    reg = CollectorRegistry()
    m = RunMetrics(reg, **L)
    m.on_send()
    m.on_record(
        RequestRecord(
            id=9, workload="chat", scenario="s", intended_start_s=1.0, outcome="cancelled"
        )
    )
    assert m.inflight == 1
    assert _v(reg, "infprof_dispatch_lag_seconds_count") == 0


def meets_slo(rec: RequestRecord, slo: SloSpec) -> bool:
    return bool(measures_meets_slo(slo, rec.outcome == "ok", *rec.latencies()))


def test_slo_met_follows_the_summary_rule() -> None:
    slo = SloSpec.parse("ttft=0.5,tpot=0.05")
    assert meets_slo(_ok(ttft=0.2), slo)
    assert not meets_slo(_ok(ttft=0.8), slo)
    assert not meets_slo(_ok(gaps=(0.2, 0.2)), slo)  # TPOT 0.4/3 > 0.05
    assert meets_slo(_ok(gaps=(), tokens=(1,), out=1), slo)  # one token: no TPOT to miss
    assert not meets_slo(_failed(1), slo)
    reg = CollectorRegistry()
    m = RunMetrics(reg, **L, slo=slo)
    for i, rec in enumerate([_ok(0), _ok(1, ttft=0.9), _failed(2)]):
        m.on_send()
        rec.id = i
        m.on_record(rec)
    assert _v(reg, "infprof_slo_met_requests_total") == 1
    assert _v(reg, "infprof_goodput_requests_total") is None  # the old, misleading name
    assert _v(reg, "infprof_slo_seconds", objective="ttft") == 0.5
    assert _v(reg, "infprof_slo_seconds", objective="e2e") is None


def test_target_rate_and_client_health() -> None:
    reg = CollectorRegistry()
    m = RunMetrics(reg, **L)
    assert _v(reg, "infprof_target_request_rate") is None
    m.on_target_rate(12.5)
    assert _v(reg, "infprof_target_request_rate") == 12.5
    m.on_target_rate(None)  # closed loop: no target
    assert _v(reg, "infprof_target_request_rate") is None
    m.on_target_rate(None)  # twice is fine
    m.on_client_health(0.003, 0.42, False)
    assert _v(reg, "infprof_client_event_loop_lag_seconds") == 0.003
    assert _v(reg, "infprof_client_cpu_ratio") == 0.42
    assert _v(reg, "infprof_client_saturated") == 0
    m.on_client_health(None, None, True)
    assert _v(reg, "infprof_client_saturated") == 1
    assert _v(reg, "infprof_client_cpu_ratio") == 0.42


def test_buckets_span_milliseconds_to_minutes() -> None:
    assert LATENCY_BUCKETS_S[0] <= 0.001 and LATENCY_BUCKETS_S[-1] >= 600
    assert TOKEN_LATENCY_BUCKETS_S[0] <= 0.001 and TOKEN_LATENCY_BUCKETS_S[-1] >= 5
    assert list(LATENCY_BUCKETS_S) == sorted(set(LATENCY_BUCKETS_S))


def test_the_global_registry_is_left_alone() -> None:
    before = {m.name for m in REGISTRY.collect()}
    RunMetrics(CollectorRegistry(), **L)
    assert {m.name for m in REGISTRY.collect()} == before


def test_hooks_from_many_threads_while_scraping() -> None:
    reg = CollectorRegistry()
    m = RunMetrics(reg, **L)
    n_threads, per_thread = 4, 200
    stop = threading.Event()
    scrapes = 0

    def scrape() -> None:
        nonlocal scrapes
        while not stop.is_set():
            generate_latest(reg)
            scrapes += 1

    def work(k: int) -> None:
        for i in range(per_thread):
            m.on_send()
            m.on_record(_ok(k * per_thread + i))

    scraper = threading.Thread(target=scrape)
    scraper.start()
    workers = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    scraper.join()
    total = n_threads * per_thread
    assert scrapes > 0
    assert _v(reg, "infprof_requests_total", outcome="ok") == total
    assert _v(reg, "infprof_request_itl_seconds_count") == 3 * total
    assert _v(reg, "infprof_inflight_requests") == 0


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (scripts/ensure-prometheus.sh installs it)",
)
def test_promtool_check_metrics_finds_no_problem() -> None:
    reg = CollectorRegistry()
    m = RunMetrics(reg, **L, slo=SloSpec.parse("ttft=1"))
    m.on_target_rate(2.0)
    m.on_client_health(0.001, 0.1, False)
    m.on_send()
    m.on_record(_ok())
    res = subprocess.run(
        ["promtool", "check", "metrics"],
        input=generate_latest(reg),
        capture_output=True,
        timeout=60,
    )
    out = (res.stdout + res.stderr).decode()
    assert res.returncode == 0 and not out.strip(), out


def test_batch_histogram_is_exposed_exactly_like_a_prometheus_histogram() -> None:
    from prometheus_client import Histogram

    from profiler.metrics.histogram import BatchHistogram

    values = [0.0005, 0.001, 0.0011, 0.02, 0.02, 0.5, 9.99, 10.0, 11.0, 1e6]
    ref_reg, reg = CollectorRegistry(), CollectorRegistry()
    ref = Histogram(
        "x_seconds", "doc", ["run_id"], registry=ref_reg, buckets=TOKEN_LATENCY_BUCKETS_S
    ).labels(run_id="r")
    for v in values:
        ref.observe(v)
    batch = BatchHistogram("x_seconds", "doc", {"run_id": "r"}, TOKEN_LATENCY_BUCKETS_S)
    reg.register(batch)
    for v in values[:3]:
        batch.observe(v)
    batch.observe_many([])
    batch.observe_many(values[3:])
    batch.observe(float("nan"))  # ignored, never a bucket
    assert reg.get_sample_value("x_seconds_created", {"run_id": "r"}) is not None

    def text(r: CollectorRegistry) -> list[str]:  # creation times differ, nothing else may
        return [
            ln
            for ln in generate_latest(r).decode().splitlines()
            if not ln.startswith("x_seconds_created")
        ]

    assert text(reg) == text(ref_reg)


def test_queue_wait_is_its_own_histogram_not_dispatch_lag() -> None:
    reg = CollectorRegistry()
    m = RunMetrics(reg, **L)
    rec = _ok(0)
    rec.queue_wait_s = 0.5
    rec.send_s = rec.intended_start_s + 0.501  # it waited 0.5 s for a slot, then 1 ms
    m.on_send()
    m.on_record(rec)
    assert _v(reg, "infprof_queue_wait_seconds_sum") == pytest.approx(0.5)
    assert _v(reg, "infprof_dispatch_lag_seconds_sum") == pytest.approx(0.001)
