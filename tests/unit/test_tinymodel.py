"""The embedded tiny model: deterministic, cached, idempotent, loadable by HF tooling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from tokenizers import Tokenizer

from profiler.errors import SpecError
from profiler.serving import tinymodel
from profiler.serving.tinymodel import (
    STAMP_FILE,
    TINY_LOAD_FORMAT,
    VOCAB_SIZE,
    is_tiny_model,
    make_tiny_model,
)

FILES = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
]


def snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_files_and_config(tmp_path: Path) -> None:
    d = make_tiny_model(tmp_path / "m")
    assert d == tmp_path / "m"
    for name in FILES:
        assert (d / name).is_file(), name
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["vocab_size"] == VOCAB_SIZE
    assert cfg["max_position_embeddings"] >= 4096
    assert cfg["hidden_size"] // cfg["num_attention_heads"] >= 32  # vLLM CPU attention minimum
    assert cfg["num_attention_heads"] % cfg["num_key_value_heads"] == 0
    tc = json.loads((d / "tokenizer_config.json").read_text())
    assert "{% for message in messages %}" in tc["chat_template"]
    assert is_tiny_model(d)
    assert TINY_LOAD_FORMAT == "dummy"


def test_tokenizer_round_trips_and_has_llama_specials(tmp_path: Path) -> None:
    tok = Tokenizer.from_file(str(make_tiny_model(tmp_path) / "tokenizer.json"))
    assert tok.get_vocab_size() == VOCAB_SIZE
    assert [tok.token_to_id(t) for t in ("<unk>", "<s>", "</s>", "<pad>")] == [0, 1, 2, 3]
    text = "The quick brown fox, 42 times.\nÜnïcödé ✓ works"
    enc = tok.encode(text)
    assert enc.ids[0] == 1  # BOS added
    assert max(enc.ids) < VOCAB_SIZE
    assert tok.decode(enc.ids) == text
    assert len(enc.ids) < len(text.encode())  # merges compress English a little
    assert isinstance(tok.decode(list(range(VOCAB_SIZE))), str)  # every id decodes


def test_deterministic_across_processes(tmp_path: Path) -> None:
    code = "import sys; from pathlib import Path; from profiler.serving.tinymodel import make_tiny_model; make_tiny_model(Path(sys.argv[1]))"
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True)
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")


def test_idempotent_and_rebuilds_when_generator_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make_tiny_model(tmp_path / "m")
    mtime = (d / "config.json").stat().st_mtime_ns
    (d / "extra-marker").write_text("kept while the stamp matches")
    assert make_tiny_model(d) == d
    assert (d / "config.json").stat().st_mtime_ns == mtime
    assert (d / "extra-marker").exists()

    stamp = json.loads((d / STAMP_FILE).read_text())
    monkeypatch.setattr(tinymodel, "NUM_LAYERS", 3)
    make_tiny_model(d)
    assert json.loads((d / "config.json").read_text())["num_hidden_layers"] == 3
    assert json.loads((d / STAMP_FILE).read_text())["sha256"] != stamp["sha256"]
    assert not (d / "extra-marker").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary directories left


def test_default_location_honours_infprof_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFPROF_HOME", str(tmp_path / "home"))
    assert make_tiny_model() == tmp_path / "home" / "models" / "tiny-llama"


def test_refuses_to_overwrite_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(SpecError, match="not a tiny model directory"):
        make_tiny_model(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "user data"
    (tmp_path / "empty").mkdir()
    assert is_tiny_model(make_tiny_model(tmp_path / "empty"))


def test_no_heavy_imports() -> None:
    code = (
        "import sys, profiler.serving.tinymodel, profiler.serving.vllm, profiler.cli.model\n"
        "bad = [m for m in ('vllm', 'transformers', 'torch', 'tokenizers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_transformers_auto_tokenizer_loads_it(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    d = make_tiny_model(tmp_path / "m")
    tok = transformers.AutoTokenizer.from_pretrained(str(d))
    assert len(tok) == VOCAB_SIZE
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 3)
    ids = tok("hello world")["input_ids"]
    assert ids[0] == 1 and tok.decode(ids, skip_special_tokens=True) == "hello world"
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<s><|user|>\nhi</s>\n<|assistant|>\n"
    cfg = transformers.AutoConfig.from_pretrained(str(d))
    assert cfg.model_type == "llama" and cfg.num_key_value_heads == 2


def test_cli_model_tiny(tmp_path: Path) -> None:
    from profiler.cli.model import command

    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(command, ["tiny", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == str(out)
    res = runner.invoke(command, ["tiny", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["path"] == str(out) and data["load_format"] == "dummy"
    res = runner.invoke(command, ["tiny"], env={"INFPROF_HOME": str(tmp_path / "h")})
    assert res.output.strip() == str(tmp_path / "h" / "models" / "tiny-llama")
