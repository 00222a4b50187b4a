"""Failures that speak: stop a run whose requests all fail, and a run over its error ceiling.

- Early stop (``ended: failing``): the early set is the first ``EARLY_REQUESTS`` requests
  sent, or those sent in the first ``EARLY_S`` seconds when fewer; once every one of them has
  finished and all failed, the run stops. A server that refuses every request is known after a
  few seconds, not after the whole schedule; fast failures beside slow successes (a 429 from a
  busy server) do not stop it, since the early set waits for its successes. The one-line
  reason names the most frequent error, its cause and its fix (``diagnose``).
- ``--max-error-rate R`` (``ended: error_rate``): as GuideLLM's ``max_error_rate`` constraint,
  the share of failures among the last ``RATE_WINDOW`` finished requests, once that many have
  finished, may not pass R; and the whole run's share may not either (checked on the summary
  at the end, so a run shorter than the window is held to it too: ``over_ceiling``).

Both end the run with exit code 8 (``profiler.errors.EXIT_FAILING``); the records are kept and
summarised. A completed run with some errors and no ceiling still exits 0. Cancelled requests
(an interrupt, an abort) are neither successes nor failures here.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

EARLY_REQUESTS = 20
EARLY_S = 10.0
RATE_WINDOW = 30

# (what the message says, the cause, the fix): the first that matches names the cause
_RULES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("HTTP 401", "HTTP 403"), "the server refused the API key", "pass --api-key-env NAME"),
    (
        ("HTTP 404",),
        "the server has no such path or model",
        "check --endpoint (the base URL, without /v1/...) and --model",
    ),
    (("HTTP 429",), "the server is rate-limiting", "lower --rate or --concurrency"),
    (
        ("valid string", "must be a string", "str type expected", "prompt must be"),
        "the server takes prompts only as text, not token ids",
        "let infprof probe the server (drop --server-kind) or pass --server-kind openai",
    ),
    (
        (
            "ignore_eos",
            "min_tokens",
            "continuous_usage_stats",
            "Unrecognized request argument",
            "Extra inputs are not permitted",
            "extra_forbidden",
            "unknown field",
        ),
        "the server refuses fields outside the OpenAI API",
        "let infprof probe the server (drop --server-kind) or pass --server-kind openai",
    ),
    (
        ("maximum context length", "context length", "max_model_len", "too long"),
        "prompt plus output exceed the model's context",
        "lower --input-len/--output-len, or serve a longer --max-model-len",
    ),
    (
        ("connection failed", "server disconnected", "cannot connect"),
        "the endpoint cannot be reached",
        "start the server or fix --endpoint",
    ),
    (
        ("no complete response within",),
        "requests time out",
        "raise --request-timeout or lower the load",
    ),
    (
        ("HTTP 5",),
        "the server fails the requests",
        "see the server's log",
    ),
    (
        ("HTTP 400", "HTTP 422"),
        "the server refuses the requests",
        "read the server's message above; check --model, --api and the workload",
    ),
    (
        ("stream cut", "connection closed before the response ended"),
        "the server (or a proxy) closes streams before they end",
        "see the server's log; a proxy in between may time streams out",
    ),
    (
        ("without any content", "malformed SSE", "truncated"),
        "the server's streams are not OpenAI server-sent events",
        "check that the endpoint streams OpenAI chunks (stream: true)",
    ),
)


def diagnose(error: str) -> tuple[str, str]:
    """(cause, fix) for one error text."""
    low = error.lower()
    for needles, cause, fix in _RULES:
        if any(n.lower() in low for n in needles):
            return cause, fix
    return (
        "requests fail",
        "see errors.top in summary.json and the error column of requests.parquet",
    )


# numbers inside a message are each request's own (the token ids a validation error echoes
# back, "input_value=[455, 1251, ...36, 313]", a count, a timeout): they are left out of the
# message that failures are grouped by; lists of them become "[...]", other numbers "N"
_NUMBER_LIST = re.compile(r"\[[\d\s,.]*\d[\d\s,.]*\]")
_NUMBER = re.compile(r"\d+")
_HTTP = re.compile(r"^HTTP \d{3}: ")
ERROR_KEY_CHARS = 160


def error_key(error: str | None, outcome: str) -> str:
    """The message that failures are grouped by: the record's error (or its outcome) with its
    numbers left out (``HTTP 400: ...`` keeps its status), its first ``ERROR_KEY_CHARS``."""
    text = (error or outcome).strip() or outcome
    m = _HTTP.match(text)
    head, rest = (m.group(0), text[m.end() :]) if m else ("", text)
    # the start says what went wrong; a long message cut to the record's limit ends wherever
    # the echoed input left it
    return (head + _NUMBER.sub("N", _NUMBER_LIST.sub("[...]", rest)))[:ERROR_KEY_CHARS]


class ErrorGuard:
    """Watches finished records (a driver sink) and sends (the driver's ``on_send``); calls
    ``abort(ended, reason, outcome)`` once when a rule is broken. ``now`` is the run clock."""

    def __init__(
        self,
        now: Callable[[], float],
        *,
        max_error_rate: float | None = None,
        early_requests: int = EARLY_REQUESTS,
        early_s: float = EARLY_S,
        window: int = RATE_WINDOW,
    ) -> None:
        self.now = now
        self.max_error_rate = max_error_rate
        self.early_requests = early_requests
        self.early_s = early_s
        self.abort: Callable[..., Any] | None = None
        self.start_s: float | None = None
        self.sent_early = 0  # the early set: the first requests sent (profiler.load.guard)
        self.done_early = 0
        self.ok_early = 0
        self.early_until_s: float | None = None
        self.early_decided = False
        self.ok = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()  # grouped messages (error_key)
        self.examples: dict[str, str] = {}  # each group's first message as it came
        self.window: deque[bool] = deque(maxlen=window)
        self.ended: str | None = None
        self.reason: str | None = None

    def bind(self, abort: Callable[..., Any]) -> None:
        self.abort = abort

    def on_send(self) -> None:
        t = self.now()
        if self.start_s is None:
            self.start_s = t
        if not self._early_closed(t):
            self.sent_early += 1
            self.early_until_s = t  # the latest send of the early set
        self._check_early()

    def on_record(self, rec: Any) -> None:
        if self.ended is not None or rec.outcome == "cancelled":
            return
        failed = rec.outcome != "ok"
        if failed:
            self.failed += 1
            key = error_key(rec.error, rec.outcome)
            self.errors[key] += 1
            self.examples.setdefault(key, rec.error or rec.outcome)
        else:
            self.ok += 1
        self.window.append(failed)
        until = self.early_until_s
        if until is not None and rec.send_s is not None and rec.send_s <= until:
            self.done_early += 1
            self.ok_early += not failed
        self._check_early()
        self._check_rate()

    def _early_closed(self, t: float) -> bool:
        """No more requests join the early set: the first ``early_requests`` were sent, or
        ``early_s`` seconds have passed since the first."""
        start = self.start_s
        return self.sent_early >= self.early_requests or (
            start is not None and t - start >= self.early_s
        )

    def _check_early(self) -> None:
        """Decided once every request of the early set finished: all failed, stop."""
        if self.early_decided or self.ended is not None or not self.sent_early:
            return
        if not self._early_closed(self.now()) or self.done_early < self.sent_early:
            return
        self.early_decided = True
        if self.ok_early:
            return
        if self.sent_early >= self.early_requests:
            what = f"the first {self.sent_early} requests all failed"
        else:
            what = f"every request of the first {self.early_s:g} s failed ({self.sent_early})"
        self._stop("failing", what)

    def _check_rate(self) -> None:
        if self.ended is not None:
            return
        ceiling = self.max_error_rate
        if ceiling is not None and len(self.window) == self.window.maxlen:
            rate = sum(self.window) / len(self.window)
            if rate > ceiling:
                self._stop(
                    "error_rate",
                    f"{rate:.0%} of the last {len(self.window)} requests failed, above "
                    f"--max-error-rate {ceiling:g}",
                )

    def _stop(self, ended: str, what: str) -> None:
        self.ended, self.reason = ended, self._with_cause(what)
        if self.abort is not None:
            self.abort(ended, self.reason, "cancelled")

    def _with_cause(self, what: str) -> str:
        top = [(self.examples[k], n) for k, n in self.errors.most_common(1)]
        return with_cause(what, top)


def with_cause(what: str, top: list[tuple[str, int]]) -> str:
    """``what`` followed by the most frequent error, its cause and its fix."""
    if not top:
        return what
    message, count = top[0]
    cause, fix = diagnose(message)
    return f"{what}; most frequent error ({count}x): {message[:200]}; cause: {cause} (fix: {fix})"


def over_ceiling(summary: dict[str, Any], ceiling: float | None) -> str | None:
    """The reason a completed run's error rate (``summary.json``) is above ``--max-error-rate``,
    else None."""
    rate = summary.get("error_rate")
    if ceiling is None or rate is None or rate <= ceiling:
        return None
    total = (summary.get("requests") or {}).get("total")
    top = [(e["message"], e["count"]) for e in (summary.get("errors") or {}).get("top") or []]
    return with_cause(
        f"{rate:.0%} of {total} requests failed, above --max-error-rate {ceiling:g}", top
    )
