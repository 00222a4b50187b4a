"""Sessions: conversations whose turns are requests, each sending the history so far.

``iter_sessions`` turns a workload into a lazy, reproducible stream of ``SessionPlan``s: a
scenario with a ``session`` spec draws the number of turns, each turn's new user tokens and
output length, and the think time after each answer; a dataset in ``sessions`` mode replays
its conversations; any other scenario of the mix is a one-turn session. The content of every
turn is drawn when its session is planned, from generators seeded by ``(seed, scenario)``,
so the same seed gives the same sessions.

``History`` is one session while it runs: it builds turn ``k``'s request from the history and
takes in the answer.
- ``completions`` (token ids, exact): the prompt of turn k+1 is the prompt of turn k, the
  answer's token ids and the new user message's ids. The answer's ids come from the server
  (vLLM's ``return_token_ids``: each streamed chunk carries its token ids, no tokenizer
  needed, nothing re-tokenized); a server that sends none falls back to encoding the answer's
  text with the tokenizer (re-tokenizing text can split it differently from the tokens the
  model produced, so the server's prefix cache may miss the answer's last block), and
  without a tokenizer to ids drawn for the answer's length (``answer_source`` says which).
- ``chat`` (messages): the history is the messages, each answer appended as an ``assistant``
  message with the streamed content (reasoning is not sent back, as chat clients do).
With ``history: recorded`` the answers are the recorded ones (the dataset's replies, or
synthetic replies of the requested lengths) and the server's answers are not kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from profiler.distributions import TimeDist
from profiler.load.prompts import VOCAB_HIGH, VOCAB_LOW, ids_to_words
from profiler.load.prompts import prefix_ids as make_prefix_ids
from profiler.load.tokens import TokenEncoder
from profiler.load.workload import BLOCK, RequestSpec, ScenarioSource, sample_lengths
from profiler.spec import Scenario, WorkloadSpec


def sample_seconds(dist: TimeDist, rng: np.random.Generator, size: int) -> np.ndarray:
    """``size`` durations in seconds from ``dist``, clipped to [min, max] (fixed kept as is)."""
    if dist.kind == "fixed":
        return np.full(size, dist.value, dtype=np.float64)
    if dist.kind == "uniform":
        return rng.uniform(dist.min, dist.max, size)
    if dist.kind == "exponential":
        assert dist.mean is not None
        out = rng.exponential(dist.mean, size)
    elif dist.kind == "lognormal":
        assert dist.mean is not None and dist.sigma is not None
        out = rng.lognormal(np.log(dist.mean) - dist.sigma**2 / 2, dist.sigma, size)
    else:
        assert dist.values is not None
        p = None
        if dist.weights is not None:
            w = np.asarray(dist.weights, dtype=np.float64)
            p = w / w.sum() if w.sum() > 0 and w.min() >= 0 else None
        out = rng.choice(np.asarray(dist.values, dtype=np.float64), size=size, p=p)
    return np.clip(out, dist.min, dist.max)


@dataclass(slots=True)
class TurnPlan:
    """One turn: the new user message (ids for completions, text for chat), the output length
    asked for, the pause after its answer, and the recorded reply (``history: recorded``)."""

    user_ids: list[int] | None
    user_text: str | None
    output_len: int
    think_s: float
    recorded_ids: list[int] | None = None
    recorded_text: str | None = None


@dataclass(slots=True)
class SessionPlan:
    """A session to run: its scenario, system prompt (the shared prefix) and turns."""

    index: int
    scenario: Scenario
    turns: list[TurnPlan]
    system_ids: list[int] | None = None
    system_text: str | None = None
    prefix_id: str | None = None
    recorded: bool = False

    @property
    def api(self) -> str:
        return self.scenario.api


class _SessionSource(ScenarioSource):
    """Sessions of one scenario; lengths and think times drawn in blocks."""

    def __init__(self, sc: Scenario, index: int, seed: int, vocab: tuple[int, int]) -> None:
        super().__init__(sc, index, seed, vocab, first=20)
        self._buf: dict[str, list[Any]] = {}

    def _draw(self, what: str) -> Any:
        """The next value of ``what`` (turns, first, input, output, think), drawn in blocks."""
        buf = self._buf.get(what)
        if not buf:
            sc, rng = self.sc, self.rng
            sess = sc.session
            if what == "turns":
                vals = sample_lengths(sess.turns, rng, BLOCK) if sess else np.ones(BLOCK, int)
            elif what == "first":
                first = sess.first_input if sess and sess.first_input else sc.input
                vals = sample_lengths(first, rng, BLOCK)
            elif what == "think":
                vals = sample_seconds(sess.think_time_s, rng, BLOCK) if sess else np.zeros(BLOCK)
            else:
                vals = sample_lengths(sc.input if what == "input" else sc.output, rng, BLOCK)
            buf = vals.tolist()[::-1]
            self._buf[what] = buf
        return buf.pop()

    def _prefix(self) -> tuple[str | None, list[int]]:
        sc = self.sc
        if not sc.shared_prefix_len:
            return None, []
        pid = f"{sc.name}-{int(self.pre_rng.integers(0, sc.num_prefixes))}"
        return pid, self.prefix_ids(pid)

    def _content(self, n: int) -> tuple[list[int] | None, str | None]:
        if self.sc.api == "chat":
            return None, self.words.take(n)
        return self.ids.take(n), None

    def build(self, index: int) -> SessionPlan:
        sc = self.sc
        recorded = sc.session is not None and sc.session.history == "recorded"
        if self.dataset is not None:
            return self._from_dataset(index, recorded)
        count = int(self._draw("turns"))
        turns: list[TurnPlan] = []
        for k in range(count):
            n_in = int(self._draw("first" if k == 0 else "input"))
            out = int(self._draw("output"))
            think = float(self._draw("think")) if k < count - 1 else 0.0
            ids, text = self._content(n_in)
            t = TurnPlan(ids, text, out, think)
            if recorded:
                t.recorded_ids, t.recorded_text = self._content(out)
            turns.append(t)
        pid, prefix = self._prefix()
        system_text = ids_to_words(prefix) if prefix and sc.api == "chat" else None
        return SessionPlan(index, sc, turns, prefix or None, system_text, pid, recorded)

    def _from_dataset(self, index: int, recorded: bool) -> SessionPlan:
        sc = self.sc
        assert self.dataset is not None and sc.dataset is not None
        entry = self.dataset.next()
        dturns = entry.turns if sc.dataset.mode == "sessions" else entry.turns[:1]
        turns: list[TurnPlan] = []
        for k, d in enumerate(dturns):
            out = d.output_len if d.output_len is not None else int(self._draw("output"))
            think = float(self._draw("think")) if k < len(dturns) - 1 else 0.0
            t = TurnPlan(d.user_ids, d.user_text, out, think)
            if recorded:
                if d.reply_text is not None:
                    t.recorded_ids, t.recorded_text = d.reply_ids, d.reply_text
                else:  # no recorded reply: one of the requested length
                    t.recorded_ids, t.recorded_text = self._content(out)
            turns.append(t)
        return SessionPlan(index, sc, turns, entry.system_ids, entry.system_text, None, recorded)


def iter_sessions(
    wl: WorkloadSpec,
    *,
    seed: int = 0,
    limit: int | None = None,
    vocab: tuple[int, int] = (VOCAB_LOW, VOCAB_HIGH),
) -> Iterator[SessionPlan]:
    """Sessions of ``wl`` in order (endless unless ``limit``), reproducible from ``seed``. A mix
    picks each session's scenario by weight. ``limit`` caps the requests (turns) of all
    sessions together: the session that reaches it is cut short, so a run of
    ``--num-requests N`` sends N requests."""
    rng = np.random.default_rng([seed, 1 << 21])
    sources = [_SessionSource(sc, i, seed, vocab) for i, sc in enumerate(wl.scenarios)]
    weights = np.array([sc.weight for sc in wl.scenarios], dtype=np.float64)
    weights /= weights.sum()
    planned = 0
    index = 0
    while True:
        picks = (
            rng.choice(len(sources), size=BLOCK, p=weights).tolist()
            if len(sources) > 1
            else [0] * BLOCK
        )
        for k in picks:
            if limit is not None and planned >= limit:
                return
            plan = sources[k].build(index)
            if not plan.turns:
                continue
            if limit is not None and planned + len(plan.turns) > limit:
                plan.turns = plan.turns[: limit - planned]
                plan.turns[-1].think_s = 0.0
            planned += len(plan.turns)
            index += 1
            yield plan


class History:
    """One running session: builds each turn's request from the history and takes in each
    answer (see the module docstring). ``encode`` re-tokenizes answers for a completions
    session whose server sends no token ids."""

    def __init__(self, plan: SessionPlan, encode: TokenEncoder | None = None) -> None:
        self.plan = plan
        self.encode = encode
        self.ids: list[int] = list(plan.system_ids or [])
        self.messages: list[dict[str, str]] = []
        if plan.api == "chat" and plan.system_text:
            self.messages.append({"role": "system", "content": plan.system_text})
        self.answer_source: str | None = None  # how the last answer entered the history

    @property
    def wants_answers(self) -> bool:
        """The server's answers shape the next turns (``history: answered``)."""
        return not self.plan.recorded

    def request(self, k: int, rid: int) -> RequestSpec:
        """Turn ``k`` (0-based) as request ``rid``."""
        plan, sc, t = self.plan, self.plan.scenario, self.plan.turns[k]
        temp = sc.temperature if sc.n == 1 else max(sc.temperature, 1.0)
        min_tokens = t.output_len if sc.ignore_eos else None
        if plan.api == "chat":
            messages = [*self.messages, {"role": "user", "content": t.user_text or ""}]
            in_len = sum(len(m["content"].split()) for m in messages)  # about one token a word
            return RequestSpec(
                rid, sc.name, "chat", in_len, t.output_len, sc.n, sc.ignore_eos, min_tokens,
                temp, None, None, messages, plan.prefix_id,
            )  # fmt: skip
        prompt = self.ids + (t.user_ids or [])
        return RequestSpec(
            rid, sc.name, "completions", len(prompt), t.output_len, sc.n, sc.ignore_eos,
            min_tokens, temp, prompt, None, None, plan.prefix_id,
        )  # fmt: skip

    def answered(self, k: int, req: RequestSpec, answer: Any, output_tokens: int | None) -> None:
        """Turn ``k`` was answered: the history becomes its prompt plus the answer."""
        t = self.plan.turns[k]
        if self.plan.api == "chat":
            if self.plan.recorded:
                text, self.answer_source = t.recorded_text or "", "recorded"
            else:
                text, self.answer_source = (answer.text if answer is not None else ""), "text"
            self.messages = [*(req.messages or []), {"role": "assistant", "content": text}]
            return
        prompt = req.prompt_token_ids or []
        if self.plan.recorded:
            reply, self.answer_source = list(t.recorded_ids or []), "recorded"
        elif answer is not None and answer.ids:
            reply, self.answer_source = answer.ids, "ids"
        elif answer is not None and answer.text and self.encode is not None:
            reply, self.answer_source = self.encode([answer.text])[0], "tokenizer"
        else:
            n = output_tokens or t.output_len
            key = f"answer-{self.plan.index}-{k}"
            reply, self.answer_source = make_prefix_ids(0, key, max(n, 1)), "synthetic"
        self.ids = prompt + reply
