"""Load what a report needs from run and sweep directories; it only reads (a run that died is
repaired before, by ``profiler.analysis.repair``, which ``infprof report`` calls first)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from profiler.errors import StorageError
from profiler.store.rundir import is_run_dir, is_sweep_dir, read_samples
from profiler.store.schema import Manifest, Summary, SweepIndex
from profiler.sweep.index import SPEC

REQUEST_COLUMNS = (
    "id", "intended_start_s", "send_s", "first_token_s", "end_s", "output_tokens", "outcome", "ttft_s", "tpot_s", "e2e_s",
)  # fmt: skip


@dataclass
class Samples:
    """samples.parquet as columns."""

    t_s: np.ndarray
    source: np.ndarray
    device: np.ndarray
    metric: np.ndarray
    value: np.ndarray

    @classmethod
    def empty(cls) -> Samples:
        e = np.empty(0)
        return cls(e, e.astype(object), e.astype(object), e.astype(object), e)

    def series(self, source: str, metric: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{device: (t_s, value)} sorted by time, missing values dropped."""
        m = (self.source == source) & (self.metric == metric) & ~np.isnan(self.value)
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for dev in sorted(set(self.device[m].tolist()), key=_dev_key):
            k = m & (self.device == dev)
            order = np.argsort(self.t_s[k], kind="stable")
            out[dev] = (self.t_s[k][order], self.value[k][order])
        return out

    def has(self, source: str, metric: str | None = None) -> bool:
        m = self.source == source
        if metric is not None:
            m &= self.metric == metric
        return bool(np.any(m & ~np.isnan(self.value)))


def _dev_key(d: str) -> tuple[int, str]:
    return (int(d), "") if d.isdigit() else (1 << 30, d)


@dataclass
class RunData:
    path: Path
    manifest: Manifest
    summary: Summary
    req: dict[str, np.ndarray]
    itl: np.ndarray  # per-token ITL shares of successful requests
    samples: Samples
    notes: list[str] = field(default_factory=list)
    chunk_t_s: np.ndarray = field(
        default_factory=lambda: np.empty(0)
    )  # every content chunk's arrival
    chunk_tokens: np.ndarray = field(
        default_factory=lambda: np.empty(0)
    )  # and the tokens it carried

    @property
    def run_id(self) -> str:
        return str(self.manifest.run_id or self.summary.run_id or self.path.name)

    @property
    def has_manifest(self) -> bool:
        return (self.path / Manifest.FILE).exists()

    @property
    def spec(self) -> dict[str, Any]:
        """The resolved run spec as recorded (manifest.json ``spec``), as a dict."""
        return self.manifest.spec.to_dict() if self.manifest.spec else {}

    def ok(self) -> np.ndarray:
        return self.req["outcome"] == "ok"

    def gpu_scope(self) -> dict[str, Any]:
        """The server's GPUs the figures cover: summary.json ``gpu.scope`` (manifest.json's
        record for a summary that predates it); every GPU, said so, when neither has one."""
        gpu = self.summary.gpu
        scope = gpu.scope.to_dict() if gpu and gpu.scope else self.manifest.gpu_scope
        if scope and scope.get("gpus") is not None:
            return scope
        return {
            "gpus": None,
            "method": "all",
            "reason": "no GPU scope recorded for this run (it predates GPU scoping): every GPU is counted",
        }

    def server_gpu(self, device: str) -> bool:
        """Whether GPU ``device`` (an NVML index) is one of the server's."""
        gpus = self.gpu_scope().get("gpus")
        return gpus is None or device.partition("/")[0] in gpus


@dataclass
class SweepData:
    path: Path
    # index.json (migrated, checked by schema.SweepIndex) as the dict the sweep sections walk
    index: dict[str, Any]
    spec: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def sweep_id(self) -> str:
        return str(self.index.get("sweep_id") or self.path.name)

    def done_points(self) -> list[dict[str, Any]]:
        return [p for p in self.index["points"] if p.get("status") == "done" and p.get("summary")]


def load_run(path: Path, *, with_itl: bool = True, notes: list[str] | None = None) -> RunData:
    """A run directory as the report reads it (``notes``: what its repair did)."""
    notes = list(notes or [])
    if not (path / "requests.parquet").exists():
        raise StorageError(
            f"{path}: the run ended before its records were compacted (no requests.parquet)",
            f"run `infprof report {path}`, which repairs the run first",
        )
    manifest = Manifest.load(path) if (path / Manifest.FILE).exists() else Manifest()
    summary = Summary.load(path) if (path / Summary.FILE).exists() else Summary()
    table = pq.read_table(path / "requests.parquet")
    cols = [c for c in REQUEST_COLUMNS if c in table.column_names]
    req: dict[str, np.ndarray] = {}
    for c in cols:
        arr = table.column(c).to_numpy(zero_copy_only=False)
        req[c] = arr if c == "outcome" else np.asarray(arr, dtype=np.float64)
    itl = load_itl(path, req) if with_itl else np.empty(0)
    if (path / Manifest.FILE).exists() and manifest.ended != "completed":
        reason = manifest.end_reason
        notes.append(
            f"The run ended early ({manifest.ended}{': ' + str(reason) if reason else ''}); completed records are shown."
        )
    chunk_t, chunk_k = load_chunks(path) if with_itl else (np.empty(0), np.empty(0))
    return RunData(path, manifest, summary, req, itl, load_samples(path), notes, chunk_t, chunk_k)


