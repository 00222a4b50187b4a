"""Workloads: every shipped file validates and produces the lengths it promises; bad files
give errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from profiler.distributions import LengthDist
from profiler.errors import SpecError
from profiler.load.traces import TraceRow
from profiler.load.workload import (
    available_workloads,
    iter_requests,
    sample_lengths,
    workload_from_name_or_path,
)

EXPECTED = {"default", "chat", "long-context", "reasoning", "best-of-n", "shared-prefix", "mix"}


def _take(it, n):  # type: ignore[no-untyped-def]
    return [r for _, r in zip(range(n), it, strict=False)]


def test_shipped_workloads_validate() -> None:
    names = set(available_workloads())
    assert names >= EXPECTED
    for name in names:
        wl = workload_from_name_or_path(name)
        assert wl.description
        reqs = _take(iter_requests(wl, seed=0), 200)
        assert len(reqs) == 200
        for r in reqs:
            assert r.output_len >= 1 and r.input_len >= 1
            if r.api == "completions":
                assert r.prompt_token_ids is not None and len(r.prompt_token_ids) == r.input_len


def test_packaged_copy_is_the_repo_copy() -> None:
    repo = Path(__file__).resolve().parents[2] / "workloads"
    packaged = Path(__file__).resolve().parents[2] / "profiler" / "data" / "workloads"
    assert packaged.resolve() == repo.resolve()


def test_default_is_exact_128_128() -> None:
    reqs = _take(iter_requests(workload_from_name_or_path("default")), 50)
    assert {(r.input_len, r.output_len, r.min_tokens, r.ignore_eos) for r in reqs} == {
        (128, 128, 128, True)
    }


def test_reasoning_lengths_span_1k_to_32k() -> None:
    outs = np.array(
        [r.output_len for r in _take(iter_requests(workload_from_name_or_path("reasoning")), 2000)]
    )
    assert outs.min() >= 1024 and outs.max() <= 32768
    assert outs.max() > 16000


def test_best_of_n_and_mix_weights() -> None:
    assert {r.n for r in _take(iter_requests(workload_from_name_or_path("best-of-n")), 20)} == {4}
    mix = _take(iter_requests(workload_from_name_or_path("mix"), seed=1), 4000)
    share = sum(r.scenario == "chat" for r in mix) / len(mix)
    assert share == pytest.approx(0.60, abs=0.03)


def test_shared_prefix_is_shared() -> None:
    reqs = _take(iter_requests(workload_from_name_or_path("shared-prefix")), 100)
    by_prefix: dict[str, list[list[int]]] = {}
    for r in reqs:
        assert r.prefix_id is not None and r.prompt_token_ids is not None
        by_prefix.setdefault(r.prefix_id, []).append(r.prompt_token_ids[:1024])
    assert 1 < len(by_prefix) <= 4
    for prefixes in by_prefix.values():
        assert all(p == prefixes[0] for p in prefixes)


def test_reproducible_and_trace_overrides() -> None:
    wl = workload_from_name_or_path("chat")
    a = _take(iter_requests(wl, seed=5), 30)
    b = _take(iter_requests(wl, seed=5), 30)
    assert a == b
    rows = [TraceRow(0.0, 7, 3), TraceRow(1.0, None, 9)]
    t = list(iter_requests(wl, trace_rows=rows))
    assert len(t) == 2 and t[0].input_len == 7 and t[0].output_len == 3 and t[1].output_len == 9


@pytest.mark.parametrize(
    "dist",
    [
        LengthDist(kind="uniform", min=10, max=20),
        LengthDist(kind="normal", mean=100, std=10, min=1, max=1000),
        LengthDist(kind="lognormal", mean=300, sigma=0.5, min=1, max=100000),
        LengthDist(kind="empirical", values=[1, 5, 9], weights=[0.2, 0.3, 0.5]),
    ],
)
def test_length_distributions(dist: LengthDist) -> None:
    x = sample_lengths(dist, np.random.default_rng(0), 20000)
    assert x.min() >= dist.min and x.max() <= dist.max
    if dist.kind == "uniform":
        assert x.mean() == pytest.approx(15, rel=0.02)
    if dist.kind in ("normal", "lognormal"):
        assert x.mean() == pytest.approx(dist.mean, rel=0.03)
    if dist.kind == "empirical":
        assert np.mean(x == 9) == pytest.approx(0.5, abs=0.02)


def test_bad_yaml_names_file_and_field(tmp_path: Path) -> None:
    f = tmp_path / "w.yaml"
    f.write_text("name: x\nscenarios:\n  - n: 17\n")
    with pytest.raises(SpecError) as e:
        workload_from_name_or_path(str(f))
    assert "w.yaml" in e.value.message and "scenarios.0.n" in e.value.message
    f.write_text("name: x\nscenarios:\n  - name: a\n    colour: red\n")
    with pytest.raises(SpecError) as e:
        workload_from_name_or_path(str(f))
    assert (
        "line 4" in e.value.message
        and "colour" in e.value.message
        and "allowed fields" in (e.value.fix or "")
    )
    f.write_text("name: [unclosed\n")
    with pytest.raises(SpecError) as e:
        workload_from_name_or_path(str(f))
    assert "not valid YAML" in e.value.message
    with pytest.raises(SpecError):
        workload_from_name_or_path("no-such-workload")
