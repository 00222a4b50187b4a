"""Child: one infprof load against an endpoint; prints CPU seconds of the load and results.

Usage: python tests/bench/_child_infprof.py URL NUM CONCURRENCY INPUT OUTPUT OUTDIR [WORKERS]
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from profiler.distributions import LengthDist
from profiler.runner import execute
from profiler.spec import ArrivalSpec, EndpointSpec, RunSpec, Scenario, WorkloadSpec
from profiler.store.rundir import read_records


def main() -> None:
    url, num, conc, inp, outp, outdir = sys.argv[1:7]
    workers = int(sys.argv[7]) if len(sys.argv) > 7 else 1
    sample_interval = float(sys.argv[8]) if len(sys.argv) > 8 else None
    wl = WorkloadSpec(
        name="bench",
        scenarios=[Scenario(input=LengthDist.fixed(int(inp)), output=LengthDist.fixed(int(outp)))],
    )
    spec = RunSpec(
        out_dir=Path(outdir),
        workload=wl,
        arrival=ArrivalSpec(kind="concurrency", concurrency=int(conc)),
        num_requests=int(num),
        endpoint=EndpointSpec(url=url),
        sample_interval_s=sample_interval,
        workers=workers,
    )
    c0 = time.process_time()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = execute(spec)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - c0 + (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    recs = [r for r in read_records(res.run_dir) if r.outcome == "ok"]
    ttft = [r.ttft_s for r in recs]
    itl = [x for r in recs for x in r.itl_shares()]
    tpot = [r.tpot_s for r in recs if r.tpot_s is not None]
    out = {
        "cpu_s": cpu,
        "wall_s": wall,
        "tokens": int(sum(r.output_tokens or 0 for r in recs)),
        "ok": len(recs),
        "ttft_s": [float(x) for x in ttft] if len(ttft) <= 5000 else None,
        "ttft_p50": float(np.median(ttft)) if ttft else None,
        "ttft_p99": float(np.percentile(ttft, 99)) if ttft else None,
        "itl_p50": float(np.median(itl)) if itl else None,
        "itl_p99": float(np.percentile(itl, 99)) if itl else None,
        "tpot_p50": float(np.median(tpot)) if tpot else None,
        "output_tokens_per_s": res.summary["throughput"]["output_tokens_per_s"],
        "run_dir": str(res.run_dir),
        "event_loop": res.summary["client"].get("event_loop"),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
