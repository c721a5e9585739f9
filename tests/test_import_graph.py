"""The package's runtime import graph has no cycle, and the backend kinds are listed once.

The graph is read from the source (every `import` / `from ... import`, at module level or inside
functions, except those under `if TYPE_CHECKING:`), so a lazy import inside a function that
closes a loop counts too: it is still a runtime dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import usepod_desktop
from usepod_desktop.core.kinds import ALL_KINDS

PACKAGE_DIR = Path(usepod_desktop.__file__).parent
ROOT = "usepod_desktop"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, modules: set[str]) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.modules = modules
        self.found: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _add(self, name: str) -> None:
        # The longest known module that `name` is or lies in (`a.b.c` may be a function in a.b).
        while name and name not in self.modules:
            name = name.rpartition(".")[0]
        if name and name != self.module:
            self.found.add(name)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.startswith(ROOT):
                self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join([*base, node.module] if node.module else base)
        else:
            target = node.module or ""
        if not target.startswith(ROOT):
            return
        for alias in node.names:
            full = f"{target}.{alias.name}"
            self._add(full if full in self.modules else target)


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        visitor = _Imports(name, path.name == "__init__.py", modules)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        graph[name] = visitor.found
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm; components of more than one module are import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: set[str] = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            out.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    # A package importing its own submodules (core.backends -> core.backends.base) is how
    # packages re-export; leave those edges out so that only real loops remain.
    trimmed = {
        m: {d for d in deps if not d.startswith(m + ".") and not m.startswith(d + ".")}
        for m, deps in graph.items()
    }
    return [c for c in strongly_connected(trimmed) if len(c) > 1]


def test_the_checker_sees_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [{"a", "b", "c"}]


def test_the_graph_is_read_from_the_source() -> None:
    graph = import_graph()
    # Known edges, one at module level and one lazy inside a function.
    assert "usepod_desktop.core.kinds" in graph["usepod_desktop.core.config"]
    assert "usepod_desktop.gui.tray" in graph["usepod_desktop.gui.controller"]


def test_no_runtime_import_cycle() -> None:
    cycles = _cycles(import_graph())
    assert cycles == [], "runtime import cycles: " + "; ".join(
        " <-> ".join(sorted(c)) for c in cycles
    )


def _kind_literals(source: str) -> set[str]:
    return {
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and node.value in ALL_KINDS
    }


def test_the_kind_counter_sees_a_table() -> None:
    assert _kind_literals('T = {"vllm": 1,\n "ollama": 2,\n "venice": 3}') == {
        "vllm",
        "ollama",
        "venice",
    }


def test_the_kind_names_are_listed_in_one_module_only() -> None:
    """Outside core/kinds.py no product module names more than one kind as a string literal
    (an adapter names its own kind; a table of kinds would name several)."""
    offenders = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        if path.name == "kinds.py" or "sandbox" in path.parts:
            continue  # the sandbox's fakes are an independent oracle with their own tables
        found = _kind_literals(path.read_text(encoding="utf-8"))
        if len(found) > 1:
            offenders[str(path.relative_to(PACKAGE_DIR))] = sorted(found)
    assert offenders == {}
