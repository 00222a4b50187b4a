"""Disaggregated prefill/decode: separate pools with their own layouts and GPU counts, their
ratio, the KV transfer between them and the link that carries it, compared with aggregated;
a decode-only figure needs no --cached-prefix-len trick."""

from __future__ import annotations

import pytest

from profiler.capacity.planner import plan
from profiler.capacity.result import PlanRequest
from profiler.spec import SloSpec


def _plan(**kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "model": "deepseek-r1",
        "gpus": ["h800"],
        "input_len": 1024,
        "output_len": 4096,
        "slo": SloSpec(ttft_s=2.0, tpot_s=0.05),
        "disaggregated": True,
        "scaling": False,
    }
    args.update(kw)
    return plan(PlanRequest.model_validate(args))


def test_pools_ratio_and_kv_transfer() -> None:
    r = _plan(target_rps=50.0)
    assert r.disaggregated and len(r.disaggregated) == 1
    d = r.disaggregated[0]
    p, dec = d.prefill, d.decode
    assert p.role == "prefill" and dec.role == "decode"
    assert d.gpus_total == p.gpus_total + dec.gpus_total
    assert d.decode_to_prefill_ratio == pytest.approx(dec.gpus_total / p.gpus_total)
    assert (
        p.replicas * p.max_rps_per_replica >= 50.0
        and dec.replicas * dec.max_rps_per_replica >= 50.0
    )
    # the prompt's KV: 1,024 tokens x 70,272 B (MLA latent, BF16) per request
    assert d.kv_transfer.bytes_per_request == pytest.approx(1024 * 70_272)
    assert d.kv_transfer.interconnect == "ib-400"  # separate H800 nodes: RDMA over the NICs
    assert d.kv_transfer.gb_per_s_per_prefill_gpu > 0
    assert dec.tpot_s is not None and dec.tpot_s <= 0.05
    assert p.ttft_s is not None and p.ttft_s <= 2.0 + 1e-9
    # the comparison with aggregated serving on the same GPU
    agg = next(c for c in r.configurations if c.best_for_gpu)
    assert d.aggregated_gpus_total == agg.gpus_total


def test_kv_moves_over_nvlink_inside_an_nvl72_rack() -> None:
    r = _plan(gpus=["gb200"], target_rps=5.0, max_gpus_per_replica=32)
    d = r.disaggregated[0]  # type: ignore[index]
    assert d.prefill.gpus_per_replica + d.decode.gpus_per_replica <= 72
    assert d.kv_transfer.interconnect == "nvlink-1800"


def test_decode_only_capacity_needs_no_cached_prefix_trick() -> None:
    # the decode pool does no prefill work: its capacity is the same whatever part of the
    # prompt would be prefix-cached (the aggregated plan's is not)
    a = _plan(layouts=["dp16xep16"])
    b = _plan(layouts=["dp16xep16"], cached_prefix_len=1000)
    assert a.disaggregated and b.disaggregated
    assert a.disaggregated[0].decode.capacity_tokens_per_s_per_gpu == pytest.approx(
        b.disaggregated[0].decode.capacity_tokens_per_s_per_gpu
    )
    assert a.configurations[0].capacity_tokens_per_s_per_gpu < (
        b.configurations[0].capacity_tokens_per_s_per_gpu
    )


def test_disaggregation_beats_aggregated_wide_ep_for_long_reasoning() -> None:
    # aggregated attention-DP ranks wait for the rank holding a prefill chunk at every MoE
    # layer; separate pools avoid it (lmsys.org/blog/2025-05-05-large-scale-ep)
    r = _plan(target_rps=100.0)
    d = r.disaggregated[0]  # type: ignore[index]
    assert d.aggregated_gpus_total is not None and d.gpus_total < d.aggregated_gpus_total


def test_the_cli_prints_the_comparison() -> None:
    from click.testing import CliRunner

    from profiler.cli.plan import command

    out = CliRunner().invoke(
        command,
        [
            "--model",
            "deepseek-r1",
            "--gpu",
            "h800",
            "--input-len",
            "1024",
            "--output-len",
            "2048",
            "--target-rps",
            "20",
            "--slo",
            "ttft=2,tpot=0.05",
            "--disaggregated",
            "--no-scaling",
        ],
    )
    assert out.exit_code == 0, out.output
    assert "aggregated vs disaggregated" in out.output and "decode/prefill" in out.output
