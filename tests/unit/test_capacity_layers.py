"""Layering between capacity/ and serving/ (docs/architecture.md): capacity may import serving,
serving must not import capacity, not even lazily or for type checking."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVING = ROOT / "profiler" / "serving"


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports anywhere (top level, in functions, under TYPE_CHECKING)."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names)
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
    return out


def test_no_serving_module_names_capacity() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {mod}"
        for path in sorted(SERVING.glob("*.py"))
        for line, mod in _imported_modules(path)
        if mod == "profiler.capacity" or mod.startswith("profiler.capacity.")
    ]
    assert not wrong, "serving/ must not import capacity/:\n" + "\n".join(wrong)


_BLOCKED_RUN = r"""
import importlib, importlib.abc, pkgutil, sys, tempfile
from pathlib import Path

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "profiler.capacity" or name.startswith("profiler.capacity."):
            raise ImportError(f"blocked: {name}")
        return None

sys.meta_path.insert(0, Block())
import profiler.serving
for info in pkgutil.iter_modules(profiler.serving.__path__):
    importlib.import_module(f"profiler.serving.{info.name}")
from profiler.serving import shapes
out = Path(tempfile.mkdtemp())
for name in shapes.SHAPES:  # the lazy paths too: files, tokenizer
    shapes.make_shape_model(name, out / name)
gpus = [{"index": 0, "name": "GPU", "memory_total_bytes": 8 << 30, "memory_free_bytes": 8 << 30}]
print(len(shapes.serving_gpus(gpus, 1, visible="")))
"""


def test_serving_works_with_capacity_unimportable() -> None:
    """Every serving module imports, and the embedded shapes are written, while any import of
    profiler.capacity raises."""
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCKED_RUN],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
