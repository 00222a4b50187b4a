"""The sweep directory: created, or reopened to resume (the saved spec wins), and a point's
old run directory moved aside when the point is run again."""

from __future__ import annotations

import shutil
from pathlib import Path

from profiler.errors import SpecError
from profiler.paths import make_dirs
from profiler.sweep.index import SPEC
from profiler.sweep.spec import SweepSpec


def prepare_sweep_dir(spec: SweepSpec, sweep_dir: Path, *, resume: bool) -> SweepSpec:
    """Create the sweep directory or reopen it. Reopening needs ``resume`` or the same spec;
    the saved spec wins on resume."""
    from profiler.yaml_spec import load_yaml_model  # YAML is a superset of JSON

    saved = sweep_dir / SPEC
    if saved.exists():
        old = load_yaml_model(saved, SweepSpec)
        if resume or old.same_work(spec):
            return old
        raise SpecError(
            f"{sweep_dir} already holds a different sweep",
            f"resume it with `infprof sweep --resume {sweep_dir}`, or choose another --out",
        )
    if resume:
        raise SpecError(
            f"{sweep_dir} is not a sweep directory (no {SPEC})",
            "pass a directory written by infprof sweep",
        )
    from profiler.store.rundir import write_json_atomic

    make_dirs(sweep_dir, "choose a writable --out")
    write_json_atomic(saved, spec.model_dump(mode="json"))
    return spec


def clear_stale(sweep_dir: Path, rel: str) -> None:
    """A point (or one repeat of it, ``<point>/rep-02``) that is being (re)run must not find
    its old directory: move it aside, to ``stale/<point>-<n>`` (``stale/<point>-rep-02-<n>``)."""
    run = sweep_dir / "runs" / rel
    if not run.exists():
        return
    pid = rel.replace("/", "-")
    stale = sweep_dir / "stale"
    stale.mkdir(exist_ok=True)
    n = 1
    while (stale / f"{pid}-{n}").exists():
        n += 1
    shutil.move(str(run), str(stale / f"{pid}-{n}"))
