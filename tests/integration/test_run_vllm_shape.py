"""The Llama-3.2-1B shape (`infprof model llama-1b-shape`: config + 128,256-token tokenizer, no
weights) served by a real vllm-cpu with dummy weights through `infprof run --model`: it loads,
decodes every token it is asked for, and the summary measures it against the roofline (the
catalog's placeholder 'cpu' entry: there is no GPU here). Slow on 2 cores (about 2 minutes,
mostly vLLM start and the 1.2B random weights), so the run is a few short requests."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from profiler.serving import shapes
from profiler.store.rundir import read_records

pytestmark = [
    pytest.mark.integration,
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed"),
]


def test_1b_shape_loads_and_decodes_on_vllm_cpu(
    tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    model = shapes.make_shape_model("llama-1b-shape", tmp_path / "llama-1b-shape")
    out = tmp_path / "runs"
    cmd = [
        sys.executable, "-m", "profiler", "run",
        "--model", str(model), "--load-format", "dummy", "--dtype", "bfloat16",
        "--max-model-len", "512", "--serve-arg=--enforce-eager",
        "--num-requests", "4", "--concurrency", "2", "--input-len", "32", "--output-len", "8",
        "--out", str(out), "--run-id", "shape-1b", "--json", "-q",
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    run = out / "shape-1b"
    log = (run / "server.log").read_text() if (run / "server.log").exists() else ""
    assert res.returncode == 0, res.stderr + log[-3000:]
    summary = json.loads(res.stdout)
    recs = read_records(run)
    assert len(recs) == 4 and all(r.outcome == "ok" for r in recs), [r.error for r in recs]
    assert {r.output_tokens for r in recs} == {8} and {r.prompt_tokens for r in recs} == {32}
    manifest = json.loads((run / "manifest.json").read_text())
    argv = manifest["server"]["argv"]
    assert argv[argv.index("--dtype") + 1] == "bfloat16" and "dummy" in argv
    r = summary["roofline"]
    assert r["available"] is True, r
    assert r["model"]["name"] == "llama-1b-shape" and r["model"]["params"] == 1_235_814_400
    assert r["model"]["weight_dtype"] == "bf16" and r["hardware"]["placeholder"] is True
    assert r["fraction"]["run"] is not None and r["fraction"]["run"] > 0
    record_property("output_tokens_per_s", summary["throughput"]["output_tokens_per_s"])
    record_property("fraction_of_run_bound", r["fraction"]["run"])
    print(
        f"\n1B shape on vllm-cpu: ready in {manifest['server']['ready_s']:.0f} s, "
        f"{summary['throughput']['output_tokens_per_s']:.2f} output tok/s, batch "
        f"{r['batch']:.2f}, run bound {r['run']['output_tokens_per_s_bound']:.1f} tok/s "
        f"({r['run']['bound_by']}), fraction {r['fraction']['run']:.1%} (decode "
        f"{r['fraction']['decode']:.1%})",
        file=sys.stderr,
    )
