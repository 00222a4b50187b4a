"""Repairing what a run that died left, before anything reads it: journals without Parquet are
compacted, a missing summary.json is recomputed from the records. ``infprof report`` calls
``repair_inputs`` first; the report itself only reads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from profiler.errors import StorageError
from profiler.store.rundir import SAMPLES_JOURNAL, RunDir, is_run_dir, is_sweep_dir
from profiler.store.schema import Summary


def repair_run(path: Path) -> list[str]:
    """Compact journals and recompute summary.json when a run died before doing so; the
    notes say what was done (for the report)."""
    notes: list[str] = []
    rd = RunDir(path)
    if not (path / "requests.parquet").exists():
        if not rd.has_journal():
            raise StorageError(
                f"{path} has no request records (no requests.parquet or requests.jsonl)",
                "pass a run directory written by infprof run, or a sweep directory",
            )
        rd.compact()
        notes.append(
            "The run ended before compaction; its journals were compacted to Parquet for this report."
        )
    elif not (path / "samples.parquet").exists() and (path / SAMPLES_JOURNAL).exists():
        rd.compact()
    if not (path / Summary.FILE).exists():
        from profiler.analysis.summary_json import summarize_run

        Summary.of(summarize_run(path)).save(path / Summary.FILE)
        notes.append("summary.json was missing and was recomputed from the records.")
    return notes


def repair_inputs(inputs: Sequence[Path]) -> dict[Path, list[str]]:
    """``repair_run`` on every run directory among ``inputs`` (sweeps and other paths are left
    to the report, which says what they are); {run: notes} for those it changed."""

    out: dict[Path, list[str]] = {}
    for path in map(Path, inputs):
        if not path.is_dir() or is_sweep_dir(path) or not is_run_dir(path):
            continue
        notes = repair_run(path)
        if notes:
            out[path] = notes
    return out
