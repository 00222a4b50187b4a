"""Soak: ``infprof run`` at a steady open-loop rate against the fake OpenAI server with 2% of
requests failing (HTTP 500), for 10 minutes by default.

Reported: the profiler's resident memory over the run (after a warm-up, at the end, the
largest, and the slope of a line fitted through the samples): it must stay flat; and the
record count: records on disk (journal, requests.parquet, summary) must equal the requests the
profiler sent and the requests the server received, with the server's error count matching the
error records. The profiler runs as its own process (the CLI, live exporter and telemetry on);
the fake runs on a thread of this process, so its counters can be read.

    python -m tests.bench.bench_soak [--minutes 10] [--rate 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow.parquet as pq

from tests.bench.common import ROOT, md_table, write_result
from tests.fakes.fake_openai import FakeConfig, serve_in_thread

ERROR_RATE = 0.02
SAMPLE_EVERY_S = 2.0
FLAT_MIB = 10.0  # growth after warm-up within this (or 10%) counts as flat


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--minutes", type=float, default=10.0, help="length of the load (default 10)")
    p.add_argument("--rate", type=float, default=20.0, help="requests per second (default 20)")
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--itl-ms", type=float, default=10.0)
    return p.parse_args(sys.argv[1:] if argv is None else argv)


def rss_mib(proc: psutil.Process) -> float | None:
    try:
        return float(proc.memory_info().rss) / 2**20
    except psutil.Error:
        return None


def run_soak(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    duration_s = a.minutes * 60
    planned = int(round(a.rate * duration_s))
    cfg = FakeConfig(ttft_ms=20, itl_ms=a.itl_ms, error_rate=ERROR_RATE, seed=7)
    with serve_in_thread(cfg) as fake:
        cmd = [
            sys.executable, "-m", "profiler", "run", "--endpoint", fake.url,
            "--rate", str(a.rate), "--arrival", "constant", "--duration", str(duration_s),
            "--num-requests", str(planned), "--input-len", "64", "--output-len", str(a.output_len),
            "--metrics-port", "0", "--sample-interval", "0.5", "--out", str(work),
            "--run-id", "soak", "--json", "-q",
        ]  # fmt: skip
        env = {**os.environ, "INFPROF_HOME": str(work / "home"), "PYTHONPATH": str(ROOT)}
        t0 = time.monotonic()
        with open(work / "stdout.json", "wb") as out, open(work / "stderr.txt", "wb") as err:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err)
        ps = psutil.Process(proc.pid)
        samples: list[tuple[float, float, float]] = []  # (s since spawn, wall time, MiB)
        try:
            while proc.poll() is None:
                if time.monotonic() - t0 > duration_s + 300:
                    raise RuntimeError("the profiler did not finish 5 minutes after the load")
                mib = rss_mib(ps)
                if mib is not None:
                    samples.append((time.monotonic() - t0, time.time(), mib))
                time.sleep(SAMPLE_EVERY_S)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
        wall_s = time.monotonic() - t0
        received = fake.counters.requests
        server_errors = fake.counters.statuses.get(500, 0)
    if proc.returncode != 0:
        raise RuntimeError(
            f"infprof run exited {proc.returncode}: {(work / 'stderr.txt').read_text()[-2000:]}"
        )
    run_dir = work / "soak"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    journal = (run_dir / "requests.jsonl").read_text().splitlines()
    table = pq.read_table(run_dir / "requests.parquet", columns=["outcome", "send_s", "end_s"])
    outcomes = table.column("outcome")
    errors_on_disk = sum(1 for o in outcomes.to_pylist() if o != "ok")

    # memory under load: from the end of a warm-up (10% of the load, at least 10 s) to the
    # last request; compaction and the summary afterwards are a one-off peak, reported apart
    wall0 = manifest["clock"]["wall_start"]
    load_start = wall0 + float(np.nanmin(table.column("send_s").to_numpy(zero_copy_only=False)))
    load_end = wall0 + float(np.nanmax(table.column("end_s").to_numpy(zero_copy_only=False)))
    warm = max(10.0, 0.1 * duration_s)
    steady = [(t, m) for t, w, m in samples if load_start + warm <= w <= load_end]
    if len(steady) < 2:
        raise RuntimeError("too few memory samples under load (run longer)")
    ts = np.array([t for t, _ in steady])
    ms = np.array([m for _, m in steady])
    slope = float(np.polyfit(ts / 60, ms, 1)[0]) if len(steady) >= 3 else None
    start, end = float(ms[0]), float(ms[-1])
    growth = end - start
    peak_after = max((m for _, w, m in samples if w > load_end), default=None)
    return {
        "minutes": a.minutes,
        "rate_per_s": a.rate,
        "output_len": a.output_len,
        "error_rate_injected": ERROR_RATE,
        "wall_s": round(wall_s, 1),
        "requests_planned": planned,
        "requests_sent": manifest["requests_sent"],
        "requests_received_by_server": received,
        "records_journal": len(journal),
        "records_parquet": len(outcomes),
        "records_summary": summary["requests"]["total"],
        "records_recorded_manifest": manifest["requests_recorded"],
        "error_records": errors_on_disk,
        "server_errors": server_errors,
        "error_rate_measured": summary["error_rate"],
        "ended": manifest["ended"],
        "no_record_lost": (
            len(journal)
            == len(outcomes)
            == summary["requests"]["total"]
            == manifest["requests_sent"]
            == received
            == planned
        )
        and errors_on_disk == server_errors,
        "rss_start_mib": round(start, 1),
        "rss_end_mib": round(end, 1),
        "rss_max_mib": round(float(ms.max()), 1),
        "rss_peak_compaction_mib": round(peak_after, 1) if peak_after is not None else None,
        "rss_growth_mib": round(growth, 1),
        "rss_slope_mib_per_min": round(slope, 3) if slope is not None else None,
        "rss_flat": growth <= max(FLAT_MIB, 0.1 * start),
        "rss_samples": [(round(t, 1), round(m, 1)) for t, _, m in samples],
        "load_s": round(load_end - load_start, 1),
        "client_saturated": summary.get("client", {}).get("saturated"),
        "throughput_req_per_s": summary["throughput"]["requests_per_s"],
    }


def main() -> None:
    a = parse()
    with tempfile.TemporaryDirectory(prefix="infprof-soak-") as tmp:
        r = run_soak(a, Path(tmp))
    rows = [
        ["load", f"{r['minutes']:g} min at {r['rate_per_s']:g} req/s, {ERROR_RATE:.0%} HTTP 500"],
        ["requests planned / sent / received by the server",
         f"{r['requests_planned']} / {r['requests_sent']} / {r['requests_received_by_server']}"],
        ["records: journal / parquet / summary",
         f"{r['records_journal']} / {r['records_parquet']} / {r['records_summary']}"],
        ["error records / server errors",
         f"{r['error_records']} / {r['server_errors']} ({r['error_rate_measured']:.2%})"],
        ["no record lost", "yes" if r["no_record_lost"] else "NO"],
        ["profiler RSS under load: after warm-up / end / max (MiB)",
         f"{r['rss_start_mib']} / {r['rss_end_mib']} / {r['rss_max_mib']}"],
        ["profiler RSS peak while compacting (MiB)", r["rss_peak_compaction_mib"]],
        ["RSS growth (MiB), slope (MiB/min)",
         f"{r['rss_growth_mib']:+}, {r['rss_slope_mib_per_min']}"],
        ["memory flat", "yes" if r["rss_flat"] else "NO"],
        ["run ended", r["ended"]],
        ["client saturated", r["client_saturated"]],
    ]  # fmt: skip
    md = "## Soak (fake server, 2% errors)\n\n" + md_table(["what", "value"], rows)
    write_result("soak", r, md)
    if not (r["no_record_lost"] and r["rss_flat"]):
        raise SystemExit("soak: records lost or memory not flat (see bench-results/soak.md)")


if __name__ == "__main__":
    main()
