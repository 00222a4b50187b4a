"""Helpers of the fault-matrix tests (tests/integration/test_faults_*.py, test_security.py):
the fake OpenAI server as a subprocess, ``infprof`` as a subprocess (plain, or with the
launched server's interpreter pointed at the vLLM shim), bounded waits, and run-directory
readers that parse the files themselves rather than going through the profiler's loaders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
SERVER_PYTHON_ENV = "INFPROF_TEST_SERVER_PYTHON"  # read only by LAUNCHER below, never the product

# ``infprof`` with one seam swapped: the interpreter the launched server runs under (the shim
# wrapper instead of the Python that has vLLM). Everything else is the real CLI.
LAUNCHER = (
    "import os, sys\n"
    "import profiler.serving.vllm as v\n"
    f"v.server_python = lambda spec: os.environ[{SERVER_PYTHON_ENV!r}]\n"
    "from profiler.cli.main import main\n"
    "sys.argv[0] = 'infprof'\n"
    "main()\n"
)


def infprof_cmd(*args: str) -> list[str]:
    return [PY, "-m", "profiler", *args]


def launched_cmd(*args: str) -> list[str]:
    """``infprof ARGS`` whose launched server is the shim (env: ``cli_env(..., wrapper)``)."""
    return [PY, "-c", LAUNCHER, *args]


def cli_env(home: Path, server_python: Path | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["INFPROF_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.pop("INFPROF_DEBUG", None)
    if server_python is not None:
        env[SERVER_PYTHON_ENV] = str(server_python)
    env.update(extra)
    return env


def run_cli(
    cmd: list[str], env: dict[str, str], timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def run_endpoint(
    url: str, out: Path, run_id: str, *args: str, timeout_s: float
) -> subprocess.CompletedProcess[str]:
    """``infprof run --endpoint URL --out OUT --run-id RUN_ID ARGS`` in this environment."""
    cmd = infprof_cmd("run", "--endpoint", url, "--out", str(out), "--run-id", run_id, *args)
    return run_cli(cmd, dict(os.environ), timeout_s)


def run_endpoint_json(
    url: str, out: Path, run_id: str, *args: str, timeout_s: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``run_endpoint(..., --json)`` that must succeed: its summary (stdout) and the
    manifest's ``server_capabilities``."""
    res = run_endpoint(url, out, run_id, "--json", *args, timeout_s=timeout_s)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    caps = json.loads((out / run_id / "manifest.json").read_text())["server_capabilities"]
    return summary, caps


@dataclass
class Spawned:
    """A background ``infprof`` with stdout/stderr in files (no pipe can fill and block it)."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait(self, timeout_s: float) -> int:
        return self.proc.wait(timeout=timeout_s)


# ``cmd`` as a terminal starts it: SIGINT at its default (Ctrl-C interrupts), also when the
# tests themselves were started in the background, where the shell has SIGINT ignored and every
# child would inherit that; exec keeps the PID the tests send their signals to
FOREGROUND = (
    "import os, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


@contextmanager
def spawn_cli(cmd: list[str], env: dict[str, str], logs: Path) -> Iterator[Spawned]:
    """Start ``cmd`` in the foreground's signal state; on the way out kill it and every process
    it left (whatever happened)."""
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / "stdout.txt", logs / "stderr.txt"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(
            [PY, "-c", FOREGROUND, *cmd], cwd=ROOT, env=env, stdout=fo, stderr=fe
        )
    tracked = ProcessTree(proc.pid)
    try:
        yield Spawned(proc, out, err)
    finally:
        tracked.refresh()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        tracked.kill_all()


class ProcessTree:
    """Remembers every descendant of ``pid`` seen so far (a killed parent loses its links)."""

    def __init__(self, pid: int) -> None:
        self.root = pid
        self.seen: dict[int, psutil.Process] = {}
        self.refresh()

    def refresh(self) -> list[int]:
        with suppress(psutil.Error):
            root = psutil.Process(self.root)
            for p in [root, *root.children(recursive=True)]:
                self.seen.setdefault(p.pid, p)
        return sorted(self.seen)

    def alive(self) -> list[psutil.Process]:
        return [p for p in self.seen.values() if _running(p)]

    def kill_all(self) -> None:
        left = self.alive()
        for p in left:
            with suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(left, timeout=5)


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_until(pred: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


# ---------------------------------------------------------------------- the fake server
@dataclass
class FakeProc:
    proc: subprocess.Popen[str]
    url: str

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@contextmanager
def fake_server(*args: str, env: dict[str, str] | None = None) -> Iterator[FakeProc]:
    """``python -m tests.fakes.fake_openai --port 0 ARGS`` on loopback; killed afterwards."""
    cmd = [PY, "-m", "tests.fakes.fake_openai", "--port", "0", *args]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        url = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("READY "):
                url = line.split()[1]
                break
        if url is None:
            raise AssertionError("the fake OpenAI server did not start")
        yield FakeProc(proc, url)
    finally:
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


# ---------------------------------------------------------------------- run directory
def journal_lines(run_dir: Path) -> list[str]:
    """Complete lines of requests.jsonl (a line without its newline was cut by a kill)."""
    p = run_dir / "requests.jsonl"
    if not p.exists():
        return []
    return [ln for ln in p.read_text().splitlines(keepends=True) if ln.endswith("\n")]


def journal_records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in journal_lines(run_dir)]


def read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def parquet_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()  # type: ignore[no-any-return]


def one_error_line(stderr: str) -> str:
    """The ``infprof: error:`` line; asserts there is exactly one and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("infprof: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def shim_run_spec(
    tmp_path: Path,
    run_id: str,
    *,
    output_len: int,
    num_requests: int,
    extra_args: list[str],
    **serve: Any,
) -> Any:
    """An in-process RunSpec whose launched "vLLM" is the OpenAI shim (tests/fakes): 4 in
    flight, 8 prompt tokens, ``output_len`` out; ``serve`` adds ServeSpec fields."""
    from profiler.distributions import LengthDist
    from profiler.spec import ArrivalSpec, RunSpec, Scenario, ServeSpec, WorkloadSpec
    from tests.fakes.vllm_openai_shim import make_python_wrapper

    return RunSpec(
        run_id=run_id,
        out_dir=tmp_path / "runs",
        workload=WorkloadSpec(
            name="w",
            scenarios=[Scenario(input=LengthDist.fixed(8), output=LengthDist.fixed(output_len))],
        ),
        arrival=ArrivalSpec(kind="concurrency", concurrency=4),
        num_requests=num_requests,
        serve=ServeSpec(
            model="org/fake-model",
            python=str(make_python_wrapper(tmp_path)),
            extra_args=extra_args,
            ready_timeout_s=30,
            **serve,
        ),
        sample_interval_s=0.25,
    )
