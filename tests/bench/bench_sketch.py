"""Summarising a billion inter-token gaps in bounded memory, and the sketch's error.

A real run directory is written first (not timed): requests.parquet with 1,000,000 requests
and itl.parquet with 1,001 chunks each (1,000,000,000 gaps, the first chunk of each request has
none), in streamed row groups of 1Mi rows, gap_s uncompressed as compaction writes it. The
gaps are decode-like: a gamma body around 20 ms with 2% lognormal stalls. The arrival-time
column, read only for requests cut by a warm-up edge (none here), repeats per request and is
zstd-compressed to keep the file near 8 GB. Its pages are then dropped from the page cache
(``posix_fadvise DONTNEED``, this file only), so the summary reads it from disk.

Timed: a fresh child process loads the columns and computes summary.json through the same
code as ``infprof report`` (``RequestColumns.from_run_dir`` + ``summarize``). Its peak
resident memory is measured from outside (``wait4`` on the child). Then a second child feeds
the first 100,000,000 gaps through the same reader into a sketch and compares its quantiles
with numpy's exact ones on those gaps (``method="lower"``, the order statistic the bound is
stated for). Targets: under 60 s and 2 GiB; every error within the stated relative error.

    python -m tests.bench.bench_sketch [GAPS]     # default 1e9; needs ~9 GB free under TMPDIR
"""

from __future__ import annotations

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
import pyarrow as pa
import pyarrow.parquet as pq

from profiler.store.parquet import ITL_SCHEMA
from tests.bench.common import ROOT, md_table, write_requests, write_result

GAPS = 1_000_000_000
PER_REQUEST = 1000  # gaps per request: long generations
SUBSET = 100_000_000
ROW_GROUP = 1 << 20