def load_chunks(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Arrival time and token count of every content chunk (the token-generation timeline)."""
    p = path / "itl.parquet"
    if not p.exists():
        return np.empty(0), np.empty(0)
    t = pq.read_table(p, columns=["t_s", "tokens"])
    return (
        np.asarray(t.column("t_s").to_numpy(zero_copy_only=False), dtype=np.float64),
        np.asarray(t.column("tokens").to_numpy(zero_copy_only=False), dtype=np.float64),
    )


def load_itl(path: Path, req: dict[str, np.ndarray]) -> np.ndarray:
    p = path / "itl.parquet"
    if not p.exists():
        return np.empty(0)
    t = pq.read_table(p, columns=["request_id", "gap_s", "tokens"])
    rid = np.asarray(t.column("request_id").to_numpy(zero_copy_only=False), dtype=np.int64)
    gap = np.asarray(t.column("gap_s").to_numpy(zero_copy_only=False), dtype=np.float64)
    tok = np.asarray(t.column("tokens").to_numpy(zero_copy_only=False), dtype=np.int64)
    ok_ids = req["id"][req["outcome"] == "ok"].astype(np.int64)
    keep = np.isin(rid, ok_ids) & ~np.isnan(gap)
    k = np.maximum(tok[keep], 1)
    return np.repeat(gap[keep] / k, k)


def load_samples(path: Path) -> Samples:
    p = path / "samples.parquet"
    if p.exists():
        t = pq.read_table(p)
        if t.num_rows == 0:
            return Samples.empty()

        def col(name: str, dtype: Any) -> np.ndarray:
            arr = t.column(name).to_numpy(zero_copy_only=False)
            return np.asarray(arr, dtype=dtype)

        return Samples(
            col("t_s", np.float64),
            col("source", object),
            col("device", object),
            col("metric", object),
            col("value", np.float64),
        )
    rows = read_samples(path)
    if not rows:
        return Samples.empty()
    return Samples(
        np.array([s.t_s for s in rows], dtype=np.float64),
        np.array([s.source for s in rows], dtype=object),
        np.array([s.device for s in rows], dtype=object),
        np.array([s.metric for s in rows], dtype=object),
        np.array([np.nan if s.value is None else s.value for s in rows], dtype=np.float64),
    )


def load_sweep(path: Path) -> SweepData:
    index = SweepIndex.load(path).to_dict()
    spec = _json(path / SPEC) or index.get("spec") or {}
    notes: list[str] = []
    if index.get("status") != "complete":
        notes.append(
            f"The sweep is {index.get('status', 'incomplete')}; finished points are shown "
            f"(continue with `infprof sweep --resume {path}`)."
        )
    return SweepData(path, index, spec, notes)


def _json(path: Path) -> dict[str, Any] | None:
    """sweep.json (the SweepSpec as written; ``sweep/spec`` validates it where it is used)."""
    import json

    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise StorageError(f"{path} is not valid JSON ({e.msg})", "restore it or rerun") from None
    return data if isinstance(data, dict) else None


def kind_of(path: Path) -> str:
    if is_sweep_dir(path):
        return "sweep"
    if is_run_dir(path):
        return "run"
    raise StorageError(
        f"{path} is neither a run directory nor a sweep directory",
        "pass a directory written by infprof run or infprof sweep",
    )


def point_latencies(sweep: Path, point: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """TTFT/TPOT/E2E of a sweep point's successful requests and their per-token ITL (straight
    from Parquet)."""
    run = sweep / point["run_dir"]
    p = run / "requests.parquet"
    if not p.exists():
        return None
    t = pq.read_table(p, columns=["id", "outcome", "ttft_s", "tpot_s", "e2e_s"])
    req = {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}
    ok = np.asarray(req["outcome"]) == "ok"
    out = {c: np.asarray(req[c], dtype=np.float64)[ok] for c in ("ttft_s", "tpot_s", "e2e_s")}
    out["itl_s"] = load_itl(
        run, {"id": np.asarray(req["id"]), "outcome": np.asarray(req["outcome"])}
    )
    return out
