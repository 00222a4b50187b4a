"""RequestRecord: what one request did, on the run clock. Failed requests are data; its
derived metrics are ``profiler.measures``' definitions."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np

from profiler import measures as m

Outcome = Literal["ok", "error", "timeout", "cancelled"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "error", "timeout", "cancelled")
# Turn indices grouped for per-turn figures and the Prometheus ``turn`` label (bounded
# cardinality): the first turn (no history), early turns, and late turns (long contexts).
TURN_BUCKETS: tuple[str, ...] = ("1", "2-4", "5+")


def turn_bucket(turn: int) -> str:
    """The ``TURN_BUCKETS`` entry of a 1-based turn index."""
    return "1" if turn <= 1 else "2-4" if turn <= 4 else "5+"


@dataclass(slots=True)
class RequestRecord:
    """One request. Times are seconds on the run clock (``RunClock``); ``None`` when the event
    did not happen (no first token on an error, say). Output tokens come from the server's usage
    report; ``tokens_estimated`` is true when the server sent none and chunks were counted."""

    id: int
    workload: str
    scenario: str
    intended_start_s: float
    send_s: float | None = None
    first_token_s: float | None = None
    first_reasoning_s: float | None = None
    first_answer_s: float | None = None
    last_token_s: float | None = None
    end_s: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    requested_output_tokens: int | None = None
    chunks: int = 0
    n: int = 1
    outcome: Outcome = "ok"
    http_status: int | None = None
    error: str | None = None
    tokens_estimated: bool = False
    worker: int = 0
    # Seconds spent waiting for a free slot under an open loop's concurrency cap (between the
    # scheduler's dispatch and the send); None where the load has no cap (closed loop, or an
    # open loop without --concurrency)
    queue_wait_s: float | None = None
    # Sessions: the session's id and this request's turn in it (1 = the first); None for
    # requests that are not turns of a session
    session_id: int | None = None
    turn: int | None = None
    # Prompt tokens the server served from its prefix cache (usage.prompt_tokens_details
    # .cached_tokens: vLLM reports it with --enable-prompt-tokens-details); None: not reported
    cached_tokens: int | None = None
    # The prompt length the workload asked for (the server's count is ``prompt_tokens``)
    requested_prompt_tokens: int | None = None
    # Exact output lengths asked for (``ignore_eos``): True when sent with ``ignore_eos`` and
    # ``min_tokens``; False when the server refuses them, so ``max_tokens`` only bounds the
    # output; None when the workload asked for natural lengths
    length_enforced: bool | None = None
    # Arrival time and token count of every content chunk (all samples when n > 1).
    chunk_times_s: list[float] = field(default_factory=list, repr=False)
    chunk_tokens: list[int] = field(default_factory=list, repr=False)
    # With n > 1: the choice index of every chunk (empty when n == 1).
    chunk_choice: list[int] = field(default_factory=list, repr=False)

    # ---- derived metrics: profiler.measures' definitions, for this one request
    @property
    def ttft_s(self) -> float | None:
        return m.optional(m.ttft(m.scalar(self.send_s), m.scalar(self.first_token_s)))

    @property
    def ttft_from_intended_s(self) -> float | None:
        return m.optional(m.ttft(self.intended_start_s, m.scalar(self.first_token_s)))

    @property
    def dispatch_lag_s(self) -> float | None:
        """How late the client sent the request, less the time it queued for a free slot
        (``queue_wait_s``): the load generator's own lag, not the cap's."""
        lag = m.dispatch_lag(
            self.intended_start_s, m.scalar(self.send_s), m.scalar(self.queue_wait_s)
        )
        return m.optional(lag)

    @property
    def e2e_s(self) -> float | None:
        return m.optional(self.latencies()[2])

    @property
    def tpot_s(self) -> float | None:
        return m.optional(self.latencies()[1])

    def latencies(self) -> tuple[float, float, float]:
        """TTFT, TPOT and E2E from the send (NaN where undefined)."""
        send = m.scalar(self.send_s)
        ttft = m.ttft(send, m.scalar(self.first_token_s))
        e2e = m.e2e(send, m.scalar(self.end_s), self.outcome == "ok")
        out, n = m.scalar(self.output_tokens), float(self.n)
        return ttft, m.tpot(ttft, e2e, out, n), e2e

    def gap_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(gap seconds, tokens in the chunk that ended the gap) of every content chunk after
        the first of its sample. With n > 1 every sample's stream is its own sequence."""
        size = min(len(self.chunk_times_s), len(self.chunk_tokens))
        if self.chunk_choice:
            size = min(size, len(self.chunk_choice))
        t = np.asarray(self.chunk_times_s[:size], dtype=np.float64)
        choice = np.asarray(self.chunk_choice[:size]) if self.chunk_choice else None
        gaps = m.itl_gaps(np.zeros(size, dtype=np.int64), t, choice)
        keep = ~np.isnan(gaps)
        return gaps[keep], np.asarray(self.chunk_tokens[:size], dtype=np.int64)[keep]

    def itl_gaps(self) -> list[tuple[float, int]]:
        """``gap_arrays`` as (gap, tokens) pairs."""
        gaps, toks = self.gap_arrays()
        return list(zip(gaps.tolist(), toks.tolist(), strict=True))

    def itl_shares(self) -> list[float]:
        """Every gap divided evenly among the tokens its chunk carried (one value a token)."""
        values, weights = m.itl_shares(*self.gap_arrays())
        return (values if weights is None else np.repeat(values, weights)).tolist()

    def to_row(self) -> dict[str, Any]:
        """Flat row for requests.parquet (chunk arrays go to itl.parquet)."""
        row = {name: getattr(self, name) for name in _SCALARS}
        ttft, tpot, e2e = self.latencies()
        row["ttft_s"] = m.optional(ttft)
        row["tpot_s"] = m.optional(tpot)
        row["e2e_s"] = m.optional(e2e)
        row["dispatch_lag_s"] = self.dispatch_lag_s
        return row

    def to_journal(self) -> dict[str, Any]:
        """Every field, lists by reference (``dataclasses.asdict`` deep-copies them: a hot-path
        cost per request)."""
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_journal(cls, d: dict[str, Any]) -> RequestRecord:
        return cls(**d)


_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RequestRecord))
_SCALARS: tuple[str, ...] = tuple(n for n in _FIELDS if not n.startswith("chunk_") or n == "chunks")
