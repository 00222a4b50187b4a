"""Structural check of the Grafana dashboards in dashboards/ (no Grafana needed).

Unique panel ids, one datasource variable used everywhere, ``$__rate_interval`` in every
rate/irate/increase, a unit on every panel, defined variables only, no overlapping panels, and
every ``infprof_*`` metric queried is one the collectors export: the exported names come from
running ``TelemetryCollector`` and ``RunMetrics`` on fake data, not from a hand-written list.
The helpers here are reused by tests/integration/test_prometheus.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from profiler.metrics.collector import TelemetryCollector
from profiler.metrics.run_metrics import RunMetrics
from profiler.spec import SloSpec
from profiler.store.record import RequestRecord
from tests.fakes.nvml_exporter_fake import every_metric_latest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
FILES = ("infprof-run.json", "infprof-fleet.json")
RATE_FUNCS = re.compile(r"\b(rate|irate|increase)\s*\(")
METRIC_RE = re.compile(r"\b((?:infprof_|vllm:)[A-Za-z0-9_:]+)")
VAR_RE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}")
BUILTIN_VARS = {
    "__rate_interval",
    "__interval",
    "__range",
    "__interval_ms",
    "__range_s",
    "__range_ms",
}


def load(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARDS / name).read_text())  # type: ignore[no-any-return]


def all_panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in d.get("panels", []):
        yield p
        yield from p.get("panels", [])  # panels inside a collapsed row


def dashboard_queries(d: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel."""
    return [
        (p.get("title", ""), t["expr"])
        for p in all_panels(d)
        for t in p.get("targets", [])
        if t.get("expr")
    ]


