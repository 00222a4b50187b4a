"""Launch and tear down a vLLM OpenAI-compatible server as a separate process.

vLLM is never imported here: the server runs as ``python -m vllm.entrypoints.openai.api_server``
(the entry point every vLLM release since 0.2 ships, GPU and CPU builds alike) in its own
process group, with stdout and stderr going to a log file. :class:`VllmServer` owns that process
and everything it spawns, and leaves nothing behind when it stops.

Every process of the tree inherits ``INFPROF_SERVER_TAG``; ``stop()`` also kills processes that
carry the tag, so a worker that left the process group and lost its parent is still found.

The server's command line, environment and vLLM version come from
``profiler.serving.vllm_command``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

import psutil

from profiler.cpus import on_cpus
from profiler.errors import ServerError
from profiler.serving.ports import free_port, port_in_use
from profiler.serving.vllm_command import (
    ArgvBuilder,
    build_argv,
    server_env,
    server_python,
    validate_spec,
)
from profiler.spec import ServeSpec

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
POLL_INTERVAL_S = 0.5
TAG_ENV = "INFPROF_SERVER_TAG"


# ---------------------------------------------------------------- process teardown
_live: set[VllmServer] = set()  # started and not stopped; strong refs so atexit finds them
_atexit_lock = threading.Lock()
_atexit_registered = False


def _track(server: VllmServer) -> None:
    global _atexit_registered
    with _atexit_lock:
        _live.add(server)
        if not _atexit_registered:  # registered on first start, not at import
            atexit.register(_stop_all_at_exit)
            _atexit_registered = True


def _stop_all_at_exit() -> None:  # a safety net; callers stop their servers themselves
    for server in list(_live):
        server.stop(grace_s=5)


def _members(pgid: int, tag: str) -> list[psutil.Process]:
    """Processes in group ``pgid`` or carrying ``TAG_ENV=tag`` (escaped the group, e.g. by
    setsid, and orphaned: no parent link leads to them any more)."""
    found = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid or p.environ().get(TAG_ENV) == tag:
                found.append(p)
        except (OSError, psutil.Error):
            continue
    return found


class VllmServer:
    """One vLLM server process tree: ``start()``, ``wait_ready()``, ``stop()``.

    ``with VllmServer(spec, log) as server:`` starts it; call ``wait_ready()`` inside (so
    telemetry can watch the model load). ``__exit__`` always stops it.

    ``env`` replaces ``os.environ`` as the base of the server's environment (see the module
    docstring for what is layered on top). ``argv_builder`` is the seam tests use to run a fake
    server with the same argv shape.
    """

    def __init__(
        self,
        spec: ServeSpec,
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        argv_builder: ArgvBuilder = build_argv,
    ) -> None:
        self.spec = spec
        self.log_path = Path(log_path)
        self.python = server_python(spec)
        self._base_env = env
        self._argv_builder = argv_builder
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._port: int | None = spec.port
        self._known: dict[int, psutil.Process] = {}
        self._lock = threading.RLock()
        self._stopped = False
        self._tag = f"{os.getpid()}-{id(self)}-{time.time_ns()}"
        self.argv: list[str] = []
        self.started_monotonic: float | None = None
        self.startup_s: float | None = None

    # ------------------------------------------------------------ properties
    @property
    def port(self) -> int:
        if self._port is None:
            raise ServerError("the server has no port before start()", "call start() first")
        return self._port

    @property
    def url(self) -> str:
        host = self.spec.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def pids(self) -> list[int]:
        """The server and all its live descendants."""
        return sorted(p.pid for p in self._tree())

    def _tree(self) -> list[psutil.Process]:
        if self._proc is None:
            return []
        try:
            root = psutil.Process(self._proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        return [p for p in procs if _running(p)]

    def _remember_tree(self) -> None:
        for p in self._tree():
            self._known.setdefault(p.pid, p)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Spawn the server (returns at once; see :meth:`wait_ready`)."""
        with self._lock:
            if self._proc is not None:
                raise ServerError("this server was already started", "make a new VllmServer")
            validate_spec(self.spec)
            if self._port is None:
                self._port = free_port(
                    self.spec.host if self.spec.host not in ("", "0.0.0.0") else "127.0.0.1"
                )
            elif port_in_use(self.spec.host, self._port):
                raise ServerError(
                    f"port {self._port} is in use",
                    "pass another --port or omit it to pick a free one",
                )
            self.argv = self._argv_builder(self.spec, self._port, self.python)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
            log.info("starting vLLM: %s", " ".join(self.argv))
            try:
                with on_cpus(self.spec.cpus):
                    self._proc = subprocess.Popen(
                        self.argv,
                        stdin=subprocess.DEVNULL,
                        stdout=self._log_file,
                        stderr=subprocess.STDOUT,
                        env={**server_env(self.spec, self._base_env), TAG_ENV: self._tag},
                        start_new_session=True,
                    )
            except OSError as e:
                self._log_file.close()
                self._log_file = None
                raise ServerError(
                    f"cannot start {self.argv[0]}: {e.strerror or e}",
                    "check --python (the interpreter that has vLLM installed)",
                ) from None
            self.started_monotonic = time.monotonic()
            _track(self)

    def wait_ready(self, timeout_s: float | None = None) -> float:
        """Block until /health answers 200 and /v1/models lists the served name.

        Returns the seconds from spawn to ready. Raises ServerError with the log's last lines
        when the process exits first, or when ``timeout_s`` (default ``spec.ready_timeout_s``)
        passes, in which case the server is stopped.
        """
        if self._proc is None or self.started_monotonic is None:
            raise ServerError("wait_ready() before start()", "call start() first")
        timeout = self.spec.ready_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        while True:
            self._remember_tree()
            code = self._proc.poll()
            if code is not None:
                self.stop(grace_s=2)
                raise ServerError(
                    f"vLLM exited with code {code} before it was ready; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}",
                    f"read {self.log_path}; the command was: {' '.join(self.argv)}",
                )
            if self._ready():
                self.startup_s = time.monotonic() - self.started_monotonic
                log.info("vLLM ready at %s after %.1f s", self.url, self.startup_s)
                return self.startup_s
            if time.monotonic() >= deadline:
                self.stop()
                raise ServerError(
                    f"vLLM was not ready after {timeout:g} s (stopped it); "
                    f"last lines of {self.log_path}:\n{self.log_tail()}",
                    "raise ready_timeout_s if the model is large, or read the log",
                )
            time.sleep(POLL_INTERVAL_S)

    def _ready(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
        try:
            with opener.open(f"{self.url}/health", timeout=2) as r:
                if r.status != 200:
                    return False
            with opener.open(f"{self.url}/v1/models", timeout=2) as r:
                body = json.loads(r.read())
        except (OSError, ValueError, urllib.error.URLError):
            return False
        data = body.get("data") if isinstance(body, dict) else None
        names = (
            {m.get("id") for m in data if isinstance(m, dict)} if isinstance(data, list) else set()
        )
        return self.spec.name in names

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self._log_file is not None:
            self._log_file.flush()
        try:
            with open(self.log_path, "rb") as f:
                tail = deque(f, maxlen=lines)
        except OSError:
            return "(no log)"
        return b"".join(tail).decode(errors="replace").rstrip("\n") or "(empty log)"

    def stop(self, grace_s: float = 15) -> int | None:
        """SIGTERM the process group, wait up to ``grace_s``, then SIGKILL the group and every
        descendant still alive. Idempotent. Returns the server's exit code."""
        with self._lock:
            _live.discard(self)
            if self._proc is None or self._stopped:
                return self.returncode
            self._stopped = True
            proc = self._proc
            pgid = proc.pid  # start_new_session: the server leads its own group
            self._remember_tree()
            self._signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                self._remember_tree()
                if proc.poll() is not None and not self._survivors(pgid):
                    break
                time.sleep(0.1)
            survivors = self._survivors(pgid)
            if survivors or proc.poll() is None:
                log.warning(
                    "vLLM did not stop within %g s; killing it and %d other processes",
                    grace_s,
                    len(survivors),
                )
                self._signal_group(pgid, signal.SIGKILL)
                proc.kill()
                for p in survivors:
                    _kill(p)
                psutil.wait_procs(survivors, timeout=5)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # cannot happen after SIGKILL unless in D state
                log.error("vLLM pid %d did not exit after SIGKILL", proc.pid)
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            return proc.returncode

    def _survivors(self, pgid: int) -> list[psutil.Process]:
        """Live descendants and group members, except the Popen child (reaped by wait())."""
        procs = {p.pid: p for p in self._known.values() if _running(p)}
        for p in _members(pgid, self._tag):
            procs.setdefault(p.pid, p)
        if self._proc is not None:
            procs.pop(self._proc.pid, None)
        return [p for p in procs.values() if _running(p)]

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    # ------------------------------------------------------------ context manager
    def __enter__(self) -> VllmServer:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kill(p: psutil.Process) -> None:
    with contextlib.suppress(psutil.Error):
        p.kill()
