"""Summarising a run of 1 million request records with 100 gaps each (synthetic Parquet).

The files are written first (not timed); a fresh child process then loads the columns and
computes summary.json, reporting its wall time and peak RSS.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from profiler.store.parquet import ITL_COMPRESSION, ITL_DICTIONARY, ITL_SCHEMA
from tests.bench.common import md_table, run_child, write_requests, write_result

N_REQ = 1_000_000
GAPS = 100


def make_run(path: Path, n: int = N_REQ, gaps: int = GAPS) -> None:
    rng = np.random.default_rng(0)
    path.mkdir(parents=True, exist_ok=True)
    send = np.sort(rng.uniform(0, 3600, n))
    ttft = rng.lognormal(-2.5, 0.5, n)
    itl = 0.02
    end = send + ttft + gaps * itl
    outcome = np.where(rng.random(n) < 0.01, "error", "ok").astype(object)
    write_requests(path, send, ttft, end, gaps + 1, outcome)
    writer = pq.ParquetWriter(
        path / "itl.parquet", ITL_SCHEMA, compression=ITL_COMPRESSION, use_dictionary=ITL_DICTIONARY
    )
    block = 50_000
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        m = hi - lo
        rid = np.repeat(np.arange(lo, hi), gaps + 1)
        idx = np.tile(np.arange(gaps + 1, dtype=np.int32), m)
        g = rng.gamma(4.0, itl / 4.0, size=m * (gaps + 1))
        g[idx == 0] = np.nan
        t = (
            np.repeat(send[lo:hi] + ttft[lo:hi], gaps + 1) + np.nan_to_num(g).cumsum() * 0
        )  # read only for requests cut by a warm-up or cool-down edge (none here)
        gap_arr = pa.array(g, mask=np.isnan(g))
        writer.write_table(
            pa.table(
                {
                    "request_id": rid,
                    "index": idx,
                    "t_s": t,
                    "gap_s": gap_arr,
                    "tokens": np.ones(m * (gaps + 1), dtype=np.int32),
                    "choice": np.zeros(m * (gaps + 1), dtype=np.int32),
                },
                schema=ITL_SCHEMA,
            )
        )
    writer.close()


CHILD = """
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from profiler.analysis.request_columns import RequestColumns
from profiler.analysis.request_summary import summarize_requests
cols = RequestColumns.from_run_dir(Path(sys.argv[1]))
s = summarize_requests(cols, run_id="bench")
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"wall_s": wall, "peak_rss_bytes": rss, "requests": s["requests"]["total"], "itl_count": s["latency"]["itl_s"]["count"]}))
"""


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else N_REQ
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        make_run(run, n)
        child = Path(d) / "child.py"
        child.write_text(CHILD)
        r = run_child([str(child), str(run)])
    gib = r["peak_rss_bytes"] / 2**30
    md = "### Summarising 1M requests x 100 gaps\n\n" + md_table(
        ["requests", "ITL values", "wall s (target < 10)", "peak RSS GiB (target < 4)"],
        [[r["requests"], r["itl_count"], r["wall_s"], gib]],
    )
    write_result("summary_scale", r, md)


if __name__ == "__main__":
    main()
