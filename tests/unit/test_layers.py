"""Layering: `smsc` is the shared bottom, `ingress` and `workers` stand on it, `cli` on all three."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Each package, and the first-party packages it must never import.
FORBIDDEN = {
    "smsc": {"ingress", "workers", "cli"},
    "ingress": {"workers", "cli"},
    "workers": {"ingress", "cli"},
}


def imported(path: Path) -> set[str]:
    """The top-level package of every absolute import in one module, lazy imports included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_nothing_above_it(package: str) -> None:
    """No module of `package` imports a package that stands above it."""
    modules = sorted((ROOT / package).rglob("*.py"))
    assert modules
    wrong = {str(m.relative_to(ROOT)): imported(m) & FORBIDDEN[package] for m in modules}
    assert {m: names for m, names in wrong.items() if names} == {}
