"""Prometheus end to end, on loopback: every dashboard query returns data.

A real Prometheus (Debian's package; ``scripts/ensure-debian-package.sh`` installs it, ``make test``
runs that first) scrapes every second:

- two ``infprof exporter`` processes with the fake NVML (tests/fakes/nvml.py, moving in real
  time) as two hosts, ``host-a`` and ``host-b``, two H100s each, with distinct power,
  utilization, memory and link rates per host (``NODES``);
- ``infprof run --metrics-port --report`` against the fake OpenAI server
  (tests/fakes/fake_openai.py), which also pulls its window back into samples.parquet with
  ``--prometheus-url`` and summarises it per node (summary.json ``nodes``, the report);
- a vLLM-like ``/metrics`` target (vLLM's metric names and labels) for the server panels.

Then every variable query and every PromQL expression of every dashboard JSON, with the
variables substituted from the variable queries' own answers and ``$__rate_interval`` = 15s,
must return at least one series, per-host series must be distinct, and the run window must
come back from Prometheus as samples, summarised per node with each fake node's own values.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from profiler.store.rundir import read_samples
from tests.unit.test_dashboards import FILES, dashboard_queries, load, metric_names, substitute

PROMETHEUS = shutil.which("prometheus")
ROOT = Path(__file__).resolve().parents[2]
RATE_INTERVAL = "15s"
MIN_SCRAPES = 6  # per target before querying: 15s windows then hold >= 2 points everywhere
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class FakeNode:
    """What one fake exporter's GPUs report (tests/fakes/nvml_exporter_fake.py): GPU ``i``
    draws ``power_w + 10 i`` W at ``util_percent + 5 i`` % with ``memory_used_gib + i`` GiB
    used; NVLink tx ``2 links x (50,000 + 1,000 i) KiB/s`` and PCIe tx ``2e8 B/s``, both
    times ``traffic_scale``."""

    power_w: int
    util_percent: int
    memory_used_gib: int
    traffic_scale: float

    def argv(self) -> list[str]:
        return [
            "--power-w",
            str(self.power_w),
            "--util-percent",
            str(self.util_percent),
            "--memory-used-gib",
            str(self.memory_used_gib),
            "--traffic-scale",
            str(self.traffic_scale),
        ]

    def power(self, gpu: int) -> float:
        return float(self.power_w + 10 * gpu)

    def util(self, gpu: int) -> float:
        return (self.util_percent + 5 * gpu) / 100

    def memory_used_bytes(self, gpu: int) -> float:
        return float((self.memory_used_gib + gpu) * 2**30)

    def nvlink_tx_bytes_per_s(self, gpu: int) -> float:
        return 2 * (50_000.0 + 1000 * gpu) * 1024 * self.traffic_scale

    def pcie_tx_bytes_per_s(self) -> float:
        return 2e8 * self.traffic_scale


NODES = {
    "host-a": FakeNode(power_w=250, util_percent=40, memory_used_gib=10, traffic_scale=1.0),
    "host-b": FakeNode(power_w=400, util_percent=70, memory_used_gib=30, traffic_scale=2.0),
}

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.integration,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="prometheus binary not found; run scripts/ensure-debian-package.sh (make test does)",
    ),
    pytest.mark.timeout(300),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    what: str, check: Callable[[], Any], timeout_s: float, interval_s: float = 0.25
) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # not up yet
            last = e
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


def stop(proc: subprocess.Popen[Any], timeout_s: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Prom:
    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: Any) -> Any:
        q = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{q}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self.api("query", **params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def label_values(self, selector: str, label: str, at: float) -> list[str]:
        return list(
            self.api(
                f"label/{label}/values",
                **{"match[]": selector, "start": f"{at - 60:.3f}", "end": f"{at:.3f}"},
            )
        )


# ----------------------------------------------------------------------- vLLM-like target
@dataclass
class VllmLike:
    """vLLM's names and labels (telemetry.md section 3) on a loopback /metrics, moving, served
    the way vLLM serves them: by prometheus_client's own app, which answers Prometheus 2.x's
    OpenMetrics request with ``vllm_`` names (see the vllm job in dashboards/prometheus.yml)."""

    model: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    server: Any = None
    port: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self, port: int) -> VllmLike:
        r, labels = self.registry, ["model_name", "engine"]
        lv = {"model_name": self.model, "engine": "0"}
        self.running = Gauge("vllm:num_requests_running", "running", labels, registry=r).labels(
            **lv
        )
        self.waiting = Gauge("vllm:num_requests_waiting", "waiting", labels, registry=r).labels(
            **lv
        )
        self.kv = Gauge("vllm:kv_cache_usage_perc", "kv", labels, registry=r).labels(**lv)
        self.preempt = Counter("vllm:num_preemptions", "preemptions", labels, registry=r).labels(
            **lv
        )
        self.gen = Counter("vllm:generation_tokens", "generated", labels, registry=r).labels(**lv)
        self.prompt = Counter("vllm:prompt_tokens", "prompt", labels, registry=r).labels(**lv)
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "ttft",
            labels,
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
        ).labels(**lv)
        self.server, _ = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        self.port = int(self.server.server_port)
        threading.Thread(target=self._move, daemon=True).start()
        return self

    def _move(self) -> None:
        rng = random.Random(0)
        while not self._stop.wait(0.2):
            self.running.set(rng.randint(1, 8))
            self.waiting.set(rng.randint(0, 3))
            self.kv.set(rng.random())
            self.preempt.inc(rng.randint(0, 1))
            self.gen.inc(rng.randint(50, 100))
            self.prompt.inc(rng.randint(100, 200))
            self.ttft.observe(rng.uniform(0.01, 0.3))

    def close(self) -> None:
        self._stop.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# ----------------------------------------------------------------------- the stack
@dataclass
class Stack:
    prom: Prom
    run_id: str
    model: str
    t_eval: float  # every check evaluates at this moment, when every target was up
    run_proc: subprocess.Popen[str]
    run_dir: Path
    procs: list[subprocess.Popen[Any]]


def _exporter(port: int, hostname: str, log: Path) -> subprocess.Popen[Any]:
    cmd = [
        sys.executable,
        "-m",
        "tests.fakes.nvml_exporter_fake",
        "--gpus",
        "2",
        *NODES[hostname].argv(),
        "--",
        "exporter",
        "--port",
        str(port),
        "--hostname",
        hostname,
        "--interval",
        "0.5",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))


def _fake_openai(log: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.fake_openai", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    assert proc.stdout is not None
    box: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("READY") and not box:
                box.append(line.split()[1])

    threading.Thread(target=read, daemon=True).start()
    url = wait_for("the fake OpenAI server", lambda: box[0] if box else None, START_TIMEOUT_S)
    return proc, url


def _served_model(url: str) -> str:
    with urllib.request.urlopen(url.rstrip("/") + "/v1/models", timeout=10) as resp:
        return str(json.loads(resp.read())["data"][0]["id"])


def scrape_config(ports: dict[str, int]) -> dict[str, Any]:
    """dashboards/prometheus.yml, as shipped, with loopback targets and 1 s scrapes."""
    config = yaml.safe_load((ROOT / "dashboards" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="900ms", evaluation_interval="1s")
    targets = {
        "infprof-exporter": [ports["a"], ports["b"]],
        "infprof-run": [ports["run"]],
        "vllm": [ports["vllm"]],
    }
    for job in config["scrape_configs"]:
        job.pop("scrape_interval", None)
        job.pop("scrape_timeout", None)
        job["static_configs"] = [{"targets": [f"127.0.0.1:{p}" for p in targets[job["job_name"]]]}]
    assert {j["job_name"] for j in config["scrape_configs"]} == set(targets)
    return config


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("prom")
    ports = {k: free_port() for k in ("prom", "a", "b", "run", "vllm")}
    procs: list[subprocess.Popen[Any]] = []
    closers: list[Callable[[], None]] = []
    run_id = "it-prom-run"
    try:
        fake, fake_url = _fake_openai(tmp / "fake_openai.log")
        procs.append(fake)
        model = _served_model(fake_url)
        vllm = VllmLike(model).start(ports["vllm"])
        closers.append(vllm.close)
        procs.append(_exporter(ports["a"], "host-a", tmp / "exporter-a.log"))
        procs.append(_exporter(ports["b"], "host-b", tmp / "exporter-b.log"))

        (tmp / "prometheus.yml").write_text(yaml.safe_dump(scrape_config(ports)))
        prom_proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{ports['prom']}",
                "--log.level=warn",
            ],  # type: ignore[list-item]
            stdout=subprocess.DEVNULL,
            stderr=(tmp / "prometheus.log").open("w"),
        )
        procs.append(prom_proc)
        prom = Prom(f"http://127.0.0.1:{ports['prom']}")
        wait_for(
            "Prometheus ready",
            lambda: urllib.request.urlopen(prom.url + "/-/ready", timeout=2).status == 200,
            START_TIMEOUT_S,
        )
        wait_for(
            "both exporters scraped",
            lambda: len(prom.query('up{job="infprof-exporter"} == 1')) == 2,
            START_TIMEOUT_S,
        )

        run_dir = tmp / "runs" / run_id
        cmd = [
            sys.executable,
            "-m",
            "profiler",
            "run",
            "--endpoint",
            fake_url,
            "--rate",
            "8",
            "--duration",
            "15",
            "--input-len",
            "16",
            "--output-len",
            "16",
            "--metrics-port",
            str(ports["run"]),
            "--prometheus-url",
            prom.url,
            "--out",
            str(tmp / "runs"),
            "--run-id",
            run_id,
            "--sample-interval",
            "0.5",
            "--report",
            "-q",
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        run_proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=(tmp / "run.out").open("w"),
            stderr=(tmp / "run.log").open("w"),
            text=True,
        )
        procs.append(run_proc)

        def enough_scrapes() -> bool:
            counts = prom.query("count_over_time(up[1m])")
            ups = prom.query("up == 1")
            ok = prom.query(f'infprof_requests_total{{run_id="{run_id}", outcome="ok"}} > 0')
            return (
                len(ups) == 4
                and len(counts) == 4
                and all(float(c["value"][1]) >= MIN_SCRAPES for c in counts)
                and bool(ok)
            )

        wait_for(
            "every target scraped enough, with finished requests",
            enough_scrapes,
            START_TIMEOUT_S + 30,
        )
        t_eval = time.time()
        yield Stack(prom, run_id, model, t_eval, run_proc, run_dir, procs)
    finally:
        for close in closers:
            close()
        for p in reversed(procs):
            stop(p)
        for log in sorted(tmp.glob("*.log")):
            text = log.read_text(errors="replace").strip()
            if text:
                sys.stderr.write(f"--- {log.name} (tail)\n{text[-2000:]}\n")


# ----------------------------------------------------------------------- the checks
def _resolve_variables(prom: Prom, d: dict[str, Any], at: float) -> dict[str, str]:
    """Evaluate each query variable in order (later ones use earlier values) and return a
    regex of the values found, as Grafana substitutes a multi-value variable."""
    values: dict[str, str] = {}
    for v in d["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q.strip())
        assert m, f"unsupported variable query {q!r}"
        selector = substitute(m.group(1), values)
        found = prom.label_values(selector, m.group(2), at)
        assert found, f"{d['uid']}: variable {v['name']} ({q}) found no values"
        values[v["name"]] = "|".join(_regex_literal(x) for x in found)
    return values


def _regex_literal(value: str) -> str:
    """``value`` as a regex inside a PromQL double-quoted string (as Grafana escapes a
    multi-value variable): regex metacharacters get a backslash, itself escaped for the string."""
    return re.sub(r"([\\.+*?()\[\]{}|^$])", r"\\\\\1", value)


@pytest.mark.parametrize("name", FILES)
def test_every_dashboard_query_returns_data(stack: Stack, name: str) -> None:
    d = load(name)
    values = _resolve_variables(stack.prom, d, stack.t_eval)
    if "run_id" in values:
        assert values["run_id"] == stack.run_id
    empty = []
    for title, expr in dashboard_queries(d):
        q = substitute(expr, values, RATE_INTERVAL)
        if not stack.prom.query(q, stack.t_eval):
            empty.append(f"{title}: {q}")
    assert not empty, "queries without a series:\n" + "\n".join(empty)


def test_every_vllm_name_the_dashboards_use_is_served_by_the_vllm_like_target(stack: Stack) -> None:
    wanted = {
        m
        for f in FILES
        for _, e in dashboard_queries(load(f))
        for m in metric_names(e)
        if m.startswith("vllm:")
    }
    for m in wanted:
        assert stack.prom.query(m, stack.t_eval), m


def test_per_host_series_are_distinct(stack: Stack) -> None:
    at = stack.t_eval
    per_host = {
        r["metric"]["hostname"]: float(r["value"][1])
        for r in stack.prom.query(
            'count by (hostname) (infprof_gpu_up{job="infprof-exporter"})', at
        )
    }
    assert per_host == {"host-a": 2.0, "host-b": 2.0}
    series = stack.prom.query('infprof_gpu_power_watts{job="infprof-exporter"}', at)
    keys = {(r["metric"]["hostname"], r["metric"]["gpu"]) for r in series}
    assert keys == {("host-a", "0"), ("host-a", "1"), ("host-b", "0"), ("host-b", "1")}
    instances = {r["metric"]["hostname"]: r["metric"]["instance"] for r in series}
    assert instances["host-a"] != instances["host-b"]
    dcgm_free = stack.prom.query("count(DCGM_FI_DEV_GPU_UTIL)", at)
    assert not dcgm_free  # the DCGM names only appear with --dcgm-compatible


def test_run_window_comes_back_from_prometheus(stack: Stack) -> None:
    # `infprof run --prometheus-url` pulled its own window into samples.parquet
    assert stack.run_proc.wait(timeout=120) == 0, "infprof run failed; see run.log above"
    samples = [s for s in read_samples(stack.run_dir) if s.source == "prometheus"]
    assert samples, "no samples pulled from Prometheus"
    by_key = {(s.device, s.metric) for s in samples}
    for host in ("host-a", "host-b"):
        for gpu in ("0", "1"):
            assert (f"{host}/{gpu}", "gpu_power_watts") in by_key, (host, gpu)
            assert (f"{host}/{gpu}", "gpu_energy_joules_total") in by_key
        assert (host, "host_memory_used_bytes") in by_key
    assert any(m == "vllm:kv_cache_usage_perc" for _, m in by_key)
    powers = [s for s in samples if s.device == "host-a/1" and s.metric == "gpu_power_watts"]
    assert len(powers) >= 2 and all(s.value == 260.0 for s in powers)  # fake GPU 1: 260 W
    assert all(s.source == "prometheus" and s.t_s > -5 for s in samples)


def test_every_node_is_summarised_and_reported_with_its_own_values(stack: Stack) -> None:
    # `infprof run --prometheus-url --report`: summary.json["nodes"] holds each exporter's
    # GPUs with what that exporter's fake NVML reports, and the report draws and tabulates both
    assert stack.run_proc.wait(timeout=120) == 0, "infprof run failed; see run.log above"
    summary = json.loads((stack.run_dir / "summary.json").read_text())
    nodes = summary["nodes"]
    assert nodes["available"] is True and nodes["source"] == "prometheus", nodes
    per_node = nodes["per_node"]
    with_gpus = {n for n, r in per_node.items() if r["available"]}
    assert with_gpus == set(NODES), per_node.keys()  # the run's own host has no GPU series
    tokens = summary["tokens"]["output"]
    assert tokens > 0
    seconds = summary["window"]["seconds"]
    for host, fake in NODES.items():
        node = per_node[host]
        assert node["gpu_count"] == 2 and set(node["gpus"]) == {"0", "1"}, (host, node)
        for g in (0, 1):
            row = node["gpus"][str(g)]
            assert row["power_mean_watts"] == pytest.approx(fake.power(g)), (host, g)
            assert row["utilization_mean_ratio"] == pytest.approx(fake.util(g)), (host, g)
            assert row["memory_used_peak_bytes"] == fake.memory_used_bytes(g), (host, g)
            assert row["memory_total_bytes"] == 80 * 2**30
            covered = seconds * node["energy"]["coverage_ratio"]
            # counters sampled every 0.5 s, scraped every 1 s: edges are off by up to ~1.5 s
            assert row["energy_joules"] == pytest.approx(fake.power(g) * covered, rel=0.15)
            assert row["nvlink_tx_bytes"] == pytest.approx(
                fake.nvlink_tx_bytes_per_s(g) * covered, rel=0.15
            )
            assert row["pcie_tx_bytes"] == pytest.approx(
                fake.pcie_tx_bytes_per_s() * covered, rel=0.15
            )
        assert node["power_mean_watts"] == pytest.approx(fake.power(0) + fake.power(1))
        assert node["utilization_mean_ratio"] == pytest.approx(
            (fake.util(0) + fake.util(1)) / 2, rel=0.02
        )
        assert node["energy_joules"] == pytest.approx(
            sum(node["gpus"][g]["energy_joules"] for g in ("0", "1"))
        )
        assert node["energy_joules_per_output_token"] == pytest.approx(
            node["energy_joules"] / tokens
        )
        assert node["nvlink_tx_bytes_per_output_token"] == pytest.approx(
            node["nvlink_tx_bytes"] / tokens
        )
        assert node["host"]["available"] is True  # the exporter's psutil series
    assert nodes["gpu_count"] == 4
    assert nodes["power_mean_watts"] == pytest.approx(
        sum(f.power(g) for f in NODES.values() for g in (0, 1))
    )
    assert nodes["energy_joules"] == pytest.approx(sum(per_node[h]["energy_joules"] for h in NODES))

    html = (stack.run_dir / "report.html").read_text()
    assert 'id="nodes"' in html
    img = re.search(r'<img[^>]*data-plot="node-timeline"[^>]*>', html)
    assert img, "no per-node timeline in the report"
    alt = re.search(r'alt="([^"]*)"', img.group(0))
    assert alt and "host-a" in alt.group(1) and "host-b" in alt.group(1), img.group(0)[-300:]
    section = html[html.index('id="nodes"') :]
    for host in NODES:
        assert f"<td>{host}</td>" in section, host
