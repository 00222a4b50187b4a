"""Loading the model's tokenizer for token counting, and its errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from profiler.errors import EXIT_BAD_INPUT, SpecError
from profiler.load.tokens import load_counter, model_tokenizer, tokenizer_file


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from profiler.serving.tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


def test_counts_like_the_tokenizer_without_special_tokens(tiny: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny / "tokenizer.json"))
    count = load_counter(tiny)
    for text in (" tok", "The quick brown fox.", "a\nb  c", "0123456789" * 5):
        assert count(text) == len(tok.encode(text, add_special_tokens=False).ids)
    assert count("The quick brown fox.") > 1
    assert count("") == 0


def test_directory_and_file_give_the_same_cached_counter(tiny: Path) -> None:
    assert load_counter(tiny) is load_counter(tiny / "tokenizer.json")
    assert tokenizer_file(tiny) == tiny / "tokenizer.json"


def test_loading_imports_no_transformers(tiny: Path) -> None:
    import subprocess

    code = (
        "import sys; from profiler.load.tokens import load_counter; "
        f"c = load_counter({str(tiny)!r}); assert c('hello world') >= 1; "
        "assert 'transformers' not in sys.modules; print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "ok"


def test_importing_the_module_loads_no_tokenizers_library() -> None:
    import subprocess

    code = "import sys, profiler.load.tokens; print('tokenizers' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"


def test_missing_path_is_a_spec_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SpecError) as e:
        load_counter(missing, option="--tokenizer")
    assert e.value.exit_code == EXIT_BAD_INPUT
    assert str(missing) in e.value.message and "--tokenizer" in e.value.message
    assert e.value.fix and "tokenizer.json" in e.value.fix


def test_directory_without_tokenizer_json(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no tokenizer.json in this directory"):
        load_counter(tmp_path)
    assert model_tokenizer(str(tmp_path)) is None


def test_unreadable_tokenizer_json(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError) as e:
        load_counter(tmp_path)
    assert "cannot load" in e.value.message and str(bad) in e.value.message
    assert "\n" not in e.value.one_line()


def test_model_tokenizer_finds_a_local_model_directory(tiny: Path) -> None:
    assert model_tokenizer(str(tiny)) == str(tiny)
    assert model_tokenizer("meta-llama/Llama-3.1-8B-Instruct") is None


# ---------------------------------------------------------------- --tokenizer in run specs
def test_cli_bad_tokenizer_is_one_line_exit_2(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from profiler.cli.main import cli

    missing = tmp_path / "no-such-tokenizer"
    res = CliRunner().invoke(
        cli,
        [
            "run",
            "--endpoint",
            "http://127.0.0.1:1",
            "--tokenizer",
            str(missing),
            "--out",
            str(tmp_path),
            "-q",
        ],
    )
    assert res.exit_code == EXIT_BAD_INPUT, res.output
    assert f"--tokenizer '{missing}' does not exist" in res.output
    assert "fix: pass a tokenizer.json file" in res.output
    assert "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_run_spec_tokenizer_defaults_and_manifest(tiny: Path) -> None:
    from profiler.clock import RunClock
    from profiler.run_flags import RunOptions
    from profiler.run_options import build_run_spec
    from profiler.run_server import probe_host
    from profiler.store.manifest import initial_manifest

    attached = build_run_spec(probe_host(), RunOptions(endpoint="http://127.0.0.1:1"))
    assert attached.tokenizer is None  # an endpoint without --tokenizer: one token per chunk
    given = build_run_spec(
        probe_host(),
        RunOptions(endpoint="http://127.0.0.1:1", tokenizer=str(tiny / "tokenizer.json")),
    )
    assert given.tokenizer == str((tiny / "tokenizer.json").resolve())
    launched = build_run_spec(probe_host(), RunOptions(model=str(tiny)))
    assert launched.tokenizer == str(tiny.resolve())  # the launched model's own tokenizer
    manifest = initial_manifest(given, "r", RunClock())
    assert manifest.to_dict()["spec"]["tokenizer"] == given.tokenizer


def test_run_options_come_from_the_environment(tmp_path: Path) -> None:
    """``INFPROF_RUN_<OPTION>`` sets an option through the real entry point (docs/run.md's
    precedence: environment < flags)."""
    import os
    import subprocess
    import sys

    missing, flag = tmp_path / "env-tokenizer", tmp_path / "flag-tokenizer"
    args = [sys.executable, "-m", "profiler", "run", "--endpoint", "http://127.0.0.1:1"]
    args += ["--out", str(tmp_path), "-q"]
    env = {**os.environ, "INFPROF_RUN_TOKENIZER": str(missing)}
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == EXIT_BAD_INPUT, res.stderr
    assert f"--tokenizer '{missing}' does not exist" in res.stderr
    res = subprocess.run(
        [*args, "--tokenizer", str(flag)], env=env, capture_output=True, text=True, timeout=60
    )
    assert f"--tokenizer '{flag}' does not exist" in res.stderr  # the flag wins
