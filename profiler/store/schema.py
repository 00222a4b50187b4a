"""The files a run, a sweep and a plan leave, as typed models: ``Summary`` (summary.json),
``Manifest`` (manifest.json), ``SweepIndex`` (a sweep's index.json) and ``Plan`` (the plan JSON
of ``infprof plan --json`` / ``plan.json`` beside runs). Each has ``load(path)`` and
``save(path)`` (atomic); every reader and writer of these files goes through them.

Older files: ``schema_version`` drives the migration of what older versions wrote, here and
nowhere else (``MIGRATIONS``). Version 1 files written before the SLO attainment rename call
summary.json's section ``goodput`` (figures from the send only) and a sweep index's flat key
numbers ``goodput_fraction`` / ``goodput_rps`` and the SLO search's ``goodput_rps_at_best``;
the rename predates the version number, so its step runs on every version-1 file and changes
only one that has the old keys. A file without ``schema_version`` is version 1; a saved file
always carries its model's.

Unknown keys (a newer file read by older code, or a section no reader walks into) are kept
as they are: every model allows extra keys and ``save`` writes them back unchanged, so a reader
never breaks on a key it does not know and a round trip loses nothing. ``save`` writes only
the keys the document has (``exclude_unset``), in the layout the writers always wrote.
What is refused: a known key of the wrong type, and a manifest's ``ended`` outside ``Ended``;
the error names the file and the field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from profiler.errors import StorageError
from profiler.store.files import write_json_atomic

log = logging.getLogger(__name__)

# How a run ended (manifest.json ``ended``): ``running`` until it does; the load's own
# endings (load/driver, load/guard, load/workers, load/ray_workers); ``failed`` for an
# InfprofError before the load; ``error_rate`` for a completed run over --max-error-rate.
Ended = Literal[
    "running",
    "completed",
    "interrupted",
    "failed",
    "failing",
    "error_rate",
    "server_died",
    "endpoint_lost",
    "storage_error",
    "worker_lost",
]


class Section(BaseModel):
    """A typed part of a file: known keys checked, unknown keys kept (see the module doc)."""

    model_config = ConfigDict(extra="allow")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object as written (the keys the document has, unknown ones included)."""
        return self.model_dump(exclude_unset=True)

    def get(self, key: str, default: Any = None) -> Any:
        """``key`` as plain JSON values (a dict for a section), ``default`` when missing or
        null: for readers that still take these files as dicts (the report's plots)."""
        if key in type(self).model_fields:
            fields = self.model_fields_set
            value = (
                self.model_dump(include={key}, exclude_unset=True)[key] if key in fields else None
            )
        else:
            value = (self.__pydantic_extra__ or {}).get(key)
        return default if value is None else value


class Document(Section):
    """A whole file: ``load``, ``save``, and the migration of older versions."""

    FILE: ClassVar[str]
    KIND: ClassVar[str]
    CURRENT: ClassVar[int] = 1

    schema_version: int = 1
    _shape: Any = PrivateAttr(default=None)  # the file as read: its key order is kept on save

    def to_dict(self) -> dict[str, Any]:
        return _in_order(super().to_dict(), self._shape)  # type: ignore[no-any-return]

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return migrate(cls.KIND, data)

    @classmethod
    def load(cls, path: Path) -> Self:
        """The file at ``path`` (a directory: its ``FILE``), migrated and checked;
        StorageError naming the file (and the field) when it is missing or malformed."""
        path = Path(path)
        if path.is_dir():
            path = path / cls.FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise StorageError(f"{path} does not exist", cls._fix()) from None
        except OSError as e:
            raise StorageError(f"cannot read {path}: {e.strerror}", "fix permissions") from None
        except json.JSONDecodeError as e:
            raise StorageError(
                f"{path} is not valid JSON ({e.msg}, line {e.lineno})", "restore it or rerun"
            ) from None
        return cls.parse(data, path)

    @classmethod
    def parse(cls, data: Any, where: Path | str) -> Self:
        """``data`` (a file's JSON) as this document; StorageError naming ``where``."""
        if not isinstance(data, dict):
            raise StorageError(f"{where} is not a JSON object", cls._fix())
        try:
            doc = cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            more = f" (+{len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
            raise StorageError(f"{where}: field {loc}: {err['msg']}{more}", cls._fix()) from None
        doc._shape = migrate(cls.KIND, data)
        return doc

    @classmethod
    def _fix(cls) -> str:
        return f"pass a directory written by infprof, or restore its {cls.FILE}"

    def save(self, path: Path) -> None:
        """Replace the file atomically (``path`` a directory: its ``FILE``)."""
        path = Path(path)
        if path.is_dir():
            path = path / self.FILE
        self.schema_version = type(self).CURRENT
        write_json_atomic(path, self.to_dict())


