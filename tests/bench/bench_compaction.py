"""Compacting a run's journals to Parquet: wall time and peak memory.

A run directory is written first (not timed): ``requests.jsonl`` with N request records of
C content chunks each, in completion order (request ids interleave as concurrent requests
finish out of order, 256 in flight), encoded line by line as the run's journal encodes them,
plus ``samples.jsonl`` with telemetry samples. ``--workers K`` splits the records over
``requests.w<k>.jsonl`` journals as ``--workers`` does (request ``i`` to worker ``i % K``).

Timed: a fresh child process runs ``RunDir.compact()`` (what a run does at its end and
``infprof report`` does for a run that died). Its peak resident memory is measured from outside
(GNU time's maximum resident set size), its wall time around the call. Output
sizes and row counts are reported; the Parquet files are removed after each repeat.

    python -m tests.bench.bench_compaction [N] [CHUNKS] [--workers K] [--samples S] [--repeat R]
        [--reference]    # time the one-shot compaction it replaced (all records in memory)
    # default 1,000,000 records x 100 chunks (a 2.7 GB journal; needs ~4 GB free under TMPDIR)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic_core import to_json

from profiler.store.record import RequestRecord
from tests.bench.common import ROOT, md_table, write_result

N_REQ = 1_000_000
CHUNKS = 100
SAMPLES = 1_000_000
IN_FLIGHT = 256


def make_journals(
    path: Path, n: int, chunks: int, workers: int = 0, samples: int = SAMPLES
) -> dict[str, Any]:
    """Journals as a run leaves them: one JSON line per finished request, in the order the
    requests finished."""
    rng = np.random.default_rng(0)
    path.mkdir(parents=True, exist_ok=True)
    send = np.arange(n) * 0.004 + rng.uniform(0, 0.001, n)
    ttft = rng.lognormal(-2.5, 0.5, n)
    gaps = rng.gamma(4.0, 0.02 / 4.0, size=(min(n, 4096), max(chunks - 1, 0)))
    # finish order: each request's end is its send plus a duration of ~IN_FLIGHT sends
    dur = rng.uniform(0, IN_FLIGHT * 0.004 * 2, n)
    order = np.argsort(send + dur, kind="stable")
    names = [f"requests.w{k}.jsonl" for k in range(workers)] if workers else ["requests.jsonl"]
    files = [open(path / name, "wb") for name in names]  # noqa: SIM115 (closed below)
    t0 = time.perf_counter()
    written = 0
    try:
        for i in order.tolist():
            first = float(send[i] + ttft[i])
            times = [first, *(first + np.cumsum(gaps[i % gaps.shape[0]])).tolist()]
            times = times[:chunks]
            rec = RequestRecord(
                id=i,
                workload="bench",
                scenario="chat",
                intended_start_s=float(send[i]) - 0.0005,
                send_s=float(send[i]),
                first_token_s=first if chunks else None,
                last_token_s=times[-1] if chunks else None,
                end_s=(times[-1] if chunks else first) + 0.001,
                prompt_tokens=128,
                output_tokens=chunks,
                requested_output_tokens=chunks,
                chunks=chunks,
                outcome="ok" if i % 97 else "error",
                http_status=200 if i % 97 else 500,
                error=None if i % 97 else "HTTP 500: boom",
                worker=i % workers if workers else 0,
                chunk_times_s=times,
                chunk_tokens=[1] * len(times),
            )
            f = files[i % workers] if workers else files[0]
            f.write(to_json(rec.to_journal(), inf_nan_mode="constants") + b"\n")
            written += 1
        with open(path / "samples.jsonl", "wb") as f:
            metrics = ["power_watts", "gpu_utilization_ratio", "memory_used_bytes", "sm_clock_hz"]
            for s in range(samples):
                row = {
                    "t_s": s * 0.0125,
                    "source": "nvml",
                    "device": str(s % 8),
                    "metric": metrics[(s // 8) % len(metrics)],
                    "value": float(s % 1000),
                    "error": None,
                }
                f.write(to_json(row) + b"\n")
    finally:
        for f in files:
            f.close()
    size = sum(p.stat().st_size for p in path.glob("*.jsonl"))
    return {"records": written, "journal_bytes": size, "write_s": time.perf_counter() - t0}


CHILD = """
import json, sys, time
from pathlib import Path
from profiler.store.rundir import RunDir
t0 = time.perf_counter()
RunDir(Path(sys.argv[1])).compact()
print(json.dumps({"compact_s": time.perf_counter() - t0}))
"""

# The one-shot compaction streaming replaced (every record in memory, then one write per file),
# as tests/unit/test_compaction.py keeps it: the "before" of this benchmark
REFERENCE_CHILD = """
import json, sys, time
from pathlib import Path
from profiler.store import parquet, rundir
from tests.unit.test_compaction import _reference
t0 = time.perf_counter()
rd = rundir.RunDir(Path(sys.argv[1]))
tables = _reference(rd)
parquet._write_table(rd.file("requests.parquet"), tables.pop("requests.parquet"))
parquet._write_table(
    rd.file("itl.parquet"), tables.pop("itl.parquet"), parquet.ITL_COMPRESSION, parquet.ITL_DICTIONARY
)
parquet._write_table(rd.file("samples.parquet"), tables.pop("samples.parquet"))
print(json.dumps({"compact_s": time.perf_counter() - t0}))
"""


TIME = "/usr/bin/time"


def run_measured(args: list[str], timeout: float = 3600) -> tuple[dict[str, Any], int, float]:
    """Run ``python ARGS``; its last JSON line, peak RSS (bytes) and wall time.

    The peak comes from GNU time (``%M``), which forks the child from its own small process:
    a child forked straight from this one would count the pages it shared with this process,
    large after writing the journals, in its ``ru_maxrss``. Without GNU time: ``wait4``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as peak:
        cmd = [sys.executable, *args]
        if os.access(TIME, os.X_OK):
            cmd = [TIME, "-f", "%M", "-o", peak.name, *cmd]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, env=env)
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if code != 0 or not lines:
            err.seek(0)
            raise RuntimeError(f"child failed ({code}): {err.read().decode()[-2000:]}")
        kib = [ln for ln in peak.read().splitlines() if ln.strip().isdigit()]
        rss = int(kib[-1]) * 1024 if kib else usage.ru_maxrss * 1024
    return json.loads(lines[-1]), rss, wall


