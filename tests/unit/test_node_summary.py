"""summarize_nodes: per-node GPU and host sections from prometheus-source samples, computed
by the same code as the local GPU section."""

from __future__ import annotations

import pytest

from profiler.analysis.node_summary import (
    gpu_device,
    host_device,
    per_node_samples,
    summarize_nodes,
)
from profiler.analysis.telemetry_sections import summarize_telemetry
from profiler.telemetry.sample import Sample

URL = "http://prometheus:9090"


def node_gpus(
    node: str, *, power_w: float, util: float, gpus: int = 2, energy: bool = True
) -> list[Sample]:
    """What prom_query writes for ``node``'s exporter: 1 Hz points from t=0 to t=20; GPU g
    draws ``power_w + 10 g`` W (its energy counter grows at that rate) at ``util``, moves 1 GB/s
    over NVLink, and has one per-link series that must not count as a GPU."""
    out: list[Sample] = []
    for g in range(gpus):
        dev = f"{node}/{g}"
        p = power_w + 10 * g
        for t in range(21):
            ft = float(t)
            out += [
                Sample(ft, "prometheus", dev, "gpu_up", 1.0),
                Sample(ft, "prometheus", dev, "gpu_utilization_ratio", util),
                Sample(ft, "prometheus", dev, "gpu_memory_used_bytes", 20e9 + 1e9 * g),
                Sample(ft, "prometheus", dev, "gpu_memory_total_bytes", 80e9),
                Sample(ft, "prometheus", dev, "gpu_power_watts", p),
                Sample(ft, "prometheus", dev, "gpu_nvlink_tx_bytes_total", 1e9 * t),
                Sample(ft, "prometheus", dev, "gpu_pcie_rx_bytes_total", 1e8 * t),
                Sample(ft, "prometheus", f"{dev}/link=0", "gpu_nvlink_tx_bytes_total", 5e8 * t),
            ]
            if energy:
                out.append(Sample(ft, "prometheus", dev, "gpu_energy_joules_total", 1e6 + p * t))
    return out


def node_host(node: str, cpu: float) -> list[Sample]:
    return [
        s
        for t in range(21)
        for s in (
            Sample(float(t), "prometheus", node, "host_cpu_utilization_ratio", cpu),
            Sample(float(t), "prometheus", node, "host_memory_used_bytes", 4e9),
            Sample(float(t), "prometheus", f"{node}/eth0", "host_network_tx_bytes_total", 1e3 * t),
        )
    ]


def vllm_series() -> list[Sample]:
    return [
        Sample(float(t), "prometheus", "10.0.0.5:8000/0", "vllm:kv_cache_usage_perc", 0.5)
        for t in range(21)
    ]


def two_nodes() -> list[Sample]:
    return (
        node_gpus("host-a", power_w=250.0, util=0.4)
        + node_gpus("host-b", power_w=400.0, util=0.8)
        + node_host("host-a", 0.1)
        + node_host("host-b", 0.2)
        + node_host("loadgen", 0.5)  # the run's own machine: host series, no GPUs
        + vllm_series()
    )


def test_each_node_gets_its_own_gpus_and_values() -> None:
    s = summarize_nodes(two_nodes(), 5.0, 15.0, 1000, URL)
    assert s["available"] is True and s["source"] == "prometheus"
    per = s["per_node"]
    assert list(per) == ["host-a", "host-b", "loadgen"]
    for node, power, util in (("host-a", 250.0, 0.4), ("host-b", 400.0, 0.8)):
        n = per[node]
        assert n["available"] is True and n["gpu_count"] == 2
        assert set(n["gpus"]) == {"0", "1"}  # the per-link series is not a GPU
        for g in (0, 1):
            row = n["gpus"][str(g)]
            assert row["power_mean_watts"] == pytest.approx(power + 10 * g)
            assert row["utilization_mean_ratio"] == pytest.approx(util)
            assert row["memory_used_peak_bytes"] == 20e9 + 1e9 * g
            assert row["energy_joules"] == pytest.approx((power + 10 * g) * 10)  # counter
            assert row["nvlink_tx_bytes"] == pytest.approx(10e9)
            assert row["pcie_rx_bytes"] == pytest.approx(1e9)
        assert n["power_mean_watts"] == pytest.approx(2 * power + 10)
        assert n["utilization_mean_ratio"] == pytest.approx(util)
        assert n["energy_joules"] == pytest.approx((2 * power + 10) * 10)
        assert n["energy_joules_per_output_token"] == pytest.approx((2 * power + 10) * 10 / 1000)
        assert n["nvlink_tx_bytes"] == pytest.approx(20e9)
        assert n["nvlink_tx_bytes_per_output_token"] == pytest.approx(20e6)
        assert n["energy"]["available"] is True and n["energy"]["coverage_ratio"] == 1.0
        assert n["host"]["available"] is True
        assert n["host"]["network"] == {"eth0": {"tx_bytes": pytest.approx(1e4), "rx_bytes": None}}
    assert per["host-a"]["host"]["cpu_utilization_mean_ratio"] == pytest.approx(0.1)
    assert per["host-b"]["host"]["cpu_utilization_mean_ratio"] == pytest.approx(0.2)
    loadgen = per["loadgen"]
    assert loadgen["available"] is False and "no infprof_gpu_" in loadgen["reason"]
    assert loadgen["gpu_count"] == 0 and loadgen["gpus"] == {}
    assert loadgen["host"]["cpu_utilization_mean_ratio"] == pytest.approx(0.5)
    # totals over the nodes with GPUs
    assert s["node_count"] == 2 and s["gpu_count"] == 4
    assert s["power_mean_watts"] == pytest.approx(510.0 + 810.0)
    assert s["utilization_mean_ratio"] == pytest.approx(0.6)  # pooled over 4 equal GPUs
    assert s["utilization_peak_ratio"] == pytest.approx(0.8)
    assert s["energy_joules"] == pytest.approx(13200.0)
    assert s["energy_joules_per_output_token"] == pytest.approx(13.2)
    assert s["nvlink_tx_bytes"] == pytest.approx(40e9)
    assert s["pcie_tx_bytes"] is None  # no PCIe tx series anywhere


