"""store/schema.py: summary.json, manifest.json, index.json and the plan JSON as typed models.
A round trip through a model leaves a file byte for byte as the writers wrote it; older
layouts are migrated in one place; unknown keys are kept; a wrong value names file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profiler.errors import StorageError
from profiler.store.schema import (
    MIGRATIONS,
    Manifest,
    Plan,
    Summary,
    SweepIndex,
    slo_attainment_of,
)
from tests.fakes.synthetic_runs import make_run, make_sweep


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("schema")
    return make_run(root, "run", n=60), make_sweep(root, configs=1, loads=(1, 4))


@pytest.mark.parametrize("model", [Summary, Manifest, SweepIndex])
def test_round_trip_is_byte_for_byte(
    model: type[Summary | Manifest | SweepIndex], dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    run, sweep = dirs
    src = (sweep if model is SweepIndex else run) / model.FILE
    doc = model.load(src)
    assert doc.to_dict() == json.loads(src.read_text())
    doc.save(tmp_path / model.FILE)
    assert (tmp_path / model.FILE).read_text() == src.read_text()


def test_typed_sections_read_what_the_writers_wrote(dirs: tuple[Path, Path]) -> None:
    run, sweep = dirs
    raw = json.loads((run / "summary.json").read_text())
    s = Summary.load(run)
    assert s.requests is not None and s.requests.total == raw["requests"]["total"] == 60
    assert s.lat("ttft_s").p50 == raw["latency"]["ttft_s"]["p50"]
    assert s.attainment().fraction == raw["slo_attainment"]["fraction"]
    assert s.gpu is not None and s.gpu.scope is not None and s.gpu.scope.gpus == ["0", "1"]
    m = Manifest.load(run)
    assert m.ended == "completed" and m.recorded_spec().workload.name == "synthetic"  # type: ignore[union-attr]
    index = SweepIndex.load(sweep)
    assert [p.id for p in index.done_points()] == [
        p["id"] for p in json.loads((sweep / "index.json").read_text())["points"]
    ]


def test_plan_round_trip(tmp_path: Path) -> None:
    from profiler.capacity.planner import plan
    from profiler.capacity.result import PlanRequest

    result = plan(PlanRequest(model="llama-3.1-8b", gpus=["h100"], target_rps=10))
    data = result.model_dump(mode="json")
    Plan.parse(data, "plan").save(tmp_path / "plan.json")
    assert json.loads((tmp_path / "plan.json").read_text()) == data
    old = {**data, "schema_version": 1}
    old["configurations"] = [
        {
            ("tokens_per_s_per_gpu" if k == "demand_tokens_per_s_per_gpu" else k): v
            for k, v in c.items()
        }
        for c in data["configurations"]
    ]
    migrated = Plan.parse(old, "old plan")
    assert migrated.configurations == data["configurations"]


def test_unknown_keys_are_kept(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """A newer file read by this code: keys it does not know pass through untouched."""
    run, _ = dirs
    raw = json.loads((run / "summary.json").read_text())
    raw["from_the_future"] = {"x": [1, 2]}
    raw["throughput"]["new_rate_per_s"] = 3.5
    (tmp_path / "summary.json").write_text(json.dumps(raw))
    s = Summary.load(tmp_path)
    assert s.to_dict()["from_the_future"] == {"x": [1, 2]}
    s.save(tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text()) == raw


def test_an_old_summary_is_migrated(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = dirs
    raw = json.loads((run / "summary.json").read_text())
    old = {k: v for k, v in raw.items() if k not in ("slo_attainment", "schema_version")}
    old["goodput"] = {
        "slo": {"ttft_s": 0.1},
        "requests_per_s": 2.5,
        "fraction": 0.625,
        "met": 5,
        "meets_target": False,
    }
    old["tokens"] = {k: v for k, v in raw["tokens"].items() if not k.endswith("_mean_per_request")}
    (tmp_path / "summary.json").write_text(json.dumps(old))
    s = Summary.load(tmp_path)
    assert s.schema_version == 1 and "goodput" not in s.to_dict()
    att = s.attainment()
    assert att.fraction == 0.625 and att.headline == "from_send" and att.from_intended is None
    assert att.from_send is not None and att.from_send.requests_per_s == 2.5
    assert s.tokens is not None and s.tokens.prompt_mean_per_request == raw["tokens"]["prompt"] / 60
    assert slo_attainment_of(old)["fraction"] == 0.625  # the dict readers' view: same step
    s.save(tmp_path)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert "goodput" not in saved and saved["slo_attainment"]["met"] == 5


def test_an_old_index_is_migrated(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    _, sweep = dirs
    raw = json.loads((sweep / "index.json").read_text())
    for p in raw["points"]:
        p["summary"]["goodput_fraction"] = p["summary"].pop("slo_attainment")
        p["summary"]["goodput_rps"] = p["summary"].pop("slo_met_rps")
    raw["searches"] = [{"config_id": "c0", "workload": "w", "goodput_rps_at_best": 2.9}]
    del raw["knees"]
    (tmp_path / "index.json").write_text(json.dumps(raw))
    index = SweepIndex.load(tmp_path)
    for p in index.points:
        assert (
            p.summary is not None
            and "slo_attainment" in p.summary
            and "goodput_rps" not in p.summary
        )
    assert index.searches[0]["slo_met_rps_at_best"] == 2.9 and index.knees == []


def test_migrations_are_one_table_by_version() -> None:
    assert set(MIGRATIONS) == {"summary", "manifest", "index", "plan"}
    for steps in MIGRATIONS.values():
        assert [v for v, _ in steps] == sorted(v for v, _ in steps)


def test_a_manifest_with_an_unknown_ended_is_refused(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    run, _ = dirs
    raw = json.loads((run / "manifest.json").read_text())
    raw["ended"] = "exploded"
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(StorageError) as e:
        Manifest.load(tmp_path)
    line = e.value.one_line()
    assert str(tmp_path / "manifest.json") in line and "field ended" in line and "completed" in line
    m = Manifest.load(run)
    with pytest.raises(ValueError, match="ended"):
        m.end("exploded", None, 0.0)  # type: ignore[arg-type]


def test_missing_and_malformed_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="summary.json does not exist"):
        Summary.load(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(StorageError, match="index.json is not valid JSON"):
        SweepIndex.load(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"points": [{"id": "p", "run_dir": 3}]}))
    with pytest.raises(StorageError, match=r"field points\.0\.run_dir"):
        SweepIndex.load(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"requests": {"total": "many"}}))
    with pytest.raises(StorageError, match=r"summary.json: field requests\.total"):
        Summary.load(tmp_path)


def test_files_are_read_by_attribute_only() -> None:
    """The models have no dict-style access (``Part.get``, ``Manifest[key] = ...``): a
    reader names the field, so a typo is a type error, not a silent None."""
    from profiler.store.schema import Manifest, Part

    assert not hasattr(Part, "get") and not hasattr(Manifest, "__setitem__")
    m = Manifest()
    m.set(metrics_url="http://127.0.0.1:9400/metrics")
    m.record_ray("ray://head:10001", [{"name": "node-0", "gpus": 2}])
    assert m.metrics_url == "http://127.0.0.1:9400/metrics"
    assert m.ray is not None and m.ray.address == "ray://head:10001"
    assert m.to_dict()["ray"] == {
        "address": "ray://head:10001",
        "nodes": [{"name": "node-0", "gpus": 2}],
    }