def _baseline_rss() -> int:
    """Peak RSS of a child that imports what compaction imports and does nothing."""
    _, rss, _ = run_measured(
        ["-c", "import json; import profiler.store.rundir; print(json.dumps({}))"]
    )
    return rss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=float, default=N_REQ)
    ap.add_argument("chunks", nargs="?", type=int, default=CHUNKS)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--samples", type=float, default=SAMPLES)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--name", default="compaction")
    ap.add_argument(
        "--reference", action="store_true", help="time the one-shot compaction it replaced"
    )
    a = ap.parse_args()
    n, chunks = int(a.n), a.chunks
    base = Path(os.environ.get("INFPROF_BENCH_TMP", tempfile.gettempdir()))
    tmp = Path(tempfile.mkdtemp(prefix="infprof-compact-", dir=base))
    try:
        run = tmp / "run"
        made = make_journals(run, n, chunks, a.workers, int(a.samples))
        print(f"journals: {made}", flush=True)
        idle_rss = _baseline_rss()
        reps = []
        for _ in range(a.repeat):
            for p in run.glob("*.parquet"):
                p.unlink()
            child = REFERENCE_CHILD if a.reference else CHILD
            res, rss, wall = run_measured(["-c", child, str(run)])
            sizes = {p.name: p.stat().st_size for p in sorted(run.glob("*.parquet"))}
            reps.append({"compact_s": res["compact_s"], "wall_s": wall, "rss": rss, **sizes})
        import pyarrow.parquet as pq

        rows = {p.name: pq.ParquetFile(p).metadata.num_rows for p in sorted(run.glob("*.parquet"))}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = min(reps, key=lambda r: r["compact_s"])
    data = {
        **made,
        "chunks": chunks,
        "workers": a.workers,
        "samples": int(a.samples),
        "code": "one-shot (before)" if a.reference else "streaming",
        "rows": rows,
        "repeats": reps,
        "idle_rss": idle_rss,
        "load_avg": os.getloadavg(),
    }
    gib = 1024**3
    md = [
        f"### Compacting {n:,} records x {chunks} chunks"
        + (f" ({a.workers} worker journals)" if a.workers else "")
        + (" (the one-shot compaction it replaced)" if a.reference else ""),
        "",
        md_table(
            [
                "records",
                "chunks each",
                "journal GB",
                "compact s (best)",
                "compact s (all)",
                "peak RSS GiB",
                "RSS over imports GiB",
            ],
            [
                [
                    made["records"],
                    chunks,
                    round(made["journal_bytes"] / 1e9, 2),
                    round(best["compact_s"], 2),
                    ", ".join(f"{r['compact_s']:.1f}" for r in reps),
                    round(max(r["rss"] for r in reps) / gib, 3),
                    round((max(r["rss"] for r in reps) - idle_rss) / gib, 3),
                ]
            ],
        ),
        "",
        f"Rows: {rows}; {int(a.samples):,} samples. Load average at the end "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
    ]
    write_result(a.name, data, "\n".join(md))


if __name__ == "__main__":
    main()
