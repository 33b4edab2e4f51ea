"""The package's import structure stays as built (docs/architecture.md): no import circles, and no
module imports a layer above its own. Every import is read with ``ast`` (those inside functions too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lidvae_ext

ROOT = Path(lidvae_ext.__file__).resolve().parent

# Layers, bottom to top: a module may import its own component and the components of lower layers only.
# The op surface is one component; the facade ``lidvae_ext/__init__.py`` re-exports and is exempt.
OP_SURFACE = {"_extension", "_build_config", "_op_autograd", "_op_batching", "positivity", "reference", "ops", "nn", "flops",
              "errors"}
LAYER = {"op_surface": 0, "checkpoint": 1, "core": 2, "data": 2, "classical": 2,
         "families": 3, "report": 3, "training": 3, "diagnostics": 3,
         "user_vae": 4, "runner": 4, "classical_cli": 5, "cli": 6}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The lidvae_ext modules ``name`` imports (``from .x import y`` counts as x.y when that is a module)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "lidvae_ext")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "lidvae_ext":
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & known
            out.update(subs or {target})
    return {m for m in out if m in known and m != name}


def _component(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "facade"
    return "op_surface" if parts[1] in OP_SURFACE else parts[1]


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
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


def test_every_component_has_a_layer():
    missing = {_component(m) for m in _modules()} - set(LAYER) - {"facade"}
    assert not missing, f"new top-level modules need a layer in tests/test_structure.py: {sorted(missing)}"


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_no_upward_imports():
    bad = []
    for src, targets in _graph().items():
        a = _component(src)
        if a == "facade":
            continue
        for dst in targets:
            b = _component(dst)
            if b == "facade" or (b != a and LAYER[b] >= LAYER[a]):
                bad.append(f"{src} -> {dst}")
    assert bad == []


def test_a_family_imports_no_other_family_and_not_the_registry():
    bad = []
    for src, targets in _graph().items():
        parts = src.split(".")
        if parts[1:2] != ["families"] or len(parts) < 3 or parts[2] == "base":
            continue
        for dst in targets:
            d = dst.split(".")
            if d[1:2] == ["families"] and (len(d) == 2 or (d[2] != "base" and d[2] != parts[2])):
                bad.append(f"{src} -> {dst}")
    assert bad == []


def test_no_private_name_crosses_modules():
    """``from X import _name`` of another module is a private name crossing modules."""
    bad = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("lidvae_ext")):
                bad += [f"{name}: {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")
                        and f"{node.module}.{a.name}".split(".")[-1] not in ("_extension", "_op_autograd",
                                                                               "_op_batching", "_build_config")]
    assert bad == []


@pytest.mark.parametrize("planted, expected", [
    ({"lidvae_ext.core.model": {"lidvae_ext.runner.run"}, "lidvae_ext.runner.run": {"lidvae_ext.core.model"}}, 1),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, 0),
])
def test_the_cycle_finder_finds_a_planted_cycle(planted, expected):
    assert len(_cycles(planted)) == expected


MAX_FUNCTION_LINES = 60  # issue 22: a function longer than this (docstring excluded) is split into named parts


def test_no_function_is_longer_than_a_screen():
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = node.body[0]
                has_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and \
                    isinstance(first.value.value, str)
                start = (node.body[1] if has_doc and len(node.body) > 1 else first).lineno
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {node.end_lineno - start + 1} lines")
    assert long == []
