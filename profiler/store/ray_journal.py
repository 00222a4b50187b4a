"""Journals shipped from Ray nodes to the driver's disk while a run goes on.

A point or a load worker on another node writes its run directory on that node. A
``Forwarder`` thread there sends every complete line its request journals gain (and the
manifest whenever it changes) to a ``JournalCollector`` actor pinned to the driver's node,
which appends them under a directory of the driver. So when a node is lost mid-run, the
records that reached the driver are on its disk: the lost attempt keeps them.

Calls from one forwarder to the collector are executed in the order they were sent (Ray's
ordering of one caller's actor calls), so the driver's copy is always a prefix of the node's
journal, cut at a line boundary.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from profiler.store.rundir import write_json_atomic
from profiler.ticker import Ticker

FORWARD_INTERVAL_S = 0.5
ATTEMPT_FILE = "attempt.json"
MANIFEST = "manifest.json"


class _Collector:
    """Writes what forwarders send under ``root`` (runs as a Ray actor on the driver's node)."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def _dir(self, key: str) -> Path:
        d = self.root / key if key else self.root
        d.mkdir(parents=True, exist_ok=True)
        return d

    def start(self, key: str, info: dict[str, Any]) -> None:
        write_json_atomic(self._dir(key) / ATTEMPT_FILE, {**info, "started_at": time.time()})

    def append(self, key: str, name: str, data: bytes) -> int:
        with open(self._dir(key) / name, "ab") as f:
            f.write(data)
        return len(data)

    def put(self, key: str, name: str, data: bytes) -> None:
        path = self._dir(key) / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def ping(self) -> bool:
        return True


@functools.lru_cache(maxsize=1)
def _actor_class() -> Any:
    import ray

    return ray.remote(num_cpus=0, max_restarts=0)(_Collector)


def start_collector(ray: Any, root: Path, node_id: str) -> Any:
    """A collector on ``node_id`` (the driver's) writing under ``root``."""
    from profiler.cluster import on_node

    root.mkdir(parents=True, exist_ok=True)
    actor = _actor_class().options(scheduling_strategy=on_node(node_id)).remote(str(root))
    ray.get(actor.ping.remote(), timeout=120)
    return actor


def is_request_journal(name: str) -> bool:
    return name.startswith("requests") and name.endswith(".jsonl")


class Forwarder:
    """Tails ``src`` (a run directory on this node) and sends its request journals' new
    complete lines, and its manifest when it changes, to ``collector`` under ``key``.

    ``rename`` maps a file name here to the name it gets on the driver (a load worker's
    ``requests.jsonl`` becomes ``requests.w<k>.jsonl``)."""

    def __init__(
        self,
        collector: Any,
        key: str,
        src: Path,
        *,
        rename: Callable[[str], str] | None = None,
        manifest: bool = True,
        interval_s: float = FORWARD_INTERVAL_S,
    ) -> None:
        self.collector, self.key, self.src = collector, key, src
        self.rename = rename or (lambda n: n)
        self.manifest = manifest
        self.interval_s = interval_s
        self._offsets: dict[str, int] = {}
        self._manifest_mtime: float | None = None
        self._refs: list[Any] = []
        self.lines_sent = 0
        self._ticker = Ticker(self.pass_once, interval_s, "infprof-forward")

    def start(self) -> Forwarder:
        self._ticker.start()
        return self

    def pass_once(self) -> None:
        if not self.src.is_dir():
            return
        for path in sorted(self.src.iterdir()):
            if is_request_journal(path.name):
                self._tail(path)
        if self.manifest:
            self._send_manifest()
        self._refs = self._refs[-64:]  # sent in order; only the newest need awaiting

    def _tail(self, path: Path) -> None:
        start = self._offsets.get(path.name, 0)
        try:
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read()
        except OSError:
            return
        cut = data.rfind(b"\n") + 1  # complete lines only
        if cut == 0:
            return
        self._offsets[path.name] = start + cut
        self.lines_sent += data.count(b"\n", 0, cut)
        self._refs.append(
            self.collector.append.remote(self.key, self.rename(path.name), data[:cut])
        )

    def _send_manifest(self) -> None:
        path = self.src / MANIFEST
        try:
            mtime = path.stat().st_mtime
            if mtime == self._manifest_mtime:
                return
            data = path.read_bytes()
            json.loads(data)  # a half-written file is never sent
        except (OSError, ValueError):
            return
        self._manifest_mtime = mtime
        self._refs.append(self.collector.put.remote(self.key, MANIFEST, data))

    def stop(self, timeout_s: float = 30.0) -> None:
        """A last pass, then wait until the collector has written everything sent."""
        self._ticker.stop(timeout_s)
        self.pass_once()
        if self._refs:
            import ray

            try:
                ray.get(self._refs[-1], timeout=timeout_s)
            except Exception:  # the driver's side is gone: nothing left to keep
                pass
