"""One source of run options: ``infprof run`` and ``infprof sweep`` declare their shared options
once (profiler/cli/options.py), a sweep point is the run ``infprof run`` builds from the same
flags, and building a spec has no side effects (no files, no NVML)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import pytest

from profiler.cli import run as run_cli
from profiler.cli import sweep as sweep_cli

# the options a sweep takes exactly as a run does (a sweep point is one run)
SHARED = (
    "--model",
    "--api-key-env",
    "--tokenizer",
    "--num-requests",
    "--duration",
    "--input-len",
    "--output-len",
    "--slo",
    "--warmup",
    "--cooldown",
    "--max-model-len",
    "--gpu-memory-utilization",
    "--load-format",
    "--dtype",
    "--serve-arg",
    "--ready-timeout",
    "--request-timeout",
    "--sample-interval",
    "--no-telemetry",
    "--seed",
    "--ray-address",
    "--report",
    "--quiet",
)


def _option(cmd: click.Command, flag: str) -> click.Option:
    found = [p for p in cmd.params if isinstance(p, click.Option) and flag in p.opts]
    assert len(found) == 1, f"{cmd.name} {flag}: {len(found)} declarations"
    return found[0]


def _shape(o: click.Option) -> tuple[Any, ...]:
    return (
        o.name,
        o.opts,
        o.secondary_opts,
        o.help,
        repr(o.type),
        o.default,
        o.show_default,
        o.is_flag,
        o.multiple,
        o.metavar,
    )


@pytest.mark.parametrize("flag", SHARED)
def test_run_and_sweep_share_options_with_identical_help(flag: str) -> None:
    assert _shape(_option(run_cli.command, flag)) == _shape(_option(sweep_cli.command, flag))


def _run_params(args: list[str]) -> dict[str, Any]:
    return dict(run_cli.command.make_context("run", args).params)


def _sweep_params(args: list[str]) -> dict[str, Any]:
    return dict(sweep_cli.command.make_context("sweep", args).params)


def _run_spec_from_cli(args: list[str]) -> Any:
    """The RunSpec ``infprof run ARGS`` executes."""
    return run_cli.spec_from_params(_run_params(args))


def _point(sweep_args: list[str], load: dict[str, Any], tmp_path: Path) -> Any:
    from profiler.sweep.points import point_run_spec

    spec = sweep_cli.spec_from_params(_sweep_params(sweep_args))
    return spec, point_run_spec(
        spec, "default", load, "http://127.0.0.1:9", None, tmp_path / "runs", "p1"
    )


COMMON = ["--num-requests", "40", "--input-len", "16", "--output-len", "8", "--warmup", "1"]


@pytest.mark.parametrize(
    ("sweep_slo", "run_slo"),
    [
        (["--slo", "ttft=0.5,tpot=0.05"], ["--slo", "ttft=0.5,tpot=0.05"]),
        (
            ["--slo", "ttft=0.5,tpot=0.05", "--target-fraction", "0.8"],
            ["--slo", "ttft=0.5,tpot=0.05,fraction=0.8"],
        ),
        # the faked flags appended ",fraction=0.9" when 'fraction' was not spelt in lower
        # case, overriding the user's 0.8
        (["--slo", "ttft=0.5,Fraction=0.8"], ["--slo", "ttft=0.5,Fraction=0.8"]),
    ],
)
def test_a_sweep_point_is_the_run_the_cli_builds(
    sweep_slo: list[str], run_slo: list[str], tmp_path: Path
) -> None:
    url = "http://127.0.0.1:9"
    _, point = _point(
        ["--endpoint", url, "--concurrency", "4", "--seed", "3", *COMMON, *sweep_slo],
        {"kind": "concurrency", "value": 4},
        tmp_path,
    )
    run = _run_spec_from_cli(
        [
            "--endpoint",
            url,
            "--concurrency",
            "4",
            "--seed",
            "3",
            "--workload",
            "default",
            "--out",
            str(tmp_path / "runs"),
            "--run-id",
            "p1",
            *COMMON,
            *run_slo,
        ]
    )
    assert point.model_dump() == run.model_dump()


def test_the_search_and_its_probes_share_one_target_fraction(tmp_path: Path) -> None:
    """--slo ...,fraction=0.8 --search slo: the flag-faking measured the probes against 0.8 but
    searched against --target-fraction's default 0.9."""
    spec, point = _point(
        ["--endpoint", "http://127.0.0.1:9", "--search", "slo", "--slo", "ttft=0.5,fraction=0.8"],
        {"kind": "rate", "value": 2.0},
        tmp_path,
    )
    assert point.slo.target_fraction == 0.8
    assert spec.target_fraction == 0.8


