"""Synthetic run and sweep directories written through profiler.store, for the report,
compare and sweep tests. Latencies are drawn from seeded distributions so tests know the
truth; telemetry samples cover every field the report plots."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from profiler.spec import SloSpec
from profiler.store.files import write_json_atomic
from profiler.store.journal import REQUESTS_JOURNAL, SAMPLES_JOURNAL, Journal
from profiler.store.parquet import write_itl_parquet, write_requests_parquet, write_samples_parquet
from profiler.store.record import RequestRecord
from profiler.store.rundir import RunDir
from profiler.sweep.index import key_numbers
from profiler.telemetry.sample import Sample

TTFT_S = 0.05  # a synthetic request's median TTFT and TPOT unless a caller says otherwise
TPOT_S = 0.01


def make_records(
    n: int = 400,
    *,
    rate: float = 20.0,
    ttft_s: float = TTFT_S,
    tpot_s: float = TPOT_S,
    output_tokens: int = 32,
    error_fraction: float = 0.0,
    seed: int = 0,
) -> list[RequestRecord]:
    rng = np.random.default_rng(seed)
    out: list[RequestRecord] = []
    for i in range(n):
        intended = i / rate
        send = intended + float(rng.uniform(0, 0.002))
        failed = rng.random() < error_fraction
        if failed:
            out.append(
                RequestRecord(
                    id=i,
                    workload="synthetic",
                    scenario="default",
                    intended_start_s=intended,
                    send_s=send,
                    end_s=send + 0.01,
                    prompt_tokens=128,
                    outcome="error",
                    http_status=500,
                    error="boom",
                )
            )
            continue
        first = send + float(rng.lognormal(np.log(ttft_s), 0.3))
        gaps = rng.lognormal(np.log(tpot_s), 0.2, size=output_tokens - 1)
        times = (first + np.concatenate([[0.0], np.cumsum(gaps)])).tolist()
        out.append(
            streamed_record(
                i,
                send,
                times,
                intended_start_s=intended,
                end_s=times[-1] + 0.001,
                prompt_tokens=128,
                output_tokens=output_tokens,
                workload="synthetic",
                scenario="default",
                requested_output_tokens=output_tokens,
            )
        )
    return out


def streamed_record(
    i: int,
    send_s: float,
    chunk_times_s: Sequence[float],
    chunk_tokens: Sequence[int] | None = None,
    *,
    output_tokens: int | None,
    prompt_tokens: int,
    intended_start_s: float | None = None,
    end_s: float | None = None,
    workload: str = "w",
    scenario: str = "s",
    keep_chunks: bool = True,
    **kw: Any,
) -> RequestRecord:
    """Request ``i`` sent at ``send_s`` whose answer streamed in chunks at ``chunk_times_s``
    carrying ``chunk_tokens`` tokens (one each by default): its first and last token at the
    first and last chunk, intended at ``send_s`` and ended at the last chunk unless given.
    ``keep_chunks=False``: a record without chunk timings (no ``chunks``, times or tokens);
    ``kw``: any other field (``outcome``, ``n``, ``queue_wait_s`` ...)."""
    times = [float(t) for t in chunk_times_s]
    tokens = [1] * len(times) if chunk_tokens is None else list(chunk_tokens)
    return RequestRecord(
        id=i,
        workload=workload,
        scenario=scenario,
        intended_start_s=send_s if intended_start_s is None else intended_start_s,
        send_s=send_s,
        first_token_s=times[0],
        last_token_s=times[-1],
        end_s=times[-1] if end_s is None else end_s,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        chunks=len(times) if keep_chunks else 0,
        chunk_times_s=times if keep_chunks else [],
        chunk_tokens=tokens if keep_chunks else [],
        **kw,
    )


def run_of_records(
    parent: Path, records: Iterable[RequestRecord], run_id: str = "r", *, compact: bool = True
) -> Path:
    """``parent/run_id``: ``records`` journalled (an empty sample journal) and compacted to
    Parquet, as a finished run leaves them; ``compact=False``: the journals only, as a run
    that died before compaction leaves them."""
    rd = RunDir.create(parent, run_id)
    j = rd.request_journal()
    for r in records:
        j.append(r.to_journal())
    j.close()
    rd.sample_journal().close()
    if compact:
        rd.compact()
    return rd.path


def make_samples(
    duration_s: float, *, gpus: int = 2, interval_s: float = 0.5, seed: int = 0
) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out: list[Sample] = []
    energy = [1000.0] * gpus
    for t in np.arange(0.0, duration_s + interval_s, interval_s):
        t = float(t)
        for g in range(gpus):
            d = str(g)
            power = 300 + 50 * float(rng.random())
            energy[g] += power * interval_s
            for metric, value in (
                ("utilization_ratio", 0.6 + 0.3 * float(rng.random())),
                ("memory_used_bytes", 60e9 + 1e9 * float(rng.random())),
                ("memory_total_bytes", 80e9),
                ("power_watts", power),
                ("energy_joules_total", energy[g]),
                ("pcie_tx_bytes_per_second", 1e9 * float(rng.random())),
                ("pcie_rx_bytes_per_second", 2e9 * float(rng.random())),
                ("nvlink_tx_bytes_per_second", 50e9 * float(rng.random())),
                ("nvlink_rx_bytes_per_second", 50e9 * float(rng.random())),
                ("temperature_celsius", 60.0),
                ("up", 1.0),
            ):
                out.append(Sample(t, "nvml", d, metric, value))
        out.append(Sample(t, "host", "", "cpu_utilization_ratio", 0.3))
        out.append(Sample(t, "vllm", "", "up", 1.0))
        out.append(Sample(t, "vllm", "", "num_requests_running", float(rng.integers(0, 8))))
        out.append(Sample(t, "vllm", "", "num_requests_waiting", float(rng.integers(0, 3))))
        out.append(Sample(t, "vllm", "", "kv_cache_usage_ratio", 0.4))
    return out


def make_node_samples(
    duration_s: float, nodes: tuple[str, ...], *, gpus: int = 2, interval_s: float = 1.0
) -> list[Sample]:
    """What ``--prometheus-url`` pulls for ``nodes`` (prom_query's shape): node k's GPU g draws
    ``300 + 100 k + 10 g`` W at ``0.5 + 0.1 k`` utilization, counters moving accordingly."""
    out: list[Sample] = []
    for k, node in enumerate(nodes):
        for g in range(gpus):
            dev, power = f"{node}/{g}", 300.0 + 100 * k + 10 * g
            for t in np.arange(0.0, duration_s + interval_s, interval_s):
                t = float(t)
                for metric, value in (
                    ("gpu_up", 1.0),
                    ("gpu_utilization_ratio", 0.5 + 0.1 * k),
                    ("gpu_memory_used_bytes", 40e9 + 1e9 * k),
                    ("gpu_memory_total_bytes", 80e9),
                    ("gpu_power_watts", power),
                    ("gpu_energy_joules_total", 1e6 + power * t),
                    ("gpu_nvlink_tx_bytes_total", 1e9 * (k + 1) * t),
                    ("gpu_nvlink_tx_bytes_per_second", 1e9 * (k + 1)),
                    ("gpu_pcie_rx_bytes_per_second", 1e8),
                ):
                    out.append(Sample(t, "prometheus", dev, metric, value))
        for t in np.arange(0.0, duration_s + interval_s, interval_s):
            out.append(Sample(float(t), "prometheus", node, "host_cpu_utilization_ratio", 0.2))
    return out


def make_run(
    parent: Path,
    run_id: str = "run-synthetic",
    *,
    gpu: bool = True,
    nodes: tuple[str, ...] = (),
    journal_only: bool = False,
    write_summary: bool = True,
    slo: SloSpec | None = None,
    arrival: dict[str, Any] | None = None,
    **record_kw: Any,
) -> Path:
    """A complete run directory (or, with ``journal_only``, one whose process died before
    compaction: journals, a manifest, no Parquet and no summary); ``nodes`` adds what
    ``--prometheus-url`` pulls for those hosts (``make_node_samples``)."""
    rd = RunDir.create(parent, run_id)
    records = make_records(**record_kw)
    duration = max(r.end_s or 0.0 for r in records)
    samples = make_samples(duration) if gpu else []
    samples += make_node_samples(duration, nodes)
    slo = slo or SloSpec(ttft_s=0.1, tpot_s=0.02)
    spec = {
        "run_id": run_id,
        "workload": {"name": "synthetic", "scenarios": [{"name": "default"}]},
        "arrival": arrival or {"kind": "poisson", "rate": record_kw.get("rate", 20.0)},
        "num_requests": len(records),
        "warmup_s": 0.0,
        "cooldown_s": 0.0,
        "endpoint": {"url": "http://127.0.0.1:1/v1", "model": "tiny"},
        "slo": slo.model_dump(),
    }
    if nodes:
        spec["prometheus_url"] = "http://prometheus:9090"
    manifest = {
        "schema_version": 1,
        "tool": {"name": "infprof", "version": "0.1.0"},
        "run_id": run_id,
        "spec": spec,
        "serve_argv": None,
        "versions": {"python": "3.11", "vllm": None, "driver": "550.54" if gpu else None},
        "gpus": [{"index": i, "name": "NVIDIA H100 80GB HBM3"} for i in range(2 if gpu else 0)],
        "nvml": {
            "available": gpu,
            "reason": None if gpu else "NVML library not found (no NVIDIA driver)",
        },
        "model": "tiny-llama",
        "host": {"hostname": "test", "cpus": 2},
        "started_at": 1735689600.0,
        "ended_at": 1735689660.0,
        "ended": "interrupted" if journal_only else "completed",
    }
    write_json_atomic(rd.file("manifest.json"), manifest)
    if journal_only:
        j = Journal(rd.file(REQUESTS_JOURNAL))
        j.extend(r.to_journal() for r in records)
        j.close()
        s = Journal(rd.file(SAMPLES_JOURNAL))
        s.extend(x._asdict() for x in samples)
        s.close()
        return rd.path
    write_requests_parquet(rd.file("requests.parquet"), records)
    write_itl_parquet(rd.file("itl.parquet"), records)
    write_samples_parquet(rd.file("samples.parquet"), samples)
    if write_summary:
        from profiler.analysis.summary_json import summarize_run

        write_json_atomic(rd.file("summary.json"), summarize_run(rd.path))
    return rd.path


def saturating(load: float, capacity: float) -> tuple[float, float]:
    """(achieved req/s, latency s) of a server that saturates at ``capacity`` req/s."""
    achieved = min(load, capacity) * (1 - 0.02 * max(0.0, load / capacity - 1))
    rho = min(load / capacity, 0.99)
    latency = 0.1 / (1 - rho) + (0.5 * (load / capacity - 1) if load > capacity else 0.0)
    return achieved, latency


def make_sweep(
    parent: Path, *, configs: int = 2, loads: tuple[int, ...] = (1, 4, 16), gpu: bool = True
) -> Path:
    """A sweep directory: ``configs`` x ``loads`` concurrency points, each a synthetic run."""
    sweep = parent / "sweep-synthetic"
    (sweep / "runs").mkdir(parents=True)
    points: list[dict[str, Any]] = []
    for c in range(configs):
        config = {
            "tp": 1,
            "pp": 1,
            "dp": 1,
            "ep": False,
            "max_num_seqs": 4 * (c + 1),
            "max_num_batched_tokens": None,
        }
        for k, load in enumerate(loads):
            run_id = f"c{c}-synthetic-conc{load}"
            capacity = 4.0 * (c + 1)
            achieved, latency = saturating(float(load), capacity)
            path = make_run(
                sweep / "runs",
                run_id,
                gpu=gpu,
                n=60,
                rate=max(achieved, 0.5),
                ttft_s=latency / 4,
                tpot_s=latency / 100,
                seed=100 * c + k,
                arrival={"kind": "concurrency", "concurrency": load},
            )
            summary = key_numbers(json.loads((path / "summary.json").read_text()))
            points.append(
                {
                    "id": run_id,
                    "config_id": f"c{c}",
                    "config": config,
                    "load": {"kind": "concurrency", "value": load},
                    "workload": "synthetic",
                    "run_dir": f"runs/{run_id}",
                    "status": "done",
                    "summary": summary,
                }
            )
    configs_meta = [
        {
            "id": f"c{c}",
            "config": points[c * len(loads)]["config"],
            "label": f"config {c}",
            "status": "ok",
            "reason": None,
        }
        for c in range(configs)
    ]
    index = {
        "schema_version": 1,
        "sweep_id": "sweep-synthetic",
        "status": "complete",
        "configs": configs_meta,
        "points": points,
        "searches": [],
        "knees": [],
    }
    write_json_atomic(sweep / "index.json", index)
    spec = {
        "sweep_id": "sweep-synthetic",
        "loads": list(loads),
        "load_kind": "concurrency",
        "slo": "ttft=0.5,tpot=0.05",
    }
    write_json_atomic(sweep / "sweep.json", spec)
    return sweep


def run_effects(runs: int, run_sd: float, seed: int) -> list[float]:
    """Multiplicative run effects exp(N(0, run_sd)): how much slower or faster each run of one
    configuration is, the server's run-to-run drift."""
    rng = np.random.default_rng([seed, 7])
    return [float(np.exp(rng.normal(0.0, run_sd))) for _ in range(runs)]


def make_repeats(
    parent: Path,
    name: str,
    *,
    runs: int = 4,
    run_sd: float = 0.08,
    slowdown: float = 1.0,
    seed: int = 0,
    ttft_s: float = TTFT_S,
    tpot_s: float = TPOT_S,
    **record_kw: Any,
) -> Path:
    """``parent/name/rep-01..``: repeated runs of one configuration against a server whose
    speed drifts between runs. Each run's TTFT and TPOT are scaled by its own run effect
    (``run_effects``) and by ``slowdown`` (1.2: every run 20% slower), as ``infprof run
    --repeat`` lays them out."""
    root = parent / name
    root.mkdir(parents=True)
    for i, effect in enumerate(run_effects(runs, run_sd, seed)):
        make_run(
            root,
            f"rep-{i + 1:02d}",
            gpu=False,
            ttft_s=ttft_s * effect * slowdown,
            tpot_s=tpot_s * effect * slowdown,
            seed=1000 * seed + i,
            **record_kw,
        )
    return root
