"""Fault matrix, storage row: an unwritable run directory fails before anything is launched
(exit 5, one line); a disk that fills up mid-run stops the run without corrupting what was
written (every journal line still parses, the summary reflects them, exit 5)."""

from __future__ import annotations

import errno
import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.fakes.fake_openai import FakeConfig, serve_in_thread
from tests.fakes.vllm_openai_shim import make_python_wrapper
from tests.integration.faults_support import (
    cli_env,
    launched_cmd,
    one_error_line,
    parquet_rows,
    read_json,
    run_cli,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _fails_before_launch(tmp_path: Path, out: Path) -> str:
    """Run the launched-server path with ``--out OUT``: exit 5 and the shim never started."""
    marker = tmp_path / "started"
    res = run_cli(
        launched_cmd(
            "run", "--model", "org/fake-model", "--out", str(out), "--run-id", "r",
            f"--serve-arg=--fake-marker={marker}", "--num-requests", "2", "-q",
        ),
        cli_env(tmp_path / "home", make_python_wrapper(tmp_path)),
    )  # fmt: skip
    assert res.returncode == 5, res.stderr
    assert not marker.exists(), "the server was launched"
    return one_error_line(res.stderr)


def test_out_dir_under_a_file(tmp_path: Path) -> None:
    f = tmp_path / "a-file"
    f.write_text("x")
    line = _fails_before_launch(tmp_path, f / "runs")
    assert f"cannot create {f / 'runs' / 'r'}: Not a directory" in line
    assert "fix: choose a writable --out directory" in line


def test_out_dir_in_proc(tmp_path: Path) -> None:
    line = _fails_before_launch(tmp_path, Path("/proc/infprof-no-such/runs"))
    assert "cannot create /proc/infprof-no-such/runs/r" in line


@contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A small tmpfs at ``path`` (needs root and CAP_SYS_ADMIN; the test is skipped without)."""
    path.mkdir()
    try:
        res = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10, check=False)


def test_read_only_filesystem(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        line = _fails_before_launch(tmp_path, ro / "runs")
    assert "Read-only file system" in line


def test_nearly_full_filesystem(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "tiny", "size=1m") as tiny:
        line = _fails_before_launch(tmp_path, tiny / "runs")
    assert re.search(r"only [01] MiB free under .*/runs/r ", line), line
    assert "free at least 64 MiB" in line


# ---------------------------------------------------------------------- disk full mid-run
class FillingDisk:
    """Stands in for the journal's file: takes ``budget`` bytes (the last write short, as
    write(2) does at the edge of a full disk), then fails with ENOSPC."""

    def __init__(self, f: Any, budget: int) -> None:
        self._f = f
        self.budget = budget
        self.failures = 0

    def write(self, data: Any) -> int:
        if self.budget <= 0:
            self.failures += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        n = min(len(data), self.budget)
        self.budget -= n
        return self._f.write(bytes(data[:n]))  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def test_disk_full_mid_run_keeps_what_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from profiler.cli.main import cli
    from profiler.store.rundir import RunDir

    disks: list[FillingDisk] = []
    real = RunDir.request_journal

    def request_journal(self: RunDir) -> Any:
        journal = real(self)
        disks.append(FillingDisk(journal._f, budget=60_000))
        journal._f = disks[-1]
        return journal

    monkeypatch.setattr(RunDir, "request_journal", request_journal)
    out = tmp_path / "runs"
    run_dir = out / "full"
    with serve_in_thread(FakeConfig(itl_ms=2)) as fake:
        res = CliRunner().invoke(
            cli,
            [
                "run", "--endpoint", fake.url, "--num-requests", "5000", "--concurrency", "4",
                "--input-len", "8", "--output-len", "10", "--no-telemetry", "--out", str(out),
                "--run-id", "full", "-q", "--server-kind", "vllm",  # no probe: counters = load
            ],
        )  # fmt: skip
        sent_to_server = fake.counters.requests
    assert res.exit_code == 5, res.output
    assert "run ended early (storage_error)" in res.stderr
    assert "No space left on device" in res.stderr
    assert disks and disks[0].failures >= 1
    text = (run_dir / "requests.jsonl").read_text()
    assert text.endswith("\n"), "a partial line was left in the journal"
    lines = [json.loads(line) for line in text.splitlines()]  # every line parses
    assert 0 < len(lines) < 5000
    assert len(text.encode()) <= 60_000
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["ended"] == "storage_error"
    assert "No space left on device" in manifest["end_reason"]
    # the run stopped soon after the disk filled: not thousands of requests more
    assert manifest["requests_sent"] == sent_to_server < len(lines) + 200
    summary = read_json(run_dir / "summary.json")
    assert summary["requests"]["total"] == len(lines) == manifest["requests_recorded"]
    assert [r["id"] for r in parquet_rows(run_dir / "requests.parquet")] == sorted(
        r["id"] for r in lines
    )
