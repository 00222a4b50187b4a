"""run_sweep with a fake point runner and a fake server factory: grid, index, resume after an
interruption, failed configurations, endpoint mode and the SLO search through the sweep."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from profiler.cli.main import cli
from profiler.errors import RunInterrupted, ServerError, SpecError
from profiler.spec import RunSpec, ServeSpec, SloSpec
from profiler.sweep.execute import SweepHooks, run_sweep
from profiler.sweep.index import read_index
from profiler.sweep.spec import SweepGrid, SweepSpec
from profiler.sweep.sweep_dir import prepare_sweep_dir
from tests.fakes.synthetic_runs import make_run, saturating


class FakeServer:
    """VllmServer's surface; the URL carries max_num_seqs so the fake runner knows the config."""

    started: list[int | None] = []
    stopped: list[int | None] = []
    fail_for: set[int | None] = set()

    def __init__(self, serve: ServeSpec, log_path: Path) -> None:
        self.serve, self.log_path = serve, log_path
        self.returncode: int | None = None

    def start(self) -> None:
        self.log_path.write_text("fake server\n")
        FakeServer.started.append(self.serve.max_num_seqs)
        if self.serve.max_num_seqs in FakeServer.fail_for:
            raise ServerError("vLLM exited during startup (code 1)", "see the log")

    def wait_ready(self) -> float:
        return 0.01

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:9/seqs{self.serve.max_num_seqs}"

    def alive(self) -> bool:
        return True

    def stop(self) -> None:
        FakeServer.stopped.append(self.serve.max_num_seqs)


@pytest.fixture(autouse=True)
def _reset() -> None:
    FakeServer.started, FakeServer.stopped, FakeServer.fail_for = [], [], set()


