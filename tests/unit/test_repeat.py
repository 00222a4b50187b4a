"""``infprof run --repeat``: N runs of one spec under one parent directory, one launched server
for all of them, and the figures across repeats (also used by ``infprof sweep --repeat``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from profiler.analysis.repeats import across_repeats, median_figures, rep_id
from profiler.errors import SpecError
from profiler.repeat import run_repeats
from profiler.run_flags import RunOptions
from profiler.run_options import build_run_spec
from profiler.run_server import probe_host
from profiler.spec import ServeSpec
from profiler.store.rundir import read_records
from tests.unit.test_sweep import ProcessServer


class CountingServer(ProcessServer):
    """The fake OpenAI server as a launched server process; counts its starts."""

    starts = 0

    def __init__(self, serve: ServeSpec, log_path: Path) -> None:
        super().__init__(serve, log_path)
        self.argv = ["fake-vllm", "--model", serve.name]

    def start(self) -> None:
        CountingServer.starts += 1
        self.log_path.write_text("fake server\n")
        super().start()


def _spec(tmp_path: Path, **kw: Any) -> Any:
    opts = RunOptions(
        model="fake-model",
        num_requests=10,
        concurrency=2,
        output_len=8,
        sample_interval=0.1,
        out=tmp_path,
        run_id="rr",
        **kw,
    )
    return build_run_spec(probe_host(), opts)


def test_repeats_share_one_launched_server(tmp_path: Path) -> None:
    CountingServer.starts = 0
    spec = _spec(tmp_path)
    assert spec.serve is not None
    res = run_repeats(spec, 3, server_factory=CountingServer)
    assert CountingServer.starts == 1  # one server for every repeat
    assert res.run_dir == tmp_path / "rr"
    assert [r.run_dir.name for r in res.results] == ["rep-01", "rep-02", "rep-03"]
    for i, r in enumerate(res.results, start=1):
        assert r.ended == "completed"
        assert len(read_records(r.run_dir)) == 10
        assert json.loads((r.run_dir / "summary.json").read_text())["requests"]["ok"] == 10
        manifest = json.loads((r.run_dir / "manifest.json").read_text())
        assert manifest["ended"] == "completed"
        assert manifest["repeat"]["index"] == i and manifest["repeat"]["of"] == 3
        assert manifest["server"]["argv"] == ["fake-vllm", "--model", "fake-model"]
        assert manifest["repeat"]["serve"]["model"] == "fake-model"
        # the shared server's processes are sampled as the server's in every repeat
        samples = pq.read_table(r.run_dir / "samples.parquet").to_pylist()
        assert any(s["source"] == "host" and s["device"] == "server" for s in samples)
    data = json.loads((tmp_path / "rr" / "repeats.json").read_text())
    assert data == res.data
    assert data["status"] == "complete" and data["repeat"] == 3
    assert [r["run_dir"] for r in data["runs"]] == ["rep-01", "rep-02", "rep-03"]
    assert data["server"]["log"] == "server.log" and (tmp_path / "rr" / "server.log").exists()
    ttft = [r["summary"]["ttft_p50_s"] for r in data["runs"]]
    fig = data["across_repeats"]["ttft_p50_s"]
    assert fig["n"] == 3 and fig["median"] == pytest.approx(sorted(ttft)[1])
    assert fig["min"] == min(ttft) and fig["max"] == max(ttft)


def test_an_existing_parent_is_refused_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "rr").mkdir()
    CountingServer.starts = 0
    with pytest.raises(SpecError, match="already exists"):
        run_repeats(_spec(tmp_path), 2, server_factory=CountingServer)
    assert CountingServer.starts == 0


def test_across_repeats_and_median_figures() -> None:
    reps = [
        {"ttft_p50_s": 0.1, "requests_per_s": 10.0, "client_saturated": False, "x": None},
        {"ttft_p50_s": 0.3, "requests_per_s": 12.0, "client_saturated": True, "x": None},
        {"ttft_p50_s": 0.2, "requests_per_s": None, "client_saturated": False, "x": None},
    ]
    fig = across_repeats(reps)
    assert fig["ttft_p50_s"] == {
        "n": 3,
        "median": pytest.approx(0.2),
        "min": 0.1,
        "max": 0.3,
        "spread": pytest.approx(0.2),
        "rel_spread": pytest.approx(1.0),
    }
    assert fig["requests_per_s"]["n"] == 2 and fig["requests_per_s"]["median"] == 11.0
    assert "client_saturated" not in fig and "x" not in fig
    med = median_figures(reps)
    assert med["ttft_p50_s"] == pytest.approx(0.2) and med["requests_per_s"] == 11.0
    assert med["client_saturated"] is None  # the repeats disagree: unknown, not a guess
    assert med["x"] is None
    assert median_figures(reps[:1])["client_saturated"] is False
    assert [rep_id(1, 3), rep_id(12, 12), rep_id(7, 120)] == ["rep-01", "rep-12", "rep-007"]
