"""A sweep configuration's server (``--executor local``): launched once, lazily, by the first
point that needs it, and stopped when the configuration's points are done. A configuration
whose points are all finished is never relaunched on resume. When the server does not start,
or exits, every later point of the configuration fails with that one reason
(``ConfigFailed``). With the sweep's endpoint there is nothing to launch."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from profiler.errors import InfprofError
from profiler.spec import ServeSpec

log = logging.getLogger(__name__)

ServerFactory = Callable[[ServeSpec, Path], Any]  # VllmServer-like: start/wait_ready/url/alive/stop


class ConfigFailed(Exception):
    """The configuration's server did not start or exited: its points cannot run."""


class ConfigServer:
    """The configuration's server, started on first use and stopped at the end."""

    def __init__(
        self, factory: ServerFactory | None, serve: ServeSpec | None, log_dir: Path
    ) -> None:
        self.factory, self.serve, self.log_dir = factory, serve, log_dir
        self.server: Any = None
        self.error: str | None = None
        self.startup_s: float | None = None
        self.log_path: Path | None = None
        self.used = False  # a point was attempted with this configuration in this session

    def url(self) -> str:
        if self.error:
            raise ConfigFailed(self.error)
        if self.server is None:
            assert self.serve is not None and self.factory is not None
            self.log_dir.mkdir(parents=True, exist_ok=True)
            n = len(list(self.log_dir.glob("server*.log")))
            self.log_path = self.log_dir / ("server.log" if n == 0 else f"server-{n + 1}.log")
            server = self.factory(self.serve, self.log_path)
            try:
                server.start()
                self.startup_s = server.wait_ready()
            except InfprofError as e:
                self.error = f"server did not start: {e.one_line()}"
                _stop(server)
                raise ConfigFailed(self.error) from None
            except BaseException:
                _stop(server)
                raise
            self.server = server
        return str(self.server.url)

    def pids(self) -> list[int]:
        """The launched server's process tree (empty for an attached endpoint)."""
        return list(self.server.pids()) if self.server is not None else []

    def check_alive(self) -> None:
        if self.server is not None and not self.server.alive():
            self.error = f"the server exited (code {self.server.returncode}); see {self.log_path}"

    def close(self) -> None:
        if self.server is not None:
            _stop(self.server)
            self.server = None

    def record(self, old: dict[str, Any] | None, sweep_dir: Path) -> dict[str, Any]:
        """The configuration's index fields this server decides: ``status`` and ``reason``,
        ``server_log`` and ``startup_s``; what an earlier session recorded (``old``) stays
        where nothing ran in this one."""
        out: dict[str, Any] = {}
        if self.error:
            out.update(status="failed", reason=self.error)
        elif self.used:
            out.update(status="ok")
        elif old is not None:  # nothing ran this time: keep what is known
            out.update(status=old.get("status"), reason=old.get("reason"))
        if self.log_path is not None:
            out.update(server_log=str(self.log_path.relative_to(sweep_dir)))
            out.update(startup_s=self.startup_s)
        else:
            out.update(server_log=(old or {}).get("server_log"))
            out.update(startup_s=(old or {}).get("startup_s"))
        return out


def vllm_factory(serve: ServeSpec, log_path: Path) -> Any:
    """The configuration's vLLM server, its embedded model made first (``prepare_serve``)."""
    from profiler.run_server import prepare_serve
    from profiler.serving.vllm import VllmServer

    prepare_serve(serve)
    return VllmServer(serve, log_path)


def _stop(server: Any) -> None:
    try:
        server.stop()
    except Exception as e:  # teardown must not hide the sweep's own outcome
        log.warning("stopping the server failed: %s", e)
