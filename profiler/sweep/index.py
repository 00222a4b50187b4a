"""``index.json`` of a sweep directory: every point with its configuration, load, workload,
run directory, status and key numbers; written atomically after each point so an interrupted
sweep resumes without redoing finished points.

Layout::

    <sweep>/sweep.json      the SweepSpec (what was asked)
    <sweep>/index.json      {"schema_version", "sweep_id", "status", "configs": [...],
                             "points": [...], "searches": [...], "knees": [...]}
    <sweep>/runs/<point>/   one run directory per point (with --repeat N: runs/<point>/rep-01..,
                            each repeat under the point's "repeats", their median as its
                            "summary", their spread as "across_repeats")
    <sweep>/configs/<cN>/server.log
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from profiler.store import schema
from profiler.store.schema import Summary

INDEX_SCHEMA_VERSION = schema.SweepIndex.CURRENT
INDEX = schema.SweepIndex.FILE
SPEC = "sweep.json"


def key_numbers(summary: Summary | dict[str, Any]) -> dict[str, Any]:
    """The numbers of a run's summary.json that a sweep table and its plots need (flat)."""
    s = summary if isinstance(summary, Summary) else Summary.of(summary)
    thr, req, gpu = s.throughput or schema.Throughput(), s.requests or schema.Requests(), s.gpu
    out: dict[str, Any] = {
        "requests_total": req.total,
        "requests_ok": req.ok,
        "error_rate": s.error_rate,
        "requests_per_s": thr.requests_per_s,
        "output_tokens_per_s": thr.output_tokens_per_s,
        "total_tokens_per_s": thr.total_tokens_per_s,
        "window_s": s.window.seconds if s.window else None,
    }
    for metric in ("ttft", "tpot", "itl", "e2e"):
        dist = s.lat(f"{metric}_s")
        for q in ("p50", "p90", "p99"):
            out[f"{metric}_{q}_s"] = getattr(dist, q)
    # SLO attainment's headline figures (from the intended start for an open loop)
    att = s.attainment()
    out["slo_met_rps"] = att.requests_per_s
    out["slo_attainment"] = att.fraction
    out["meets_target"] = att.meets_target
    g = gpu or schema.Gpu()
    out["gpu_available"] = g.available
    out["gpu_utilization_mean_ratio"] = g.utilization_mean_ratio
    out["gpu_memory_used_peak_bytes"] = g.memory_used_peak_bytes
    out["gpu_power_mean_watts"] = g.power_mean_watts
    out["gpu_count"] = g.count
    out["joules_per_output_token"] = s.energy.joules_per_output_token if s.energy else None
    out["nvlink_tx_bytes_per_output_token"] = g.nvlink_tx_bytes_per_output_token
    out["pcie_tx_bytes_per_output_token"] = g.pcie_tx_bytes_per_output_token
    out["client_saturated"] = s.client.saturated if s.client else None
    return out


class LiveIndex:
    """The index while the sweep runs (a dict in index.json's layout); ``save()`` checks it
    against ``schema.SweepIndex`` and replaces index.json atomically."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def load_or_new(cls, sweep_dir: Path, sweep_id: str) -> LiveIndex:
        path = sweep_dir / INDEX
        if path.exists():
            return cls(path, read_index(sweep_dir))
        data = {
            "schema_version": INDEX_SCHEMA_VERSION,
            "sweep_id": sweep_id,
            "status": "running",
            "created_at": time.time(),
            "updated_at": time.time(),
            "configs": [],
            "points": [],
            "searches": [],
            "knees": [],
        }
        return cls(path, data)

    @property
    def points(self) -> list[dict[str, Any]]:
        return self.data["points"]  # type: ignore[no-any-return]

    def find(self, pid: str) -> dict[str, Any] | None:
        return next((p for p in self.points if p["id"] == pid), None)

    def record_point(self, point: dict[str, Any]) -> None:
        """Add or replace the point with the same id, and save."""
        self.data["points"] = [p for p in self.points if p["id"] != point["id"]] + [point]
        self.save()

    def set_config(self, entry: dict[str, Any]) -> None:
        configs = [c for c in self.data["configs"] if c["id"] != entry["id"]]
        configs.append(entry)
        configs.sort(key=lambda c: int(str(c["id"]).lstrip("c") or 0))
        self.data["configs"] = configs
        self.save()

    def set_search(self, entry: dict[str, Any]) -> None:
        key = (entry["config_id"], entry["workload"])
        self.data["searches"] = [
            s for s in self.data["searches"] if (s["config_id"], s["workload"]) != key
        ] + [entry]
        self.save()

    def set_status(self, status: str) -> None:
        self.data["status"] = status
        self.save()

    def save(self) -> None:
        """Checked against ``schema.SweepIndex`` and written atomically."""
        self.data["updated_at"] = time.time()
        schema.SweepIndex.parse(self.data, self.path).save(self.path)


def read_index(sweep_dir: Path) -> dict[str, Any]:
    """index.json as today's layout (``schema.SweepIndex``, older indexes migrated)."""
    return schema.SweepIndex.load(sweep_dir / INDEX).to_dict()
