"""Fault matrix, input row: invalid workload YAML, unknown fields, out-of-range values, bad
flags and trace files. One clear error naming the file, line or field and what is allowed;
exit 2; no traceback; nothing created, nothing launched. Most cases go through Click's test
runner (the same group, error mapping and exit codes); one goes through the real process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from profiler.cli.main import cli
from tests.fakes.fake_openai import FakeConfig, serve_in_thread
from tests.integration.faults_support import cli_env, infprof_cmd, one_error_line, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ENDPOINT = "http://127.0.0.1:1"  # never reached: input errors come first

# (file name, YAML text, regexes the error line must match)
YAML_CASES = {
    "unknown-field": (
        "name: w\nscenarios:\n  - name: a\n    inptu: {kind: fixed, value: 8}\n",
        [
            r"unknown-field\.yaml: line 4 field 'scenarios\.0\.inptu': Extra inputs are not permitted",
            r"allowed fields: api, dataset, ignore_eos, input, n, name, ",
        ],
    ),
    "out-of-range": (
        "name: w\nscenarios:\n  - name: a\n    n: 99\n",
        [r"out-of-range\.yaml: line 4 field 'scenarios\.0\.n': Input should be less than or equal to 16"],
    ),
    "negative-length": (
        "name: w\nscenarios:\n  - input: {kind: fixed, value: -3}\n",
        [r"field 'scenarios\.0\.input\.value': Input should be greater than or equal to 1"],
    ),
    "wrong-type": (
        "name: w\nnum_requests: lots\nscenarios:\n  - name: a\n",
        [r"wrong-type\.yaml: line 2 field 'num_requests': Input should be a valid integer"],
    ),
    "bad-kind": (
        "name: w\narrival: {kind: burst, rate: 2}\nscenarios:\n  - name: a\n",
        [r"field 'arrival\.kind': Input should be 'concurrency', 'constant', 'poisson', 'gamma', 'ramp', 'trace' or 'users'"],
    ),
    "missing-rate": (
        "name: w\narrival:\n  kind: poisson\nscenarios:\n  - name: a\n",
        [r"line 2 field 'arrival': Value error, kind 'poisson' needs rate \(requests per second\)"],
    ),
    "syntax": ("name: w\nscenarios: [\n  - a\n", [r"syntax\.yaml: line \d+ is not valid YAML"]),
    "not-a-mapping": ("- 1\n- 2\n", [r"not-a-mapping\.yaml: expected a mapping at the top"]),
    "unsafe-tag": (
        "name: !!python/object/apply:os.system ['touch PWNED']\nscenarios:\n  - name: a\n",
        [r"unsafe-tag\.yaml: line 1 is not valid YAML"],
    ),
}  # fmt: skip


def invoke(tmp_path: Path, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["run", *args, "--out", str(tmp_path / "runs"), "-q"])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert not (tmp_path / "runs").exists(), "a run directory was created for bad input"
    return res.exit_code, res.stderr


@pytest.mark.parametrize("case", list(YAML_CASES))
def test_invalid_workload_yaml(tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    text, patterns = YAML_CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    code, err = invoke(tmp_path, "--workload", str(path), "--endpoint", ENDPOINT)
    assert code == 2, err
    line = one_error_line(err)
    assert str(path) in line and "(fix: " in line
    for pat in patterns:
        assert re.search(pat, line), f"{pat!r} not in {line!r}"
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    "args,pattern",
    [
        (["--workload", "nosuch"], r"unknown workload 'nosuch' \(fix: use one of: .*chat.*default"),
        (["--workload", "no/such.yaml"], r"workload file no/such\.yaml does not exist"),
        (["--slo", "ttft=abc"], r"--slo: 'abc' is not a number of seconds"),
        (["--slo", "latency=1"], r"--slo: cannot read 'latency=1' \(fix: write it as ttft="),
        (["--run-id", "../x"], r"run id '\.\./x' is not allowed \(fix: use letters, digits"),
        (
            ["--tp", "2"],
            r"server flags \(--tp, --serve-arg, \.\.\.\) cannot be used with --endpoint",
        ),
        (["--trace", "no-such.jsonl", "--rate", "1"], r"trace file no-such\.jsonl does not exist"),
    ],
    ids=[
        "workload-name",
        "workload-file",
        "slo-number",
        "slo-key",
        "run-id",
        "serve-flag",
        "trace",
    ],
)
def test_invalid_flags(tmp_path: Path, args: list[str], pattern: str) -> None:
    code, err = invoke(tmp_path, *args, "--endpoint", ENDPOINT)
    assert code == 2, err
    line = one_error_line(err)
    assert re.search(pattern, line), line


@pytest.mark.parametrize(
    "args,option",
    [
        (["--concurrency", "0"], "'--concurrency': 0 is not in the range x>=1"),
        (["--rate", "-1"], "'--rate': -1.0 is not in the range x>0"),
        (["--arrival", "burst", "--rate", "1"], "'--arrival': 'burst' is not one of 'constant'"),
    ],
)
def test_out_of_range_flags_are_usage_errors(tmp_path: Path, args: list[str], option: str) -> None:
    code, err = invoke(tmp_path, *args, "--endpoint", ENDPOINT)
    assert code == 2
    assert f"Error: Invalid value for {option}" in err


def test_bad_trace_fails_before_connecting(tmp_path: Path) -> None:
    """A trace row that is not a number: found before anything is created or contacted."""
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"timestamp": 0}\n{"timestamp": "soon"}\n')
    with serve_in_thread(FakeConfig()) as fake:
        code, err = invoke(tmp_path, "--trace", str(trace), "--endpoint", fake.url)
        assert fake.counters.requests == 0
    assert code == 2
    assert re.search(r"t\.jsonl:2: field 'timestamp' = 'soon' is not a number", one_error_line(err))


def test_invalid_yaml_through_the_real_process(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(YAML_CASES["unknown-field"][0])
    res = run_cli(
        infprof_cmd("run", "--workload", str(path), "--endpoint", ENDPOINT, "--out", str(tmp_path / "runs")),
        cli_env(tmp_path / "home"),
    )  # fmt: skip
    assert res.returncode == 2
    line = one_error_line(res.stderr)
    assert res.stderr.strip() == line  # the whole output: one line
    assert f"{path}: line 4 field 'scenarios.0.inptu'" in line
    assert not (tmp_path / "runs").exists()
