"""Atomic JSON and text files: written to a hidden temporary file beside the target, fsynced, renamed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from profiler.errors import StorageError


def write_json_atomic(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n"
    write_text_atomic(path, text, "free disk space or fix permissions")


def write_text_atomic(path: Path, text: str, fix: str) -> None:
    """``path`` replaced by ``text`` (UTF-8) or left as it was; StorageError with ``fix``."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {e.strerror}", fix) from None


def json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):  # a store.schema document: the keys it has
        return o.to_dict()
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def make_dir(path: Path, fix: str) -> Path:
    """``path`` and its parents created when missing; StorageError with ``fix`` when they
    cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create {path}: {e.strerror}", fix) from None
    return path
