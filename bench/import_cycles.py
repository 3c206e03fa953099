"""Cycles in the import graph of the ``seawall`` package, from its source (standard library only).

    python bench/import_cycles.py            # the package under src/ next to this folder
    python bench/import_cycles.py --check    # exit 1 when module-level imports form a cycle

An edge ``a -> b`` is an ``import`` in module ``a`` that loads module ``b`` (``from p import n``
loads ``p.n`` when that is a module, else ``p``). Three kinds of import are told apart:

* **module level**: run when the module is imported (class bodies, ``try``/``if`` blocks included);
  these are the imports that can fail with a partly initialised module, and the ones the cycles
  below are made of;
* **inside functions**: run when the function is called; counted, and the cycles they would
  close are listed separately (usually a deliberate deferral, sometimes a cycle in disguise);
* **type checking only** (under ``if TYPE_CHECKING:``): never run; counted only.

Cycles are reported per strongly connected group with the edges that hold it together, for
modules (``seawall.gateway.pipeline``) and for packages (``seawall.gateway``: every module of a
subpackage of ``seawall`` collapsed into one node).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT_PACKAGE = "seawall"
DEFAULT_SOURCE = Path(__file__).resolve().parent.parent / "src"

#: "module", "type_checking" (module level, under `if TYPE_CHECKING:`) or "function".
Kind = str


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    kind: Kind


def module_names(source: Path, package: str = ROOT_PACKAGE) -> dict[str, Path]:
    """Every module of ``package`` under ``source`` (a ``src`` folder), by dotted name."""
    modules: dict[str, Path] = {}
    for path in sorted((source / package).rglob("*.py")):
        parts = list(path.relative_to(source).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: set[str]) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.edges: list[Edge] = []
        self._function_depth = 0
        self._type_checking_depth = 0

    def _kind(self) -> Kind:
        if self._type_checking_depth:
            return "type_checking"
        return "function" if self._function_depth else "module"

    def _add(self, target: str, line: int) -> None:
        while target and target not in self.known:  # `import seawall.x.Name` style: the module part
            target = target.rpartition(".")[0]
        if target and target != self.module:
            self.edges.append(Edge(self.module, target, line, self._kind()))

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self._function_depth += 1
        self.generic_visit(node)
        self._function_depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._type_checking_depth += 1
            for child in node.body:
                self.visit(child)
            self._type_checking_depth -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] == ROOT_PACKAGE:
                self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            anchor = self.package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, node.module] if node.module else anchor)
        else:
            base = node.module or ""
        if base.split(".")[0] != ROOT_PACKAGE:
            return
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in self.known else base, node.lineno)


def collect_edges(source: Path = DEFAULT_SOURCE, package: str = ROOT_PACKAGE) -> list[Edge]:
    """Every import of one ``package`` module by another, with its line and kind."""
    modules = module_names(source, package)
    known = set(modules)
    edges: list[Edge] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        collector = _Collector(name, path.name == "__init__.py", known)
        collector.visit(tree)
        edges.extend(collector.edges)
    return edges


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively: the groups of two or more nodes that reach each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    nodes = sorted(set(graph) | {t for targets in graph.values() for t in targets})
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    group: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
    return sorted(groups)


def package_of(module: str) -> str:
    """``seawall.gateway.pipeline`` -> ``seawall.gateway``; top-level modules stay themselves."""
    return ".".join(module.split(".")[:2])


def graph_of(edges: Iterable[Edge], *, packages: bool = False) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        source, target = edge.source, edge.target
        if packages:
            source, target = package_of(source), package_of(target)
        if source != target:
            graph[source].add(target)
    return graph


def cycles(edges: list[Edge]) -> list[tuple[list[str], list[Edge]]]:
    """Each group of modules that import each other, with the imports inside the group."""
    found: list[tuple[list[str], list[Edge]]] = []
    for group in strongly_connected(graph_of(edges)):
        members = set(group)
        inside = {e for e in edges if e.source in members and e.target in members}
        found.append((group, sorted(inside, key=lambda e: (e.source, e.line, e.target))))
    return found


def mutual_packages(edges: list[Edge]) -> list[tuple[tuple[str, str], list[Edge]]]:
    """Pairs of packages each of which imports the other, with the module imports behind them."""
    graph = graph_of(edges, packages=True)
    pairs = sorted((a, b) for a in graph for b in graph[a] if a < b and a in graph.get(b, set()))
    found = []
    for a, b in pairs:
        inside = {e for e in edges if {package_of(e.source), package_of(e.target)} == {a, b}}
        found.append(((a, b), sorted(inside, key=lambda e: (e.source, e.line, e.target))))
    return found


_NOTES = {"module": "", "type_checking": "   [type checking only]", "function": "   [inside a function]"}


def _edge_lines(inside: Iterable[Edge]) -> Iterator[str]:
    for edge in inside:
        yield f"       {edge.source}:{edge.line} -> {edge.target}{_NOTES[edge.kind]}"


def report(source: Path = DEFAULT_SOURCE) -> tuple[str, int]:
    """The printed report, and the number of module-level cycles."""
    edges = sorted(set(collect_edges(source)), key=lambda e: (e.source, e.line, e.target))
    module_level = [e for e in edges if e.kind != "function"]
    count = {kind: sum(1 for e in edges if e.kind == kind) for kind in _NOTES}
    out = [
        f"{len(module_names(source))} modules; imports of one {ROOT_PACKAGE} module by another: "
        f"{count['module'] + count['type_checking']} at module level ({count['type_checking']} of them "
        f"for type checking only), {count['function']} inside functions",
    ]
    module_cycles = cycles(module_level)
    out.append(f"module-level cycles: {len(module_cycles)}")
    for number, (group, inside) in enumerate(module_cycles, 1):
        out.append(f"  {number}. {' <-> '.join(group)}")
        out.extend(_edge_lines(inside))
    pairs = mutual_packages(module_level)
    out.append(f"packages importing each other at module level: {len(pairs)}")
    for number, ((a, b), inside) in enumerate(pairs, 1):
        out.append(f"  {number}. {a} <-> {b}")
        out.extend(_edge_lines(inside))
    groups = strongly_connected(graph_of(module_level, packages=True))
    out.append(f"package groups that reach each other at module level: {len(groups)}")
    out.extend(f"  {number}. {', '.join(group)}" for number, group in enumerate(groups, 1))
    known = {frozenset(group) for group, _ in module_cycles}
    closed = [(group, inside) for group, inside in cycles(edges) if frozenset(group) not in known]
    out.append(f"further module cycles once the imports inside functions run: {len(closed)}")
    for number, (group, inside) in enumerate(closed, 1):
        out.append(f"  {number}. {' <-> '.join(group)}")
        out.extend(_edge_lines(inside))
    return "\n".join(out), len(module_cycles)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE, help="the src folder")
    parser.add_argument("--check", action="store_true", help="exit 1 on a module-level cycle")
    args = parser.parse_args(argv)
    text, module_cycles = report(args.source)
    print(text)
    return 1 if args.check and module_cycles else 0


if __name__ == "__main__":
    sys.exit(main())
