"""Helpers for the benchmarks: result files, a fake server subprocess, child timing, and the
requests.parquet of a synthetic run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(os.environ.get("INFPROF_BENCH_DIR", ROOT / "bench-results"))


def write_result(name: str, data: dict[str, Any], markdown: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    md = RESULTS / f"{name}.md"
    md.write_text(markdown.rstrip() + "\n")
    print(markdown)
    return md


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


@contextmanager
def fake_server(
    *args: str, cpu: int | None = None, module: str = "tests.fakes.fake_openai"
) -> Iterator[str]:
    """Start ``python -m MODULE`` (the general fake, or ``tests.fakes.firehose``; optionally
    pinned to one CPU) and yield its URL; the server is killed afterwards."""
    cmd = [sys.executable, "-m", module, "--port", "0", *args]
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        url = None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("READY"):
                url = line.split()[1]
                break
        if url is None:
            raise RuntimeError("fake server did not start")
        yield url
    finally:
        proc.kill()
        proc.wait()


def run_child(
    args: list[str],
    cpu: int | None = None,
    timeout: float = 900,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run a child Python script that prints one JSON line last; return it."""
    cmd = [sys.executable, *args]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"child failed ({res.returncode}): {res.stderr[-2000:]}")
    return json.loads(lines[-1])


def write_requests(
    path: Path, send: Any, ttft: Any, end: Any, output_tokens: int, outcome: Any
) -> None:
    """``path``/requests.parquet: one request per element of ``send`` (numpy arrays, seconds),
    128 prompt tokens, ``output_tokens`` in as many chunks, one sample each, ``outcome`` per
    request; every other column of the schema null."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from profiler.store.parquet import REQUEST_SCHEMA

    n = len(send)
    cols = {
        name: pa.nulls(n, type=REQUEST_SCHEMA.field(name).type) for name in REQUEST_SCHEMA.names
    }
    cols.update(
        id=pa.array(np.arange(n)),
        workload=pa.array(np.full(n, "bench", dtype=object)),
        scenario=pa.array(np.full(n, "s", dtype=object)),
        intended_start_s=pa.array(send),
        send_s=pa.array(send),
        first_token_s=pa.array(send + ttft),
        last_token_s=pa.array(end),
        end_s=pa.array(end),
        prompt_tokens=pa.array(np.full(n, 128)),
        output_tokens=pa.array(np.full(n, output_tokens)),
        chunks=pa.array(np.full(n, output_tokens)),
        n=pa.array(np.ones(n, dtype=np.int64)),
        outcome=pa.array(outcome),
        tokens_estimated=pa.array(np.zeros(n, dtype=bool)),
        worker=pa.array(np.zeros(n, dtype=np.int64)),
    )
    pq.write_table(pa.table(cols, schema=REQUEST_SCHEMA), path / "requests.parquet")
