"""Where state lives. ``INFPROF_HOME`` moves all of it (default ``~/.cache/infprof``)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("INFPROF_HOME") or Path.home() / ".cache" / "infprof").expanduser()


def models_dir() -> Path:
    return home() / "models"
