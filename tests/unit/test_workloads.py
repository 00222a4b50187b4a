"""Workloads: shipped files validate and generate the requests they describe; length
distributions; prefixes; traces; file errors name the file and field; the CLI lists them."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from profiler.cli.main import cli
from profiler.distributions import LengthDist
from profiler.errors import SpecError
from profiler.load.prompts import VOCAB_HIGH, VOCAB_LOW, prefix_ids
from profiler.load.traces import TraceRow
from profiler.load.workload import (
    PACKAGED,
    RequestSpec,
    available_workloads,
    iter_requests,
    sample_lengths,
    workload_from_name_or_path,
)
from profiler.spec import Scenario, WorkloadSpec

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [
    "default",
    "gpu-default",
    "chat",
    "long-context",
    "reasoning",
    "best-of-n",
    "shared-prefix",
    "mix",
]
SESSION_WORKLOADS = ["multi-turn", "agentic"]


def take(wl: WorkloadSpec, count: int, **kw: object) -> list[RequestSpec]:
    return list(itertools.islice(iter_requests(wl, **kw), count))  # type: ignore[arg-type]


def test_every_shipped_workload_is_listed() -> None:
    assert sorted(available_workloads()) == sorted(SHIPPED + SESSION_WORKLOADS)


@pytest.mark.parametrize("name", SESSION_WORKLOADS)
def test_shipped_session_workloads_generate_sessions(name: str) -> None:
    from profiler.load.sessions import iter_sessions

    wl = workload_from_name_or_path(name)
    assert wl.name == name and wl.has_sessions()
    assert wl.arrival is not None and wl.arrival.kind == "users"
    sessions = list(itertools.islice(iter_sessions(wl, seed=0), 50))
    sc = wl.scenarios[0]
    assert sc.session is not None
    for s in sessions:
        assert sc.session.turns.min <= len(s.turns) <= sc.session.turns.upper()
        for t in s.turns:
            assert sc.output.min <= t.output_len <= sc.output.upper()
            assert t.think_s >= 0
    if name == "multi-turn":  # chat, 2-10 turns
        assert sc.api == "chat" and (sc.session.turns.min, sc.session.turns.max) == (2, 10)
    else:  # a long shared context, 10-50 short turns, short outputs
        assert sc.shared_prefix_len >= 1024
        assert (sc.session.turns.min, sc.session.turns.max) == (10, 50)
        assert sc.output.upper() <= 64
        assert sessions[0].system_ids is not None


def test_repo_and_packaged_copies_are_identical() -> None:
    repo = {p.name: p.read_bytes() for p in (ROOT / "workloads").glob("*.yaml")}
    packaged = {p.name: p.read_bytes() for p in PACKAGED.glob("*.yaml")}
    assert repo and repo == packaged


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_workload_generates_what_it_describes(name: str) -> None:
    wl = workload_from_name_or_path(name)
    assert wl.name == name
    assert wl.description and "\n" not in wl.description
    assert wl.num_requests is not None or wl.duration_s is not None
    assert wl.arrival is not None
    by_name = {sc.name: sc for sc in wl.scenarios}
    reqs = take(wl, 400)
    assert [r.id for r in reqs] == list(range(400))
    for r in reqs:
        sc = by_name[r.scenario]
        assert r.api == sc.api and r.n == sc.n and r.ignore_eos == sc.ignore_eos
        assert sc.output.min <= r.output_len <= sc.output.upper()
        user_len = r.input_len - sc.shared_prefix_len
        assert sc.input.min <= user_len <= sc.input.upper()
        assert r.min_tokens == (r.output_len if sc.ignore_eos else None)
        if r.api == "completions":
            assert r.prompt_token_ids is not None and len(r.prompt_token_ids) == r.input_len
            assert min(r.prompt_token_ids) >= VOCAB_LOW and max(r.prompt_token_ids) < VOCAB_HIGH
        assert r.input_len <= wl.max_input() and r.output_len <= wl.max_output()


@pytest.mark.parametrize(
    ("name", "num_requests", "concurrency", "taken", "input_len", "output_len"),
    [
        ("default", 200, 16, 200, 128, 128),  # the spine default
        # the default of a run launched on a GPU host: 1,000 requests of exactly 1,024 + 256
        # tokens, 256 in flight (enough streams for a GPU's batched decode regime)
        ("gpu-default", 1000, 256, 300, 1024, 256),
    ],
)
def test_the_default_workloads(
    name: str, num_requests: int, concurrency: int, taken: int, input_len: int, output_len: int
) -> None:
    wl = workload_from_name_or_path(name)
    assert wl.num_requests == num_requests
    assert wl.arrival is not None and wl.arrival.kind == "concurrency"
    assert wl.arrival.concurrency == concurrency
    reqs = take(wl, taken)
    assert {(r.input_len, r.output_len, r.api, r.n, r.ignore_eos) for r in reqs} == {
        (input_len, output_len, "completions", 1, True)
    }
    assert len({tuple(r.prompt_token_ids or []) for r in reqs}) == taken  # no accidental sharing


def test_best_of_n_samples_in_parallel() -> None:
    reqs = take(workload_from_name_or_path("best-of-n"), 20)
    assert {r.n for r in reqs} == {4}
    assert all(r.temperature >= 1.0 for r in reqs)


def test_n_above_one_raises_a_greedy_temperature() -> None:
    wl = WorkloadSpec(name="x", scenarios=[Scenario(n=8, temperature=0.0)])
    assert take(wl, 1)[0].temperature == 1.0
    wl = WorkloadSpec(name="x", scenarios=[Scenario(n=1, temperature=0.0)])
    assert take(wl, 1)[0].temperature == 0.0


def test_reasoning_outputs_span_1k_to_32k() -> None:
    outs = np.array([r.output_len for r in take(workload_from_name_or_path("reasoning"), 3000)])
    assert outs.min() >= 1024 and outs.max() <= 32768
    assert outs.max() > 16_000 and np.median(outs) > 2000


def test_shared_prefix_is_identical_per_prefix_id() -> None:
    wl = workload_from_name_or_path("shared-prefix")
    sc = wl.scenarios[0]
    reqs = take(wl, 200)
    by_prefix: dict[str | None, set[tuple[int, ...]]] = {}
    for r in reqs:
        assert r.prompt_token_ids is not None
        by_prefix.setdefault(r.prefix_id, set()).add(
            tuple(r.prompt_token_ids[: sc.shared_prefix_len])
        )
    assert len(by_prefix) == sc.num_prefixes
    assert all(len(v) == 1 for v in by_prefix.values())
    assert len({next(iter(v)) for v in by_prefix.values()}) == sc.num_prefixes
    # the rest of each prompt is its own
    tails = {tuple((r.prompt_token_ids or [])[sc.shared_prefix_len :][:16]) for r in reqs}
    assert len(tails) == len(reqs)


def test_mix_follows_the_weights() -> None:
    wl = workload_from_name_or_path("mix")
    counts = Counter(r.scenario for r in take(wl, 4000))
    total = sum(sc.weight for sc in wl.scenarios)
    for sc in wl.scenarios:
        assert counts[sc.name] / 4000 == pytest.approx(sc.weight / total, abs=0.03)


def test_same_seed_same_requests_other_seed_differs() -> None:
    wl = workload_from_name_or_path("mix")
    a, b, c = take(wl, 300, seed=5), take(wl, 300, seed=5), take(wl, 300, seed=6)
    assert a == b
    assert [r.input_len for r in a] != [r.input_len for r in c]


def test_chat_mode_sends_one_word_per_token() -> None:
    sc = Scenario(
        name="c",
        api="chat",
        input=LengthDist(kind="uniform", min=5, max=50),
        shared_prefix_len=12,
        num_prefixes=2,
    )
    reqs = take(WorkloadSpec(name="chat-api", scenarios=[sc]), 100)
    for r in reqs:
        assert r.prompt_token_ids is None and r.messages is not None
        system, user = r.messages
        assert system["role"] == "system" and user["role"] == "user"
        assert len(system["content"].split()) == 12
        assert len(system["content"].split()) + len(user["content"].split()) == r.input_len
    systems: dict[str | None, set[str]] = {}
    for r in reqs:
        assert r.messages is not None
        systems.setdefault(r.prefix_id, set()).add(r.messages[0]["content"])
    assert all(len(v) == 1 for v in systems.values()) and len(systems) == 2


def test_custom_vocab_range() -> None:
    wl = WorkloadSpec(name="v", scenarios=[Scenario(input=LengthDist.fixed(500))])
    ids = [t for r in take(wl, 20, vocab=(100, 110)) for t in r.prompt_token_ids or []]
    assert set(ids) == set(range(100, 110))


def test_trace_rows_override_lengths_and_end_the_stream() -> None:
    sc = Scenario(shared_prefix_len=8, output=LengthDist.fixed(3))
    wl = WorkloadSpec(name="t", scenarios=[sc])
    rows = [
        TraceRow(0.0, input_len=20, output_len=5, prefix_id="sys-a"),
        TraceRow(0.1),
        TraceRow(0.2, input_len=4, prefix_id="sys-a"),
        TraceRow(0.3, input_len=50, prefix_id="sys-b"),
    ]
    reqs = list(iter_requests(wl, trace_rows=rows))
    assert len(reqs) == 4
    assert [(r.input_len, r.output_len) for r in reqs] == [(20, 5), (136, 3), (9, 3), (50, 3)]
    assert [r.prefix_id for r in reqs[::2]] == ["sys-a", "sys-a"]
    assert all(len(r.prompt_token_ids or []) == r.input_len for r in reqs)
    a, b, d = (r.prompt_token_ids or [] for r in (reqs[0], reqs[2], reqs[3]))
    assert a[:8] == b[:8] == prefix_ids(0, "sys-a", 8) and d[:8] != a[:8]


def test_prefix_ids_do_not_depend_on_the_process_hash_seed() -> None:
    code = "from profiler.load.prompts import prefix_ids; print(prefix_ids(3, 'sys-a', 6))"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert outs == {f"{prefix_ids(3, 'sys-a', 6)}\n"}


# ------------------------------------------------------------------ length distributions
RNG = np.random.default_rng(1)


def test_fixed_and_uniform_lengths() -> None:
    assert set(sample_lengths(LengthDist.fixed(77), RNG, 100).tolist()) == {77}
    u = sample_lengths(LengthDist(kind="uniform", min=10, max=20), RNG, 20_000)
    assert set(u.tolist()) == set(range(10, 21))
    assert u.mean() == pytest.approx(15, abs=0.1)


def test_normal_lengths_are_clipped() -> None:
    x = sample_lengths(LengthDist(kind="normal", mean=500, std=100, min=1, max=10_000), RNG, 50_000)
    assert x.mean() == pytest.approx(500, rel=0.01) and x.std() == pytest.approx(100, rel=0.03)
    y = sample_lengths(LengthDist(kind="normal", mean=100, std=100, min=50, max=120), RNG, 10_000)
    assert y.min() == 50 and y.max() == 120


def test_lognormal_mean_is_the_lengths_mean() -> None:
    x = sample_lengths(LengthDist(kind="lognormal", mean=300, sigma=0.5), RNG, 100_000)
    assert x.mean() == pytest.approx(300, rel=0.02)
    assert np.median(x) < x.mean()  # right-skewed


def test_empirical_lengths_follow_weights() -> None:
    d = LengthDist(kind="empirical", values=[10, 100, 1000], weights=[1, 2, 7], max=500)
    x = sample_lengths(d, RNG, 20_000)
    freq = Counter(x.tolist())
    assert set(freq) == {10, 100, 500}  # 1000 clipped to max
    assert freq[500] / 20_000 == pytest.approx(0.7, abs=0.02)
    assert freq[100] / 20_000 == pytest.approx(0.2, abs=0.02)


# ------------------------------------------------------------------ file errors
def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "wl.yaml"
    p.write_text(text)
    return p


BASE = "name: x\nscenarios:\n  - name: a\n"


def test_unknown_field_names_file_line_field_and_allowed(tmp_path: Path) -> None:
    p = write(tmp_path, BASE + "    input: {kind: fixed, value: 8}\n    colour: red\n")
    with pytest.raises(SpecError) as e:
        workload_from_name_or_path(str(p))
    assert str(p) in e.value.message and "line 5" in e.value.message
    assert "scenarios.0.colour" in e.value.message
    assert e.value.fix is not None and "shared_prefix_len" in e.value.fix


def test_n_out_of_range_names_the_field(tmp_path: Path) -> None:
    p = write(tmp_path, BASE + "    n: 17\n")
    with pytest.raises(
        SpecError, match=r"wl.yaml: line 4 field 'scenarios.0.n'.*less than or equal to 16"
    ):
        workload_from_name_or_path(str(p))


def test_bad_distribution_names_the_field(tmp_path: Path) -> None:
    p = write(tmp_path, BASE + "    output: {kind: lognormal, mean: 100}\n")
    with pytest.raises(SpecError, match=r"scenarios.0.output.*needs sigma"):
        workload_from_name_or_path(str(p))


def test_bad_yaml_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"wl.yaml: line \d+ is not valid YAML"):
        workload_from_name_or_path(str(write(tmp_path, "name: [x\n")))
    with pytest.raises(SpecError, match="does not exist"):
        workload_from_name_or_path(str(tmp_path / "nope.yaml"))
    with pytest.raises(SpecError) as e:
        workload_from_name_or_path("no-such-workload")
    assert e.value.fix is not None
    assert all(name in e.value.fix for name in SHIPPED)


def test_a_directory_named_like_a_workload_does_not_shadow_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "default").mkdir()
    monkeypatch.chdir(tmp_path)
    assert workload_from_name_or_path("default").name == "default"


# ------------------------------------------------------------------ CLI
def test_cli_lists_workloads() -> None:
    res = CliRunner().invoke(cli, ["workloads", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [r["name"] for r in rows] == sorted(SHIPPED + SESSION_WORKLOADS)
    assert all(r["description"] for r in rows)
    res = CliRunner().invoke(cli, ["workloads"])
    assert res.exit_code == 0 and "shared-prefix" in res.output


def test_cli_shows_one_workload() -> None:
    res = CliRunner().invoke(cli, ["workloads", "best-of-n", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["scenarios"][0]["n"] == 4
    res = CliRunner().invoke(cli, ["workloads", "nope"])
    assert res.exit_code == 2 and "unknown workload" in res.output