def make_run(path: Path, gaps: int = GAPS, per: int = PER_REQUEST) -> dict[str, Any]:
    n = gaps // per
    rng = np.random.default_rng(0)
    path.mkdir(parents=True, exist_ok=True)
    send = np.sort(rng.uniform(0, 86_400, n))  # a day of load
    ttft = rng.lognormal(-2.5, 0.5, n)
    end = send + ttft + per * 0.02
    write_requests(path, send, ttft, end, per + 1, np.full(n, "ok", dtype=object))
    writer = pq.ParquetWriter(
        path / "itl.parquet",
        ITL_SCHEMA,
        compression={
            "request_id": "none",
            "index": "zstd",
            "t_s": "zstd",
            "gap_s": "none",
            "tokens": "none",
            "choice": "none",
        },  # fmt: skip
        use_dictionary=["request_id", "index", "tokens", "choice"],
    )
    rows_per = per + 1
    block = max(1, 8 * ROW_GROUP // rows_per)  # requests per write: whole row groups of 1Mi
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        m = (hi - lo) * rows_per
        g = rng.gamma(4.0, 0.005, size=m)
        stall = rng.random(m) < 0.02
        g[stall] = rng.lognormal(-2.0, 1.0, size=int(stall.sum()))
        first = np.zeros(m, dtype=bool)
        first[::rows_per] = True
        writer.write_table(
            pa.table(
                {
                    "request_id": np.repeat(np.arange(lo, hi), rows_per),
                    "index": np.tile(np.arange(rows_per, dtype=np.int32), hi - lo),
                    "t_s": np.repeat(send[lo:hi] + ttft[lo:hi], rows_per),
                    "gap_s": pa.array(g, mask=first),
                    "tokens": np.ones(m, dtype=np.int32),
                    "choice": np.zeros(m, dtype=np.int32),
                },
                schema=ITL_SCHEMA,
            ),
            row_group_size=ROW_GROUP,
        )
    writer.close()
    itl = path / "itl.parquet"
    fd = os.open(itl, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # read it back from disk
    finally:
        os.close(fd)
    return {"requests": n, "gaps": n * per, "itl_bytes": itl.stat().st_size}


SUMMARY_CHILD = """
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
from profiler.analysis.request_columns import RequestColumns
from profiler.analysis.request_summary import summarize_requests
cols = RequestColumns.from_run_dir(Path(sys.argv[1]))
s = summarize_requests(cols, run_id="bench")
print(json.dumps({"wall_s": time.perf_counter() - t0, "itl": s["latency"]["itl_s"],
                  "requests": s["requests"]["total"], "quantiles": s["quantiles"]}))
"""

ACCURACY_CHILD = """
import json, sys
from pathlib import Path
import numpy as np
from profiler.sketches import QuantileSketch, RELATIVE_ACCURACY
from profiler.latency_sketches import add_itl_shares
from profiler.analysis.request_columns import RequestColumns
run, limit = Path(sys.argv[1]), int(sys.argv[2])
cols = RequestColumns.from_run_dir(run)
sketch = QuantileSketch()
parts, held = [], 0
for gaps, toks in cols.itl_source(np.ones(int(cols.id.max()) + 1, dtype=bool)):
    gaps = gaps[: limit - held]
    add_itl_shares(sketch, gaps, None if toks is None else toks[: gaps.size])
    parts.append(gaps.copy())
    held += gaps.size
    if held >= limit:
        break
exact = np.concatenate(parts)
del parts
qs = [0.5, 0.9, 0.95, 0.99, 0.999]
lower = np.quantile(exact, qs, method="lower")
rows = []
for q, x in zip(qs, lower):
    est = sketch.quantile(q)
    rows.append({"q": q, "exact_s": float(x), "sketch_s": est, "rel_error": abs(est - x) / x})
d = sketch.distribution()
print(json.dumps({"values": int(exact.size), "bound": RELATIVE_ACCURACY, "rows": rows,
                  "mean_rel_error": abs(d.mean - float(exact.mean())) / float(exact.mean()),
                  "max_equal": d.max == float(exact.max())}))
"""


def run_measured(args: list[str], timeout: float = 1800) -> tuple[dict[str, Any], int, float]:
    """Run ``python ARGS`` and return its last JSON line, its peak RSS (bytes, from the
    kernel's accounting of that child via wait4) and its wall time."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=err, env=env
        )
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            err.seek(0)
            raise RuntimeError(f"child failed ({proc.returncode}): {err.read().decode()[-2000:]}")
    return json.loads(lines[-1]), usage.ru_maxrss * 1024, wall


def main() -> None:
    gaps = int(float(sys.argv[1])) if len(sys.argv) > 1 else GAPS
    subset = min(SUBSET, gaps)
    base = Path(os.environ.get("INFPROF_BENCH_TMP", tempfile.gettempdir()))
    need = int(gaps * 8.5) + (1 << 30)
    free = shutil.disk_usage(base).free
    if free < need:
        raise RuntimeError(
            f"{free / 2**30:.1f} GiB free under {base}, {need / 2**30:.1f} GiB needed: "
            "set INFPROF_BENCH_TMP to a larger disk or pass fewer gaps"
        )
    with tempfile.TemporaryDirectory(dir=base) as d:
        run = Path(d) / "run"
        t0 = time.perf_counter()
        made = make_run(run, gaps)
        gen_s = time.perf_counter() - t0
        print(f"wrote {made['gaps']:,} gaps ({made['itl_bytes'] / 1e9:.1f} GB) in {gen_s:.0f} s")
        child = Path(d) / "summary_child.py"
        child.write_text(SUMMARY_CHILD)
        summ, rss, _ = run_measured([str(child), str(run)])
        acc_child = Path(d) / "accuracy_child.py"
        acc_child.write_text(ACCURACY_CHILD)
        acc, acc_rss, acc_wall = run_measured([str(acc_child), str(run), str(subset)])
    itl = summ["itl"]
    worst = max(r["rel_error"] for r in acc["rows"])
    result = {
        **made,
        "generate_s": gen_s,
        "summary_wall_s": summ["wall_s"],
        "summary_peak_rss_bytes": rss,
        "itl_count": itl["count"],
        "itl": itl,
        "quantiles": summ["quantiles"],
        "accuracy": acc,
        "accuracy_child_peak_rss_bytes": acc_rss,
        "accuracy_child_wall_s": acc_wall,
        "worst_rel_error": worst,
        "within_bound": worst <= acc["bound"],
        "cpu_count": os.cpu_count(),
        "load_avg_at_end": os.getloadavg(),
    }
    md = (
        f"### Summarising {made['gaps']:,} gaps ({made['requests']:,} requests x "
        f"{PER_REQUEST} gaps, itl.parquet {made['itl_bytes'] / 1e9:.1f} GB read from disk)\n\n"
        + md_table(
            [
                "gaps",
                "wall s (target < 60)",
                "peak RSS GiB (target < 2)",
                "ITL p50 ms",
                "ITL p99 ms",
                "method",
            ],  # fmt: skip
            [
                [
                    f"{itl['count']:,}",
                    summ["wall_s"],
                    rss / 2**30,
                    itl["p50"] * 1e3,
                    itl["p99"] * 1e3,
                    f"{itl['method']} (relative error {itl['relative_error']})",
                ]
            ],
        )
        + f"\n\nSketch error on the first {acc['values']:,} gaps against numpy's exact order "
        f"statistics (stated bound {acc['bound']}):\n\n"
        + md_table(
            ["quantile", "exact ms", "sketch ms", "relative error"],
            [
                [r["q"], r["exact_s"] * 1e3, r["sketch_s"] * 1e3, r["rel_error"]]
                for r in acc["rows"]
            ],
        )
        + f"\n\nWorst relative error {worst:.2e} "
        f"({'within' if worst <= acc['bound'] else 'OUTSIDE'} the bound); mean relative error "
        f"{acc['mean_rel_error']:.1e}; max exact: {acc['max_equal']}. Load average at the end "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."
    )
    write_result("summary_billion", result, md)


if __name__ == "__main__":
    main()