# ---------------------------------------------------------------------------- summary.json
class Distribution(Section):
    """A latency (or other) distribution: ``analysis/stats.QuantileSketch.to_dict``."""

    count: int | None = None
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None


class Requests(Section):
    total: int | None = None
    ok: int | None = None
    error: int | None = None
    timeout: int | None = None
    cancelled: int | None = None


class Throughput(Section):
    requests_per_s: float | None = None
    output_tokens_per_s: float | None = None
    total_tokens_per_s: float | None = None


class Window(Section):
    start: float | None = None
    end: float | None = None
    seconds: float | None = None
    warmup_s: float | None = None
    cooldown_s: float | None = None
    excluded_requests: int | None = None
    completed_requests: int | None = None


class Tokens(Section):
    prompt: int | None = None
    output: int | None = None
    prompt_mean_per_request: float | None = None
    output_mean_per_request: float | None = None


class Attainment(Section):
    fraction: float | None = None
    requests_per_s: float | None = None
    met: int | None = None
    meets_target: bool | None = None


class SloAttainment(Attainment):
    """``slo_attainment``: the headline figures, and both from the send and from the
    intended start (None where not measured)."""

    slo: dict[str, Any] | None = None  # the SloSpec dump: printed, never walked into
    headline: str | None = None
    from_send: Attainment | None = None
    from_intended: Attainment | None = None


class GpuScope(Section):
    gpus: list[str] | None = None
    uuids: list[str | None] | None = None
    method: str | None = None
    reason: str | None = None


class Gpu(Section):
    available: bool | None = None
    count: int | None = None
    utilization_mean_ratio: float | None = None
    memory_used_peak_bytes: float | None = None
    power_mean_watts: float | None = None
    nvlink_tx_bytes_per_output_token: float | None = None
    pcie_tx_bytes_per_output_token: float | None = None
    process_memory_note: str | None = None
    per_gpu: dict[str, dict[str, Any]] | None = None  # one row of figures per GPU
    scope: GpuScope | None = None


class Energy(Section):
    available: bool | None = None
    reason: str | None = None
    method: str | None = None
    joules: float | None = None
    joules_per_output_token: float | None = None
    mean_power_from_energy_watts: float | None = None
    gpu_seconds: float | None = None
    per_gpu_joules: dict[str, float] | None = None
    scope: GpuScope | None = None


class Client(Section):
    saturated: bool | None = None
    reason: str | None = None


class ServerMetrics(Section):
    available: bool | None = None
    num_requests_running_mean: float | None = None


class Available(Section):
    """A telemetry section: whether it has data, and why not."""

    available: bool | None = None
    reason: str | None = None


class Nodes(Available):
    node_count: int | None = None
    per_node: dict[str, dict[str, Any]] | None = None  # per node the same figures as the total


class PrefixCache(Available):
    hits: float | None = None
    queries: float | None = None


class TurnBucket(Section):
    ok: int | None = None
    ttft_s: Distribution | None = None
    tpot_s: Distribution | None = None
    e2e_s: Distribution | None = None
    prompt_tokens: Distribution | None = None
    cached_tokens: Distribution | None = None


class Sessions(Section):
    """``sessions`` (``analysis/turns``)."""

    sessions: int | None = None
    complete_sessions: int | None = None
    turns_per_session: Distribution | None = None
    duration_s: Distribution | None = None
    turn_buckets: list[str] | None = None
    by_turn: dict[str, TurnBucket] | None = None