def test_same_numbers_as_the_local_gpu_section() -> None:
    """A node's figures are exactly what the local GPU section computes from the same points
    written by the local NVML sampler (one computation serves both)."""
    remote = node_gpus("host-a", power_w=300.0, util=0.7)
    local = [
        Sample(s.t_s, "nvml", s.device.split("/", 1)[1].replace("link=", ""), s.metric[4:], s.value)
        for s in remote
    ]
    mine = summarize_telemetry(local, 3.0, 17.0, 500, {"available": True})
    node = summarize_nodes(remote, 3.0, 17.0, 500, URL)["per_node"]["host-a"]
    assert node["gpus"] == mine["gpu"]["per_gpu"]
    # the local section also says which GPUs the run's server used (its ``scope``); a node's
    # section covers every GPU the node exported: the computed figures are the same
    local_energy = {k: v for k, v in mine["energy"].items() if k != "scope"}
    assert node["energy"] == local_energy
    for key in ("utilization_mean_ratio", "power_mean_watts", "nvlink_tx_bytes_per_output_token"):
        assert node[key] == mine["gpu"][key]


def test_without_prometheus_url_or_series_says_why() -> None:
    local = [Sample(float(t), "nvml", "0", "power_watts", 100.0) for t in range(5)]
    none = summarize_nodes(local, 0.0, 4.0, 10, None)
    assert none == {"available": False, "reason": none["reason"]}
    assert "--prometheus-url" in none["reason"]
    empty = summarize_nodes(local + vllm_series(), 0.0, 4.0, 10, URL)
    assert empty["available"] is False and "infprof_gpu_*" in empty["reason"]
    assert URL not in empty["reason"]  # a URL may carry credentials
    no_window = summarize_nodes(two_nodes(), None, None, 0, URL)
    assert no_window["available"] is False and "no measured window" in no_window["reason"]


def test_a_node_without_its_energy_counter_leaves_the_total_unknown() -> None:
    samples = node_gpus("host-a", power_w=250.0, util=0.4) + node_gpus(
        "host-b", power_w=250.0, util=0.4, energy=False
    )
    s = summarize_nodes(samples, 5.0, 15.0, 100, URL)
    assert s["per_node"]["host-a"]["energy_joules"] == pytest.approx(5100.0)
    b = s["per_node"]["host-b"]
    assert b["energy_joules"] is None and b["energy"]["available"] is False
    assert s["energy_joules"] is None and s["energy_joules_per_output_token"] is None
    assert s["power_mean_watts"] == pytest.approx(1020.0)


def test_a_node_whose_gpus_stopped_before_the_window() -> None:
    early = [s for s in node_gpus("host-a", power_w=250.0, util=0.4) if s.t_s < 3]
    s = summarize_nodes(early + node_gpus("host-b", power_w=300.0, util=0.5), 5.0, 15.0, 10, URL)
    a = s["per_node"]["host-a"]
    assert a["available"] is False and "in the measured window" in a["reason"]
    assert s["node_count"] == 1 and s["gpu_count"] == 2


def test_device_parsing() -> None:
    assert gpu_device("host-a/0") == ("host-a", "0")
    assert gpu_device("host-a/3/link=5") == ("host-a", "3/5")
    assert gpu_device("host-a/3/pod=exporter-x") == ("host-a", "3")  # relabelled scrape
    assert gpu_device("10.0.0.7:9400/1") == ("10.0.0.7:9400", "1")
    assert gpu_device("host-a/") is None and gpu_device("/0") is None
    assert host_device("host-a") == ("host-a", "")
    assert host_device("host-a/eth0") == ("host-a", "eth0")
    assert host_device("host-a/pod=x") == ("host-a", "")
    grouped = per_node_samples(two_nodes())
    assert set(grouped) == {"host-a", "host-b", "loadgen"}  # vLLM series are not a node
    assert {s.source for s in grouped["host-a"]} == {"nvml", "host"}
    assert {s.device for s in grouped["host-a"] if s.source == "nvml"} == {"0", "1", "0/0", "1/0"}
    assert all(not s.metric.startswith(("gpu_", "host_")) for s in grouped["host-a"])
