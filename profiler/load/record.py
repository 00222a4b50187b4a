"""RequestRecord: what one request did, on the run clock. Failed requests are data."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

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

    # ---- derived metrics (DESIGN.md definitions)
    @property
    def ttft_s(self) -> float | None:
        if self.first_token_s is None or self.send_s is None:
            return None
        return self.first_token_s - self.send_s

    @property
    def ttft_from_intended_s(self) -> float | None:
        if self.first_token_s is None:
            return None
        return self.first_token_s - self.intended_start_s

    @property
    def dispatch_lag_s(self) -> float | None:
        """How late the client sent the request, less the time it queued for a free slot
        (``queue_wait_s``): the load generator's own lag, not the cap's."""
        if self.send_s is None:
            return None
        return self.send_s - self.intended_start_s - (self.queue_wait_s or 0.0)

    @property
    def e2e_s(self) -> float | None:
        if self.end_s is None or self.send_s is None or self.outcome != "ok":
            return None
        return self.end_s - self.send_s

    @property
    def tpot_s(self) -> float | None:
        e2e, ttft, out = self.e2e_s, self.ttft_s, self.output_tokens
        if e2e is None or ttft is None or out is None or self.n < 1:
            return None
        per_sample = out / self.n
        if per_sample <= 1:
            return None
        return (e2e - ttft) / (per_sample - 1)

    def itl_gaps(self) -> list[tuple[float, int]]:
        """(gap seconds, tokens in the chunk that ended the gap) for every content chunk after
        the first of its sample. With n > 1 every sample's stream is its own sequence."""
        times, toks = self.chunk_times_s, self.chunk_tokens
        if not self.chunk_choice:
            return [(times[i] - times[i - 1], toks[i]) for i in range(1, len(times))]
        last: dict[int, float] = {}
        out: list[tuple[float, int]] = []
        for t, k, c in zip(times, toks, self.chunk_choice, strict=False):
            if c in last:
                out.append((t - last[c], k))
            last[c] = t
        return out

    def itl_shares(self) -> list[float]:
        """Every gap divided evenly among the tokens its chunk carried."""
        out: list[float] = []
        for gap, k in self.itl_gaps():
            k = max(k, 1)
            out.extend([gap / k] * k)
        return out

    def to_row(self) -> dict[str, Any]:
        """Flat row for requests.parquet (chunk arrays go to itl.parquet)."""
        row = {name: getattr(self, name) for name in _SCALARS}
        row["ttft_s"] = self.ttft_s
        row["tpot_s"] = self.tpot_s
        row["e2e_s"] = self.e2e_s
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