class Summary(Document):
    """summary.json: ``analysis/run_summary.summarize_run``'s result."""

    FILE: ClassVar[str] = "summary.json"
    KIND: ClassVar[str] = "summary"

    run_id: str | None = None
    requests: Requests | None = None
    throughput: Throughput | None = None
    latency: dict[str, Distribution] | None = None
    dispatch_lag_s: Distribution | None = None
    queue_wait_s: Distribution | None = None
    tokens: Tokens | None = None
    error_rate: float | None = None
    window: Window | None = None
    slo_attainment: SloAttainment | None = None
    workload: str | None = None
    model: str | None = None
    client: Client | None = None
    gpu: Gpu | None = None
    energy: Energy | None = None
    server: ServerMetrics | None = None
    nodes: Nodes | None = None
    sessions: Sessions | None = None
    prefix_cache: PrefixCache | None = None
    # the roofline's hardware/model/decode/prefill/run figures: one reader prints them whole
    roofline: dict[str, Any] | None = None

    @classmethod
    def of(cls, summary: dict[str, Any]) -> Summary:
        """A summary computed in memory (``summarize_run``) as the document."""
        return cls.parse(summary, "summary")

    def lat(self, metric: str) -> Distribution:
        """``latency.<metric>`` (empty when not measured)."""
        return (self.latency or {}).get(metric) or Distribution()

    def attainment(self) -> SloAttainment:
        return self.slo_attainment or SloAttainment()


# --------------------------------------------------------------------------- manifest.json
class SpecServe(Section):
    """The resolved run spec's ``serve`` (``spec.ServeSpec``) as far as readers use it."""

    model: str | None = None
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    data_parallel_size: int | None = None
    enable_expert_parallel: bool | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None


class SpecEndpoint(Section):
    url: str | None = None
    model: str | None = None


class SpecWorkload(Section):
    name: str | None = None
    scenarios: list[dict[str, Any]] | None = None  # weight and n read; ScenarioSpec dumps


class RecordedSpec(Section):
    """manifest.json ``spec``: the resolved ``spec.RunSpec`` dump (older runs' specs are kept
    as they are, so it is not validated as today's RunSpec)."""

    serve: SpecServe | None = None
    endpoint: SpecEndpoint | None = None
    workload: SpecWorkload | None = None
    arrival: dict[str, Any] | None = None  # ArrivalSpec dump: kind, rate, concurrency, users
    slo: dict[str, Any] | None = None
    prometheus_url: str | None = None


class Nvml(Section):
    available: bool | None = None
    reason: str | None = None


class ServerRecord(Section):
    argv: list[str] | None = None
    url: str | None = None
    ready_s: float | None = None
    log: str | None = None


class Manifest(Document):
    """manifest.json: written when the run starts, updated as it goes, ``ended`` at the end.
    The runner changes it through the methods below and saves it with ``save``."""

    FILE: ClassVar[str] = "manifest.json"
    KIND: ClassVar[str] = "manifest"
    model_config = ConfigDict(extra="allow", validate_assignment=True)

    tool: dict[str, Any] | None = None
    run_id: str | None = None
    spec: RecordedSpec | None = None
    clock: dict[str, Any] | None = None
    host: dict[str, Any] | None = None  # printed whole
    versions: dict[str, str | None] | None = None  # printed whole
    started_at: float | None = None
    ended: Ended = "running"
    end_reason: str | None = None
    ended_at: float | None = None
    default_model: dict[str, Any] | str | None = None
    nvml: Nvml | None = None
    gpus: list[dict[str, Any]] | None = None  # NVML inventory rows, printed by key
    topology: Any = None
    gpu_scope: dict[str, Any] | None = None
    server: ServerRecord | None = None
    model: str | None = None
    server_capabilities: dict[str, Any] | None = None
    cpus: dict[str, Any] | None = None
    workers: list[dict[str, Any]] | None = None
    requests_sent: int | None = None
    requests_recorded: int | None = None
    repeat: dict[str, Any] | None = None
    # written by runs before the spec was recorded whole
    serve: dict[str, Any] | None = None
    workload: dict[str, Any] | None = None

    def set(self, **fields: Any) -> None:
        """Change top-level keys (validated as on load)."""
        for k, v in fields.items():
            setattr(self, k, v)

    def __setitem__(self, key: str, value: Any) -> None:
        """``manifest[key] = value``: for the writers that add their own section
        (metrics/live ``metrics_url``, telemetry/ray_nodes ``ray``)."""
        self.set(**{key: value})

    def record_inventory(self, inv: dict[str, Any]) -> None:
        """The NVML inventory (``telemetry/inventory.collect``): availability, GPUs, topology
        and driver versions."""
        self.set(
            nvml=Nvml(available=inv.get("available", False), reason=inv.get("reason")),
            gpus=inv.get("gpus", []),
            topology=inv.get("topology"),
            versions={
                **(self.versions or {}),
                "driver": inv.get("driver_version"),
                "cuda_driver": inv.get("cuda_driver_version"),
            },
        )

    def end(self, ended: Ended, reason: str | None, ended_at: float, **counts: Any) -> None:
        """How the run ended (``ended`` one of ``Ended``)."""
        self.set(ended=ended, end_reason=reason, ended_at=ended_at, **counts)

    def save_quietly(self, path: Path) -> bool:
        """``save``, a failure logged instead of raised (a run already failing for another
        reason still raises that one); whether it was saved."""
        try:
            self.save(path)
        except StorageError:
            log.warning("could not update %s", path)
            return False
        return True

    def scope_gpus(self) -> list[str] | None:
        return (self.gpu_scope or {}).get("gpus")

    def recorded_spec(self) -> RecordedSpec:
        return self.spec or RecordedSpec()