def test_slo_fraction_given_twice_differently_is_an_error() -> None:
    from profiler.errors import SpecError

    with pytest.raises(SpecError, match="--target-fraction"):
        sweep_cli.spec_from_params(
            _sweep_params(
                [
                    "--endpoint",
                    "http://127.0.0.1:9",
                    "--concurrency",
                    "1",
                    "--slo",
                    "ttft=0.5,fraction=0.8",
                    "--target-fraction",
                    "0.95",
                ]
            )
        )


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_building_a_run_spec_writes_nothing_and_calls_no_nvml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default run (the embedded tiny model) names its model directory; the directory is
    made by the preparation step before the launch, not while the spec is built."""
    from profiler.run_flags import RunOptions
    from profiler.run_options import build_run_spec
    from profiler.run_server import Host, prepare_run
    from tests.fakes.nvml import install_fake_nvml

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("INFPROF_HOME", str(home / ".cache" / "infprof"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    with install_fake_nvml([]) as fake:
        spec = build_run_spec(Host(), RunOptions(out=tmp_path / "runs"))
        calls = list(fake.module.mock_calls)
    assert calls == [] and fake.init_count == 0
    assert _files(home) == []
    assert not (tmp_path / "runs").exists()
    assert spec.serve is not None and spec.serve.served_model_name == "tiny-llama"
    assert spec.tokenizer == str(Path(spec.serve.model).resolve())
    prepare_run(spec)  # the explicit step the runner calls: the model is made now
    assert (Path(spec.serve.model) / "tokenizer.json").is_file()
    assert os.path.commonpath([spec.serve.model, home]) == str(home)


def test_an_older_sweep_json_keeps_its_slo_and_fraction(tmp_path: Path) -> None:
    """sweep.json written before the SLO was a model: ``slo`` text beside ``target_fraction``;
    resuming reads the fraction the points were measured with."""
    import json

    from profiler.sweep.spec import SweepSpec
    from profiler.sweep.sweep_dir import prepare_sweep_dir

    d = tmp_path / "sw"
    d.mkdir()
    old = {"sweep_id": "sw", "endpoint": "http://127.0.0.1:9", "loads": [1.0], "search": None}
    (d / "sweep.json").write_text(json.dumps({**old, "slo": "ttft=0.5", "target_fraction": 0.8}))
    spec = prepare_sweep_dir(SweepSpec(sweep_id="sw", loads=[1]), d, resume=True)
    assert spec.slo.ttft_s == 0.5 and spec.target_fraction == 0.8
    in_text = SweepSpec.model_validate(
        {**old, "slo": "ttft=0.5,fraction=0.7", "target_fraction": 0.9}
    )
    assert in_text.slo.target_fraction == 0.7
    unset = SweepSpec.model_validate({**old, "slo": None, "target_fraction": 0.9})
    assert not unset.slo.is_set()
    assert json.loads(json.dumps(spec.model_dump(mode="json")))["slo"]["ttft_s"] == 0.5


def test_run_options_default_as_infprof_run_does() -> None:
    """RunOptions (what tests and a sweep's servers build runs from) and `infprof run` with no
    flags ask for the same run: their defaults cannot drift apart."""
    from dataclasses import asdict, fields

    from profiler.run_flags import RunOptions

    params = _run_params([])
    for k in run_cli._NOT_SPEC:
        params.pop(k)
    assert set(params) == {f.name for f in fields(RunOptions)}
    assert asdict(RunOptions(**params)) == asdict(RunOptions())


def test_the_runner_makes_the_embedded_model_before_launching_its_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spec built without side effects still launches: runner.execute prepares the run (the
    tiny model's directory) before the server starts."""
    from profiler.errors import ServerError
    from profiler.run_flags import RunOptions
    from profiler.run_options import build_run_spec
    from profiler.run_server import Host
    from profiler.runner import execute

    monkeypatch.setenv("INFPROF_HOME", str(tmp_path / "home"))
    seen: list[bool] = []

    class NoServer:
        def __init__(self, serve: Any, _log: Path) -> None:
            seen.append((Path(serve.model) / "tokenizer.json").is_file())
            raise ServerError("no server in this test", "none")

    monkeypatch.setattr("profiler.serving.vllm.VllmServer", NoServer)
    spec = build_run_spec(Host(), RunOptions(out=tmp_path / "runs", no_telemetry=True))
    assert spec.serve is not None and not Path(spec.serve.model).exists()
    with pytest.raises(ServerError):
        execute(spec)
    assert seen == [True]


def test_every_slo_option_is_parsed_by_one_parser() -> None:
    """``--slo`` of run, sweep, compare and plan is read by cli/options' parser into a
    SloSpec at the CLI edge (no command parses the text itself), with the same one-line
    error for a bad value."""
    from click.testing import CliRunner

    from profiler.cli import compare as compare_cli
    from profiler.cli import options
    from profiler.cli import plan as plan_cli
    from profiler.cli.main import cli

    parsers = {options.parse_slo, options.parse_slo_if_given}
    for cmd in (run_cli.command, sweep_cli.command, compare_cli.command, plan_cli.command):
        (slo,) = [p for p in cmd.params if p.name == "slo"]
        assert slo.callback in parsers, f"{cmd.name}: --slo is not parsed by cli/options"
    ctx = click.Context(compare_cli.command)
    (param,) = [p for p in compare_cli.command.params if p.name == "slo"]
    assert options.parse_slo_if_given(ctx, param, None) is None  # compare: A's SLO then
    assert not options.parse_slo(ctx, param, None).is_set()
    errors = set()
    for args in (
        ["compare", "a", "b", "--slo", "latency=3"],
        ["plan", "--model", "tiny", "--slo", "latency=3"],
        ["run", "--endpoint", "http://127.0.0.1:9", "--slo", "latency=3"],
    ):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2, res.output
        errors.add(res.output.strip())
    assert errors == {
        "infprof: error: --slo: cannot read 'latency=3' "
        "(fix: write it as ttft=SECONDS,tpot=SECONDS,e2e=SECONDS (any subset))"
    }


def test_building_a_sweeps_server_spec_writes_nothing_and_calls_no_nvml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep configuration's server (the embedded tiny model) is named while the spec is
    built; the model is made where the sweep launches the server (``sweep/servers``)."""
    from profiler.run_server import Host
    from profiler.sweep.points import serve_spec
    from profiler.sweep.servers import vllm_factory
    from profiler.sweep.spec import SweepSpec
    from tests.fakes.nvml import install_fake_nvml

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("INFPROF_HOME", str(home / ".cache" / "infprof"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    spec = SweepSpec(sweep_id="sw", loads=[1])
    with install_fake_nvml([]) as fake:
        serve = serve_spec(spec, spec.configs()[0], Host())
        calls = list(fake.module.mock_calls)
    assert calls == [] and fake.init_count == 0
    assert _files(home) == []
    assert serve.served_model_name == "tiny-llama"
    vllm_factory(serve, tmp_path / "server.log")  # the launch step: the model is made now
    assert (Path(serve.model) / "tokenizer.json").is_file()
