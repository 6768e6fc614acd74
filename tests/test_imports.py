"""The import graph of owl/ has no circle, and the checkpoint readers never import load.py.

Every ``import`` statement counts, at module level or inside a function (a lazy import that
closes a circle is still a circle). The graph is read with ``ast``, so nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import owl

ROOT = Path(owl.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ("owl", *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the owl modules it imports (a package's own __init__ is not counted)."""
    modules = _modules()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            for target in targets:
                dep = known(target) if target.startswith("owl") else None
                if dep and dep != name and not name.startswith(dep + "."):
                    deps.add(dep)
        graph[name] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_owl_has_no_import_circle():
    assert circles(import_graph()) == []


def test_checkpoint_formats_import_the_tree_module_not_the_dispatcher():
    graph = import_graph()
    for reader in ("official", "owl_format", "transformers_format", "tree"):
        assert "owl.checkpoints.load" not in graph[f"owl.checkpoints.{reader}"], reader
    assert (
        graph["owl.checkpoints.tree"]
        & {
            "owl.checkpoints.official",
            "owl.checkpoints.owl_format",
            "owl.checkpoints.transformers_format",
        }
        == set()
    )