def variable_queries(d: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append((v["name"], q))
    return out


def substitute(expr: str, values: dict[str, str], rate_interval: str = "30s") -> str:
    """Replace Grafana variables: ``$__rate_interval`` by ``rate_interval``, others by
    ``values[name]`` (a regex; the dashboards use ``=~`` everywhere)."""

    def rep(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name == "__rate_interval":
            return rate_interval
        return values[name]

    return VAR_RE.sub(rep, expr)


def metric_names(expr: str) -> set[str]:
    return set(METRIC_RE.findall(expr))


def _range_args(expr: str) -> Iterator[str]:
    """The argument text of every rate/irate/increase call."""
    for m in RATE_FUNCS.finditer(expr):
        depth, i = 1, m.end()
        while depth and i < len(expr):
            depth += {"(": 1, ")": -1}.get(expr[i], 0)
            i += 1
        yield expr[m.end() : i - 1]


def exported_infprof_names() -> set[str]:
    """Every sample name the collectors expose, from running them on fake data."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(TelemetryCollector(lambda: every_metric_latest(2), {"hostname": "h"}))
    m = RunMetrics(
        reg,
        run_id="r",
        workload="w",
        model="m",
        hostname="h",
        slo=SloSpec.parse("ttft=1,tpot=1,e2e=1"),
    )
    m.on_target_rate(1.0)
    m.on_client_health(0.001, 0.1, False)
    m.on_send()
    rec = RequestRecord(
        id=1,
        workload="w",
        scenario="s",
        intended_start_s=0.0,
        send_s=0.0,
        first_token_s=0.1,
        last_token_s=0.3,
        end_s=0.3,
        prompt_tokens=5,
        output_tokens=3,
        chunk_times_s=[0.1, 0.2, 0.3],
        chunk_tokens=[1, 1, 1],
    )
    m.on_record(rec)
    return {s.name for fam in reg.collect() for s in fam.samples}


def vllm_metric_names() -> set[str] | None:
    """Names declared in the installed vLLM's Prometheus logger (read as text; vLLM is never
    imported), with the suffixes prometheus_client adds; None when vLLM is not installed."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return None
    src = Path(next(iter(spec.submodule_search_locations))) / "v1" / "metrics" / "loggers.py"
    if not src.exists():
        return None
    base = set(re.findall(r'"(vllm:[a-z_]+)"', src.read_text()))
    return {n + sfx for n in base for sfx in ("", "_total", "_bucket", "_sum", "_count")}


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return {f: load(f) for f in FILES}


def test_files_match_the_generator() -> None:
    res = subprocess.run(
        [sys.executable, str(DASHBOARDS / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr


def test_top_level_model(dashboards: dict[str, dict[str, Any]]) -> None:
    uids = set()
    for name, d in dashboards.items():
        for key in ("uid", "title", "schemaVersion", "version", "time", "templating", "panels"):
            assert key in d, f"{name}: {key}"
        assert d["graphTooltip"] == 1, f"{name}: shared crosshair (one time axis)"
        uids.add(d["uid"])
    assert len(uids) == len(dashboards)


def test_panel_ids_are_unique(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, d in dashboards.items():
        ids = [p["id"] for p in all_panels(d)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        assert all(isinstance(i, int) for i in ids)


def test_one_datasource_variable_used_everywhere(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, d in dashboards.items():
        ds = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
        assert len(ds) == 1 and ds[0]["query"] == "prometheus", name
        ref = "${" + ds[0]["name"] + "}"
        for p in all_panels(d):
            if p["type"] == "row":
                continue
            assert p["datasource"]["uid"] == ref, f"{name}: {p['title']}"
            for t in p["targets"]:
                assert t.get("datasource", p["datasource"])["uid"] == ref, f"{name}: {p['title']}"
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                assert v["datasource"]["uid"] == ref, f"{name}: variable {v['name']}"


def test_required_variables(dashboards: dict[str, dict[str, Any]]) -> None:
    names = {f: {v["name"] for v in d["templating"]["list"]} for f, d in dashboards.items()}
    assert {"datasource", "run_id", "model", "hostname", "gpu"} <= names["infprof-run.json"]
    assert {"datasource", "hostname", "gpu", "model"} <= names["infprof-fleet.json"]


def test_every_rate_uses_rate_interval(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, d in dashboards.items():
        for title, expr in dashboard_queries(d):
            args = list(_range_args(expr))
            for arg in args:
                assert arg.rstrip().endswith("[$__rate_interval]"), f"{name}: {title}: {expr}"
            assert expr.count("[") == len(args), f"{name}: {title}: a range outside rate(): {expr}"


def test_every_panel_has_a_unit(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, d in dashboards.items():
        for p in all_panels(d):
            if p["type"] == "row":
                continue
            assert p["fieldConfig"]["defaults"].get("unit"), f"{name}: {p['title']}"
            assert p["targets"], f"{name}: {p['title']} has no query"
            assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])


def test_only_defined_variables_are_used(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, d in dashboards.items():
        defined = {v["name"] for v in d["templating"]["list"]} | BUILTIN_VARS
        for title, expr in dashboard_queries(d) + variable_queries(d):
            for m in VAR_RE.finditer(expr):
                assert (m.group(1) or m.group(2)) in defined, f"{name}: {title}: {expr}"


def test_panels_do_not_overlap(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, d in dashboards.items():
        cells: dict[tuple[int, int], str] = {}
        for p in d["panels"]:
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24, f"{name}: {p['title']}"
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{name}: {p['title']} overlaps {cells[(x, y)]}"
                    cells[(x, y)] = p["title"]


def test_every_infprof_metric_queried_is_exported(dashboards: dict[str, dict[str, Any]]) -> None:
    exported = exported_infprof_names()
    for name, d in dashboards.items():
        for title, expr in dashboard_queries(d) + variable_queries(d):
            for metric in metric_names(expr):
                if metric.startswith("infprof_"):
                    assert metric in exported, f"{name}: {title}: {metric} is not exported"


def test_every_vllm_metric_queried_exists_in_vllm(dashboards: dict[str, dict[str, Any]]) -> None:
    known = vllm_metric_names()
    if known is None:
        pytest.skip("vllm is not installed; its metric names cannot be checked")
    for name, d in dashboards.items():
        for title, expr in dashboard_queries(d):
            for metric in metric_names(expr):
                if metric.startswith("vllm:"):
                    assert metric in known, f"{name}: {title}: {metric} is not a vLLM metric"


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (scripts/ensure-debian-package.sh installs it)",
)
def test_every_query_is_valid_promql(dashboards: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    values = {"run_id": ".*", "model": ".*", "hostname": ".*", "gpu": ".*"}
    rules = []
    for name, d in dashboards.items():
        for i, (_, expr) in enumerate(dashboard_queries(d)):
            rules.append(
                {
                    "record": f"check:{name.split('.')[0].replace('-', '_')}:{i}",
                    "expr": substitute(expr, values),
                }
            )
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    res = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (scripts/ensure-debian-package.sh installs it)",
)
def test_shipped_prometheus_config_is_valid() -> None:
    res = subprocess.run(
        ["promtool", "check", "config", str(DASHBOARDS / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    jobs = {
        j["job_name"]
        for j in yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())["scrape_configs"]
    }
    assert {"vllm", "infprof-run", "infprof-exporter"} <= jobs


def test_grafana_provisioning_files() -> None:
    dash = yaml.safe_load((DASHBOARDS / "provisioning" / "dashboards" / "infprof.yaml").read_text())
    assert dash["apiVersion"] == 1 and dash["providers"][0]["type"] == "file"
    assert dash["providers"][0]["options"]["path"]
    ds = yaml.safe_load(
        (DASHBOARDS / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    assert ds["apiVersion"] == 1 and ds["datasources"][0]["type"] == "prometheus"
