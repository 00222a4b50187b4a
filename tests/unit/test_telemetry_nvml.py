"""NvmlSampler against an autospecced fake pynvml (tests/fakes/nvml.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pynvml
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # until pytest has pythonpath=["."]

from profiler.telemetry import fields  # noqa: E402
from profiler.telemetry.nvml import nvml_state  # noqa: E402
from profiler.telemetry.nvml_sampler import NvmlSampler  # noqa: E402
from profiler.telemetry.sample import Sample  # noqa: E402
from tests.fakes.nvml import h100, install_fake_nvml, mig_gpu, no_power_gpu, pcie_gpu  # noqa: E402

GPU_NAMES = {f.name for f in fields.GPU_FIELDS}


def by(samples: list[Sample], device: str) -> dict[str, Sample]:
    return {s.metric: s for s in samples if s.device == device}


def val(samples: list[Sample], device: str, metric: str) -> float | None:
    s = by(samples, device).get(metric)
    return None if s is None else s.value


def test_h100_full_featured_units_and_names() -> None:
    gpus = [h100(0, peers=[1], pcie_tx_bytes_per_s=3e6), h100(1, peers=[0])]
    with install_fake_nvml(gpus) as fake:
        s = NvmlSampler()
        assert s.available and s.state["devices"] == ["0", "1"]
        s.sample(0.0)
        fake.advance(0.5)
        out = s.sample(0.5)
        s.close()
    assert {x.source for x in out} == {"nvml"}
    assert {x.metric for x in out} <= GPU_NAMES, {x.metric for x in out} - GPU_NAMES
    g0 = by(out, "0")
    assert g0["up"].value == 1.0 and g0["up"].error is None
    assert g0["utilization_ratio"].value == pytest.approx(0.5)
    assert g0["memory_utilization_ratio"].value == pytest.approx(0.2)
    assert g0["memory_used_bytes"].value == 10 * 2**30
    assert g0["memory_reserved_bytes"].value == 512 * 2**20
    assert g0["power_watts"].value == pytest.approx(300.0)  # mW -> W
    assert g0["power_instant_watts"].value == pytest.approx(310.0)
    assert g0["power_limit_watts"].value == pytest.approx(700.0)
    assert g0["energy_joules_total"].value == pytest.approx(1000.0 + 300 * 0.5)  # mJ -> J
    assert g0["temperature_celsius"].value == 45 and g0["memory_temperature_celsius"].value == 50
    assert g0["sm_clock_hertz"].value == 1980e6 and g0["memory_clock_hertz"].value == 2619e6
    assert g0["pcie_tx_bytes_per_second"].value == pytest.approx(3e6)  # from the byte counter
    assert g0["pcie_tx_bytes_total"].value == pytest.approx(1.5e6)
    assert g0["pcie_link_gen"].value == 5 and g0["pcie_link_width"].value == 16
    assert g0["clock_event_reasons"].value == 4
    assert g0["clock_event_sw_power_cap"].value == 1.0 and g0["clock_event_gpu_idle"].value == 0.0
    assert g0["throttle_power_seconds_total"].value == pytest.approx(5.0)  # ns -> s
    assert g0["throttle_low_util_seconds_total"].value == pytest.approx(1.0)
    assert g0["nvlink_links"].value == 6 and g0["nvlink_links_active"].value == 6
    assert g0["gpm_sm_activity_ratio"].value == pytest.approx(0.6)  # % -> ratio
    assert g0["gpm_tensor_activity_ratio"].value == pytest.approx(0.4)
    assert g0["gpm_nvlink_tx_bytes_per_second"].value == pytest.approx(100 * 2**20)  # MiB/s
    assert g0["gpm_pcie_rx_bytes_per_second"].value == pytest.approx(2 * 2**20)


def test_counters_to_rates_with_known_deltas() -> None:
    g = h100(0, peers=[1, 1], links_per_peer=2)  # four links
    for i, link in enumerate(g.links):
        link.tx_kib = 1000.0 * i
        link.tx_kib_per_s = 100.0 * (i + 1)  # 100+200+300+400 = 1000 KiB/s in all
        link.rx_kib_per_s = 50.0
    g.pcie_tx_bytes, g.pcie_tx_bytes_per_s = 5e9, 2e6
    g.pcie_rx_bytes_per_s = 1e6
    with install_fake_nvml([g]) as fake:
        s = NvmlSampler(nvlink_per_link=True)
        first = s.sample(10.0)
        fake.advance(2.0)
        second = s.sample(12.0)
        fake.advance(0.5)
        third = s.sample(12.5)
        s.close()
    assert val(first, "0", "nvlink_tx_bytes_total") == 0.0  # totals start at sampling
    assert val(first, "0", "nvlink_tx_bytes_per_second") is None  # no rate from one reading
    assert val(second, "0", "nvlink_tx_bytes_total") == pytest.approx(2.0 * 1000 * 1024)
    assert val(second, "0", "nvlink_tx_bytes_per_second") == pytest.approx(1000 * 1024)
    assert val(second, "0", "nvlink_rx_bytes_per_second") == pytest.approx(4 * 50 * 1024)
    assert val(second, "0/3", "nvlink_tx_bytes_per_second") == pytest.approx(400 * 1024)
    assert val(third, "0", "nvlink_tx_bytes_total") == pytest.approx(2.5 * 1000 * 1024)
    assert val(third, "0", "nvlink_tx_bytes_per_second") == pytest.approx(1000 * 1024)
    assert val(second, "0", "pcie_tx_bytes_total") == pytest.approx(4e6)
    assert val(third, "0", "pcie_rx_bytes_total") == pytest.approx(2.5e6)
    assert val(third, "0", "energy_joules_total") - val(
        first, "0", "energy_joules_total"
    ) == pytest.approx(300 * 2.5)


def test_counter_reset_never_goes_backwards() -> None:
    g = h100(0, peers=[1], links_per_peer=1)
    g.links[0].tx_kib, g.links[0].tx_kib_per_s = 10_000.0, 100.0
    with install_fake_nvml([g]) as fake:
        s = NvmlSampler()
        s.sample(0.0)
        fake.advance(1.0)
        before = val(s.sample(1.0), "0", "nvlink_tx_bytes_total")
        g.links[0].tx_kib = 5.0  # counter reset (driver reload)
        fake.advance(1.0)
        after = s.sample(2.0)
        s.close()
    assert before == pytest.approx(100 * 1024)
    assert val(after, "0", "nvlink_tx_bytes_total") == pytest.approx(before)
    assert val(after, "0", "nvlink_tx_bytes_per_second") is None


def test_pcie_only_device_has_no_nvlink_or_gpm_and_is_probed_once() -> None:
    g = pcie_gpu(0)
    with install_fake_nvml([g]):
        s = NvmlSampler()
        for t in range(5):
            out = s.sample(float(t))
        caps = s.capabilities()["0"]
        s.close()
    names = set(by(out, "0"))
    assert "up" in names and "utilization_ratio" in names and "energy_joules_total" in names
    assert not any(n.startswith(("nvlink", "gpm")) for n in names)
    assert caps["gpm"] is False
    # NotSupported is remembered: the unsupported calls happened once, at the probe
    assert g.calls["nvmlGpmQueryDeviceSupport"] == 1
    assert g.calls["nvmlDeviceGetNvLinkState"] == 1
    assert g.calls["nvmlDeviceGetUtilizationRates"] == 5


def test_power_and_energy_not_supported_become_absent_not_zero() -> None:
    g = no_power_gpu(0)
    with install_fake_nvml([g]):
        s = NvmlSampler()
        for t in range(3):
            out = s.sample(float(t))
        caps = s.capabilities()["0"]
        s.close()
    got = by(out, "0")
    for m in ("power_watts", "power_instant_watts", "power_limit_watts", "energy_joules_total"):
        assert m not in got
    assert got["up"].value == 1.0 and got["temperature_celsius"].value == 45
    assert caps["power"] is False and caps["energy"] is False
    assert g.calls["nvmlDeviceGetPowerUsage"] == 1
    assert g.calls["nvmlDeviceGetTotalEnergyConsumption"] == 1


def test_gpu_lost_mid_run_is_an_error_sample_and_the_others_go_on() -> None:
    gpus = [h100(0), h100(1)]
    with install_fake_nvml(gpus):
        s = NvmlSampler()
        s.sample(0.0)
        gpus[1].lost = True
        out = s.sample(1.0)
        later = s.sample(2.0)
        gpus[1].lost = False  # it never comes back in reality; if it does, it is sampled again
        back = s.sample(3.0)
        s.close()
    lost = by(out, "1")
    assert set(lost) == {"up"}
    assert lost["up"].value == 0.0 and "GPU is lost" in (lost["up"].error or "")
    assert by(later, "1")["up"].value == 0.0
    assert by(out, "0")["up"].value == 1.0 and "utilization_ratio" in by(out, "0")
    assert by(back, "1")["up"].value == 1.0


def test_mig_mode_skips_gpm_and_unsupported_utilization() -> None:
    with install_fake_nvml([mig_gpu(0)]):
        s = NvmlSampler()
        s.sample(0.0)
        out = s.sample(1.0)
        s.close()
    got = by(out, "0")
    assert got["up"].value == 1.0
    assert "utilization_ratio" not in got and "memory_used_bytes" in got
    assert not any(m.startswith("gpm_") for m in got)


def test_gpm_pairs_need_100ms() -> None:
    with install_fake_nvml([h100(0)]) as fake:
        s = NvmlSampler()
        s.sample(0.0)
        fake.advance(0.05)
        too_soon = s.sample(0.05)
        fake.advance(0.1)
        ok = s.sample(0.15)
        s.close()
    assert "gpm_sm_activity_ratio" not in by(too_soon, "0")
    assert by(ok, "0")["gpm_sm_activity_ratio"].value == pytest.approx(0.6)


def test_process_memory_summed_over_server_tree() -> None:
    g = h100(0, processes=[(100, 2 * 2**30), (101, 3 * 2**30), (999, 7 * 2**30)])
    pids: set[int] = set()
    with install_fake_nvml([g]):
        s = NvmlSampler(process_pids=lambda: pids, process_interval_s=1.0)
        before = s.sample(0.0)  # the server does not exist yet
        pids.update({100, 101})
        at_1 = s.sample(1.0)
        at_1_5 = s.sample(1.5)  # within the process interval: not read again
        s.close()
    assert "process_memory_used_bytes" not in by(before, "0")
    assert by(at_1, "0")["process_memory_used_bytes"].value == 5 * 2**30
    assert "process_memory_used_bytes" not in by(at_1_5, "0")
    assert g.calls["nvmlDeviceGetComputeRunningProcesses"] == 1


def test_processes_are_read_at_the_first_tick_the_server_exists() -> None:
    g = h100(0, processes=[(100, 2 * 2**30)])
    pids: set[int] = set()
    with install_fake_nvml([g]):
        s = NvmlSampler(process_pids=lambda: pids, process_interval_s=2.0)
        s.sample(0.0)  # no server yet: no read, and the interval does not start
        pids.add(100)
        first = s.sample(0.5)
        s.close()
    assert by(first, "0")["process_memory_used_bytes"].value == 2 * 2**30


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "driver is not loaded"),
        (pynvml.NVML_ERROR_UNKNOWN, "NVML init failed"),
    ],
)
def test_nvml_not_initialisable_is_a_state(code: int, words: str) -> None:
    with install_fake_nvml([], init_error=code):
        s = NvmlSampler()
        assert not s.available
        assert s.state["available"] is False and words in s.state["reason"]
        assert s.sample(0.0) == []
        s.close()
        state = nvml_state()
    assert state["available"] is False and words in state["reason"]


def test_no_gpus_is_unavailable_and_shuts_down() -> None:
    with install_fake_nvml([]) as fake:
        s = NvmlSampler()
        assert s.state == {"available": False, "reason": "NVML is loaded but reports no GPUs"}
        assert fake.init_count == 0


def test_init_and_shutdown_are_paired() -> None:
    with install_fake_nvml([h100(0)]) as fake:
        s = NvmlSampler()
        assert fake.init_count == 1
        s.sample(0.0)
        s.close()
        s.close()
        assert fake.init_count == 0


def test_selected_indices_and_out_of_range() -> None:
    with install_fake_nvml([pcie_gpu(0), pcie_gpu(1)]):
        s = NvmlSampler(indices=[1, 5])
        out = s.sample(0.0)
        s.close()
    assert by(out, "1")["up"].value == 1.0
    assert by(out, "5")["up"].value == 0.0 and "no GPU 5" in (by(out, "5")["up"].error or "")
    assert not by(out, "0")


def test_a_binding_surprise_is_contained_to_one_gpu() -> None:
    gpus = [pcie_gpu(0), pcie_gpu(1)]
    with install_fake_nvml(gpus) as fake:
        fake.module.nvmlDeviceGetPowerUsage.side_effect = lambda h: (
            (_ for _ in ()).throw(RuntimeError("boom")) if h.index == 1 else 1000
        )
        s = NvmlSampler()
        out = s.sample(0.0)
        s.close()
    assert by(out, "0")["up"].value == 1.0
    assert by(out, "1")["up"].value == 0.0 and "boom" in (by(out, "1")["up"].error or "")


def test_every_telemetry_module_imports_without_pydantic_or_numpy() -> None:
    """tests/gpu/run.sh runs on a GPU machine without pydantic (tests/gpu/conftest.py: nor
    numpy): every module of profiler/telemetry, found by listing the package (a new one is
    checked too), imports with both blocked and no GPU; and so do what their Ray code loads
    when samplers start (profiler.cluster) and what run.sh's roofline step runs."""
    import pkgutil
    import subprocess

    import profiler.telemetry

    names = sorted(
        f"profiler.telemetry.{m.name}" for m in pkgutil.iter_modules(profiler.telemetry.__path__)
    )
    assert {"profiler.telemetry.nvml", "profiler.telemetry.nvml_sampler"} <= set(names)
    names += ["profiler.clock", "profiler.cluster", "profiler.analysis.roofline_table"]
    code = (
        "import importlib, sys\n"
        "sys.modules['pydantic'] = sys.modules['numpy'] = None\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "print(len(sys.argv) - 1)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(len(names))


def test_pcie_spot_throughput_without_counters_and_at_most_once_a_second() -> None:
    g = pcie_gpu(0)  # fields 197/198 NotSupported
    with install_fake_nvml([g]):
        s = NvmlSampler(pcie_spot_interval_s=1.0)
        outs = [s.sample(t) for t in (0.0, 0.5, 1.0, 1.2, 2.5)]
        s.close()
    rates = [val(o, "0", "pcie_tx_bytes_per_second") for o in outs]
    assert rates == [1000 * 1024, None, 1000 * 1024, None, 1000 * 1024]  # KB/s -> bytes/s
    assert val(outs[0], "0", "pcie_rx_bytes_per_second") == 2000 * 1024
    assert g.calls["nvmlDeviceGetPcieThroughput"] == 6  # tx + rx, three times
    assert val(outs[-1], "0", "pcie_tx_bytes_total") is None


def test_32_bit_pcie_counter_is_not_trusted() -> None:
    g = h100(0, pcie_counter_bits=32, pcie_tx_bytes_per_s=1e10)
    with install_fake_nvml([g]) as fake:
        s = NvmlSampler()
        s.sample(0.0)
        fake.advance(1.0)
        out = s.sample(1.0)
        s.close()
    assert val(out, "0", "pcie_tx_bytes_total") is None
    assert val(out, "0", "pcie_tx_bytes_per_second") == 1000 * 1024  # the spot sample instead


def test_a_refused_field_batch_falls_back_to_single_fields_once() -> None:
    g = h100(0, refuse_batch_fields={269})  # a driver that rejects an unknown field id
    with install_fake_nvml([g]):
        s = NvmlSampler()
        first = s.sample(0.0)
        calls_after_probe = g.calls["nvmlDeviceGetFieldValues"]
        second = s.sample(1.0)
        s.close()
    for out in (first, second):
        assert val(out, "0", "energy_joules_total") is not None
        assert val(out, "0", "throttle_power_seconds_total") is not None
        assert val(out, "0", "throttle_sw_thermal_seconds_total") is None
    assert g.calls["nvmlDeviceGetFieldValues"] == calls_after_probe + 1  # one batch again


def test_process_memory_is_absent_not_zero_when_no_listed_process_is_the_servers() -> None:
    # in a container NVML lists host PIDs: the server's own PIDs (100, 101) match none of them
    gpus = [h100(0, processes=[(54321, 5 * 2**30)]), h100(1, processes=[])]
    with install_fake_nvml(gpus):
        s = NvmlSampler(process_pids=lambda: {100, 101}, process_interval_s=1.0)
        out = s.sample(0.0)
        s.close()
    assert "process_memory_used_bytes" not in by(out, "0")  # never a fake 0
    assert "process_memory_used_bytes" not in by(out, "1")  # nothing proves the server sees it
    assert val(out, "0", "compute_processes") == 1.0
    assert val(out, "0", "server_compute_processes") == 0.0
    assert val(out, "1", "compute_processes") == 0.0


def test_process_memory_is_zero_only_where_nvml_demonstrably_sees_the_server() -> None:
    # the server (PIDs 100, 101) is on GPUs 2 and 5; another job (999) holds GPU 0
    gpus = [h100(i) for i in range(8)]
    gpus[0].processes = [(999, 7 * 2**30)]
    gpus[2].processes = [(100, 30 * 2**30)]
    gpus[5].processes = [(101, 31 * 2**30), (999, 1 * 2**30)]
    with install_fake_nvml(gpus):
        s = NvmlSampler(process_pids=lambda: {100, 101}, process_interval_s=1.0)
        out = s.sample(0.0)
        s.close()
    assert val(out, "2", "process_memory_used_bytes") == 30 * 2**30
    assert val(out, "5", "process_memory_used_bytes") == 31 * 2**30
    assert val(out, "5", "server_compute_processes") == 1.0
    # NVML lists the server's processes elsewhere, so its absence here is real
    for g in ("0", "1", "3", "4", "6", "7"):
        assert val(out, g, "process_memory_used_bytes") == 0.0, g


def test_process_memory_unknown_when_nvml_gives_no_memory_figure() -> None:
    g = h100(0)
    g.processes = [(100, None)]  # type: ignore[list-item]  # WDDM / no permission: usedGpuMemory None
    with install_fake_nvml([g]):
        s = NvmlSampler(process_pids=lambda: {100}, process_interval_s=1.0)
        out = s.sample(0.0)
        s.close()
    assert "process_memory_used_bytes" not in by(out, "0")
    assert val(out, "0", "server_compute_processes") == 1.0


def test_chokepoint_imports_none_of_its_users() -> None:
    """nvml.py is imported by the sampler and the inventory, never the other way round: it
    re-exports neither and imports no other module of profiler.telemetry."""
    import ast

    from profiler.telemetry import nvml

    assert not hasattr(nvml, "NvmlSampler") and not hasattr(nvml, "inventory")
    tree = ast.parse(Path(nvml.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m.startswith("profiler.telemetry")}