class FakeRunner:
    """Writes a synthetic run per point; the server saturates at max_num_seqs requests."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.calls: list[RunSpec] = []
        self.interrupt_at = interrupt_at

    def __call__(self, spec: RunSpec) -> Any:
        self.calls.append(spec)
        assert spec.endpoint is not None and spec.serve is None and spec.run_id
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            (spec.out_dir / spec.run_id).mkdir(parents=True)  # died mid-run
            raise KeyboardInterrupt
        seqs = spec.endpoint.url.rsplit("seqs", 1)[-1]
        capacity = float(seqs) if seqs != "None" else 8.0
        load = float(spec.arrival.concurrency or spec.arrival.rate or 1)
        achieved, latency = saturating(load, capacity)
        path = make_run(
            spec.out_dir,
            spec.run_id,
            gpu=False,
            n=30,
            rate=max(achieved, 0.5),
            ttft_s=latency / 4,
            seed=len(self.calls),
        )
        return SimpleNamespace(
            run_dir=path,
            summary=json.loads((path / "summary.json").read_text()),
            ended="completed",
            reason=None,
        )


def _spec(**kw: Any) -> SweepSpec:
    base: dict[str, Any] = dict(
        sweep_id="s",
        grid=SweepGrid(max_num_seqs=[4, 16]),
        loads=[1, 4, 16],
        num_requests=30,
        slo=SloSpec(ttft_s=0.5, tpot_s=0.05),
    )
    base.update(kw)
    return SweepSpec(**base)


def _run(spec: SweepSpec, d: Path, runner: FakeRunner, **kw: Any) -> dict[str, Any]:
    prepare_sweep_dir(spec, d, resume=kw.pop("resume", False))
    hooks = SweepHooks(run_point=runner, server_factory=FakeServer)
    return run_sweep(spec, d, hooks, **kw)


def test_grid_runs_every_point_and_writes_the_index(tmp_path: Path) -> None:
    runner = FakeRunner()
    data = _run(_spec(), tmp_path / "sw", runner)
    assert len(runner.calls) == 6
    assert FakeServer.started == [4, 16] and FakeServer.stopped == [4, 16]  # relaunched per config
    index = read_index(tmp_path / "sw")
    assert index == json.loads(json.dumps(data))
    assert index["status"] == "complete"
    assert [c["status"] for c in index["configs"]] == ["ok", "ok"]
    assert index["configs"][0]["server_log"] == "configs/c0/server.log"
    points = index["points"]
    assert len(points) == 6 and all(p["status"] == "done" for p in points)
    p = next(p for p in points if p["id"] == "c1-default-conc4")
    assert p["config"]["max_num_seqs"] == 16 and p["load"] == {"kind": "concurrency", "value": 4}
    assert p["workload"] == "default" and p["run_dir"] == "runs/c1-default-conc4"
    assert (tmp_path / "sw" / p["run_dir"] / "summary.json").exists()
    assert {"requests_per_s", "ttft_p50_s", "tpot_p99_s", "slo_attainment", "slo_met_rps"} <= set(
        p["summary"]
    )
    assert len(index["knees"]) == 2
    spec = runner.calls[0]
    assert spec.num_requests == 30 and spec.slo.ttft_s == 0.5 and spec.slo.target_fraction == 0.9
    assert json.loads((tmp_path / "sw" / "sweep.json").read_text())["loads"] == [1, 4, 16]


def test_resume_after_interruption_does_not_redo_finished_points(tmp_path: Path) -> None:
    d = tmp_path / "sw"
    first = FakeRunner(interrupt_at=4)  # config c0 finishes (3 points), c1's first point dies
    with pytest.raises(RunInterrupted, match="3 points done"):
        _run(_spec(), d, first)
    index = read_index(d)
    assert index["status"] == "interrupted"
    done = {p["id"] for p in index["points"] if p["status"] == "done"}
    assert done == {"c0-default-conc1", "c0-default-conc4", "c0-default-conc16"}
    assert FakeServer.stopped == [4, 16]  # the interrupted config's server was stopped
    mtimes = {pid: (d / "runs" / pid / "summary.json").stat().st_mtime_ns for pid in done}

    FakeServer.started = []
    again = FakeRunner()
    data = _run(_spec(), d, again, resume=True)
    assert [c.run_id for c in again.calls] == [
        "c1-default-conc1",
        "c1-default-conc4",
        "c1-default-conc16",
    ]
    assert FakeServer.started == [16]  # c0 had nothing left: never relaunched
    assert data["status"] == "complete" and sum(p["status"] == "done" for p in data["points"]) == 6
    assert {pid: (d / "runs" / pid / "summary.json").stat().st_mtime_ns for pid in done} == mtimes
    assert (d / "stale" / "c1-default-conc1-1").is_dir()  # the dead point's directory, kept aside


def test_failed_server_fails_its_points_and_the_sweep_goes_on(tmp_path: Path) -> None:
    FakeServer.fail_for = {4}
    d = tmp_path / "sw"
    runner = FakeRunner()
    data = _run(_spec(), d, runner)
    by = {p["id"]: p for p in data["points"]}
    assert all(by[f"c0-default-conc{c}"]["status"] == "failed" for c in (1, 4, 16))
    assert "server did not start" in by["c0-default-conc1"]["reason"]
    assert all(by[f"c1-default-conc{c}"]["status"] == "done" for c in (1, 4, 16))
    assert data["configs"][0]["status"] == "failed" and FakeServer.started == [4, 16]
    # resuming does not retry failed points unless asked
    FakeServer.started, FakeServer.fail_for = [], set()
    _run(_spec(), d, FakeRunner(), resume=True)
    assert FakeServer.started == []
    retry = FakeRunner()
    data = _run(_spec(), d, retry, resume=True, retry_failed=True)
    assert len(retry.calls) == 3 and all(p["status"] == "done" for p in data["points"])


def test_endpoint_mode_launches_nothing(tmp_path: Path) -> None:
    runner = FakeRunner()
    spec = _spec(
        endpoint="http://127.0.0.1:9/seqsNone", grid=SweepGrid(), loads=[2, 8], load_kind="rate"
    )
    data = _run(spec, tmp_path / "sw", runner)
    assert FakeServer.started == []
    assert [c.endpoint.url for c in runner.calls if c.endpoint] == [
        "http://127.0.0.1:9/seqsNone"
    ] * 2
    assert [c.arrival.kind for c in runner.calls] == ["poisson", "poisson"]
    assert [p["id"] for p in data["points"]] == ["c0-default-rate2", "c0-default-rate8"]
    assert data["configs"][0]["config"] == {"endpoint": "http://127.0.0.1:9/seqsNone"}


def test_slo_search_through_the_sweep(tmp_path: Path) -> None:
    def runner(spec: RunSpec) -> Any:
        assert spec.endpoint is not None and spec.run_id and spec.arrival.rate
        capacity = 2.5 * float(spec.endpoint.url.rsplit("seqs", 1)[-1])
        rate = spec.arrival.rate
        (spec.out_dir / spec.run_id).mkdir(parents=True)
        fraction = 0.99 if rate <= capacity else max(0.0, 1 - 4 * (rate / capacity - 1))
        summary = {
            "requests": {"total": 30, "ok": 30},
            "throughput": {
                "requests_per_s": min(rate, capacity),
                "output_tokens_per_s": 32 * min(rate, capacity),
            },
            "latency": {},
            "error_rate": 0.0,
            "slo_attainment": {
                "fraction": fraction,
                "requests_per_s": fraction * min(rate, capacity),
            },
        }
        return SimpleNamespace(
            run_dir=spec.out_dir / spec.run_id, summary=summary, ended="completed", reason=None
        )

    spec = _spec(search="slo", loads=[], start_rate=1.0, tolerance=0.05)
    prepare_sweep_dir(spec, tmp_path / "sw", resume=False)
    data = run_sweep(spec, tmp_path / "sw", SweepHooks(run_point=runner, server_factory=FakeServer))
    searches = {s["config_id"]: s for s in data["searches"]}
    for cfg, capacity in (("c0", 10.0), ("c1", 40.0)):
        best = searches[cfg]["best_rate"]
        assert capacity * 0.9 <= best <= capacity * 1.03, (cfg, best)
        assert searches[cfg]["best_point"] == f"{cfg}-default-rate{best:g}"
    probes = [p for p in data["points"] if p["config_id"] == "c0"]
    assert all(p["probe"] and p["load"]["kind"] == "rate" for p in probes)
    assert len(probes) == len(searches["c0"]["probes"])


def test_probe_requests_scale_with_the_rate(tmp_path: Path) -> None:
    from profiler.sweep.points import point_run_spec

    spec = _spec(search="slo", loads=[], num_requests=None)
    rs = point_run_spec(
        spec, "default", {"kind": "rate", "value": 8.0}, "http://127.0.0.1:9", "m", tmp_path, "p"
    )
    assert rs.num_requests == 120 and rs.arrival.rate == 8.0 and rs.arrival.kind == "poisson"
    rs = point_run_spec(
        spec, "default", {"kind": "rate", "value": 0.5}, "http://127.0.0.1:9", "m", tmp_path, "p"
    )
    assert rs.num_requests == 30


def test_reopening_a_sweep_directory(tmp_path: Path) -> None:
    d = tmp_path / "sw"
    prepare_sweep_dir(_spec(), d, resume=False)
    assert (
        prepare_sweep_dir(_spec(sweep_id="other-name"), d, resume=False).sweep_id == "s"
    )  # same work
    with pytest.raises(SpecError, match="already holds a different sweep"):
        prepare_sweep_dir(_spec(loads=[2]), d, resume=False)
    assert prepare_sweep_dir(_spec(loads=[2]), d, resume=True).loads == [
        1,
        4,
        16,
    ]  # the saved spec wins
    with pytest.raises(SpecError, match="not a sweep directory"):
        prepare_sweep_dir(_spec(), tmp_path / "nothing", resume=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "1,4", "--rate", "2"], "both given"),
        (["--search", "slo"], "--search slo needs --slo"),
        (["--concurrency", "1,x"], "'x' is not a int"),
        ([], "give load levels"),
        (["--rate", "1", "--ep", "maybe"], "not on/off"),
        (["--rate", "1", "--tokenizer", "/no/such/dir"], "--tokenizer '/no/such/dir' does not"),
    ],
)
def test_cli_rejects_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    res = CliRunner().invoke(cli, ["sweep", "--out", str(tmp_path / "sw"), *args])
    assert res.exit_code == 2, res.output
    assert message in res.output


class ProcessServer:
    """A real server process (the fake OpenAI server) launched by the sweep, with its pids."""

    def __init__(self, serve: ServeSpec, log_path: Path) -> None:
        import subprocess
        import sys

        self.serve, self.log_path = serve, log_path
        self.proc: Any = None
        self._cmd = [sys.executable, "-m", "tests.fakes.fake_openai", "--model", serve.name]
        self._subprocess = subprocess

    def start(self) -> None:
        self.proc = self._subprocess.Popen(
            self._cmd, stdout=self._subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
        )
        line = self.proc.stdout.readline()
        assert line.startswith("READY "), line
        self._url = line.split()[1]

    def wait_ready(self) -> float:
        return 0.0

    @property
    def url(self) -> str:
        return self._url

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def test_a_launched_servers_process_tree_is_sampled_in_every_point(tmp_path: Path) -> None:
    """The sweep launches the server and each point attaches to it: the point's telemetry still
    measures the server's processes (host ``server`` device), as a single run would."""
    import pyarrow.parquet as pq

    spec = _spec(
        grid=SweepGrid(max_num_seqs=[4]),
        loads=[2],
        num_requests=20,
        model="fake-model",
        sample_interval_s=0.1,
    )
    d = tmp_path / "sw"
    prepare_sweep_dir(spec, d, resume=False)
    data = run_sweep(spec, d, SweepHooks(server_factory=ProcessServer))
    (point,) = data["points"]
    assert point["status"] == "done", point
    samples = pq.read_table(d / point["run_dir"] / "samples.parquet").to_pylist()
    counts = [
        s["value"]
        for s in samples
        if s["source"] == "host" and s["device"] == "server" and s["metric"] == "process_count"
    ]
    assert counts and all(c == 1 for c in counts)


