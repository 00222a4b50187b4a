"""``profiler/load`` and ``profiler/serving`` have no import circles: no module imports,
directly or through others of these packages, a module that imports it; and the arrow between
them runs one way: load sits above serving (docs/architecture.md), so no module of
``profiler/serving`` imports ``profiler.load``. Every import counts, the ones inside functions
and under ``TYPE_CHECKING`` too (a circle there is still two modules that each need the other)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("profiler/load", "profiler/serving")


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            out |= {n for n in names if n in known} or ({node.module} & known)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
    return out


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).glob("*.py"))]
    known = {_module(p) for p in files}
    return {_module(p): _imports(p, known) - {_module(p)} for p in files}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_lazy_and_type_checking_imports() -> None:
    graph = _graph()
    assert "profiler.load.guard" in graph["profiler.load.preflight"]  # in a function
    assert "profiler.load.probes" in graph["profiler.load.capabilities"]  # TYPE_CHECKING
    assert "profiler.load.session_loop" in graph["profiler.load.driver"]  # module level


def test_load_and_serving_have_no_import_circles() -> None:
    assert _circles(_graph()) == []


def _imported_modules(path: Path, name: str) -> set[str]:
    """Every module that ``path`` (module ``name``) names in an import, anywhere in the file
    (relative ones resolved), ``from a import b`` counted as both ``a`` and ``a.b``."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            out |= {module} | {f"{module}.{a.name}" for a in node.names}
    return out


def test_the_layer_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from profiler.load.client import ClientOptions\n"
        "def f():\n    from profiler import load\n    import profiler.load.guard\n"
        "    from ..load import tokens\n",
        encoding="utf-8",
    )
    seen = _imported_modules(tmp_path / "m.py", "profiler.serving.m")
    assert {"profiler.load.client", "profiler.load", "profiler.load.guard"} <= seen
    assert "profiler.load.tokens" in seen


def _imports_into(below: str, above: str) -> list[str]:
    """``module -> import`` for every import (lazy and for types too) by a module of the
    package folder ``below`` of the package ``above`` or one of its modules."""
    wrong = {
        f"{_module(p)} -> {m}"
        for p in sorted((ROOT / below).rglob("*.py"))
        for m in _imported_modules(p, _module(p))
        if m == above or m.startswith(f"{above}.")
    }
    return sorted(wrong)


def test_serving_imports_nothing_from_load() -> None:
    """load sits above serving: serving must not import load (not even lazily or for types)."""
    assert _imports_into("profiler/serving", "profiler.load") == []


def test_load_imports_nothing_from_analysis() -> None:
    """analysis sits above load: the sketches a load worker fills and the analysis reads live
    below both (``profiler/sketches.py``), so no module of ``profiler/load`` imports
    ``profiler.analysis`` (not even lazily or for types)."""
    assert _imports_into("profiler/load", "profiler.analysis") == []


def test_the_sketch_modules_sit_at_the_base() -> None:
    """What load and analysis share (the sketches) imports no layer above the base: no store,
    load or analysis (records become columns in ``store/record_columns``, below both)."""
    base = {"profiler", "profiler.measures", "profiler.sketches"}
    wrong = {
        f"{name} -> {m}"
        for name in ("profiler.sketches", "profiler.latency_sketches")
        for m in _imported_modules(ROOT / (name.replace(".", "/") + ".py"), name)
        if m.startswith("profiler") and ".".join(m.split(".")[:2]) not in base
    }
    assert sorted(wrong) == []
