"""summarize_telemetry: window statistics, energy from the counter, explicit unavailability."""

from __future__ import annotations

import pytest

from profiler.analysis.telemetry_sections import summarize_telemetry
from profiler.telemetry.sample import Sample

NVML_OK = {"available": True, "reason": None}


def gpu_run(seconds: int = 20, gpus: int = 2, energy: bool = True) -> list[Sample]:
    """1 Hz samples; the load runs from t=5 to t=15 (util 0.9, 400 W) and idles otherwise
    (util 0.0, 100 W). Power deliberately disagrees with the energy counter (which grows at
    500 J/s under load) to prove energy is not integrated from power."""
    out: list[Sample] = []
    for g in range(gpus):
        dev = str(g)
        energy_j = 1e6 * (g + 1)
        nvlink = 0.0
        for t in range(seconds + 1):
            busy = 5 <= t <= 15
            out += [
                Sample(float(t), "nvml", dev, "up", 1.0),
                Sample(float(t), "nvml", dev, "utilization_ratio", 0.9 if busy else 0.0),
                Sample(float(t), "nvml", dev, "memory_used_bytes", 40e9 if t > 2 else 70e9),
                Sample(float(t), "nvml", dev, "memory_total_bytes", 80e9),
                Sample(float(t), "nvml", dev, "power_watts", 400.0 if busy else 100.0),
                Sample(float(t), "nvml", dev, "nvlink_tx_bytes_total", nvlink),
                Sample(float(t), "nvml", dev, "pcie_rx_bytes_per_second", 1e6),
                Sample(float(t), "nvml", dev, "throttle_power_seconds_total", 0.5 * t),
                Sample(float(t), "nvml", dev, "gpm_sm_activity_ratio", 0.5),
            ]
            if energy:
                out.append(Sample(float(t), "nvml", dev, "energy_joules_total", energy_j))
            energy_j += 500.0 if 5 <= t < 15 else 100.0
            nvlink += 1e9 if 5 <= t < 15 else 0.0
    return out


