"""The import graph of src/skyrig: no cycles (the flow is one-way: config → plan → shells →
workflows), and the Proxmox reconcile core imports neither Pulumi nor pvesim.

The graph is read from the source with :mod:`ast` (every ``import``/``from … import`` in a
module, also inside functions; ``if TYPE_CHECKING:`` blocks are skipped since they never run).
An import of ``skyrig.a.b`` counts as an edge to the module ``skyrig.a.b`` (or the package
``skyrig.a.b/__init__``); importing a submodule also runs its parent packages, so an edge to
each parent package ``__init__`` is added too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SRC = Path(__file__).resolve().parents[2] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imported(path: Path, modules: set[str]) -> set[str]:
    """The skyrig modules ``path`` imports (resolved against the known ``modules``)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()

    def add(name: str) -> None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            parent = ".".join(parts[:i])
            if parent in modules and parent != me and not me.startswith(parent + "."):
                out.add(parent)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.startswith("skyrig"):
                        add(a.name)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                if base.startswith("skyrig"):
                    for a in child.names:
                        full = f"{base}.{a.name}"
                        add(full if full in modules else base)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return out


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in (SRC / "skyrig").rglob("*.py")}
    names = set(files)
    return {m: imported(p, names) for m, p in files.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                strong(w)
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

    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_skyrig() -> None:
    found = cycles(graph())
    assert found == [], "import cycles in src/skyrig:\n" + "\n".join(
        " <-> ".join(c) for c in found)


def test_proxmox_core_imports_neither_pulumi_nor_pvesim() -> None:
    bad = []
    for path in (SRC / "skyrig" / "proxmox").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for n in names:
                top = n.split(".")[0]
                if top in ("pulumi", "pvesim") or n.startswith(("skyrig.pulumi",
                                                                "skyrig.workflows")):
                    bad.append(f"{path.relative_to(SRC)}: {n}")
    assert bad == []
