"""summary.json: percentiles consistent with the records, SLO attainment, window, contract keys."""

from __future__ import annotations

import numpy as np
import pytest

from profiler.analysis.request_columns import RequestColumns
from profiler.analysis.request_summary import summarize_requests
from profiler.sketches import Distribution
from profiler.spec import SloSpec
from profiler.store.record import RequestRecord
from tests.fakes.synthetic_runs import run_of_records, streamed_record


def _records(n: int = 50) -> list[RequestRecord]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        send = i * 0.1
        ttft = float(rng.uniform(0.02, 0.2))
        gaps = rng.uniform(0.005, 0.02, size=9)
        times = [send + ttft, *(send + ttft + np.cumsum(gaps))]
        out.append(streamed_record(i, send, times, [1] * 10, prompt_tokens=16, output_tokens=10))
    out.append(
        RequestRecord(
            id=n,
            workload="w",
            scenario="s",
            intended_start_s=0.5,
            send_s=0.5,
            end_s=0.6,
            outcome="error",
            error="HTTP 500",
        )
    )
    return out


def test_contract_keys_and_consistency() -> None:
    recs = _records()
    s = summarize_requests(RequestColumns.from_records(recs), run_id="r1")
    for key in ("schema_version", "run_id", "requests", "throughput", "latency", "window"):
        assert key in s
    assert s["requests"] == {"total": 51, "ok": 50, "error": 1, "timeout": 0, "cancelled": 0}
    ttfts = [r.ttft_s for r in recs if r.outcome == "ok"]
    assert s["latency"]["ttft_s"] == Distribution.of(ttfts).to_dict()
    assert s["latency"]["ttft_s"]["p50"] == pytest.approx(float(np.percentile(ttfts, 50)))
    tpots = [r.tpot_s for r in recs if r.outcome == "ok"]
    assert s["latency"]["tpot_s"]["mean"] == pytest.approx(float(np.mean(tpots)))
    itl = [x for r in recs for x in r.itl_shares()]
    assert s["latency"]["itl_s"]["count"] == len(itl)
    assert s["latency"]["itl_s"]["p99"] == pytest.approx(float(np.percentile(itl, 99)))
    secs = s["window"]["seconds"]
    assert s["throughput"]["output_tokens_per_s"] == pytest.approx(500 / secs)
    assert s["error_rate"] == pytest.approx(1 / 51)


def test_slo_attainment_counts_failures_as_misses() -> None:
    recs = _records()
    slo = SloSpec(ttft_s=0.1)
    s = summarize_requests(RequestColumns.from_records(recs), run_id="r", slo=slo)
    met = sum(1 for r in recs if r.outcome == "ok" and r.ttft_s <= 0.1)
    att = s["slo_attainment"]
    assert "goodput" not in s
    assert att["met"] == met
    assert att["fraction"] == pytest.approx(met / 51)
    assert att["requests_per_s"] == pytest.approx(met / s["window"]["seconds"])
    # a closed loop has only the from-send figure, and it is the headline
    assert att["headline"] == "from_send" and att["from_intended"] is None
    assert att["from_send"]["fraction"] == att["fraction"]


def _queued(n: int = 20) -> list[RequestRecord]:
    """An open loop capped in flight: every other request queued 0.3 s for a slot."""
    out = []
    for i in range(n):
        intended = i * 0.1
        wait = 0.3 if i % 2 else 0.0
        send = intended + 0.001 + wait
        out.append(
            streamed_record(
                i,
                send,
                [send + 0.05, send + 0.1],
                [1, 1],
                intended_start_s=intended,
                prompt_tokens=4,
                output_tokens=2,
                queue_wait_s=wait,
            )
        )
    return out


def test_open_loop_slo_attainment_from_intended_start_and_from_send() -> None:
    recs = _queued()
    slo = SloSpec(ttft_s=0.2, target_fraction=0.9)
    s = summarize_requests(RequestColumns.from_records(recs), run_id="r", slo=slo, open_loop=True)
    att = s["slo_attainment"]
    secs = s["window"]["seconds"]
    assert att["from_send"]["fraction"] == 1.0 and att["from_send"]["meets_target"] is True
    assert att["from_send"]["requests_per_s"] == pytest.approx(20 / secs)
    # from the intended start the queued half waited 0.351 s for its first token
    assert att["from_intended"]["fraction"] == 0.5
    assert att["from_intended"]["met"] == 10
    assert att["from_intended"]["requests_per_s"] == pytest.approx(10 / secs)
    assert att["from_intended"]["meets_target"] is False
    assert att["headline"] == "from_intended"
    assert att["fraction"] == 0.5 and att["meets_target"] is False
    # the slot wait is its own distribution, and no part of the client's dispatch lag
    assert s["queue_wait_s"]["count"] == 20
    assert s["queue_wait_s"]["max"] == pytest.approx(0.3)
    assert s["dispatch_lag_s"]["max"] == pytest.approx(0.001)
    assert recs[1].dispatch_lag_s == pytest.approx(0.001)


