"""Live metrics of one run: request latencies, outcomes, tokens, rates and client health.

The load driver calls the hooks from its asyncio thread; the HTTP exporter thread scrapes the
registry. prometheus_client's counters and gauges and ``BatchHistogram`` take their own locks,
and the in-flight count is kept under one lock here, so the hooks are safe from any thread. Every series carries
``run_id``, ``workload``, ``model`` and ``hostname``.

Latency histograms and the SLO-met counter use ``profiler.measures``' definitions (through
``RequestRecord``): TTFT, TPOT, ITL (every gap shared among the tokens its chunk carried) and
E2E are observed for successful requests only, like ``summary.json``; dispatch lag for every
request that was sent.
Achieved rates are left to PromQL: ``rate(infprof_requests_total{outcome="ok"}[...])``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from profiler.measures import Slo, meets_slo, slo_is_set
from profiler.metrics.histogram import BatchHistogram
from profiler.store.record import OUTCOMES, TURN_BUCKETS, RequestRecord, turn_bucket

# Seconds, from a millisecond to ten minutes: TTFT under load and E2E of long generations.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
    1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0,
    180.0, 300.0, 600.0,
)  # fmt: skip
# Per-token times (TPOT, ITL): 0.5 ms to 10 s, fine where decode steps live (5-200 ms).
TOKEN_LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03,
    0.04, 0.05, 0.06, 0.075, 0.1, 0.125, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# Dispatch lag: a healthy client is well under a millisecond; seconds mean it fell behind.
DISPATCH_LAG_BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

RUN_LABELS: tuple[str, ...] = ("run_id", "workload", "model", "hostname")
# Counters and gauges of one series each: key -> (name, help)
_COUNTERS: dict[str, tuple[str, str]] = {
    "sent": ("infprof_requests_sent", "Requests sent to the server."),
    "slo_met": (
        "infprof_slo_met_requests",
        "Successful requests that met every SLO objective set, measured from the send.",
    ),
    "output_tokens": (
        "infprof_output_tokens",
        "Output tokens of successful requests (server-reported usage).",
    ),
    "prompt_tokens": (
        "infprof_prompt_tokens",
        "Prompt tokens of successful requests (server-reported usage).",
    ),
}
_GAUGES: dict[str, tuple[str, str]] = {
    "inflight": ("infprof_inflight_requests", "Requests sent and not yet finished."),
    "loop_lag": (
        "infprof_client_event_loop_lag_seconds",
        "Load generator event-loop lag (latest measurement).",
    ),
    "cpu": ("infprof_client_cpu_ratio", "Load generator CPU use as a fraction of one core."),
    "saturated": (
        "infprof_client_saturated",
        "1 while the load generator is the bottleneck (CPU, loop lag or dispatch lag over its limit).",
    ),
}


class RunMetrics:
    """Registers the run's metrics on ``registry`` (never the global one) and updates them
    from the driver's hooks. ``slo`` (a ``SloSpec``) enables the SLO-met counter's counting;
    without one it stays at 0."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        run_id: str,
        workload: str,
        model: str,
        hostname: str,
        slo: Slo | None = None,
        sessions: bool = False,
    ) -> None:
        values = {"run_id": run_id, "workload": workload, "model": model, "hostname": hostname}
        self.labels: Mapping[str, str] = values
        self._slo = slo if slo_is_set(slo) else None
        self._lock = threading.Lock()
        self._inflight = 0
        r, names = registry, RUN_LABELS

        def hist(name: str, doc: str, buckets: tuple[float, ...]) -> BatchHistogram:
            h = BatchHistogram(name, doc, values, buckets)
            r.register(h)
            return h

        self._ttft = hist(
            "infprof_request_ttft_seconds",
            "Time to first token: first content token minus send (successful requests).",
            LATENCY_BUCKETS_S,
        )
        self._tpot = hist(
            "infprof_request_tpot_seconds",
            "Time per output token after the first: (E2E - TTFT) / (output tokens per sample - 1).",
            TOKEN_LATENCY_BUCKETS_S,
        )
        self._itl = hist(
            "infprof_request_itl_seconds",
            "Inter-token latency: every gap between content chunks, shared among the tokens the chunk carried.",
            TOKEN_LATENCY_BUCKETS_S,
        )
        self._e2e = hist(
            "infprof_request_e2e_seconds",
            "End-to-end request latency: last byte minus send (successful requests).",
            LATENCY_BUCKETS_S,
        )
        self._lag = hist(
            "infprof_dispatch_lag_seconds",
            "Dispatch lag: actual send minus intended start on the arrival schedule, less the queue wait for a slot.",
            DISPATCH_LAG_BUCKETS_S,
        )
        self._queue_wait = hist(
            "infprof_queue_wait_seconds",
            "Time an open-loop request waited for a free slot under the concurrency cap.",
            LATENCY_BUCKETS_S,
        )

        def family(kind: Any, name: str, doc: str, *extra: str) -> Any:
            return kind(name, doc, (*names, *extra), registry=r)

        requests = family(
            Counter,
            "infprof_requests",
            "Finished requests by outcome (ok, error, timeout, cancelled).",
            "outcome",
        )
        self._requests = {o: requests.labels(**values, outcome=o) for o in OUTCOMES}
        self._c = {k: family(Counter, *d).labels(**values) for k, d in _COUNTERS.items()}
        self._g = {k: family(Gauge, *d).labels(**values) for k, d in _GAUGES.items()}
        self._target = family(
            Gauge,
            "infprof_target_request_rate",
            "Target request rate of the arrival schedule, requests per second (absent for closed-loop load).",
        )
        self._slo_g = family(
            Gauge,
            "infprof_slo_seconds",
            "SLO objective in seconds by kind (ttft, tpot, e2e); absent when not set.",
            "objective",
        )
        # sessions: latency by turn, the ``turn`` label one of TURN_BUCKETS (1, 2-4, 5+), so
        # the series stay few however long the sessions; observed once per request
        self._turns: dict[str, list[Histogram]] | None = None
        if sessions:
            fams = [
                Histogram(
                    f"infprof_turn_{kind}_seconds",
                    f"{what} of successful session turns by turn index (1, 2-4, 5+).",
                    (*names, "turn"),
                    buckets=buckets,
                    registry=r,
                )
                for kind, what, buckets in (
                    ("ttft", "Time to first token", LATENCY_BUCKETS_S),
                    ("tpot", "Time per output token", TOKEN_LATENCY_BUCKETS_S),
                    ("e2e", "End-to-end latency", LATENCY_BUCKETS_S),
                )
            ]
            self._turns = {b: [f.labels(**values, turn=b) for f in fams] for b in TURN_BUCKETS}
        if self._slo is not None:
            for kind in ("ttft", "tpot", "e2e"):
                v = getattr(self._slo, f"{kind}_s")
                if v is not None:
                    self._slo_g.labels(**values, objective=kind).set(v)

    # ---------------------------------------------------------------- hooks
    def on_target_rate(self, rate: float | None) -> None:
        """The schedule's current target rate (req/s); ``None`` removes the series."""
        if rate is None:
            with contextlib.suppress(KeyError):  # never set, or already removed
                self._target.remove(*self.labels.values())
            return
        self._target.labels(**self.labels).set(float(rate))

    def on_send(self) -> None:
        self._c["sent"].inc()
        with self._lock:
            self._inflight += 1
            self._g["inflight"].set(self._inflight)

    def on_record(self, rec: RequestRecord) -> None:
        """A finished request (any outcome)."""
        if rec.send_s is not None:
            with self._lock:
                self._inflight = max(0, self._inflight - 1)
                self._g["inflight"].set(self._inflight)
        self._requests[rec.outcome].inc()
        lag = rec.dispatch_lag_s
        if lag is not None:
            self._lag.observe(max(lag, 0.0))
        if rec.queue_wait_s is not None:
            self._queue_wait.observe(max(rec.queue_wait_s, 0.0))
        if rec.outcome != "ok":
            return
        ttft, tpot, e2e = rec.latencies()  # NaN where undefined: not observed
        self._ttft.observe(ttft)
        self._tpot.observe(tpot)
        self._e2e.observe(e2e)
        self._itl.observe_many(rec.itl_shares())
        if self._turns is not None and rec.turn is not None:
            for h, v in zip(self._turns[turn_bucket(rec.turn)], (ttft, tpot, e2e), strict=True):
                if v == v:
                    h.observe(v)
        if rec.output_tokens:
            self._c["output_tokens"].inc(rec.output_tokens)
        if rec.prompt_tokens:
            self._c["prompt_tokens"].inc(rec.prompt_tokens)
        if self._slo is not None and meets_slo(self._slo, True, ttft, tpot, e2e):
            self._c["slo_met"].inc()

    def on_client_health(
        self, event_loop_lag_s: float | None, cpu_ratio: float | None, saturated: bool
    ) -> None:
        if event_loop_lag_s is not None:
            self._g["loop_lag"].set(event_loop_lag_s)
        if cpu_ratio is not None:
            self._g["cpu"].set(cpu_ratio)
        self._g["saturated"].set(1.0 if saturated else 0.0)

    @property
    def inflight(self) -> int:
        with self._lock:
            return self._inflight