# ------------------------------------------------------------------------------ index.json
class IndexPoint(Section):
    """One point of a sweep: configuration, load, workload, run directory, status and key
    numbers (``sweep/index.key_numbers``; the median of its repeats with --repeat)."""

    id: str
    config_id: str | None = None
    config: dict[str, Any] | None = None  # tp, pp, dp, ep, max_num_seqs ...: read by key
    load: dict[str, Any] | None = None  # kind, value
    workload: str | None = None
    run_dir: str | None = None
    status: str | None = None
    ended: str | None = None
    reason: str | None = None
    dtypes: dict[str, str | None] | None = None
    summary: dict[str, Any] | None = None  # flat key numbers: {name: number}


class SweepIndex(Document):
    """index.json of a sweep directory (``sweep/index`` keeps it while the sweep runs)."""

    FILE: ClassVar[str] = "index.json"
    KIND: ClassVar[str] = "index"

    sweep_id: str | None = None
    status: str | None = None
    created_at: float | None = None
    updated_at: float | None = None
    configs: list[dict[str, Any]] = Field(default_factory=list)
    points: list[IndexPoint]
    searches: list[dict[str, Any]] = Field(default_factory=list)
    knees: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def _fix(cls) -> str:
        return "pass a directory written by infprof sweep"

    def done_points(self) -> list[IndexPoint]:
        return [p for p in self.points if p.status == "done" and p.run_dir]

    def config(self, config_id: str | None) -> dict[str, Any]:
        return next((c for c in self.configs if c.get("id") == config_id), {})


# -------------------------------------------------------------------------------- plan JSON
class Plan(Document):
    """The plan JSON: ``capacity/result.PlanResult`` dumped (``infprof plan --json``, a
    ``plan.json`` beside runs), or ``{"error": ...}`` when planning failed. Its sections are
    validated by PlanResult where it is built; here they are kept whole for the report."""

    FILE: ClassVar[str] = "plan.json"
    KIND: ClassVar[str] = "plan"
    CURRENT: ClassVar[int] = 2

    error: str | None = None
    configurations: list[dict[str, Any]] | None = None
    best: dict[str, Any] | None = None
    notes: list[str] | None = None


def _in_order(value: Any, shape: Any) -> Any:
    """``value`` with its keys in ``shape``'s order (new keys after them), at every level."""
    if isinstance(value, dict):
        ref = shape if isinstance(shape, dict) else {}
        rank = {k: i for i, k in enumerate(ref)}
        keys = sorted(value, key=lambda k: rank.get(k, len(rank)))
        return {k: _in_order(value[k], ref.get(k)) for k in keys}
    if isinstance(value, list) and isinstance(shape, list) and len(shape) == len(value):
        return [_in_order(v, r) for v, r in zip(value, shape, strict=True)]
    return value


# ------------------------------------------------------------------------------- migrations
_FIGURES = ("fraction", "requests_per_s", "met", "meets_target")
_KEY_NUMBERS = {"goodput_fraction": "slo_attainment", "goodput_rps": "slo_met_rps"}
_SEARCH = {"goodput_rps_at_best": "slo_met_rps_at_best"}


