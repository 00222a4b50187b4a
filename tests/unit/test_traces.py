"""Public trace formats read natively: Mooncake (hash_ids become shared prompt prefixes),
Azure LLM inference and BurstGPT; format detection, --trace-format and --trace-speedup. Every
fixture file is written by the test, in the publishers' documented columns and units."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from profiler.errors import SpecError
from profiler.load.arrivals import read_trace, schedule
from profiler.load.traces import detect
from profiler.load.workload import iter_requests
from profiler.run_flags import RunOptions
from profiler.run_options import build_run_spec
from profiler.run_server import probe_host
from profiler.spec import ArrivalSpec, WorkloadSpec

MOONCAKE = [  # timestamp in ms; hash_ids are 512-token blocks
    {"timestamp": 0, "input_length": 1100, "output_length": 12, "hash_ids": [0, 1, 2]},
    {"timestamp": 0, "input_length": 700, "output_length": 5, "hash_ids": [0, 3]},
    {"timestamp": 3052, "input_length": 1200, "output_length": 9, "hash_ids": [0, 1, 4]},
]
AZURE = (
    "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    "2023-11-16 18:15:46.6805900,374,44\n"
    "2023-11-16 18:15:50.9951690,396,109\n"
    "2023-11-16 18:15:51.2224670,0,55\n"
)
BURSTGPT = (
    "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    "5,ChatGPT,472,18,490,Conversation log\n"
    "45,ChatGPT,1087,230,1317,Conversation log\n"
    "1106,ChatGPT,0,0,0,Conversation log\n"
    "1129,GPT-4,1305,477,1782,API log\n"
)


def _mooncake(tmp_path: Path) -> Path:
    p = tmp_path / "mooncake.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in MOONCAKE) + "\n")
    return p


def test_mooncake_rows_and_shared_prefixes(tmp_path: Path) -> None:
    path = _mooncake(tmp_path)
    assert detect(path) == "mooncake"
    rows = read_trace(path)
    assert [r.timestamp_s for r in rows] == [0.0, 0.0, 3.052]
    assert [(r.input_len, r.output_len) for r in rows] == [(1100, 12), (700, 5), (1200, 9)]
    assert rows[0].hash_ids == (0, 1, 2)
    wl = WorkloadSpec.model_validate({"name": "t", "scenarios": [{"name": "s"}]})
    reqs = list(iter_requests(wl, seed=0, trace_rows=rows))
    ids = [r.prompt_token_ids or [] for r in reqs]
    assert [len(x) for x in ids] == [1100, 700, 1200]
    assert [r.output_len for r in reqs] == [12, 5, 9]
    # shared hash ids are shared tokens: block 0 in all three, blocks 0-1 in the first and third
    assert ids[0][:512] == ids[1][:512] == ids[2][:512]
    assert ids[0][:1024] == ids[2][:1024]
    assert ids[1][512:700] != ids[0][512:700]  # block 3 is not block 1
    assert ids[0][1024:1100] != ids[2][1024:1100]  # block 2 is not block 4
    # the same seed gives the same blocks in every process
    again = list(iter_requests(wl, seed=0, trace_rows=rows))
    assert [r.prompt_token_ids for r in again] == ids
    chat = WorkloadSpec.model_validate({"name": "t", "scenarios": [{"name": "s", "api": "chat"}]})
    msgs = [r.messages for r in iter_requests(chat, seed=0, trace_rows=rows)]
    first = [(m or [{}])[0]["content"].split() for m in msgs]
    assert first[0][:512] == first[1][:512]


def test_azure_and_burstgpt(tmp_path: Path) -> None:
    az = tmp_path / "AzureLLMInferenceTrace_conv.csv"
    az.write_text(AZURE)
    assert detect(az) == "azure"
    rows = read_trace(az)
    assert [r.input_len for r in rows] == [374, 396, 1]  # 0 context tokens become 1
    assert [r.output_len for r in rows] == [44, 109, 55]
    assert np.allclose([r.timestamp_s for r in rows], [0.0, 4.314579, 4.541877])
    bg = tmp_path / "BurstGPT_1.csv"
    bg.write_text(BURSTGPT)
    assert detect(bg) == "burstgpt"
    rows = read_trace(bg)
    # the failed request (0 response tokens) is skipped; times in seconds from the first
    assert [r.timestamp_s for r in rows] == [0.0, 40.0, 1124.0]
    assert [(r.input_len, r.output_len) for r in rows] == [(472, 18), (1087, 230), (1305, 477)]


def test_format_option_speedup_and_errors(tmp_path: Path) -> None:
    path = _mooncake(tmp_path)
    # --trace-format picks the reader when detection would not
    odd = tmp_path / "trace.data"
    odd.write_text(path.read_text())
    sched = schedule(
        ArrivalSpec(kind="trace", trace=odd, trace_format="mooncake"), None, None, workload="w"
    )
    assert sched.trace_rows is not None and sched.trace_rows[0].hash_ids == (0, 1, 2)
    spec = build_run_spec(
        probe_host(), RunOptions(endpoint="http://127.0.0.1:9", trace=path, trace_speedup=2.0)
    )
    assert spec.arrival.kind == "trace" and spec.arrival.time_scale == 0.5
    sched = schedule(spec.arrival, None, None, workload="w")
    assert sched.offsets_s is not None and sched.offsets_s.tolist() == [0.0, 0.0, 1.526]
    bad = tmp_path / "bad.csv"
    bad.write_text("when,tokens\n1,2\n")
    with pytest.raises(SpecError) as e:
        read_trace(bad)
    assert "bad.csv" in e.value.message and "--trace-format" in e.value.one_line()
    missing = tmp_path / "m.csv"
    missing.write_text("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,3\n")
    with pytest.raises(SpecError) as e:
        read_trace(missing, "azure")
    assert "GeneratedTokens" in e.value.message
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"timestamp": 0, "input_length": 5, "output_length": 1}\n{"timestamp": 1}\n')
    with pytest.raises(SpecError, match="b.jsonl:2: Mooncake field 'input_length'"):
        read_trace(broken)
