"""Run an ``infprof`` command in this process with the fake NVML installed and moving in real
time, so a subprocess (``infprof exporter`` in the Prometheus integration test) looks like a
GPU node: counters (energy, PCIe, NVLink) grow at their rates and GPM has sample pairs.

    python -m tests.fakes.nvml_exporter_fake --gpus 2 [--model h100|l4] [--power-w 250]
        [--util-percent 40] [--memory-used-gib 10] [--traffic-scale 1] -- exporter --port 0 ...

Everything after ``--`` is the ``infprof`` command line. GPU ``i`` draws ``power_w + 10 i``
watts at ``util_percent + 5 i`` percent with ``memory_used_gib + i`` GiB used; PCIe and NVLink
rates are multiplied by ``traffic_scale``, so two fake nodes can report distinct values.

``every_metric_latest(n_gpus)`` builds a recorder snapshot with every field of
``profiler.telemetry.fields`` set, for collector tests, the dashboard check and the scrape
benchmark.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import pynvml

from profiler.telemetry.fields import GPU_FIELDS, HOST_FIELDS, SERVER_FIELDS
from profiler.telemetry.sample import Sample
from tests.fakes.nvml import FakeGpu, FakeNvml, h100, install_fake_nvml, pcie_gpu


def fake_gpus(
    n: int,
    model: str = "h100",
    *,
    power_w: int = 250,
    util_percent: int = 40,
    memory_used_gib: int | None = None,
    traffic_scale: float = 1.0,
) -> list[FakeGpu]:
    """``n`` GPUs with every counter moving: H100s fully NVLinked to each other, or L4s.
    GPU ``i``: ``power_w + 10 i`` W, ``util_percent + 5 i`` %, ``memory_used_gib + i`` GiB
    used (the builder's default when None); link rates times ``traffic_scale``."""
    gpus: list[FakeGpu] = []
    for i in range(n):
        if model == "h100":
            g = h100(i, peers=[p for p in range(n) if p != i], links_per_peer=2)
            for link in g.links:
                link.tx_kib_per_s = (50_000.0 + 1000 * i) * traffic_scale
                link.rx_kib_per_s = 40_000.0 * traffic_scale
        else:
            g = pcie_gpu(i)
        g.pcie_tx_bytes_per_s, g.pcie_rx_bytes_per_s = 2e8 * traffic_scale, 3e8 * traffic_scale
        g.power_mw = (power_w + 10 * i) * 1000
        g.util_gpu = util_percent + 5 * i
        if memory_used_gib is not None:
            g.memory_used = (memory_used_gib + i) * 2**30
        gpus.append(g)
    return gpus


def every_metric_latest(n_gpus: int = 8, t_s: float = 10.0) -> dict[tuple[str, str, str], Sample]:
    """A ``TelemetryRecorder.latest()`` snapshot with every GPU, host and server field set:
    ``n_gpus`` GPUs, host totals plus two cores, two interfaces and both process trees."""
    out: dict[tuple[str, str, str], Sample] = {}

    def put(source: str, device: str, metric: str, value: float) -> None:
        out[(source, device, metric)] = Sample(t_s, source, device, metric, value)

    for i in range(n_gpus):
        for k, f in enumerate(GPU_FIELDS):
            put("nvml", str(i), f.name, 1.0 if f.name == "up" else float(i * 100 + k) + 0.5)
    for f in HOST_FIELDS:
        if f.name.startswith("process_"):
            devices = ["server", "client"]
        elif f.name.startswith("network_"):
            devices = ["eth0", "ib0"]
        elif f.name == "cpu_utilization_ratio":
            devices = ["", "cpu0", "cpu1"]
        else:
            devices = [""]
        for d in devices:
            put("host", d, f.name, 0.25)
    for f in SERVER_FIELDS:
        put("vllm", "", f.name, 1.0 if f.name == "up" else 3.0)
    return out


def _ticker(fake: FakeNvml, period_s: float, stop: threading.Event) -> None:
    last = time.monotonic()
    while not stop.wait(period_s):
        now = time.monotonic()
        fake.advance(now - last)
        last = now


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, rest = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    ap = argparse.ArgumentParser(prog="nvml_exporter_fake")
    ap.add_argument("--gpus", type=int, default=2, help="0: NVML missing (library not found)")
    ap.add_argument("--model", choices=["h100", "l4"], default="h100")
    ap.add_argument("--tick-s", type=float, default=0.05)
    ap.add_argument("--power-w", type=int, default=250, help="GPU 0's power; GPU i adds 10 i W")
    ap.add_argument("--util-percent", type=int, default=40, help="GPU 0's; GPU i adds 5 i")
    ap.add_argument("--memory-used-gib", type=int, default=None, help="GPU 0's; GPU i adds i")
    ap.add_argument("--traffic-scale", type=float, default=1.0, help="PCIe/NVLink rate factor")
    args = ap.parse_args(own)

    from profiler.cli.main import main as infprof_main

    stop = threading.Event()
    init_error = None if args.gpus > 0 else pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    gpus = fake_gpus(
        args.gpus,
        args.model,
        power_w=args.power_w,
        util_percent=args.util_percent,
        memory_used_gib=args.memory_used_gib,
        traffic_scale=args.traffic_scale,
    )
    with install_fake_nvml(gpus, init_error=init_error) as fake:
        t = threading.Thread(target=_ticker, args=(fake, args.tick_s, stop), daemon=True)
        t.start()
        sys.argv = ["infprof", *rest]
        try:
            infprof_main()
        finally:
            stop.set()


if __name__ == "__main__":
    main()