def host_and_server(seconds: int = 20) -> list[Sample]:
    out: list[Sample] = []
    for t in range(seconds + 1):
        ft = float(t)
        out += [
            Sample(ft, "host", "", "cpu_utilization_ratio", 0.25),
            Sample(ft, "host", "", "memory_used_bytes", 8e9 + t),
            Sample(ft, "host", "", "memory_total_bytes", 16e9),
            Sample(ft, "host", "lo", "network_tx_bytes_total", 1000.0 * t),
            Sample(ft, "host", "client", "process_cpu_ratio", 0.5),
            Sample(ft, "host", "client", "process_rss_bytes", 2e8),
            Sample(ft, "host", "server", "process_cpu_ratio", 1.5),
            Sample(ft, "vllm", "", "up", 1.0),
            Sample(ft, "vllm", "", "kv_cache_usage_ratio", 0.4 if 5 <= t <= 15 else 0.0),
            Sample(ft, "vllm", "", "num_requests_running", 8.0),
            Sample(ft, "vllm", "", "num_preemptions_total", float(t // 2)),
            Sample(ft, "vllm", "", "prefix_cache_queries_total", 100.0 * t),
            Sample(ft, "vllm", "", "prefix_cache_hits_total", 25.0 * t),
            Sample(ft, "vllm", "", "ttft_seconds_mean", 0.1),
        ]
    out.append(Sample(7.5, "vllm", "", "up", 0.0, "http://x/metrics: timed out"))
    return out


def test_gpu_and_energy_over_the_window() -> None:
    s = summarize_telemetry(gpu_run() + host_and_server(), 5.0, 15.0, 10_000, NVML_OK)
    gpu, energy = s["gpu"], s["energy"]
    assert gpu["available"] is True and gpu["count"] == 2
    assert gpu["utilization_mean_ratio"] == pytest.approx(0.9)
    assert gpu["utilization_peak_ratio"] == pytest.approx(0.9)
    assert gpu["utilization_ratio"]["count"] == 22
    assert gpu["memory_used_peak_bytes"] == 40e9  # in the window
    assert gpu["memory_used_peak_bytes_run"] == 70e9  # model load included
    assert gpu["power_mean_watts"] == pytest.approx(800.0)  # two GPUs at 400 W
    assert gpu["nvlink_tx_bytes"] == pytest.approx(2 * 10e9)
    assert gpu["nvlink_tx_bytes_per_output_token"] == pytest.approx(2e6)
    assert gpu["pcie_rx_bytes"] == pytest.approx(2 * 1e6 * 10)  # spot rate x window
    assert "pcie:mean_rate_x_window" in gpu["traffic_methods"]
    assert gpu["gpm_sm_activity_mean_ratio"] == pytest.approx(0.5)
    assert gpu["per_gpu"]["0"]["throttle_seconds"]["power"] == pytest.approx(5.0)
    assert energy["available"] is True and energy["method"] == "nvml_total_energy_counter"
    assert energy["joules"] == pytest.approx(2 * 5000.0)  # the counter, not 400 W x 10 s
    assert energy["joules_per_output_token"] == pytest.approx(1.0)
    assert energy["per_gpu_joules"] == {"0": pytest.approx(5000.0), "1": pytest.approx(5000.0)}
    assert energy["coverage_ratio"] == pytest.approx(1.0)


def test_energy_interpolates_at_window_edges_and_ignores_resets() -> None:
    samples = [Sample(0.0, "nvml", "0", "energy_joules_total", 100.0)]
    samples += [Sample(2.0, "nvml", "0", "energy_joules_total", 300.0)]
    samples += [Sample(3.0, "nvml", "0", "energy_joules_total", 10.0)]  # driver reload
    samples += [Sample(4.0, "nvml", "0", "energy_joules_total", 110.0)]
    samples += [Sample(t, "nvml", "0", "up", 1.0) for t in (0.0, 2.0, 3.0, 4.0)]
    e = summarize_telemetry(samples, 1.0, 4.0, 0, NVML_OK)["energy"]
    assert e["joules"] == pytest.approx(100.0 + 0.0 + 100.0)  # 1->2: half of 200; reset: 0
    assert e["joules_per_output_token"] is None  # no tokens: no ratio, not zero


def test_no_gpu_says_so_and_never_zeros() -> None:
    s = summarize_telemetry(
        host_and_server(),
        5.0,
        15.0,
        1000,
        {"available": False, "reason": "NVML library libnvidia-ml.so.1 not found"},
    )
    for key in ("gpu", "energy"):
        assert s[key] == {"available": False, "reason": "NVML library libnvidia-ml.so.1 not found"}
    assert s["host"]["available"] is True and s["server"]["available"] is True


def test_energy_not_supported_is_unavailable_with_reason() -> None:
    s = summarize_telemetry(gpu_run(energy=False), 5.0, 15.0, 1000, NVML_OK)
    assert s["gpu"]["available"] is True
    assert s["energy"]["available"] is False and "GPU 0, 1" in s["energy"]["reason"]


def test_lost_gpu_is_counted_and_energy_unavailable() -> None:
    samples = [x for x in gpu_run() if not (x.device == "1" and x.t_s > 4.0)]
    samples += [
        Sample(float(t), "nvml", "1", "up", 0.0, "GPU 1: GPU is lost") for t in range(5, 21)
    ]
    s = summarize_telemetry(samples, 5.0, 15.0, 1000, NVML_OK)
    assert s["gpu"]["gpus_with_errors"] == ["1"]
    assert (
        s["gpu"]["per_gpu"]["1"]["errors"] == 11
        and "lost" in s["gpu"]["per_gpu"]["1"]["last_error"]
    )
    assert s["energy"]["available"] is False and "GPU 1" in s["energy"]["reason"]


def test_nvml_available_but_no_samples() -> None:
    s = summarize_telemetry(host_and_server(), 5.0, 15.0, 1000, NVML_OK)
    assert s["gpu"]["available"] is False
    assert s["gpu"]["reason"] == "no NVML samples in the measured window"
    assert s["gpu"]["scope"]["method"] == "all"  # no scope recorded: said so


def test_host_and_server_sections() -> None:
    s = summarize_telemetry(host_and_server(), 5.0, 15.0, 1000, NVML_OK)
    host, server = s["host"], s["server"]
    assert host["cpu_utilization_mean_ratio"] == pytest.approx(0.25)
    assert host["memory_used_peak_bytes"] == 8e9 + 15
    assert host["processes"]["client"]["cpu_mean_cores"] == pytest.approx(0.5)
    assert host["processes"]["server"]["cpu_mean_cores"] == pytest.approx(1.5)
    assert host["processes"]["client"]["rss_peak_bytes"] == 2e8
    assert host["processes"]["server"]["rss_peak_bytes"] is None
    assert host["network"]["lo"]["tx_bytes"] == pytest.approx(10_000.0)
    assert server["kv_cache_usage_mean_ratio"] == pytest.approx(0.4)
    assert server["kv_cache_usage_ratio"]["count"] == 11
    assert server["preemptions"] == pytest.approx(7.5 - 2.5)  # 5//2=2 .. 15//2=7
    assert server["prefix_cache_hit_ratio"] == pytest.approx(0.25)
    assert server["scrape_errors"] == 1
    assert server["cumulative_means_s"]["ttft"] == pytest.approx(0.1)


def test_no_window_and_no_samples() -> None:
    s = summarize_telemetry([], None, None, 0, NVML_OK)
    assert all(v["available"] is False for v in s.values())
    s = summarize_telemetry([], 0.0, 10.0, 0, NVML_OK)
    assert s["host"] == {"available": False, "reason": "no host samples in the measured window"}
    assert s["server"]["available"] is False and "not scraped" in s["server"]["reason"]
    failing = [Sample(1.0, "vllm", "", "up", 0.0, "connection refused")]
    assert (
        "connection refused"
        in summarize_telemetry(failing, 0.0, 10.0, 0, NVML_OK)["server"]["reason"]
    )


def counter_scrapes(values: list[tuple[float, float]]) -> list[Sample]:
    out: list[Sample] = []
    for t, v in values:
        out += [
            Sample(t, "vllm", "", "up", 1.0),
            Sample(t, "vllm", "", "request_success_total", v),
            Sample(t, "vllm", "", "prompt_tokens_total", v * 128),
            Sample(t, "vllm", "", "generation_tokens_total", v * 64),
            Sample(t, "vllm", "", "num_preemptions_total", v // 10),
            Sample(t, "vllm", "", "prefix_cache_queries_total", v * 100),
            Sample(t, "vllm", "", "prefix_cache_hits_total", v * 25),
        ]
    return out


def test_server_counts_are_whole_increases_between_the_scrapes_around_the_window() -> None:
    # scrapes every 1.5 s; window [1.0, 10.0]; interpolating at the edges would give fractions
    # (0.0 @ 0.0 .. 10 @ 1.5 gives 6.67 at 1.0). The count uses the last scrape at or before
    # the start (t=0.0, 0) and the first at or after the end (t=10.5, 70).
    series = [(0.0, 0.0), (1.5, 10.0), (3.0, 20.0), (4.5, 30.0), (6.0, 40.0), (7.5, 50.0)]
    series += [(9.0, 60.0), (10.5, 70.0), (12.0, 80.0)]
    server = summarize_telemetry(counter_scrapes(series), 1.0, 10.0, 0, NVML_OK)["server"]
    counts = {
        "requests_finished": 70,
        "prompt_tokens": 70 * 128,
        "generation_tokens": 70 * 64,
        "preemptions": 7,
        "prefix_cache_queries": 7000,
        "prefix_cache_hits": 1750,
    }
    for key, want in counts.items():
        assert server[key] == want and type(server[key]) is int, (key, server[key])
    assert server["prefix_cache_hit_ratio"] == pytest.approx(0.25)


def test_server_counts_survive_a_counter_reset() -> None:
    # the server restarts between t=3 and t=4: its counter starts again from 0 (Prometheus'
    # rule: after a drop the new value is all increase)
    series = [(0.0, 100.0), (2.0, 110.0), (3.0, 115.0), (4.0, 3.0), (6.0, 8.0)]
    server = summarize_telemetry(counter_scrapes(series), 1.0, 5.0, 0, NVML_OK)["server"]
    assert server["requests_finished"] == (115 - 100) + 3 + (8 - 3)
    assert type(server["requests_finished"]) is int


def test_server_count_without_a_scrape_inside_the_window_span_is_none() -> None:
    server = summarize_telemetry(counter_scrapes([(5.0, 1.0)]), 1.0, 10.0, 0, NVML_OK)["server"]
    assert server["requests_finished"] is None


def test_server_gpu_memory_without_a_matching_process_is_none_with_the_reason() -> None:
    samples = gpu_run()
    for t in range(0, 21, 2):  # NVML lists a (host-PID) process on each GPU, never the server's
        for dev in ("0", "1"):
            samples += [
                Sample(float(t), "nvml", dev, "compute_processes", 1.0),
                Sample(float(t), "nvml", dev, "server_compute_processes", 0.0),
            ]
    gpu = summarize_telemetry(samples, 5.0, 15.0, 1000, NVML_OK)["gpu"]
    assert gpu["per_gpu"]["0"]["process_memory_used_peak_bytes"] is None
    assert gpu["process_memory_used_peak_bytes"] is None
    assert "none is the server's" in gpu["process_memory_note"]


def test_server_gpu_memory_peak_when_known() -> None:
    samples = gpu_run()
    samples += [
        Sample(float(t), "nvml", "0", "process_memory_used_bytes", 30e9 + t) for t in range(21)
    ]
    samples += [Sample(float(t), "nvml", "1", "process_memory_used_bytes", 0.0) for t in range(21)]
    gpu = summarize_telemetry(samples, 5.0, 15.0, 1000, NVML_OK)["gpu"]
    assert gpu["per_gpu"]["0"]["process_memory_used_peak_bytes"] == 30e9 + 20  # whole run
    assert gpu["per_gpu"]["1"]["process_memory_used_peak_bytes"] == 0.0
    assert gpu["process_memory_used_peak_bytes"] == 30e9 + 20
    assert gpu["process_memory_note"] is None
