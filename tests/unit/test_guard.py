"""Early stop and the error ceiling (profiler/load/guard.py) on scripted records and a
scripted clock: what stops a run, what does not, and the one line that says why."""

from __future__ import annotations

from typing import Any

from profiler.load.guard import ErrorGuard, diagnose, error_key, over_ceiling
from profiler.store.record import RequestRecord

GUIDELLM_400 = (
    "HTTP 400: Invalid request: 4 validation errors for CompletionsRequest prompt.str Input "
    "should be a valid string [type=string_type, input_value=[1, 2, 3], input_type=list]"
)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


def _rec(i: int, send_s: float, ok: bool, error: str = GUIDELLM_400) -> RequestRecord:
    return RequestRecord(
        id=i,
        workload="w",
        scenario="s",
        intended_start_s=send_s,
        send_s=send_s,
        outcome="ok" if ok else "error",
        error=None if ok else error,
    )


def _guard(clock: Clock, **kw: Any) -> tuple[ErrorGuard, list[tuple[Any, ...]]]:
    calls: list[tuple[Any, ...]] = []
    g = ErrorGuard(clock.now, **kw)
    g.bind(lambda *a: calls.append(a))
    return g, calls


def test_the_first_20_failures_stop_the_run_naming_cause_and_fix() -> None:
    clock = Clock()
    g, calls = _guard(clock)
    for i in range(19):
        g.on_send()
        g.on_record(_rec(i, 0.0, ok=False))
    assert calls == []
    g.on_send()
    g.on_record(_rec(19, 0.0, ok=False))
    assert len(calls) == 1
    ended, reason, outcome = calls[0]
    assert (ended, outcome) == ("failing", "cancelled")
    assert reason.startswith(
        "the first 20 requests all failed; most frequent error (20x): HTTP 400"
    )
    assert "cause: the server takes prompts only as text, not token ids" in reason
    assert "(fix: let infprof probe the server (drop --server-kind)" in reason
    g.on_record(_rec(20, 0.0, ok=False))
    assert len(calls) == 1  # once


def test_one_success_among_the_first_requests_keeps_the_run_going() -> None:
    clock = Clock()
    g, calls = _guard(clock)
    g.on_send()
    g.on_record(_rec(0, 0.0, ok=True))
    for i in range(1, 200):
        g.on_send()
        g.on_record(_rec(i, 0.0, ok=False))
    assert calls == []  # no ceiling set: a run with errors completes


def test_every_request_of_the_first_10_s_failed() -> None:
    """A slow schedule: 1 request/s, each refused at once. After 10 s all 10 have failed."""
    clock = Clock()
    g, calls = _guard(clock)
    for i in range(10):
        clock.t = float(i)
        g.on_send()
        g.on_record(_rec(i, clock.t, ok=False))
    assert calls == []
    clock.t = 10.0
    g.on_send()  # the 11th is not of the first 10 s: the early set is complete, all failed
    assert calls and calls[0][0] == "failing"
    assert calls[0][1].startswith("every request of the first 10 s failed (10)")


def test_fast_failures_beside_a_slow_success_do_not_stop_the_run() -> None:
    """A busy server: the first request streams for a while, the next ones get a 429 at
    once. The first 20 finished requests all failed, but the first 20 sent did not."""
    clock = Clock()
    g, calls = _guard(clock)
    g.on_send()  # request 0: slow, succeeds
    for i in range(1, 40):
        clock.t = i * 0.01
        g.on_send()
        g.on_record(_rec(i, clock.t, ok=False, error="HTTP 429: too many requests"))
    assert calls == []
    clock.t = 1.0
    g.on_record(_rec(0, 0.0, ok=True))
    for i in range(40, 100):
        g.on_send()
        g.on_record(_rec(i, clock.t, ok=False))
    assert calls == []


def test_slow_successes_still_in_flight_at_10_s_are_waited_for() -> None:
    """A few fast errors and slow successes: at 10 s the early requests are not all finished,
    so nothing is decided; the successes then arrive."""
    clock = Clock()
    g, calls = _guard(clock)
    for _ in range(16):
        g.on_send()  # 16 sent at t=0, all slow
    clock.t = 1.0
    g.on_record(_rec(0, 0.0, ok=False))
    clock.t = 11.0
    g.on_send()
    g.on_record(_rec(1, 0.0, ok=False))
    assert calls == []
    clock.t = 30.0
    for i in range(2, 16):
        g.on_record(_rec(i, 0.0, ok=True))
    assert calls == []


def test_max_error_rate_over_the_last_30() -> None:
    clock = Clock()
    g, calls = _guard(clock, max_error_rate=0.2)
    for i in range(60):
        g.on_send()
        g.on_record(_rec(i, 0.0, ok=i % 10 != 0, error="HTTP 500: boom"))  # 10% errors
    assert calls == []
    for i in range(60, 80):
        g.on_send()
        g.on_record(_rec(i, 0.0, ok=i % 2 == 0, error="HTTP 500: boom"))  # 50% now
    assert calls and calls[0][0] == "error_rate"
    assert "of the last 30 requests failed, above --max-error-rate 0.2" in calls[0][1]
    assert "cause: the server fails the requests (fix: see the server's log)" in calls[0][1]


def test_cancelled_records_are_neither_successes_nor_failures() -> None:
    clock = Clock()
    g, calls = _guard(clock)
    for i in range(25):
        r = _rec(i, 0.0, ok=False)
        r.outcome = "cancelled"
        g.on_record(r)
    assert calls == [] and g.failed == 0


def test_over_ceiling_from_the_summary() -> None:
    summary = {
        "error_rate": 0.25,
        "requests": {"total": 8},
        "errors": {"top": [{"message": "HTTP 429: slow down", "count": 2}]},
    }
    reason = over_ceiling(summary, 0.1)
    assert reason is not None
    assert reason.startswith("25% of 8 requests failed, above --max-error-rate 0.1")
    assert "cause: the server is rate-limiting" in reason
    assert over_ceiling(summary, 0.25) is None
    assert over_ceiling(summary, None) is None


def test_diagnoses() -> None:
    assert diagnose("HTTP 401: bad key")[0] == "the server refused the API key"
    assert diagnose("HTTP 400: Unrecognized request argument supplied: ignore_eos")[0] == (
        "the server refuses fields outside the OpenAI API"
    )
    assert diagnose("connection failed: [Errno 111] Connection refused")[1] == (
        "start the server or fix --endpoint"
    )
    assert diagnose("no complete response within 5 s")[0] == "requests time out"
    assert diagnose("something odd")[0] == "requests fail"


def test_messages_echoing_each_requests_token_ids_group_together() -> None:
    """GuideLLM's mock server echoes the prompt's ids in its 400: one cause, one group."""
    clock = Clock()
    g, calls = _guard(clock)
    for i in range(20):
        ids = ", ".join(str(100 + i + k) for k in range(5))
        g.on_send()
        g.on_record(_rec(i, 0.0, ok=False, error=f"HTTP 400: bad prompt input_value=[{ids}]"))
    assert g.errors == {"HTTP 400: bad prompt input_value=[...]": 20}
    assert "most frequent error (20x): HTTP 400: bad prompt input_value=[100, 101," in calls[0][1]
    assert error_key("HTTP 400: x [455, 1251, 707, 118...36, 186]", "error") == "HTTP 400: x [...]"
    assert (
        error_key("HTTP 422: 129 errors, input_value=4", "error")
        == "HTTP 422: N errors, input_value=N"
    )
    assert error_key(None, "timeout") == "timeout"
