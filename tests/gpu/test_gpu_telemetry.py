"""NVML telemetry on a real NVIDIA GPU under a torch matmul load.

One experiment per session (module fixture): sample GPU ``idx`` at 10 Hz while the GPU idles
(3 s), while an 8 GiB tensor is allocated, and while bf16 matmuls run back to back (12 s).
Then: utilization above 90 %, power above idle, the energy counter's increase within 15 % of
mean power x time, memory used up by the allocation within 5 %. Only ``profiler.telemetry``
and ``profiler.clock`` are imported (plus torch, which the GPU machine has).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import pytest

from profiler.clock import RunClock
from profiler.telemetry.inventory import collect
from profiler.telemetry.nvml_sampler import NvmlSampler
from profiler.telemetry.recorder import TelemetryRecorder
from profiler.telemetry.sample import Sample
from tests.gpu.gpu_checks import nvml_index

pytestmark = pytest.mark.gpu

INTERVAL_S = 0.1
IDLE_S = 3.0
LOAD_S = 12.0
ALLOC_BYTES = 8 * 2**30
MATMUL_N = 8192
H2D_BYTES = 2 * 2**30  # pinned host buffer copied to the GPU H2D_REPS times
H2D_REPS = 4

Series = list[tuple[float, float]]


def _series(samples: list[Sample], device: str, metric: str) -> Series:
    return [
        (s.t_s, float(s.value))
        for s in samples
        if s.device == device and s.metric == metric and s.value is not None
    ]


def _between(ser: Series, a: float, b: float) -> list[float]:
    return [v for t, v in ser if a <= t <= b]


def _interp(ser: Series, t: float) -> float | None:
    for (t0, v0), (t1, v1) in zip(ser, ser[1:], strict=False):
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return None


def _mean(v: list[float]) -> float | None:
    return statistics.fmean(v) if v else None


def _fmt(v: float | None, unit: str = "", scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v * scale:.{digits}f}{unit}"


@pytest.fixture(scope="module")
def run(request: pytest.FixtureRequest) -> dict[str, Any]:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    inv = collect()
    idx = nvml_index(torch, inv)
    dev = torch.device("cuda:0")
    torch.ones(1, device=dev).sum().item()  # CUDA context before the baseline
    clock = RunClock()
    sampler = NvmlSampler(indices=[idx], process_pids=lambda: {os.getpid()}, process_interval_s=0.5)
    rec = TelemetryRecorder([sampler], INTERVAL_S, clock, keep=True).start()
    try:
        time.sleep(IDLE_S)
        idle = (0.5, clock.now())
        time.sleep(1.0)
        before = (idle[1], clock.now())
        x = torch.empty(ALLOC_BYTES, dtype=torch.uint8, device=dev)
        x.fill_(1)
        torch.cuda.synchronize()
        t_alloc = clock.now()
        time.sleep(1.5)
        after = (t_alloc + 0.5, clock.now())
        del x
        torch.cuda.empty_cache()
        pinned = torch.empty(H2D_BYTES, dtype=torch.uint8, pin_memory=True)
        time.sleep(0.5)
        t_h2d = clock.now()
        for _ in range(H2D_REPS):
            pinned.to(dev)
        torch.cuda.synchronize()
        h2d = (t_h2d - 0.2, clock.now() + 0.5)
        time.sleep(0.7)
        del pinned
        a = torch.randn(MATMUL_N, MATMUL_N, device=dev, dtype=torch.bfloat16)
        b = torch.randn(MATMUL_N, MATMUL_N, device=dev, dtype=torch.bfloat16)
        torch.cuda.synchronize()
        t0, iters = clock.now(), 0
        while clock.now() - t0 < LOAD_S:
            for _ in range(20):
                a @ b
            torch.cuda.synchronize()
            iters += 20
        t1 = clock.now()
        time.sleep(0.3)
    finally:
        rec.stop()
    load = (t0 + 2.0, t1 - 0.1)  # past the ramp and NVML's averaging periods
    samples = rec.samples()
    name = str(idx)
    gpu = next((g for g in inv.get("gpus", []) if g.get("index") == idx), {})
    request.config._infprof_gpu_info.update(  # type: ignore[attr-defined]
        {
            "gpu": f"{idx}: {gpu.get('name')} ({gpu.get('uuid')})",
            "driver / CUDA driver": f"{inv.get('driver_version')} / {inv.get('cuda_driver_version')}",
            "sampling": f"{INTERVAL_S} s, {len(samples)} samples, load {t1 - t0:.1f} s",
            "matmul": f"bf16 {MATMUL_N}^3 x {iters}: {2 * MATMUL_N**3 * iters / (t1 - t0) / 1e12:.0f} TFLOP/s",
            "unsupported on this GPU": ", ".join(
                sorted(k for k, v in sampler.capabilities().get(name, {}).items() if not v)
            )
            or "none",
        }
    )
    return {
        "samples": samples,
        "name": name,
        "idle": idle,
        "before": before,
        "after": after,
        "h2d": h2d,
        "load": load,
        "stats": rec.tick_stats(),
        "rows": request.config._infprof_gpu_rows,  # type: ignore[attr-defined]
    }


def row(
    run: dict[str, Any], check: str, measured: str, expected: str = "", ok: bool | None = None
) -> None:
    run["rows"].append({"check": check, "measured": measured, "expected": expected, "ok": ok})


def test_every_tick_answered(run: dict[str, Any]) -> None:
    ups = [s for s in run["samples"] if s.metric == "up" and s.device == run["name"]]
    bad = [s for s in ups if s.value != 1.0]
    row(
        run,
        "ticks with up=1",
        f"{len(ups) - len(bad)}/{len(ups)}",
        "all",
        not bad and len(ups) > 100,
    )
    assert len(ups) > 100 and not bad, bad[:3]


def test_utilization_rises_above_90_percent(run: dict[str, Any]) -> None:
    util = _series(run["samples"], run["name"], "utilization_ratio")
    idle, load = _mean(_between(util, *run["idle"])), _mean(_between(util, *run["load"]))
    row(
        run,
        "GPU utilization idle -> load",
        f"{_fmt(idle, ' %', 100)} -> {_fmt(load, ' %', 100)}",
        "> 90 % under load",
        load is not None and load > 0.9,
    )
    assert load is not None and load > 0.9


def test_power_rises_under_load(run: dict[str, Any]) -> None:
    power = _series(run["samples"], run["name"], "power_watts")
    idle, load = _mean(_between(power, *run["idle"])), _mean(_between(power, *run["load"]))
    inst = _mean(
        _between(_series(run["samples"], run["name"], "power_instant_watts"), *run["load"])
    )
    ok = idle is not None and load is not None and load > 1.2 * idle
    row(
        run,
        "power idle -> load (1 s average)",
        f"{_fmt(idle, ' W')} -> {_fmt(load, ' W')}",
        "load > 1.2 x idle",
        ok,
    )
    row(run, "instant power under load", _fmt(inst, " W"))
    assert ok


def test_energy_counter_matches_mean_power_times_time(run: dict[str, Any]) -> None:
    energy = _series(run["samples"], run["name"], "energy_joules_total")
    a, b = run["load"]
    e0, e1 = _interp(energy, a), _interp(energy, b)
    power = _mean(_between(_series(run["samples"], run["name"], "power_watts"), a, b))
    if e0 is None or e1 is None or power is None:
        row(
            run,
            "energy counter vs power x time",
            "energy or power not reported",
            "within 15 %",
            None,
        )
        pytest.skip("this GPU reports no energy counter or no power")
    joules, expected = e1 - e0, power * (b - a)
    err = abs(joules - expected) / expected
    row(
        run,
        "energy counter vs mean power x time",
        f"{joules:.0f} J vs {expected:.0f} J ({err:.1%})",
        "within 15 %",
        err <= 0.15,
    )
    assert err <= 0.15


def test_memory_used_tracks_a_known_allocation(run: dict[str, Any]) -> None:
    mem = _series(run["samples"], run["name"], "memory_used_bytes")
    before, after = _between(mem, *run["before"]), _between(mem, *run["after"])
    assert before and after, "no memory samples around the allocation"
    delta = statistics.median(after) - statistics.median(before)
    err = abs(delta - ALLOC_BYTES) / ALLOC_BYTES
    row(
        run,
        "memory used delta for an 8 GiB tensor",
        f"{delta / 2**30:.3f} GiB ({err:.1%})",
        "within 5 %",
        err <= 0.05,
    )
    assert err <= 0.05


def test_pcie_counters_see_a_host_to_device_copy(run: dict[str, Any]) -> None:
    a, b = run["h2d"]
    moved = {}
    for direction in ("rx", "tx"):
        ser = _series(run["samples"], run["name"], f"pcie_{direction}_bytes_total")
        lo, hi = _interp(ser, a), _interp(ser, b)
        moved[direction] = None if lo is None or hi is None else hi - lo
    sent = H2D_BYTES * H2D_REPS
    if moved["rx"] is None and moved["tx"] is None:
        row(run, "PCIe byte counters (fields 197/198)", "not reported: spot rates used", "", None)
        pytest.skip("this driver has no 64-bit PCIe byte counters")
    best = max((v for v in moved.values() if v is not None), default=0.0)
    ratio = best / sent
    row(
        run,
        f"PCIe counters during a {sent / 2**30:.0f} GiB host->device copy",
        f"rx {_fmt(moved['rx'], ' GiB', 2**-30, 2)}, tx {_fmt(moved['tx'], ' GiB', 2**-30, 2)} (x{ratio:.2f})",
        "0.8-1.5 x the bytes copied",
        0.8 <= ratio <= 1.5,
    )
    assert 0.8 <= ratio <= 1.5


def test_report_the_rest(run: dict[str, Any]) -> None:
    """Informational rows: what else NVML said under load, and what sampling cost."""
    s, name, load = run["samples"], run["name"], run["load"]

    def load_mean(metric: str) -> float | None:
        return _mean(_between(_series(s, name, metric), *load))

    row(
        run,
        "GPM SM activity / tensor activity",
        f"{_fmt(load_mean('gpm_sm_activity_ratio'), ' %', 100)} / {_fmt(load_mean('gpm_tensor_activity_ratio'), ' %', 100)}",
    )
    row(run, "GPM DRAM bandwidth", _fmt(load_mean("gpm_dram_bandwidth_ratio"), " %", 100))
    row(run, "SM clock under load", _fmt(load_mean("sm_clock_hertz"), " MHz", 1e-6, 0))
    row(run, "temperature under load", _fmt(load_mean("temperature_celsius"), " C"))
    h2d_rx = _between(_series(s, name, "pcie_rx_bytes_per_second"), *run["h2d"])
    h2d_tx = _between(_series(s, name, "pcie_tx_bytes_per_second"), *run["h2d"])
    row(
        run,
        "PCIe rx / tx peak rate during the copy",
        f"{_fmt(max(h2d_rx, default=None), ' GB/s', 1e-9, 2)} / {_fmt(max(h2d_tx, default=None), ' GB/s', 1e-9, 2)}",
    )
    throttle = _series(s, name, "throttle_power_seconds_total")
    row(
        run,
        "power-cap throttle time during the run",
        _fmt(throttle[-1][1] - throttle[0][1] if throttle else None, " s", 1.0, 2),
    )
    proc = _series(s, name, "process_memory_used_bytes")
    row(
        run,
        "this process's GPU memory (peak)",
        _fmt(max(v for _, v in proc) if proc else None, " GiB", 2**-30, 2),
    )
    st = run["stats"].get("nvml", {})
    row(
        run,
        "NVML tick: mean wall / CPU",
        f"{_fmt(st.get('duration_mean_s'), ' ms', 1e3, 2)} / {_fmt(st.get('cpu_mean_s'), ' ms', 1e3, 2)}",
    )
    row(
        run,
        "NVML tick jitter mean / max",
        f"{_fmt(st.get('jitter_mean_s'), ' ms', 1e3, 2)} / {_fmt(st.get('jitter_max_s'), ' ms', 1e3, 2)} ({st.get('missed_ticks')} missed)",
    )
    assert st.get("ticks", 0) > 0


def test_inventory_and_topology() -> None:
    inv = collect()
    assert inv["available"] is True and inv["gpu_count"] >= 1
    assert all(g.get("name") and g.get("uuid") for g in inv["gpus"] if "error" not in g)
    topo = inv["topology"]
    if topo is not None:
        n = len(topo["gpus"])
        assert len(topo["matrix"]) == n and all(
            len(r) == n and r[i] == "X" for i, r in enumerate(topo["matrix"])
        )
