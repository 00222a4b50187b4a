"""The Ray pieces that need no cluster: the sweep's executor seam (a fake executor), what a
point asks Ray for, the resource check's one line, the Ray-backed server spec, clock offsets
and their warning, node samples in the summary's ``nodes``, the journal forwarder, packing a
run directory, and the CLI's one-line errors for ``--executor``/``--ray-address``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from profiler.analysis.clock_offsets import LIMIT_S, clock_section
from profiler.cli.main import cli
from profiler.clock import measure_offset
from profiler.cluster import NodeInfo
from profiler.load.ray_workers import clock_entry
from profiler.serving.ray_cluster import missing_gpus, ray_serve_spec
from profiler.spec import RunSpec, ServeSpec
from profiler.store.ray_journal import Forwarder
from profiler.sweep.execute import SweepHooks, run_sweep
from profiler.sweep.jobs import PointJob
from profiler.sweep.ray_executor import (
    embedded_model_here,
    pack,
    point_resources,
    unpack,
    unplaceable,
)
from profiler.sweep.spec import SweepGrid, SweepSpec
from profiler.sweep.sweep_dir import prepare_sweep_dir
from profiler.telemetry.ray_nodes import as_node_sample, node_names
from profiler.telemetry.sample import Sample
from tests.fakes.synthetic_runs import make_run


# ---------------------------------------------------------------------- the executor seam
class FakeExecutor:
    """Runs each job here (a synthetic run) as if on node ``n<k>``; loses the first attempt
    of the jobs named in ``lose``."""

    def __init__(self, sweep_dir: Path, lose: set[str] | None = None) -> None:
        self.sweep_dir = sweep_dir
        self.lose = lose or set()
        self.prefetched: list[PointJob] = []
        self.ran: list[PointJob] = []
        self.closed = False

    def prefetch(self, jobs: list[PointJob]) -> None:
        self.prefetched = list(jobs)

    def run(self, job: PointJob) -> tuple[Any, str | None, dict[str, Any]]:
        self.ran.append(job)
        dest = self.sweep_dir / "runs" / job.rel
        path = make_run(dest.parent, dest.name, gpu=False, n=20, rate=5.0, seed=len(self.ran))
        attempts = []
        if job.rel in self.lose:
            attempts.append({"attempt": 1, "status": "lost", "records_kept": 3})
        attempts.append({"attempt": len(attempts) + 1, "status": "ok"})
        info = {
            "node": "n1",
            "node_id": "id1",
            "gpus": ["0"],
            "timing": {"queued_at": 1.0, "started_at": 2.0, "ended_at": 3.0, "wall_s": 1.0},
            "attempts": attempts,
            "lost_attempts": len(attempts) - 1,
        }
        summary = json.loads((path / "summary.json").read_text())
        return (
            SimpleNamespace(run_dir=path, summary=summary, ended="completed", reason=None),
            None,
            info,
        )

    def close(self) -> None:
        self.closed = True


def _spec(**kw: Any) -> SweepSpec:
    base: dict[str, Any] = dict(
        sweep_id="s", grid=SweepGrid(tp=[1, 2]), loads=[1, 4], num_requests=20
    )
    base.update(kw)
    return SweepSpec(**base)


def test_executor_gets_every_pending_point_with_its_server(tmp_path: Path) -> None:
    spec = _spec(model="org/model")
    d = tmp_path / "sw"
    prepare_sweep_dir(spec, d, resume=False)
    ex = FakeExecutor(d, lose={"c1-default-conc4"})
    data = run_sweep(spec, d, SweepHooks(executor=ex))
    assert ex.closed
    rels = [j.rel for j in ex.prefetched]
    assert rels == ["c0-default-conc1", "c0-default-conc4", "c1-default-conc1", "c1-default-conc4"]
    assert [j.rel for j in ex.ran] == rels
    for job in ex.prefetched:
        # the point launches its configuration's server where it runs, not pinned here
        assert job.run_spec.endpoint is None and job.run_spec.serve is not None
        assert job.run_spec.serve.model == "org/model" and job.run_spec.serve.cpus is None
        assert job.run_spec.serve.tensor_parallel_size == (1 if job.rel.startswith("c0") else 2)
        assert point_resources(job.run_spec)["num_gpus"] == job.run_spec.serve.tensor_parallel_size
    points = {p["id"]: p for p in data["points"]}
    assert all(p["status"] == "done" for p in points.values())
    p = points["c1-default-conc4"]
    assert p["node"] == "n1" and p["gpus"] == ["0"] and p["timing"]["wall_s"] == 1.0
    assert p["lost_attempts"] == 1 and [a["status"] for a in p["attempts"]] == ["lost", "ok"]
    assert data["configs"][0]["status"] == "ok"

    # resume: nothing left to run, nothing prefetched
    ex2 = FakeExecutor(d)
    run_sweep(spec, d, SweepHooks(executor=ex2))
    assert ex2.prefetched == [] and ex2.ran == []


def test_executor_repeats_and_endpoint(tmp_path: Path) -> None:
    spec = _spec(endpoint="http://10.0.0.1:8000", grid=SweepGrid(), loads=[2], repeat=2)
    d = tmp_path / "sw"
    prepare_sweep_dir(spec, d, resume=False)
    ex = FakeExecutor(d)
    data = run_sweep(spec, d, SweepHooks(executor=ex))
    assert [j.rel for j in ex.prefetched] == ["c0-default-conc2/rep-01", "c0-default-conc2/rep-02"]
    for job in ex.prefetched:
        assert job.run_spec.serve is None and job.run_spec.endpoint is not None
        assert point_resources(job.run_spec) == {"num_gpus": 0.0, "num_cpus": 1.0}
    point = data["points"][0]
    assert point["status"] == "done" and len(point["repeats"]) == 2
    assert all(r["node"] == "n1" for r in point["repeats"])


def test_local_points_record_node_and_timing(tmp_path: Path) -> None:
    from tests.unit.test_sweep import FakeRunner, FakeServer

    spec = _spec(grid=SweepGrid(max_num_seqs=[4]), loads=[1])
    d = tmp_path / "sw"
    prepare_sweep_dir(spec, d, resume=False)
    data = run_sweep(spec, d, SweepHooks(run_point=FakeRunner(), server_factory=FakeServer))
    p = data["points"][0]
    assert p["node"] and isinstance(p["gpus"], list)
    assert p["timing"]["started_at"] <= p["timing"]["ended_at"]


# ---------------------------------------------------------------------- what a point asks for
def _serve(**kw: Any) -> ServeSpec:
    return ServeSpec(model="org/m", **kw)


def _run_spec(serve: ServeSpec | None) -> RunSpec:
    from profiler.run_flags import RunOptions
    from profiler.run_options import build_run_spec
    from profiler.run_server import probe_host

    spec = build_run_spec(probe_host(), RunOptions(endpoint="http://127.0.0.1:9", num_requests=4))
    if serve is None:
        return spec
    return spec.model_copy(update={"serve": serve, "endpoint": None})


NODES = [
    NodeInfo("a" * 56, "10.0.0.1", "head", 0.0, 8.0),
    NodeInfo("b" * 56, "10.0.0.2", "gpu1", 4.0, 16.0),
    NodeInfo("c" * 56, "10.0.0.3", "gpu2", 4.0, 16.0),
]


def test_point_asks_for_its_layouts_gpus_on_one_node() -> None:
    spec = _run_spec(_serve(tensor_parallel_size=2, pipeline_parallel_size=2))
    assert point_resources(spec) == {"num_gpus": 4.0, "num_cpus": 1.0}
    assert unplaceable(spec, NODES) is None
    big = _run_spec(_serve(tensor_parallel_size=4, pipeline_parallel_size=2))
    why = unplaceable(big, NODES)
    assert why is not None and "needs 8 GPUs on one node" in why and "largest node has 4" in why


def test_missing_gpus_names_what_is_missing() -> None:
    assert missing_gpus({"GPU": 8.0}, NODES, 8, "--tp 4 --pp 2") is None
    line = missing_gpus({"GPU": 8.0, "CPU": 40.0}, NODES, 16, "--tp 8 --pp 2")
    assert line == (
        "--tp 8 --pp 2 needs 16 GPUs but the Ray cluster has 8 (gpu1 4, gpu2 4): 8 GPUs missing"
    )
    assert "none on any node" in (missing_gpus({}, NODES[:1], 1, "--tp 1 --pp 1") or "")


def test_ray_serve_spec_uses_vllms_ray_backend() -> None:
    serve = _serve(tensor_parallel_size=8, pipeline_parallel_size=2, cpus=[0, 1])
    out = ray_serve_spec(serve, "10.0.0.1:6379")
    assert out.extra_args[-2:] == ["--distributed-executor-backend", "ray"]
    assert out.env["RAY_ADDRESS"] == "10.0.0.1:6379" and out.cpus is None
    chosen = ray_serve_spec(_serve(extra_args=["--distributed-executor-backend=mp"]), None)
    assert chosen.extra_args == ["--distributed-executor-backend=mp"]  # the user's choice
    assert "RAY_ADDRESS" not in chosen.env
    from profiler.serving.vllm_command import build_argv

    argv = build_argv(out, 8000, "python")
    assert argv[argv.index("--tensor-parallel-size") + 1] == "8"
    assert argv[argv.index("--distributed-executor-backend") + 1] == "ray"


def test_embedded_model_is_made_on_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from profiler.serving import tinymodel

    gone = "/nowhere/driver-home/models/tiny-llama"
    serve = _serve(served_model_name=tinymodel.TINY_NAME, load_format=tinymodel.TINY_LOAD_FORMAT)
    serve = serve.model_copy(update={"model": gone, "tokenizer": gone})
    spec = _run_spec(serve).model_copy(update={"tokenizer": gone + "/tokenizer.json"})
    here = embedded_model_here(spec)
    assert here.serve is not None and Path(here.serve.model).is_dir()
    assert here.serve.tokenizer == here.serve.model
    assert here.tokenizer == here.serve.model + "/tokenizer.json"
    other = _run_spec(_serve())  # a Hugging Face id: left to vLLM
    assert embedded_model_here(other) is other


# ---------------------------------------------------------------------- clocks
def test_measure_offset_takes_the_shortest_round_trip() -> None:
    t = [0.0]

    def local() -> float:
        t[0] += 0.001
        return t[0]

    delays = iter([0.010, 0.002, 0.030])

    def remote() -> float:
        t[0] += next(delays)
        return t[0] + 5.0  # five seconds ahead

    off, unc = measure_offset(remote, local, samples=3)
    # the second probe: round trip 0.004 s (2 ms there and back in the fake), half of it
    assert unc == pytest.approx(0.0015, abs=1e-9)
    assert off == pytest.approx(5.0 + 0.0005, abs=1e-9)


def test_clock_section_warns_above_one_ms() -> None:
    where = {"node_id": "n1", "node_ip": "10.0.0.2", "hostname": "gpu1"}
    fine = clock_entry(0, where, (0.0002, 0.0003), (0.0004, 0.0002))
    assert fine["clock_drift_s"] == pytest.approx(0.0002)
    assert fine["clock_uncertainty_s"] == pytest.approx(0.0003)
    sec = clock_section([fine])
    assert sec is not None and sec["warning"] is None and sec["nodes"] == 1
    drifting = clock_entry(1, {**where, "node_id": "n2"}, (0.1, 0.0002), (0.1025, 0.0002))
    assert drifting["clock_uncertainty_s"] == pytest.approx(0.0025)
    sec = clock_section([fine, drifting])
    assert sec is not None and sec["uncertainty_max_s"] > LIMIT_S
    assert "2.50 ms" in sec["warning"] and sec["nodes"] == 2
    assert clock_section(None) is None and clock_section([]) is None
    lost = clock_entry(0, where, (0.0, 0.0004), None)  # its node was lost: no end reading
    assert lost["clock_offset_end_s"] is None and lost["clock_uncertainty_s"] == 0.0004


def test_render_prints_the_clock_warning(tmp_path: Path) -> None:
    from rich.console import Console

    from profiler.cli.render import render_summary

    run = make_run(tmp_path, "r", gpu=False, n=10, rate=5.0)
    summary = json.loads((run / "summary.json").read_text())
    summary["workers_clock"] = clock_section(
        [clock_entry(0, {"node_id": "n"}, (0.0, 0.004), (0.0, 0.004))]
    )
    console = Console(record=True, width=300)
    render_summary(summary, None, console)
    assert "uncertain by up to 4.00 ms" in console.export_text()


# ---------------------------------------------------------------------- node samples
def test_node_samples_feed_the_nodes_section() -> None:
    from profiler.analysis.node_summary import summarize_nodes

    nodes = [
        NodeInfo("a1" * 28, "10.0.0.1", "vm", 1, 1),
        NodeInfo("b2" * 28, "10.0.0.1", "vm", 1, 1),
    ]
    names = node_names(nodes)
    assert names == ["vm-a1a1a1a1", "vm-b2b2b2b2"]  # one host, two nodes: told apart
    assert node_names([NodeInfo("x" * 56, "10.0.0.9", "gpu7", 8, 64)]) == ["gpu7"]
    local = []
    for t in (1.0, 2.0, 3.0):
        local += [
            Sample(t, "nvml", "0", "up", 1.0, None),
            Sample(t, "nvml", "0", "utilization_ratio", 0.5, None),
            Sample(t, "nvml", "0", "power_watts", 100.0, None),
            Sample(t, "host", "", "cpu_utilization_ratio", 0.25, None),
            Sample(t, "host", "", "memory_used_bytes", 1e9, None),
            Sample(t, "vllm", "", "vllm:num_requests_running", 1.0, None),
        ]
    converted = [as_node_sample("gpu1", s) for s in local]
    assert converted[-1] is None  # server series name an instance, not a node
    samples = [s for s in converted if s is not None]
    assert samples[1] == Sample(1.0, "ray", "gpu1/0", "gpu_utilization_ratio", 0.5, None)
    assert samples[3].device == "gpu1" and samples[3].metric == "host_cpu_utilization_ratio"
    out = summarize_nodes(samples, 0.5, 3.5, 100, None)
    assert out["available"] and out["source"] == "ray"
    node = out["per_node"]["gpu1"]
    assert node["gpu_count"] == 1 and node["host"]["available"]
    assert node["utilization_mean_ratio"] == pytest.approx(0.5)


# ---------------------------------------------------------------------- journals and packing
class _Remote:
    def __init__(self, sink: list[tuple[str, ...]], name: str) -> None:
        self.sink, self.name = sink, name

    def remote(self, *args: Any) -> None:
        self.sink.append((self.name, *args))


class FakeCollector:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.append = _Remote(self.calls, "append")
        self.put = _Remote(self.calls, "put")


def test_forwarder_sends_complete_lines_and_the_manifest(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    coll = FakeCollector()
    fwd = Forwarder(coll, "k", run, rename=lambda n: n.replace("requests", "requests.w3"))
    (run / "requests.jsonl").write_bytes(b'{"id": 0}\n{"id": 1}\n{"id": 2')  # a line mid-write
    (run / "manifest.json").write_text('{"run_id": "r"}')
    (run / "samples.jsonl").write_bytes(b"{}\n")  # not a request journal
    fwd.pass_once()
    assert ("append", "k", "requests.w3.jsonl", b'{"id": 0}\n{"id": 1}\n') in coll.calls
    assert ("put", "k", "manifest.json", b'{"run_id": "r"}') in coll.calls
    assert fwd.lines_sent == 2
    coll.calls.clear()
    with open(run / "requests.jsonl", "ab") as f:
        f.write(b'}\n{"id": 3}\n')
    fwd.pass_once()
    assert coll.calls == [("append", "k", "requests.w3.jsonl", b'{"id": 2}\n{"id": 3}\n')]
    assert fwd.lines_sent == 4


def test_pack_unpack_round_trip(tmp_path: Path) -> None:
    src = make_run(tmp_path / "a", "r", gpu=False, n=10, rate=5.0)
    (src / "sub").mkdir()
    (src / "sub" / "x.txt").write_text("x")
    unpack(pack(src), tmp_path / "b")
    for p in src.rglob("*"):
        if p.is_file():
            assert (tmp_path / "b" / p.relative_to(src)).read_bytes() == p.read_bytes()


# ---------------------------------------------------------------------- CLI
def _one_line(res: Any, *words: str) -> None:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("infprof: error:")]
    assert len(lines) == 1, res.output
    for w in words:
        assert w in lines[0]


def test_cli_ray_options_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    ep = ["--endpoint", "http://127.0.0.1:9", "--num-requests", "2", "--out", str(tmp_path)]
    _one_line(
        runner.invoke(cli, ["run", *ep, "--ray-address", "h:1"]),
        "--ray-address needs --executor ray",
    )
    _one_line(
        runner.invoke(
            cli,
            [
                "sweep",
                *ep[:2],
                "--concurrency",
                "1",
                "--ray-address",
                "h:1",
                "--out",
                str(tmp_path / "s"),
            ],
        ),
        "--ray-address needs --executor ray",
    )
    _one_line(
        runner.invoke(
            cli,
            [
                "sweep",
                "--concurrency",
                "1",
                "--executor",
                "ray",
                "--gpus",
                "0",
                "--out",
                str(tmp_path / "g"),
            ],
        ),
        "--gpus cannot be used with --executor ray",
    )
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    _one_line(runner.invoke(cli, ["run", *ep, "--executor", "ray"]), "needs Ray", "infprof[ray]")


def test_unreachable_cluster_fails_in_one_line_before_writing(tmp_path: Path) -> None:
    import socket

    from profiler.cluster import check_reachable
    from profiler.errors import ServerError, SpecError

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServerError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        check_reachable(f"127.0.0.1:{port}")
    with pytest.raises(SpecError, match="is not HOST:PORT"):
        check_reachable("headnode")
    check_reachable("auto")  # left to Ray
    pytest.importorskip("ray")
    out = tmp_path / "s"
    res = CliRunner().invoke(
        cli,
        ["sweep", "--executor", "ray", "--ray-address", f"127.0.0.1:{port}", "--endpoint",
         "http://127.0.0.1:9", "--concurrency", "1", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 3, res.output
    assert [ln for ln in res.output.splitlines() if ln.startswith("infprof: error:")]
    assert not out.exists()
