"""Sessions: the spec, the session plans, the history each turn sends (completions with exact
token ids, chat with messages), the users closed loop and open-loop session arrivals, against
the fake server on loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from profiler.clock import RunClock
from profiler.distributions import TimeDist
from profiler.errors import SpecError
from profiler.load.arrivals import LoadPlan
from profiler.load.client import ClientOptions, StreamingClient
from profiler.load.driver import Driver
from profiler.load.sessions import History, iter_sessions, sample_seconds
from profiler.load.stream import Answer, StreamState
from profiler.run_flags import RunOptions
from profiler.run_options import build_run_spec
from profiler.run_server import probe_host
from profiler.spec import ArrivalSpec, RunSpec, SessionSpec, WorkloadSpec
from profiler.store.record import RequestRecord, turn_bucket
from profiler.store.rundir import read_records
from tests.fakes.fake_openai import TOKEN_ID, FakeConfig, serve_in_thread


def _wl(api: str = "completions", turns: int = 3, think: float = 0.0, **extra: Any) -> WorkloadSpec:
    sc: dict[str, Any] = {
        "name": "conv",
        "api": api,
        "shared_prefix_len": 16,
        "input": {"kind": "fixed", "value": 10},
        "output": {"kind": "fixed", "value": 4},
        "session": {
            "turns": {"kind": "fixed", "value": turns},
            "think_time_s": {"kind": "fixed", "value": think},
        },
    }
    sc.update(extra)
    return WorkloadSpec.model_validate({"name": "t", "scenarios": [sc]})


# ------------------------------------------------------------------ spec
def test_spec_sessions_and_users() -> None:
    with pytest.raises(ValidationError, match="needs users"):
        ArrivalSpec(kind="users")
    assert ArrivalSpec(kind="users", users=4).label() == "users=4"
    with pytest.raises(ValidationError, match="needs mean"):
        TimeDist(kind="exponential")
    wl = _wl(turns=5)
    assert wl.has_sessions()
    # the longest context: prefix + first message + 4 more turns of message and answer
    assert wl.max_input() == 16 + 10 + 4 * (10 + 4)
    ep = {"url": "http://127.0.0.1:1"}
    with pytest.raises(ValidationError, match="--users"):
        RunSpec(workload=wl, arrival=ArrivalSpec(concurrency=2), endpoint=ep, num_requests=3)
    with pytest.raises(ValidationError, match="--workers"):
        RunSpec(
            workload=wl,
            arrival=ArrivalSpec(kind="users", users=2),
            endpoint=ep,
            num_requests=3,
            workers=2,
        )


def test_think_times_are_seconds_with_zero_allowed() -> None:
    rng = np.random.default_rng(0)
    assert sample_seconds(TimeDist(), rng, 3).tolist() == [0.0, 0.0, 0.0]
    v = sample_seconds(TimeDist(kind="uniform", min=1, max=2), rng, 1000)
    assert v.min() >= 1 and v.max() <= 2
    e = sample_seconds(TimeDist(kind="exponential", mean=2.0, max=100), rng, 20000)
    assert e.mean() == pytest.approx(2.0, rel=0.05)


# ------------------------------------------------------------------ plans
def test_sessions_are_reproducible_and_cut_at_the_request_limit() -> None:
    wl = WorkloadSpec.model_validate(
        {
            "name": "t",
            "scenarios": [
                {
                    "name": "conv",
                    "input": {"kind": "uniform", "min": 5, "max": 50},
                    "session": {"turns": {"kind": "uniform", "min": 2, "max": 6}},
                },
                {"name": "single", "weight": 0.5},
            ],
        }
    )
    a = list(iter_sessions(wl, seed=3, limit=40))
    b = list(iter_sessions(wl, seed=3, limit=40))
    assert sum(len(s.turns) for s in a) == 40  # the last session is cut short
    assert [[t.user_ids for t in s.turns] for s in a] == [[t.user_ids for t in s.turns] for s in b]
    assert {s.scenario.name for s in a} == {"conv", "single"}
    assert all(len(s.turns) == 1 for s in a if s.scenario.name == "single")
    assert all(2 <= len(s.turns) <= 6 for s in a[:-1] if s.scenario.name == "conv")
    assert [s.index for s in a] == list(range(len(a)))
    assert all(s.turns[-1].think_s == 0.0 for s in a)
    other = list(iter_sessions(wl, seed=4, limit=40))
    assert [t.user_ids for t in other[0].turns] != [t.user_ids for t in a[0].turns]


def test_history_completions_sends_prompt_plus_answer_ids() -> None:
    plan = next(iter_sessions(_wl(), seed=0))
    h = History(plan)
    r0 = h.request(0, 0)
    assert r0.prompt_token_ids == plan.system_ids + plan.turns[0].user_ids
    answer = Answer(want_ids=True)
    answer.parts.append(" a b")
    answer.ids.extend([901, 902])  # type: ignore[union-attr]
    h.answered(0, r0, answer, 2)
    assert h.answer_source == "ids"
    r1 = h.request(1, 1)
    assert r1.prompt_token_ids == r0.prompt_token_ids + [901, 902] + plan.turns[1].user_ids
    # no ids from the server: the answer's text re-tokenized, else ids of its length
    h2 = History(plan, encode=lambda texts: [[len(t)] for t in texts])
    no_ids = Answer(want_ids=True)
    no_ids.parts.append("hello")
    h2.answered(0, r0, no_ids, 1)
    assert h2.answer_source == "tokenizer" and h2.ids == r0.prompt_token_ids + [5]
    h3 = History(plan)
    h3.answered(0, r0, Answer(want_ids=True), 4)
    assert h3.answer_source == "synthetic" and len(h3.ids) == len(r0.prompt_token_ids) + 4


def test_history_chat_and_recorded() -> None:
    plan = next(iter_sessions(_wl("chat"), seed=0))
    h = History(plan)
    r0 = h.request(0, 0)
    assert [m["role"] for m in r0.messages or []] == ["system", "user"]
    ans = Answer()
    ans.parts.extend(["Hi", " there"])
    h.answered(0, r0, ans, 2)
    r1 = h.request(1, 1)
    assert [m["role"] for m in r1.messages or []] == ["system", "user", "assistant", "user"]
    assert (r1.messages or [])[2]["content"] == "Hi there"
    rec = _wl(session={"turns": {"kind": "fixed", "value": 2}, "history": "recorded"})
    rplan = next(iter_sessions(rec, seed=0))
    assert rplan.recorded and len(rplan.turns[0].recorded_ids or []) == 4
    hr = History(rplan)
    assert not hr.wants_answers
    q0 = hr.request(0, 0)
    hr.answered(0, q0, None, None)
    assert hr.request(1, 1).prompt_token_ids == (
        (q0.prompt_token_ids or [])
        + (rplan.turns[0].recorded_ids or [])
        + (rplan.turns[1].user_ids or [])
    )


def test_stream_keeps_the_answer_only_when_asked() -> None:
    events = [
        {"choices": [{"index": 0, "text": " a", "token_ids": [11]}]},
        {"choices": [{"index": 0, "text": " b", "token_ids": [12], "finish_reason": "length"}]},
        {
            "choices": [],
            "usage": {
                "prompt_tokens": 9,
                "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": 8},
            },
        },
    ]
    body = (
        b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    )
    answer = Answer(want_ids=True)
    rec = RequestRecord(0, "w", "s", 0.0)
    st = StreamState(rec, None, answer)
    st.feed(body, 1.0)
    st.close(1.0)
    assert answer.text == " a b" and answer.ids == [11, 12]
    assert rec.cached_tokens == 8 and rec.output_tokens == 2
    plain = RequestRecord(1, "w", "s", 0.0)
    StreamState(plain).feed(body, 1.0)
    assert plain.cached_tokens == 8  # the final usage is read for every request


def test_turn_buckets() -> None:
    assert [turn_bucket(k) for k in (1, 2, 4, 5, 50)] == ["1", "2-4", "2-4", "5+", "5+"]


# ------------------------------------------------------------------ loops against the fake
def _drive(url: str, wl: WorkloadSpec, plan: LoadPlan, limit: int) -> list[RequestRecord]:
    clock = RunClock()
    records: list[RequestRecord] = []

    async def main() -> None:
        opts = ClientOptions(base_url=url, model="fake-model", request_timeout_s=30)
        async with StreamingClient(opts, clock) as client:
            driver = Driver(client, clock, [records.append])
            await driver.run(iter_sessions(wl, seed=1, limit=limit), plan)

    asyncio.run(main())
    return records


def _spans(records: list[RequestRecord]) -> dict[int, tuple[float, float]]:
    spans: dict[int, tuple[float, float]] = {}
    for r in records:
        assert r.session_id is not None and r.send_s is not None and r.end_s is not None
        lo, hi = spans.get(r.session_id, (r.send_s, r.end_s))
        spans[r.session_id] = (min(lo, r.send_s), max(hi, r.end_s))
    return spans


def _max_overlap(spans: dict[int, tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in spans.values()] + [(b, -1) for _, b in spans.values()])
    live = peak = 0
    for _, d in edges:
        live += d
        peak = max(peak, live)
    return peak


def test_users_keep_their_slot_through_turns_and_think_times() -> None:
    wl = _wl(turns=3, think=0.03)
    with serve_in_thread(FakeConfig(keep_bodies=True, itl_ms=1)) as fake:
        recs = _drive(
            fake.url, wl, LoadPlan("t", num_requests=18, concurrency=2, sessions=True), 18
        )
        bodies = fake.counters.bodies
    assert len(recs) == 18 and all(r.outcome == "ok" for r in recs)
    assert sorted(r.id for r in recs) == list(range(18))
    by_session: dict[int, list[RequestRecord]] = {}
    for r in recs:
        by_session.setdefault(r.session_id or 0, []).append(r)
    assert len(by_session) == 6
    for turns in by_session.values():
        turns.sort(key=lambda r: r.turn or 0)
        assert [r.turn for r in turns] == [1, 2, 3]
        for prev, nxt in zip(turns, turns[1:], strict=False):
            # the next turn waits for the answer, then the think time
            assert nxt.send_s - prev.end_s >= 0.03 - 1e-3  # type: ignore[operator]
            assert nxt.intended_start_s >= prev.end_s  # type: ignore[operator]
    # two users: never more than two sessions live at once, though a user thinks between turns
    assert _max_overlap(_spans(recs)) <= 2
    # exact history: turn k+1's prompt is turn k's prompt + the answer's ids + the new message
    prompts = [b["prompt"] for b in bodies]
    wants_ids = [bool(b.get("return_token_ids")) for b in bodies]
    by_len = sorted(prompts, key=len)
    assert {len(p) for p in prompts} == {26, 40, 54}  # 16 + 10, + 4 + 10, + 4 + 10
    for p in prompts:
        if len(p) > 26:
            parent = [q for q in by_len if len(q) == len(p) - 14 and p[: len(q)] == q]
            assert parent, "a later turn must extend an earlier prompt"
            assert p[len(parent[0]) : len(parent[0]) + 4] == [TOKEN_ID] * 4
    # ids are asked for only when a next turn will send the answer back
    assert all(w == (len(p) < 54) for p, w in zip(prompts, wants_ids, strict=True))


def test_open_loop_sessions_with_a_cap() -> None:
    wl = _wl("chat", turns=2)
    offsets = np.arange(10) * 0.01
    plan = LoadPlan("t", num_requests=12, offsets_s=offsets, max_concurrency=3, sessions=True)
    with serve_in_thread(FakeConfig(keep_bodies=True, itl_ms=2)) as fake:
        recs = _drive(fake.url, wl, plan, 12)
        bodies = fake.counters.bodies
    assert len(recs) == 12 and all(r.outcome == "ok" for r in recs)
    assert len({r.session_id for r in recs}) == 6
    assert all(r.queue_wait_s is not None for r in recs)
    firsts = sorted(r.intended_start_s for r in recs if r.turn == 1)
    assert np.allclose(np.diff(firsts), 0.01, atol=1e-6)  # sessions start on the schedule
    seconds = [b["messages"] for b in bodies if len(b["messages"]) == 4]
    assert len(seconds) == 6
    assert all(m[2] == {"role": "assistant", "content": " tok" * 4} for m in seconds)


def test_a_failed_turn_ends_its_session() -> None:
    wl = _wl(turns=4)
    with serve_in_thread(FakeConfig(error_rate=0.3, seed=2)) as fake:
        recs = _drive(
            fake.url, wl, LoadPlan("t", num_requests=40, concurrency=3, sessions=True), 40
        )
    failed = [r for r in recs if r.outcome != "ok"]
    assert failed
    for f in failed:
        later = [r for r in recs if r.session_id == f.session_id and (r.turn or 0) > (f.turn or 0)]
        assert not later


# ------------------------------------------------------------------ a whole run
def test_run_of_a_session_workload_records_and_summarises_turns(tmp_path: Path) -> None:
    from profiler.runner import execute

    wl = tmp_path / "wl.yaml"
    wl.write_text(
        "name: s\nnum_requests: 24\narrival: {kind: users, users: 3}\nscenarios:\n"
        "  - name: c\n    shared_prefix_len: 32\n    input: {kind: fixed, value: 16}\n"
        "    output: {kind: fixed, value: 4}\n    session:\n"
        "      turns: {kind: fixed, value: 6}\n      think_time_s: {kind: fixed, value: 0.01}\n"
    )
    with serve_in_thread(FakeConfig(itl_ms=1, prompt_tokens_details=True)) as fake:
        spec = build_run_spec(
            probe_host(),
            RunOptions(
                endpoint=fake.url,
                workload=str(wl),
                out=tmp_path / "runs",
                run_id="s",
                sample_interval=0.05,
            ),  # fmt: skip
        )
        res = execute(spec)
    recs = read_records(res.run_dir)
    assert len(recs) == 24 and {r.turn for r in recs} == set(range(1, 7))
    assert len({r.session_id for r in recs}) == 4
    s = res.summary["sessions"]
    assert s["sessions"] == 4 and s["complete_sessions"] == 4
    assert s["turns_per_session"]["mean"] == 6
    assert [s["by_turn"][b]["requests"] for b in ("1", "2-4", "5+")] == [4, 12, 8]
    assert s["duration_s"]["count"] == 4 and s["duration_s"]["max"] > 0
    per = {r["turn"]: r for r in s["per_turn"]}
    assert [per[k]["prompt_tokens_mean"] for k in range(1, 7)] == [48 + 20 * k for k in range(6)]
    # the fake's cache: turn 1 hits the shared prompt's 32 tokens, later turns the history
    assert 0 < per[1]["cached_tokens_mean"] <= 32
    assert all(per[k + 1]["cached_tokens_mean"] > per[k]["cached_tokens_mean"] for k in range(1, 6))
    cache = res.summary["prefix_cache"]
    assert cache["available"] and cache["hits"] > 0 and 0 < cache["hit_ratio"] < 1
    assert cache["timeline"]["t_s"]
    manifest = json.loads((res.run_dir / "manifest.json").read_text())
    assert manifest["spec"]["arrival"]["kind"] == "users"


def test_session_cli_options(tmp_path: Path) -> None:
    ep = "http://127.0.0.1:9"
    spec = build_run_spec(probe_host(), RunOptions(endpoint=ep, workload="multi-turn", users=3))
    assert spec.arrival.kind == "users" and spec.arrival.users == 3
    # the workload's own closed loop is its users
    spec = build_run_spec(probe_host(), RunOptions(endpoint=ep, workload="agentic"))
    assert spec.arrival.kind == "users" and spec.arrival.users == 8
    spec = build_run_spec(probe_host(), RunOptions(endpoint=ep, workload="multi-turn", rate=0.5))
    assert spec.arrival.kind == "poisson"
    with pytest.raises(SpecError, match="--users"):
        build_run_spec(probe_host(), RunOptions(endpoint=ep, workload="multi-turn", concurrency=4))
    with pytest.raises(SpecError, match="--users cannot"):
        build_run_spec(
            probe_host(), RunOptions(endpoint=ep, workload="multi-turn", users=2, rate=1)
        )
    sess = SessionSpec()
    assert sess.history == "answered" and sess.turns.value == 3


def test_trace_rows_start_sessions(tmp_path: Path) -> None:
    from profiler.runner import execute

    trace = tmp_path / "starts.jsonl"
    trace.write_text("".join(json.dumps({"timestamp": t}) + "\n" for t in (0, 0.05, 0.1, 0.15)))
    wl = tmp_path / "wl.yaml"
    wl.write_text(
        "name: s\nscenarios:\n  - name: c\n    input: {kind: fixed, value: 8}\n"
        "    output: {kind: fixed, value: 2}\n    session:\n      turns: {kind: fixed, value: 2}\n"
    )
    with serve_in_thread(FakeConfig()) as fake:
        spec = build_run_spec(
            probe_host(),
            RunOptions(
                endpoint=fake.url,
                workload=str(wl),
                trace=trace,
                num_requests=8,
                out=tmp_path / "runs",
                run_id="t",
                no_telemetry=True,
            ),  # fmt: skip
        )
        res = execute(spec)
    recs = read_records(res.run_dir)
    assert len(recs) == 8 and len({r.session_id for r in recs}) == 4
    starts = sorted(r.intended_start_s for r in recs if r.turn == 1)
    assert np.allclose(np.diff(starts), 0.05, atol=1e-6)
    assert res.summary["sessions"]["complete_sessions"] == 4
