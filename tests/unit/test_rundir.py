"""Run directory: journals survive a kill (truncated tail), compaction round-trips records."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiler.errors import SpecError, StorageError
from profiler.store.record import RequestRecord
from profiler.store.rundir import RunDir, check_run_id, read_records, read_samples
from profiler.telemetry.sample import Sample


def _rec(i: int, n: int = 1) -> RequestRecord:
    return RequestRecord(
        id=i,
        workload="w",
        scenario="s",
        intended_start_s=float(i),
        send_s=float(i),
        first_token_s=i + 0.1,
        last_token_s=i + 0.3,
        end_s=i + 0.3,
        output_tokens=3 * n,
        n=n,
        chunk_times_s=[i + 0.1, i + 0.2, i + 0.3] * n,
        chunk_tokens=[1, 1, 1] * n,
        chunk_choice=[0, 0, 0, 1, 1, 1] if n == 2 else [],
    )


def test_compaction_round_trip(tmp_path: Path) -> None:
    rd = RunDir.create(tmp_path, "r1")
    j = rd.request_journal()
    recs = [_rec(i) for i in range(10)] + [_rec(10, n=2)]
    for r in recs:
        j.append(r.to_journal())
    j.close()
    sj = rd.sample_journal()
    sj.append(Sample(0.5, "host", "", "cpu_utilization_ratio", 0.25)._asdict())
    sj.append(Sample(0.5, "nvml", "0", "power_watts", None, "GPU is lost")._asdict())
    sj.close()
    rd.compact()
    back = read_records(rd.path)
    assert [r.id for r in back] == [r.id for r in recs]
    assert back[3].chunk_times_s == recs[3].chunk_times_s
    assert back[10].chunk_choice == recs[10].chunk_choice
    assert back[10].itl_gaps() == recs[10].itl_gaps()
    samples = read_samples(rd.path)
    assert samples[1].error == "GPU is lost" and samples[1].value is None


def test_truncated_journal_tail_is_skipped(tmp_path: Path) -> None:
    rd = RunDir.create(tmp_path, "r2")
    j = rd.request_journal()
    for i in range(5):
        j.append(_rec(i).to_journal())
    j.close()
    with open(rd.file("requests.jsonl"), "a") as f:
        f.write('{"id": 99, "workload": "w"')  # the process died mid-write
    assert [r.id for r in read_records(rd.path)] == [0, 1, 2, 3, 4]


def test_journal_flushes_in_batches_without_close(tmp_path: Path) -> None:
    rd = RunDir.create(tmp_path, "r3")
    j = rd.request_journal()
    for i in range(40):  # more than one batch
        j.append(_rec(i).to_journal())
    # not closed: what a SIGKILL leaves behind
    assert len(read_records(rd.path)) >= 32


@pytest.mark.parametrize("bad", ["../escape", "a/b", "", ".", "..", "x" * 200, "/abs"])
def test_run_ids_cannot_escape(bad: str) -> None:
    with pytest.raises(SpecError):
        check_run_id(bad)


def test_existing_run_dir_refused(tmp_path: Path) -> None:
    RunDir.create(tmp_path, "same")
    with pytest.raises(SpecError):
        RunDir.create(tmp_path, "same")


def test_unwritable_out_dir() -> None:
    # /proc refuses new directories even to root
    with pytest.raises(StorageError):
        RunDir.create(Path("/proc/infprof-test"), "r")


def test_unwritable_out_dir_as_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StorageError):
        RunDir.create(f, "r")


def test_itl_parquet_gaps_restart_at_every_request_and_sample(tmp_path: Path) -> None:
    """gap_s is the time since the previous chunk of the same request and sample; a request's
    (or, with n > 1, a sample's) first chunk has no gap; a record without chunks adds no row."""
    import pyarrow.parquet as pq

    from profiler.store.parquet import write_itl_parquet

    empty = RequestRecord(id=9, workload="w", scenario="s", intended_start_s=0.0)
    one = _rec(1)
    two = _rec(2, n=2)
    two.chunk_times_s = [2.1, 2.15, 2.3, 2.4, 2.5, 2.7]
    two.chunk_choice = [0, 1, 0, 1, 0, 1]
    write_itl_parquet(tmp_path / "itl.parquet", [one, empty, two])
    t = pq.read_table(tmp_path / "itl.parquet").to_pydict()
    assert t["request_id"] == [1, 1, 1, 2, 2, 2, 2, 2, 2]
    assert t["index"] == [0, 1, 2, 0, 1, 2, 3, 4, 5]
    assert t["choice"] == [0, 0, 0, 0, 1, 0, 1, 0, 1]
    want = [None, 0.1, 0.1, None, None, 0.2, 0.25, 0.2, 0.3]
    for got, exp in zip(t["gap_s"], want, strict=True):
        assert (got is None and exp is None) or got == pytest.approx(exp)


def test_journal_round_trips_floats_and_non_finite_values(tmp_path: Path) -> None:
    from profiler.store.journal import Journal, read_journal

    j = Journal(tmp_path / "j.jsonl")
    rows = [{"a": 1e-5, "b": 0.1 + 0.2, "c": float("inf"), "p": str(tmp_path), "i": 7}]
    j.append(rows[0])
    j.close()
    back = list(read_journal(tmp_path / "j.jsonl"))
    assert back[0]["a"] == 1e-5 and back[0]["b"] == 0.1 + 0.2 and back[0]["c"] == float("inf")
    assert back[0]["p"] == str(tmp_path) and back[0]["i"] == 7