def test_sweep_points_record_the_servers_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--gpus places each configuration's server on those GPUs and every point's figures on
    the first tp x pp x dp of them; without it, the server's inherited CUDA_VISIBLE_DEVICES."""
    from tests.fakes.nvml import h100, install_fake_nvml

    seen: list[ServeSpec] = []

    class Recording(ProcessServer):
        def __init__(self, serve: ServeSpec, log_path: Path) -> None:
            seen.append(serve)
            super().__init__(serve, log_path)

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    scopes = {}
    with install_fake_nvml([h100(i) for i in range(8)]):
        for name, gpus in (("given", ["4", "5", "6", "7"]), ("inherited", None)):
            spec = _spec(
                grid=SweepGrid(tp=[2]),
                loads=[2],
                num_requests=10,
                model="fake-model",
                sample_interval_s=0.1,
                gpus=gpus,
                sweep_id=name,
            )
            d = tmp_path / name
            prepare_sweep_dir(spec, d, resume=False)
            data = run_sweep(spec, d, SweepHooks(server_factory=Recording))
            (point,) = data["points"]
            assert point["status"] == "done", point
            manifest = json.loads((d / point["run_dir"] / "manifest.json").read_text())
            scopes[name] = manifest["gpu_scope"]
    assert seen[0].env["CUDA_VISIBLE_DEVICES"] == "4,5,6,7"
    assert scopes["given"]["gpus"] == ["4", "5"] and scopes["given"]["method"] == "explicit"
    assert "CUDA_VISIBLE_DEVICES" not in seen[1].env  # inherited by the server from this process
    assert scopes["inherited"]["gpus"] == ["1", "3"]
    assert scopes["inherited"]["method"] == "cuda_visible_devices"


