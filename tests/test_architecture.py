"""The package's shape: no import cycle between its modules, dependencies one way.

Imports are read from the source, so the check covers every module whether or not a
test imports it. Every import counts — inside functions and under ``TYPE_CHECKING`` too:
deferring an import hides a cycle from the interpreter, not from a reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import tierwise

PACKAGE = Path(tierwise.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.Module, name: str, is_package: bool) -> Iterator[str]:
    """Every module ``name`` imports, wherever (relative imports resolved)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                here = here[: len(here) - node.level + 1]
                base = ".".join([*here, base] if base else here)
            yield base
            for alias in node.names:  # ``from pkg import module`` imports pkg.module
                yield f"{base}.{alias.name}"


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports at import time."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text("utf-8"))
        found = set(imports(tree, name, path.name == "__init__.py"))
        # importing a.b.c runs a/__init__ and a/b/__init__ first; the importer's own
        # packages are already running (``from tierwise.ledger import queries`` inside
        # tierwise.ledger imports tierwise.ledger.queries, not tierwise.ledger again)
        targets = {m for m in found if m in paths and not _within(name, m)}
        targets |= {p for m in targets for p in _parents(m) if not _within(name, p)}
        graph[name] = targets - {name}
    return graph


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


#: Cycles known and not yet broken, each with why it is still here. The test fails when
#: a new cycle appears *and* when a listed one is gone (so the list only shrinks).
KNOWN: list[list[str]] = []


def test_the_package_has_no_import_cycle() -> None:
    """A package ``__init__`` re-exporting its modules is part of the graph like any other."""
    assert cycles(import_graph()) == KNOWN


#: Each folder may import from folders of a lower rank only (README "Architecture"):
#: catalog <- providers <- ledger <- guards / learning <- routing <- nodes <- graphs <-
#: evaluation / insights <- cli. ``prompts`` sits at the bottom (nodes use it); ``testing``
#: (the simulator) may use anything below ``nodes``.
RANK = {
    "catalog": 0, "prompts": 0, "providers": 1, "ledger": 2, "guards": 3, "learning": 3,
    "routing": 4, "testing": 4.5, "nodes": 5, "graphs": 6, "evaluation": 7, "insights": 7,
    "cli": 8,
}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a folder into one of a higher (or the same, other) rank."""
    found = []
    for module, targets in sorted(graph.items()):
        here = _folder(module)
        for target in sorted(targets):
            there = _folder(target)
            if here is None or there is None or here == there:
                continue
            if RANK[there] >= RANK[here]:
                found.append(f"{module} -> {target}")
    return found


def _folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def test_every_folder_is_ranked() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(RANK)


def test_dependencies_run_one_way() -> None:
    assert upward_imports(import_graph()) == []


def test_the_top_level_is_small_and_every_export_resolves() -> None:
    import importlib

    assert 10 <= len(tierwise.__all__) <= 16
    for package in ("tierwise", "tierwise.catalog", "tierwise.routing", "tierwise.nodes",
                    "tierwise.graphs", "tierwise.testing"):  # fmt: skip
        module = importlib.import_module(package)
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{package}.{name}"


#: A module past this many lines holds more than one concern (DESIGN.md's style).
MAX_MODULE_LINES = 600


def test_no_module_is_over_600_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE.parent)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, "split these by concern"
