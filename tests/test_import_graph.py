"""The import graph of ``esl_bridge`` keeps the shape docs/architecture.rst describes.

Every module is parsed with ``ast`` (nothing is imported), so a rule broken by code that
would fail at import time is still found. The rules:

1. no import cycles inside the package;
2. ``core/`` imports nothing of ``esl/``, ``media/``, ``signaling/``, ``gateway/``, not even
   through another module (the core has no I/O and runs under any loop);
3. only ``loops.py`` (the one bridge) and ``gateway/process.py`` (the process entry, which
   runs the gevent hub and starts the asyncio thread) import both the gevent world and the
   asyncio world. ``cli.py`` is not an exception: it only calls ``Gateway`` and ``Demo``;
4. ``sim/`` is imported from outside ``sim/`` only by ``gateway/demo.py`` (tests aside), and
   nothing that a real gateway process loads reaches it.

Imports under ``if TYPE_CHECKING:`` are not executed and are left out of the graph.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "esl_bridge"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

GEVENT_WORLD = frozenset({"gevent", "greenlet"})
ASYNCIO_WORLD = frozenset({"asyncio", "aiohttp", "aiortc"})
CORE_MAY_NOT_REACH = ("esl", "media", "signaling", "gateway")
BOTH_WORLDS_ALLOWED = frozenset({f"{PACKAGE}.loops", f"{PACKAGE}.gateway.process"})
SIM_IMPORTERS_ALLOWED = frozenset({f"{PACKAGE}.gateway.demo"})
PROCESS_ENTRY = f"{PACKAGE}.gateway.process"


@dataclass(frozen=True)
class Module:
    name: str
    is_package: bool
    internal: frozenset[str]  # esl_bridge modules this one imports (executed imports only)
    external: frozenset[str]  # top-level names of the other packages it imports


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _executed_imports(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve(
    module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]
) -> tuple[set[str], set[str]]:
    internal: set[str] = set()
    external: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                internal.add(alias.name)
            else:
                external.add(alias.name.split(".")[0])
        return internal, external
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    if target != PACKAGE and not target.startswith(PACKAGE + "."):
        external.add(target.split(".")[0])
        return internal, external
    for alias in node.names:
        # ``from esl_bridge.core import ids`` imports the submodule, not the package body.
        sub = f"{target}.{alias.name}"
        internal.add(sub if sub in known else target)
    return internal, external


def parse_package(root: Path = ROOT) -> dict[str, Module]:
    paths = sorted(root.rglob("*.py"))
    names = {path: _module_name(path) for path in paths}
    known = {name for name, _ in names.values()}
    modules: dict[str, Module] = {}
    for path in paths:
        name, is_package = names[path]
        internal: set[str] = set()
        external: set[str] = set()
        for node in _executed_imports(ast.parse(path.read_text(), filename=str(path))):
            found_internal, found_external = _resolve(name, is_package, node, known)
            internal |= found_internal
            external |= found_external
        unknown = internal - known
        assert not unknown, f"{name} imports modules that do not exist: {sorted(unknown)}"
        internal.discard(name)
        modules[name] = Module(name, is_package, frozenset(internal), frozenset(external))
    return modules


# The rules, as functions of a graph, so each can also be shown to catch a violation.


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(iter(children), None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def reachable(graph: Mapping[str, Iterable[str]], start: str) -> dict[str, str]:
    """Every module ``start`` loads, each mapped to the module that imports it first."""
    via: dict[str, str] = {}
    todo = [start]
    while todo:
        node = todo.pop()
        for child in sorted(graph.get(node, ())):
            if child != start and child not in via:
                via[child] = node
                todo.append(child)
    return via


def chain(via: Mapping[str, str], start: str, end: str) -> str:
    path = [end]
    while path[-1] != start:
        path.append(via[path[-1]])
    return " -> ".join(reversed(path))


def in_area(module: str, area: str) -> bool:
    prefix = f"{PACKAGE}.{area}"
    return module == prefix or module.startswith(prefix + ".")


def core_violations(graph: Mapping[str, Iterable[str]]) -> list[str]:
    found: list[str] = []
    for module in sorted(graph):
        if not in_area(module, "core"):
            continue
        via = reachable(graph, module)
        for target in sorted(via):
            if any(in_area(target, area) for area in CORE_MAY_NOT_REACH):
                found.append(chain(via, module, target))
    return found


def both_worlds_violations(modules: Mapping[str, Module]) -> list[str]:
    return [
        f"{name} imports {sorted(m.external & GEVENT_WORLD)}"
        f" and {sorted(m.external & ASYNCIO_WORLD)}"
        for name, m in sorted(modules.items())
        if m.external & GEVENT_WORLD
        and m.external & ASYNCIO_WORLD
        and name not in BOTH_WORLDS_ALLOWED
    ]


def sim_violations(graph: Mapping[str, Iterable[str]]) -> list[str]:
    found = [
        f"{name} imports {target}"
        for name, targets in sorted(graph.items())
        if not in_area(name, "sim") and name not in SIM_IMPORTERS_ALLOWED
        for target in sorted(targets)
        if in_area(target, "sim")
    ]
    via = reachable(graph, PROCESS_ENTRY)
    found += [chain(via, PROCESS_ENTRY, t) for t in sorted(via) if in_area(t, "sim")]
    return found


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return parse_package()


@pytest.fixture(scope="module")
def graph(modules: dict[str, Module]) -> dict[str, frozenset[str]]:
    return {name: m.internal for name, m in modules.items()}


def test_the_parser_sees_the_package(modules: dict[str, Module]) -> None:
    # A parser that found nothing would make every rule pass; pin edges that exist today.
    assert f"{PACKAGE}.core.callbook" in modules
    assert f"{PACKAGE}.core.call" in modules[f"{PACKAGE}.core.callbook"].internal
    assert f"{PACKAGE}.core.ids" in modules[f"{PACKAGE}.core.callbook"].internal  # from-import
    assert f"{PACKAGE}.media.unicast" in modules[f"{PACKAGE}.media.leg"].internal  # relative
    assert f"{PACKAGE}.sim" in modules[f"{PACKAGE}.gateway.demo"].internal
    assert {"gevent", "asyncio"} <= modules[f"{PACKAGE}.loops"].external


def test_no_import_cycles(graph: dict[str, frozenset[str]]) -> None:
    assert find_cycles(graph) == []


def test_core_imports_no_adapter(graph: dict[str, frozenset[str]]) -> None:
    assert core_violations(graph) == []


def test_only_the_bridge_and_the_process_entry_import_both_loops(
    modules: dict[str, Module],
) -> None:
    assert both_worlds_violations(modules) == []


def test_sim_is_imported_only_by_the_demo(graph: dict[str, frozenset[str]]) -> None:
    assert sim_violations(graph) == []


# Each rule catches what it names (a checker that cannot fail proves nothing).


def test_a_cycle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]


def test_core_reaching_an_adapter_through_another_module_is_found() -> None:
    graph = {
        f"{PACKAGE}.core.call": {f"{PACKAGE}.numbers"},
        f"{PACKAGE}.numbers": {f"{PACKAGE}.esl.protocol"},
        f"{PACKAGE}.esl.protocol": set(),
    }
    assert core_violations(graph) == [
        f"{PACKAGE}.core.call -> {PACKAGE}.numbers -> {PACKAGE}.esl.protocol"
    ]


def test_a_third_module_importing_both_loops_is_found() -> None:
    mixed = Module(
        f"{PACKAGE}.gateway.esl_side", False, frozenset(), frozenset({"gevent", "aiohttp"})
    )
    bridge = Module(f"{PACKAGE}.loops", False, frozenset(), frozenset({"gevent", "asyncio"}))
    assert both_worlds_violations({m.name: m for m in (mixed, bridge)}) == [
        f"{PACKAGE}.gateway.esl_side imports ['gevent'] and ['aiohttp']"
    ]


def test_sim_on_the_path_of_a_real_call_is_found() -> None:
    graph = {
        PROCESS_ENTRY: {f"{PACKAGE}.gateway.controller"},
        f"{PACKAGE}.gateway.controller": {f"{PACKAGE}.sim.codecs"},
        f"{PACKAGE}.sim.codecs": set(),
    }
    assert sim_violations(graph) == [
        f"{PACKAGE}.gateway.controller imports {PACKAGE}.sim.codecs",
        f"{PROCESS_ENTRY} -> {PACKAGE}.gateway.controller -> {PACKAGE}.sim.codecs",
    ]