def _summary_v1(d: dict[str, Any]) -> dict[str, Any]:
    """``goodput`` (from the send only) -> ``slo_attainment``; summaries before the per-request
    means counted the ok requests' tokens, so the totals over the count are the means."""
    old = d.get("goodput")
    if isinstance(old, dict) and not isinstance(d.get("slo_attainment"), dict):
        figures = {k: old.get(k) for k in _FIGURES}
        measured = bool(old.get("slo"))
        d = {k: v for k, v in d.items() if k != "goodput"}
        d["slo_attainment"] = {
            "slo": old.get("slo"),
            "headline": "from_send" if measured else None,
            **figures,
            "from_send": figures if measured else None,
            "from_intended": None,
        }
    tokens, ok = d.get("tokens"), (d.get("requests") or {}).get("ok")
    if isinstance(tokens, dict) and ok and "prompt_mean_per_request" not in tokens:
        d = {**d, "tokens": {
            **tokens,
            "prompt_mean_per_request": (tokens.get("prompt") or 0) / ok,
            "output_mean_per_request": (tokens.get("output") or 0) / ok,
        }}  # fmt: skip
    return d


def _index_v1(d: dict[str, Any]) -> dict[str, Any]:
    """Flat key numbers and searches under today's names; sections older indexes lack."""
    d = dict(d)
    for key in ("configs", "searches", "knees"):
        if d.get(key) is None:
            d[key] = []
    d["points"] = (
        [
            {**p, "summary": renamed(p["summary"], _KEY_NUMBERS)}
            if isinstance(p, dict) and isinstance(p.get("summary"), dict)
            else p
            for p in d.get("points") or []
        ]
        if isinstance(d.get("points"), list)
        else d.get("points")
    )
    d["searches"] = [renamed(s, _SEARCH) if isinstance(s, dict) else s for s in d["searches"]]
    return d


def _manifest_v1(d: dict[str, Any]) -> dict[str, Any]:
    """Runs that recorded ``serve`` and ``workload`` beside the spec instead of in it."""
    if isinstance(d.get("spec"), dict) or not (d.get("serve") or d.get("workload")):
        return d
    return {**d, "spec": {"serve": d.get("serve"), "workload": d.get("workload")}}


_PLAN_V1 = {
    "tokens_per_s_per_gpu": "demand_tokens_per_s_per_gpu",
    "max_tokens_per_s_per_gpu": "capacity_tokens_per_s_per_gpu",
}


def _plan_v1(d: dict[str, Any]) -> dict[str, Any]:
    """Plan version 1 named a configuration's per-GPU demand and capacity differently."""
    configs = d.get("configurations")
    if not isinstance(configs, list):
        return d
    return {
        **d,
        "configurations": [renamed(c, _PLAN_V1) if isinstance(c, dict) else c for c in configs],
    }


# per kind: (version, step) in order; a step runs on files of that version or older
MIGRATIONS: dict[str, list[tuple[int, Callable[[dict[str, Any]], dict[str, Any]]]]] = {
    "summary": [(1, _summary_v1)],
    "manifest": [(1, _manifest_v1)],
    "index": [(1, _index_v1)],
    "plan": [(1, _plan_v1)],
}


def migrate(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """A file's JSON of any version as today's layout (the one place that knows old names)."""
    version = data.get("schema_version")
    version = version if isinstance(version, int) else 1
    for upto, step in MIGRATIONS[kind]:
        if version <= upto:
            data = step(data)
    if "schema_version" not in data:
        data = {"schema_version": version, **data}
    return data


def renamed(d: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    if not any(old in d for old in names):
        return d
    return {names.get(k, k): v for k, v in d.items() if k not in names or names[k] not in d}


def key_numbers_of(k: dict[str, Any]) -> dict[str, Any]:
    """A sweep point's flat key numbers (an older index's, or a summary) under today's names."""
    return renamed(k, _KEY_NUMBERS)


def slo_attainment_of(summary: Summary | dict[str, Any]) -> dict[str, Any]:
    """summary.json's ``slo_attainment`` section from a summary of any version ({} without
    one), for readers that take it as a dict."""
    if isinstance(summary, Summary):
        return summary.attainment().to_dict()
    att = _summary_v1(summary).get("slo_attainment")
    return att if isinstance(att, dict) else {}
