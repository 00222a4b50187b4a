"""Where state lives. ``INFPROF_HOME`` moves all of it (default ``~/.cache/infprof``)."""

from __future__ import annotations

import os
from pathlib import Path

from profiler.errors import StorageError


def home() -> Path:
    return Path(os.environ.get("INFPROF_HOME") or Path.home() / ".cache" / "infprof").expanduser()


def models_dir() -> Path:
    return home() / "models"


def make_dirs(path: Path, fix: str) -> Path:
    """``path`` with its parents (those there are kept), or a StorageError naming it and the
    OS's reason, with ``fix``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create {path}: {e.strerror}", fix) from None
    return path