def test_queue_wait_survives_compaction_and_old_runs_still_read(tmp_path) -> None:
    import pyarrow.parquet as pq

    path = _run_dir(tmp_path, _queued(), compact=True)
    s = summarize_requests(RequestColumns.from_run_dir(path), run_id="x")
    assert s["queue_wait_s"]["max"] == pytest.approx(0.3)
    assert s["dispatch_lag_s"]["max"] == pytest.approx(0.001)
    # a run directory written before queue_wait_s existed: the wait was dispatch lag then
    t = pq.read_table(path / "requests.parquet")
    pq.write_table(t.drop(["queue_wait_s"]), path / "requests.parquet")
    old = summarize_requests(RequestColumns.from_run_dir(path), run_id="x")
    assert old["queue_wait_s"]["count"] == 0
    assert old["dispatch_lag_s"]["max"] == pytest.approx(0.301)
    from profiler.store.rundir import read_records

    assert all(r.queue_wait_s is None for r in read_records(path))


def test_warmup_excludes_early_requests() -> None:
    recs = _records()
    s = summarize_requests(RequestColumns.from_records(recs), run_id="r", warmup_s=1.0)
    assert s["window"]["start"] == pytest.approx(1.0)
    assert s["window"]["excluded_requests"] > 0
    assert s["requests"]["total"] < 51


def test_empty_run() -> None:
    s = summarize_requests(RequestColumns.from_records([]), run_id="empty")
    assert s["requests"]["total"] == 0
    assert s["latency"]["ttft_s"]["count"] == 0
    assert s["throughput"]["requests_per_s"] is None


def test_slo_parse_errors_are_spec_errors() -> None:
    from profiler.errors import SpecError

    assert SloSpec.parse("ttft=0.5,tpot=0.05").tpot_s == 0.05
    with pytest.raises(SpecError):
        SloSpec.parse("latency=1")
    with pytest.raises(SpecError):
        SloSpec.parse("ttft=fast")


def test_columns_from_parquet_match_records(tmp_path) -> None:
    recs = _records()
    path = run_of_records(tmp_path, recs, "p")
    a = summarize_requests(RequestColumns.from_records(recs), run_id="x")
    b = summarize_requests(RequestColumns.from_run_dir(path), run_id="x")
    assert a == b


def test_parquet_itl_paths_agree(tmp_path) -> None:
    """Layout-based selection, id-based selection and multi-token chunks give one answer."""
    import pyarrow.parquet as pq

    recs = _records()
    recs[3].chunk_tokens = [1, 2, 3, 1, 1, 1, 1, 1, 1, 1]
    recs[3].output_tokens = sum(recs[3].chunk_tokens)
    path = run_of_records(tmp_path, recs, "q")
    want = summarize_requests(RequestColumns.from_records(recs), run_id="x", warmup_s=1.0)
    got = summarize_requests(RequestColumns.from_run_dir(path), run_id="x", warmup_s=1.0)
    assert got["latency"]["itl_s"] == want["latency"]["itl_s"]
    # break the layout invariant: the id column must then be used
    t = pq.read_table(path / "requests.parquet")
    t = t.set_column(
        t.schema.get_field_index("chunks"),
        "chunks",
        pq.read_table(path / "requests.parquet").column("chunks").cast("int64"),
    )
    import pyarrow as pa
    import pyarrow.compute as pc

    t = t.set_column(
        t.schema.get_field_index("chunks"),
        "chunks",
        pc.add(t.column("chunks"), pa.scalar(1, pa.int64())),
    )
    pq.write_table(t, path / "requests.parquet")
    got2 = summarize_requests(RequestColumns.from_run_dir(path), run_id="x", warmup_s=1.0)
    assert got2["latency"]["itl_s"] == want["latency"]["itl_s"]


def _run_dir(tmp_path, recs: list[RequestRecord], *, compact: bool):
    return run_of_records(tmp_path, recs, "compact" if compact else "journal", compact=compact)


def _spec(tokenizer: str | None):
    from profiler.spec import ArrivalSpec, EndpointSpec, RunSpec, Scenario, WorkloadSpec

    return RunSpec(
        workload=WorkloadSpec(name="w", scenarios=[Scenario()]),
        arrival=ArrivalSpec(kind="concurrency", concurrency=1),
        num_requests=1,
        endpoint=EndpointSpec(url="http://127.0.0.1:1"),
        tokenizer=tokenizer,
    )


@pytest.mark.parametrize("compact", [True, False])
def test_client_token_counting(tmp_path, compact: bool) -> None:
    from profiler.analysis.summary_json import summarize_run

    def counting(recs: list[RequestRecord], tokenizer: str | None, sub: str) -> object:
        (tmp_path / sub).mkdir()
        path = _run_dir(tmp_path / sub, recs, compact=compact)
        s = summarize_run(path, spec=_spec(tokenizer), health={"saturated": False})
        assert s["client"]["saturated"] is False  # the health is kept beside it
        return s["client"]["token_counting"]

    recs = _records()
    recs[-1].tokens_estimated = True  # an error record: not counted either way
    assert counting(recs, "/m/tokenizer.json", "a") == "usage"
    recs[3].tokens_estimated = True
    assert counting(recs, "/m/tokenizer.json", "b") == "tokenizer"
    assert counting(recs, None, "c") == "chunks"
    assert counting([recs[-1]], None, "d") is None  # no ok request
