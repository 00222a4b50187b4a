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

import json
import time
from pathlib import Path
from typing import Any

from profiler.analysis.legacy import key_numbers_of, search_of, slo_attainment_of
from profiler.errors import StorageError
from profiler.store.nested import dig as _get
from profiler.store.rundir import write_json_atomic

INDEX_SCHEMA_VERSION = 1
INDEX = "index.json"
SPEC = "sweep.json"


def key_numbers(summary: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a run's summary.json that a sweep table and its plots need (flat)."""
    lat = summary.get("latency") or {}
    out: dict[str, Any] = {
        "requests_total": _get(summary, "requests", "total"),
        "requests_ok": _get(summary, "requests", "ok"),
        "error_rate": summary.get("error_rate"),
        "requests_per_s": _get(summary, "throughput", "requests_per_s"),
        "output_tokens_per_s": _get(summary, "throughput", "output_tokens_per_s"),
        "total_tokens_per_s": _get(summary, "throughput", "total_tokens_per_s"),
        "window_s": _get(summary, "window", "seconds"),
    }
    for metric in ("ttft", "tpot", "itl", "e2e"):
        for q in ("p50", "p90", "p99"):
            out[f"{metric}_{q}_s"] = _get(lat, f"{metric}_s", q)
    # SLO attainment's headline figures (from the intended start for an open loop)
    att = slo_attainment_of(summary)
    out["slo_met_rps"] = att.get("requests_per_s")
    out["slo_attainment"] = att.get("fraction")
    out["meets_target"] = att.get("meets_target")
    gpu = summary.get("gpu") or {}
    out["gpu_available"] = gpu.get("available")
    out["gpu_utilization_mean_ratio"] = gpu.get("utilization_mean_ratio")
    out["gpu_memory_used_peak_bytes"] = gpu.get("memory_used_peak_bytes")
    out["gpu_power_mean_watts"] = gpu.get("power_mean_watts")
    out["gpu_count"] = gpu.get("count")
    out["joules_per_output_token"] = _get(summary, "energy", "joules_per_output_token")
    out["nvlink_tx_bytes_per_output_token"] = gpu.get("nvlink_tx_bytes_per_output_token")
    out["pcie_tx_bytes_per_output_token"] = gpu.get("pcie_tx_bytes_per_output_token")
    out["client_saturated"] = _get(summary, "client", "saturated")
    return out


class SweepIndex:
    """The in-memory index; ``save()`` replaces index.json atomically."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def load_or_new(cls, sweep_dir: Path, sweep_id: str) -> SweepIndex:
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
        self.data["updated_at"] = time.time()
        write_json_atomic(self.path, self.data)


def read_index(sweep_dir: Path) -> dict[str, Any]:
    path = sweep_dir / INDEX
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise StorageError(
            f"{sweep_dir} has no {INDEX}", "pass a directory written by infprof sweep"
        ) from None
    except json.JSONDecodeError as e:
        raise StorageError(
            f"{path} is not valid JSON ({e.msg})", "restore it, or rerun the sweep"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("points"), list):
        raise StorageError(
            f"{path} is not a sweep index", "pass a directory written by infprof sweep"
        )
    for key in ("configs", "searches", "knees"):
        data.setdefault(key, [])
    for p in data["points"]:  # indexes written before the SLO names changed
        if isinstance(p, dict) and isinstance(p.get("summary"), dict):
            p["summary"] = key_numbers_of(p["summary"])
    data["searches"] = [search_of(s) if isinstance(s, dict) else s for s in data["searches"]]
    return data


def is_sweep_dir(path: Path) -> bool:
    return (path / INDEX).is_file()
