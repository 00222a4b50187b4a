"""infprof exporter: GPU + host metrics from the fake NVML, no-NVML fallback, --once, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pynvml
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from profiler.cli.main import cli
from profiler.metrics.node import NodeConfig, NodeExporter
from tests.fakes.nvml import install_fake_nvml
from tests.fakes.nvml_exporter_fake import fake_gpus

ROOT = Path(__file__).resolve().parents[2]


def _series(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_node_exporter_serves_gpu_and_host_metrics() -> None:
    with install_fake_nvml(fake_gpus(2)) as fake:
        node = NodeExporter(
            NodeConfig(port=0, interval_s=0.2, hostname="host-a", dcgm_compatible=True)
        )
        try:
            node.start()
            assert node.handle is not None and node.nvml_reason is None and node.gpu_count == 2
            fake.advance(0.5)
            time.sleep(0.5)
            text = urllib.request.urlopen(node.handle.url, timeout=5).read().decode()
        finally:
            node.close()
    s = _series(text)
    ups = sorted(
        (lbl["gpu"], lbl["hostname"], lbl["gpu_model"], v) for lbl, v in s["infprof_gpu_up"]
    )
    assert ups == [
        ("0", "host-a", "NVIDIA H100 80GB HBM3", 1.0),
        ("1", "host-a", "NVIDIA H100 80GB HBM3", 1.0),
    ]
    assert {lbl["uuid"] for lbl, _ in s["infprof_gpu_power_watts"]} == {
        "GPU-00000000-fake-0000-0000-000000000000",
        "GPU-00000001-fake-0000-0000-000000000000",
    }
    assert "infprof_gpu_energy_joules_total" in s
    assert "infprof_host_memory_used_bytes" in s
    assert s["DCGM_FI_DEV_POWER_USAGE"][0][0]["Hostname"] == "host-a"


def test_without_nvml_the_node_still_serves_host_metrics() -> None:
    with install_fake_nvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND):
        node = NodeExporter(NodeConfig(port=0, interval_s=0.2, hostname="cpu-box"))
        try:
            node.start()
            assert node.nvml_reason and "not found" in node.nvml_reason
        finally:
            node.close()  # takes the final tick
        text = node.render().decode()
    s = _series(text)
    assert not [n for n in s if n.startswith("infprof_gpu_")]
    assert s["infprof_host_memory_total_bytes"][0][0]["hostname"] == "cpu-box"


def test_once_prints_one_exposition_and_writes_the_textfile(tmp_path: Path) -> None:
    prom = tmp_path / "node.prom"
    with install_fake_nvml(fake_gpus(1)):
        res = CliRunner().invoke(
            cli, ["exporter", "--once", "--interval", "0.2", "--hostname", "h"]
        )
        res2 = CliRunner().invoke(
            cli, ["exporter", "--once", "--interval", "0.2", "--textfile", str(prom)]
        )
    assert res.exit_code == 0, res.output
    assert 'infprof_gpu_up{gpu="0"' in res.output
    assert res2.exit_code == 0 and res2.output == ""
    assert "infprof_gpu_power_watts" in prom.read_text()


@pytest.mark.parametrize("gpus", [1, 0])
def test_the_daemon_stops_cleanly_on_sigterm(gpus: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.nvml_exporter_fake",
            "--gpus",
            str(gpus),
            "--",
            "exporter",
            "--port",
            "0",
            "--interval",
            "0.2",
            "--hostname",
            "h",
        ],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        if gpus == 0:  # said once, then host metrics only
            assert "no GPU metrics" in line and "serving host metrics only" in line, line
            line = proc.stderr.readline()
        assert "serving http://127.0.0.1:" in line, line  # "infprof exporter: serving URL (...)"
        url = line.split("serving ", 1)[1].split(" ", 1)[0]
        body = urllib.request.urlopen(url, timeout=5).read()
        assert (b"infprof_gpu_up" in body) == (gpus > 0)
        assert b"infprof_host_" in body or gpus > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert "stopping" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_the_deploy_examples_pass_valid_exporter_flags() -> None:
    import shlex

    import yaml

    from profiler.cli.exporter import command

    unit = (ROOT / "deploy" / "systemd" / "infprof-exporter.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[1] == "exporter"
    ctx = command.make_context("exporter", argv[2:])
    assert ctx.params["host"] == "0.0.0.0" and ctx.params["port"] == 9400

    docs = list(
        yaml.safe_load_all(
            (ROOT / "deploy" / "kubernetes" / "infprof-exporter-daemonset.yaml").read_text()
        )
    )
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    container = ds["spec"]["template"]["spec"]["containers"][0]
    args = [a.replace("$(NODE_NAME)", "node-1") for a in container["args"]]
    assert args[0] == "exporter"
    ctx = command.make_context("exporter", args[1:])
    assert ctx.params["hostname"] == "node-1" and ctx.params["host"] == "0.0.0.0"
    assert container["ports"][0]["containerPort"] == ctx.params["port"]
    annotations = ds["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ctx.params["port"])
