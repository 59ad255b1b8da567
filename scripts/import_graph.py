"""The import graph of the llm_consortium package, and its cycles.

Every import of a package module counts, at module level or inside a
function (a lazy import still ties the two modules together); imports under
``if TYPE_CHECKING:`` do not (they never run).

Usage: python scripts/import_graph.py [--dot]   (exit status 1 on a cycle)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "llm_consortium"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    found: set[str] = set()
    base = module.split(".") if is_package else module.split(".")[:-1]

    def resolve(level: int, name: str | None) -> str:
        if level == 0:
            return name or ""
        parts = base[: len(base) - (level - 1)]
        return ".".join([*parts, name] if name else parts)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            target = resolve(node.level, node.module)
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in modules:
                    found.add(submodule)
                elif target in modules:
                    found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(ROOT.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {
        module_name(path): _imports(
            ast.parse(path.read_text()), module_name(path), path.name == "__init__.py", modules
        )
        for path in paths
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def main() -> int:
    graph = import_graph()
    if "--dot" in sys.argv:
        print("digraph imports {")
        for module, targets in sorted(graph.items()):
            for target in sorted(targets):
                print(f'  "{module}" -> "{target}";')
        print("}")
    else:
        for module, targets in sorted(graph.items()):
            print(f"{module} -> {', '.join(sorted(targets)) or '(nothing)'}")
    found = cycles(graph)
    for component in found:
        print("cycle: " + " <-> ".join(component), file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