def test_repeats_per_point_with_median_and_spread(tmp_path: Path) -> None:
    runner = FakeRunner()
    spec = _spec(grid=SweepGrid(max_num_seqs=[4]), loads=[1, 4], repeat=3)
    data = _run(spec, tmp_path / "sw", runner)
    assert [(c.out_dir.name, c.run_id) for c in runner.calls] == [
        ("c0-default-conc1", "rep-01"),
        ("c0-default-conc1", "rep-02"),
        ("c0-default-conc1", "rep-03"),
        ("c0-default-conc4", "rep-01"),
        ("c0-default-conc4", "rep-02"),
        ("c0-default-conc4", "rep-03"),
    ]
    assert FakeServer.started == [4]  # one server for every point and repeat of the config
    point = next(p for p in data["points"] if p["id"] == "c0-default-conc4")
    assert point["status"] == "done" and point["run_dir"] == "runs/c0-default-conc4/rep-01"
    assert [r["run_dir"] for r in point["repeats"]] == [
        f"runs/c0-default-conc4/rep-0{i}" for i in (1, 2, 3)
    ]
    assert all((tmp_path / "sw" / r["run_dir"] / "summary.json").exists() for r in point["repeats"])
    ttft = sorted(r["summary"]["ttft_p50_s"] for r in point["repeats"])
    assert point["summary"]["ttft_p50_s"] == pytest.approx(ttft[1])  # the median repeat
    fig = point["across_repeats"]["ttft_p50_s"]
    assert (fig["min"], fig["max"], fig["n"]) == (ttft[0], ttft[2], 3)
    assert read_index(tmp_path / "sw")["points"] == json.loads(json.dumps(data["points"]))


