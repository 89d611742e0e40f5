"""The shape of the code: which package may import which, and no import cycles.

Read from the source with :mod:`ast` (nothing is imported), so the checks hold for every
import in a file, including those inside functions. Imports under ``TYPE_CHECKING`` never
run, so the layering checks leave them out; the cycle check counts them (a circle of
types is still a circle a reader has to untangle).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {
    "mqcontract": ROOT / "reference",
    "mqcontract_conformance": ROOT / "conformance",
    "mqcontract_fixtures": ROOT / "fixtures",
}
#: Package -> the packages of this project it must never import. The abstraction knows
#: nothing of the kit or the harnesses; the kit finds harnesses by entry point.
FORBIDDEN = {
    "mqcontract": {"mqcontract_conformance", "mqcontract_fixtures"},
    "mqcontract_conformance": {"mqcontract_fixtures"},
    "mqcontract_fixtures": set(),
}


def _modules() -> dict[str, Path]:
    found = {}
    for package, root in SOURCES.items():
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _runtime_nodes(tree: ast.AST, *, typing_too: bool = False) -> Iterator[ast.AST]:
    """Every node except what sits under ``if TYPE_CHECKING:`` (unless ``typing_too``)."""
    for node in ast.iter_child_nodes(tree):
        if (
            not typing_too
            and isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test)
        ):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node, typing_too=typing_too)


def _target(name: str) -> str | None:
    """The project module an imported name lands in (its longest known prefix)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, *, typing_too: bool = False) -> set[str]:
    """Project modules ``module`` imports at run time (and for type checking, if asked)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in _runtime_nodes(tree, typing_too=typing_too):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from package import submodule`` depends on the submodule, not on the
            # package's ``__init__``; ``from module import name`` on the module.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        for name in names:
            target = _target(name)
            if target is not None and target != module:
                found.add(target)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}
TYPED_GRAPH = {module: imports_of(module, typing_too=True) for module in MODULES}


def test_the_graph_is_read_from_the_real_tree() -> None:
    assert "mqcontract.service" in GRAPH["mqcontract.providers.memory"]
    assert "mqcontract.testing" in GRAPH["mqcontract_fixtures.pgmq"]
    assert len(MODULES) > 100


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_nothing_it_must_not(package: str) -> None:
    offending = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if module.split(".")[0] == package
        for target in targets
        if target.split(".")[0] in FORBIDDEN[package]
    )
    assert not offending, offending


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module (the cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_strongly_connected_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]


def test_no_import_cycles_not_even_through_type_annotations() -> None:
    assert strongly_connected(TYPED_GRAPH) == []


def test_the_abstraction_installs_without_the_kits_dependencies() -> None:
    heavy = {"pytest", "hypothesis", "_pytest"}
    offending = sorted(
        f"{module} imports {alias.name if isinstance(node, ast.Import) else node.module}"
        for module, path in MODULES.items()
        if module.split(".")[0] == "mqcontract"
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
        if ((alias.name if isinstance(node, ast.Import) else node.module) or "").split(".")[0]
        in heavy
    )
    assert not offending, offending


def test_the_public_api_names_each_export_for_one_audience() -> None:
    import mqcontract

    assert set(mqcontract.__all__) == mqcontract.APPLICATION_API | mqcontract.PROVIDER_API
    assert not mqcontract.APPLICATION_API & mqcontract.PROVIDER_API
    assert "MessageClient" not in mqcontract.__all__  # the workflow domain: mqcontract.tasker
    for name in mqcontract.__all__:
        assert getattr(mqcontract, name) is not None


def test_the_core_does_not_depend_on_the_workflow_domain() -> None:
    offending = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if module.startswith("mqcontract.")
        and not module.startswith(("mqcontract.tasker", "mqcontract.events.demo"))
        for target in targets
        if target.startswith("mqcontract.tasker")
    )
    assert not offending, offending
