"""Datasets from local files: ShareGPT, OpenAI chat JSONL, and JSONL / CSV / Parquet with a
prompt column; tokenized with the model's tokenizer; one-line errors for a missing file,
column or tokenizer. Every fixture file is written by the test."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from profiler.errors import SpecError
from profiler.load.datasets import DatasetStream, detect_format, read_dataset
from profiler.load.sessions import History, iter_sessions
from profiler.load.workload import iter_requests
from profiler.run_flags import RunOptions
from profiler.run_options import build_run_spec
from profiler.run_server import probe_host
from profiler.spec import DatasetSpec, WorkloadSpec
from profiler.store.rundir import read_records
from tests.fakes.fake_openai import FakeConfig, serve_in_thread

SHAREGPT = [
    {
        "id": "a",
        "conversations": [
            {"from": "human", "value": "What is a GPU?"},
            {"from": "gpt", "value": "A graphics processing unit, used for parallel math."},
            {"from": "human", "value": "And HBM?"},
            {"from": "gpt", "value": "High bandwidth memory."},
        ],
    },
    {"id": "b", "conversations": [{"from": "gpt", "value": "orphan reply"}]},  # no user turn
    {
        "id": "c",
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Name a prime."},
            {"from": "gpt", "value": "Seven."},
        ],
    },
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from profiler.serving.tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


def _encode(tiny: Path, text: str) -> list[int]:
    from tokenizers import Tokenizer

    return (
        Tokenizer.from_file(str(tiny / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    )


def _sharegpt(tmp_path: Path) -> Path:
    p = tmp_path / "sg.json"
    p.write_text(json.dumps(SHAREGPT))
    return p


def _wl(ds: DatasetSpec, api: str = "completions", **session: object) -> WorkloadSpec:
    sc: dict[str, object] = {"name": "d", "api": api, "dataset": ds.model_dump()}
    if session:
        sc["session"] = session
    return WorkloadSpec.model_validate({"name": "t", "scenarios": [sc]})


def test_sharegpt_first_turns_are_tokenized_prompts(tmp_path: Path, tiny: Path) -> None:
    ds = DatasetSpec(path=_sharegpt(tmp_path), tokenizer=str(tiny), shuffle=False)
    assert detect_format(ds.path) == "sharegpt"
    convs = read_dataset(ds)
    assert len(convs) == 2 and convs[1].system == "Be brief."  # the orphan reply is dropped
    gen = iter_requests(_wl(ds), seed=0)
    reqs = [next(gen) for _ in range(3)]
    assert reqs[0].prompt_token_ids == _encode(tiny, "What is a GPU?")
    # output length: the recorded reply's tokens
    assert reqs[0].output_len == len(_encode(tiny, SHAREGPT[0]["conversations"][1]["value"]))
    assert reqs[1].prompt_token_ids == _encode(tiny, "Be brief.") + _encode(tiny, "Name a prime.")
    assert reqs[2].prompt_token_ids == reqs[0].prompt_token_ids  # cycles through the file
    chat = [next(iter_requests(_wl(ds, "chat"), seed=0))]
    assert chat[0].messages == [{"role": "user", "content": "What is a GPU?"}]
    # --output-len overrides the dataset's lengths
    fixed = ds.model_copy(update={"output_len": "scenario"})
    assert next(iter_requests(_wl(fixed), seed=0)).output_len == 128


def test_sharegpt_conversations_as_sessions(tmp_path: Path, tiny: Path) -> None:
    ds = DatasetSpec(path=_sharegpt(tmp_path), tokenizer=str(tiny), mode="sessions", shuffle=False)
    wl = _wl(ds, history="recorded")
    assert wl.has_sessions()
    plans = list(iter_sessions(wl, seed=0, limit=5))
    assert [len(p.turns) for p in plans] == [2, 1, 2]  # cut at 5 requests
    first = plans[0]
    assert first.turns[1].user_ids == _encode(tiny, "And HBM?")
    assert first.turns[0].recorded_text == SHAREGPT[0]["conversations"][1]["value"]
    h = History(first)
    r0 = h.request(0, 0)
    h.answered(0, r0, None, None)
    r1 = h.request(1, 1)
    # recorded history: the dataset's own reply sits between the two user turns
    assert r1.prompt_token_ids == (
        _encode(tiny, "What is a GPU?")
        + _encode(tiny, SHAREGPT[0]["conversations"][1]["value"])
        + _encode(tiny, "And HBM?")
    )
    assert plans[1].system_ids == _encode(tiny, "Be brief.")


def test_openai_chat_jsonl_and_generic_files(tmp_path: Path, tiny: Path) -> None:
    chat = tmp_path / "chat.jsonl"
    chat.write_text(
        "\n".join(
            json.dumps(x)
            for x in (
                {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}]},
                {"messages": [{"role": "user", "content": "U2"}, {"role": "assistant", "content": "A2"}]},
            )
        )
    )  # fmt: skip
    assert detect_format(chat) == "openai-chat"
    convs = read_dataset(DatasetSpec(path=chat))
    assert convs[0].system == "S" and convs[0].users == ("U1",) and convs[1].replies == ("A2",)
    rows = [{"prompt": "alpha beta", "output_len": 7}, {"prompt": "gamma", "output_len": None}]
    jl = tmp_path / "p.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows))
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("question,n\nalpha beta,7\ngamma,\n")
    pq_path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": ["alpha beta", "gamma"], "out": [7, 3]}), pq_path)
    for path, col, out_col in (
        (jl, "prompt", None),
        (csv_path, "question", "n"),
        (pq_path, "text", "out"),
    ):
        ds = DatasetSpec(
            path=path, prompt_column=col, output_len_column=out_col, tokenizer=str(tiny),
            shuffle=False,
        )  # fmt: skip
        gen = iter_requests(_wl(ds), seed=0)
        a, b = next(gen), next(gen)
        assert a.prompt_token_ids == _encode(tiny, "alpha beta") and a.output_len == 7
        assert b.prompt_token_ids == _encode(tiny, "gamma")
        assert b.output_len == (3 if path == pq_path else 128)  # none given: the scenario's


def test_missing_file_column_or_tokenizer_is_one_clear_line(tmp_path: Path, tiny: Path) -> None:
    with pytest.raises(SpecError) as e:
        read_dataset(DatasetSpec(path=tmp_path / "nope.json"))
    assert "nope.json" in e.value.message and "does not exist" in e.value.message
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("question,n\nalpha,3\n")
    with pytest.raises(SpecError) as e:
        read_dataset(DatasetSpec(path=csv_path))
    assert "p.csv" in e.value.message and "'prompt'" in e.value.message
    assert "question" in e.value.message
    with pytest.raises(SpecError) as e:
        read_dataset(DatasetSpec(path=csv_path, prompt_column="question", output_len_column="x"))
    assert "'x'" in e.value.message
    with pytest.raises(SpecError) as e:
        DatasetStream(DatasetSpec(path=csv_path, prompt_column="question"), 0, 0)
    assert "--tokenizer" in e.value.one_line() and "p.csv" in e.value.message
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\nnot json\n')
    with pytest.raises(SpecError, match=r"bad.jsonl:2"):
        read_dataset(DatasetSpec(path=bad))


def test_cli_dataset_run_against_the_fake(tmp_path: Path, tiny: Path) -> None:
    from profiler.runner import execute

    sg = _sharegpt(tmp_path)
    with pytest.raises(SpecError, match="need --dataset"):
        build_run_spec(
            probe_host(), RunOptions(endpoint="http://127.0.0.1:9", dataset_mode="sessions")
        )
    with serve_in_thread(FakeConfig(keep_bodies=True)) as fake:
        spec = build_run_spec(
            probe_host(),
            RunOptions(
                endpoint=fake.url,
                dataset=sg,
                dataset_mode="sessions",
                tokenizer=str(tiny),
                users=2,
                num_requests=6,
                out=tmp_path / "runs",
                run_id="ds",
                no_telemetry=True,
            ),  # fmt: skip
        )
        assert spec.workload.scenarios[0].dataset is not None
        assert spec.workload.scenarios[0].dataset.tokenizer == str(tiny.resolve())
        res = execute(spec)
        bodies = fake.counters.bodies
    recs = read_records(res.run_dir)
    assert len(recs) == 6 and all(r.outcome == "ok" for r in recs)
    assert {r.turn for r in recs} == {1, 2}
    prompts = [b["prompt"] for b in bodies]
    assert _encode(tiny, "What is a GPU?") in prompts
    assert res.summary["sessions"]["sessions"] >= 3
    # a missing dataset fails before the run directory exists
    with pytest.raises(SpecError, match="does not exist"):
        execute(
            build_run_spec(
                probe_host(),
                RunOptions(
                    endpoint="http://127.0.0.1:9",
                    dataset=tmp_path / "gone.json",
                    tokenizer=str(tiny),
                    out=tmp_path / "runs",
                    run_id="gone",
                ),  # fmt: skip
            )
        )
    assert not (tmp_path / "runs" / "gone").exists()