def test_repeats_resume_runs_only_the_missing_repeats(tmp_path: Path) -> None:
    d = tmp_path / "sw"
    spec = _spec(grid=SweepGrid(max_num_seqs=[4]), loads=[1, 4], repeat=2)
    with pytest.raises(RunInterrupted, match="0 points done"):
        _run(spec, d, FakeRunner(interrupt_at=2))  # the first point's second repeat dies
    (point,) = read_index(d)["points"]
    assert point["status"] == "partial"
    assert [(r["index"], r["status"]) for r in point["repeats"]] == [(1, "done")]
    kept = (d / "runs" / "c0-default-conc1" / "rep-01" / "summary.json").stat().st_mtime_ns

    again = FakeRunner()
    data = _run(spec, d, again, resume=True)
    assert [(c.out_dir.name, c.run_id) for c in again.calls] == [
        ("c0-default-conc1", "rep-02"),
        ("c0-default-conc4", "rep-01"),
        ("c0-default-conc4", "rep-02"),
    ]
    assert data["status"] == "complete"
    assert all(p["status"] == "done" and len(p["repeats"]) == 2 for p in data["points"])
    assert (d / "runs" / "c0-default-conc1" / "rep-01" / "summary.json").stat().st_mtime_ns == kept
    assert (d / "stale" / "c0-default-conc1-rep-02-1").is_dir()  # the dead repeat, kept aside


def test_repeat_option_reaches_the_saved_spec(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        cli, ["sweep", "--out", str(tmp_path / "sw"), "--repeat", "0", "--concurrency", "1"]
    )
    assert res.exit_code == 2 and "--repeat" in res.output
    assert SweepSpec(sweep_id="s", loads=[1]).repeat == 1  # old sweep.json files: one run


def test_points_of_a_gpu_default_sweep_count_with_the_shapes_tokenizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep without --model on a GPU host serves an embedded shape: its points count streamed
    tokens with that shape's 128,256-token tokenizer, not the tiny model's."""
    from profiler.serving import shapes
    from profiler.sweep.points import point_run_spec

    monkeypatch.setenv("INFPROF_HOME", str(tmp_path / "home"))
    made = shapes.make_shape_model("llama-1b-shape")
    rs = point_run_spec(
        _spec(),
        "default",
        {"kind": "concurrency", "value": 4},
        "http://127.0.0.1:9",
        "llama-1b-shape",
        tmp_path,
        "p",
    )
    assert rs.tokenizer == str(made.resolve())
