"""A sweep's index.json (``SweepIndex``, its points ``IndexPoint``) and the plan JSON
(``Plan``) as typed models."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from profiler.store.schema.base import Artifact, Part

__all__ = ["IndexPoint", "Plan", "SweepIndex"]


# ------------------------------------------------------------------------------ index.json
class IndexPoint(Part):
    """One point of a sweep: configuration, load, workload, run directory, status and key
    numbers (``sweep/index.key_numbers``; the median of its repeats with --repeat)."""

    id: str
    config_id: str | None = None
    config: dict[str, Any] | None = None  # tp, pp, dp, ep, max_num_seqs ...: read by key
    load: dict[str, Any] | None = None  # kind, value
    workload: str | None = None
    run_dir: str | None = None
    status: str | None = None
    dtypes: dict[str, str | None] | None = None
    model: str | None = None  # where an index records the point's model
    summary: dict[str, Any] | None = None  # flat key numbers: {name: number}


class SweepIndex(Artifact):
    """index.json of a sweep directory (``sweep/index`` keeps it while the sweep runs)."""

    FILE: ClassVar[str] = "index.json"
    KIND: ClassVar[str] = "index"

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
class Plan(Artifact):
    """The plan JSON: ``capacity/result.PlanResult`` dumped (``infprof plan --json``, a
    ``plan.json`` beside runs), or ``{"error": ...}`` when planning failed. Its sections are
    validated by PlanResult where it is built; here they are kept whole for the report."""

    FILE: ClassVar[str] = "plan.json"
    KIND: ClassVar[str] = "plan"
    CURRENT: ClassVar[int] = 2

    error: str | None = None
    configurations: list[dict[str, Any]] | None = None
