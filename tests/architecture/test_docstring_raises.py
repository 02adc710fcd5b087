"""The docstring contract of the public core, beyond what ruff's pydocstyle rules check.

ruff (``D``, Google convention; ``pyproject.toml``) makes every public module, class and
function of ``skyrig.proxmox``, ``skyrig.plan``, ``skyrig.config``, ``skyrig.pulumi`` and
``skyrig.kube`` carry a docstring whose ``Args:`` section names every argument. This test adds
the part ruff's stable rules cannot see: every public function or method that itself raises one
of skyrig's errors (a class of the :mod:`skyrig.errors` hierarchy, ``raise SomeError(...)``)
names it, or a base class of it, in its ``Raises:`` section; for ``__init__`` the class
docstring documents the constructor and carries that section. Raises inside nested functions
and re-raises of a caught error (``raise`` / ``raise exc``) are not counted.
"""

from __future__ import annotations

import ast
import importlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from skyrig.errors import SkyrigError

pytestmark = pytest.mark.unit

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGES = ("proxmox", "plan", "config", "pulumi", "kube")
SECTION = re.compile(r"^(\s*)Raises:\s*$")
ITEM = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*:")

Func = ast.FunctionDef | ast.AsyncFunctionDef


def modules() -> list[Path]:
    out: list[Path] = []
    for pkg in PACKAGES:
        out += sorted((SRC / "skyrig" / pkg).rglob("*.py"))
    return out


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def raises_section(doc: str | None) -> set[str]:
    """The exception names listed in a Google-style ``Raises:`` section (last dotted part)."""
    names: set[str] = set()
    lines = (doc or "").splitlines()
    for i, line in enumerate(lines):
        m = SECTION.match(line)
        if not m:
            continue
        head = len(m.group(1))
        item_indent: int | None = None
        for body in lines[i + 1:]:
            if not body.strip():
                continue
            indent = len(body) - len(body.lstrip())
            if indent <= head:
                break
            if item_indent is None:
                item_indent = indent
            if indent == item_indent and (hit := ITEM.match(body)):
                names.add(hit.group(1).rsplit(".", 1)[-1])
    return names


def own_raises(fn: Func) -> Iterator[ast.Raise]:
    """``raise`` statements of ``fn`` itself (not of functions or classes nested in it)."""
    stack: list[ast.AST] = list(fn.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        if isinstance(node, ast.Raise):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def raised_errors(fn: Func, namespace: object) -> set[type[SkyrigError]]:
    """The skyrig error classes ``fn`` raises by name (``raise X(...)`` or ``raise X``)."""
    out: set[type[SkyrigError]] = set()
    for node in own_raises(fn):
        target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if isinstance(target, ast.Name):
            cls = getattr(namespace, target.id, None)
            if isinstance(cls, type) and issubclass(cls, SkyrigError):
                out.add(cls)
    return out


def public_functions(tree: ast.Module) -> Iterator[tuple[str, Func, str | None]]:
    """(qualified name, function, docstring that must list its raises) of the public API."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if not node.name.startswith("_"):
                yield node.name, node, ast.get_docstring(node)
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if not isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                if item.name == "__init__":
                    yield f"{node.name}.__init__", item, ast.get_docstring(node)
                elif not item.name.startswith("_"):
                    yield f"{node.name}.{item.name}", item, ast.get_docstring(item)


def undocumented_raises() -> list[str]:
    problems = []
    for path in modules():
        namespace = importlib.import_module(module_name(path))
        tree = ast.parse(path.read_text("utf-8"))
        for qualname, fn, doc in public_functions(tree):
            listed = raises_section(doc)
            for cls in sorted(raised_errors(fn, namespace), key=lambda c: c.__name__):
                accepted = {c.__name__ for c in cls.__mro__ if issubclass(c, SkyrigError)}
                if not listed & accepted:
                    rel = path.relative_to(SRC.parent)
                    problems.append(f"{rel}:{fn.lineno}: {qualname} raises {cls.__name__} "
                                    "but its docstring's Raises: section does not name it")
    return problems


def test_public_core_documents_the_skyrig_errors_it_raises() -> None:
    problems = undocumented_raises()
    assert not problems, "\n".join(problems)


def test_the_check_sees_raises_and_sections() -> None:
    """The checker itself: it finds a raise, reads a section, and ignores nested functions."""
    src = '''
def f(x):
    """Do.

    Raises:
        ProxmoxError: When x.
            Continuation: not an item.
    """
    def inner():
        raise OwnershipError("nested: not f's own")
    if x:
        raise ProxmoxError("boom")
    raise PreflightError("no")
'''
    fn = ast.parse(src).body[0]
    assert isinstance(fn, ast.FunctionDef)
    errors = importlib.import_module("skyrig.errors")
    found = {c.__name__ for c in raised_errors(fn, errors)}
    assert found == {"ProxmoxError", "PreflightError"}
    assert raises_section(ast.get_docstring(fn)) == {"ProxmoxError"}


def test_the_contract_covers_every_named_package() -> None:
    covered = {p.relative_to(SRC / "skyrig").parts[0] for p in modules()}
    assert covered == set(PACKAGES)


def _ruff() -> str:
    beside = Path(sys.executable).with_name("ruff")
    found = str(beside) if beside.is_file() else shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (make venv installs it)")
    return found


UNDOCUMENTED = 'def f(x, y):\n    """Do.\n\n    Args:\n        x: The x.\n    """\n    return x\n'


@pytest.mark.parametrize(("path", "expected"), [
    *((f"src/skyrig/{pkg}/probe.py", {"D100", "D417"}) for pkg in PACKAGES),
    ("src/skyrig/workflows/probe.py", set()),
    ("src/skyrig/cli.py", set()),
    ("tests/proxmox/test_probe.py", set()),
    ("pvesim/src/pvesim/probe.py", set()),
])
def test_ruff_docstring_rules_apply_to_the_core_only(path: str, expected: set[str]) -> None:
    """pyproject.toml turns pydocstyle (Google convention, D417 included) on for exactly the
    five core packages: an undocumented module and an undescribed argument are reported there
    and nowhere else.
    """
    root = SRC.parent
    run = subprocess.run(
        [_ruff(), "check", "--no-cache", "--output-format", "concise", "--stdin-filename",
         path, "-"], input=UNDOCUMENTED, capture_output=True, text=True, cwd=root,
        check=False)
    codes = set(re.findall(r": (D\d{3}) ", run.stdout))
    assert codes == expected, run.stdout + run.stderr
