"""The layer contract, read from the source: which modules may import what, and no import cycles in ``segpipe/``.

Every ``import`` in every module of ``segpipe/`` and ``flows/`` counts, wherever it is written (module level,
inside a function, under ``TYPE_CHECKING``); relative imports are made absolute. ``from a import b`` imports the
module ``a.b`` when there is one, else ``a``; importing ``a.b`` is not counted as importing the package ``a``
(as import-linter's graph does), so a package ``__init__`` that imports its own submodules is not a cycle.
Imports made from strings (``importlib.import_module``) are not seen.

A rule that today's code breaks outside the change that brought this test lists the breach in
``KNOWN_VIOLATIONS``; the list only shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("segpipe", "flows")

# issue 17: (importer, imported) pairs that break a rule today, in code other changes are moving; trim after merge.
KNOWN_VIOLATIONS: dict[str, set[tuple[str, str]]] = {
    "flows": set(),
    "prefect": set(),
    "distributed": set(),
    "mlflow": set(),
    "fsspec": set(),
    "cli": set(),
}
KNOWN_CYCLES: set[frozenset[str]] = set()  # issue 17: the modules of a known cycle; none today


@dataclass(frozen=True)
class Import:
    """One import statement's target, as seen in ``module`` at ``line``."""

    module: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.module} imports {self.target} (line {self.line})"


def module_names(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``root/<package>``."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(module: str, path: Path, known: dict[str, Path]) -> Iterator[Import]:
    """Every import in ``path`` (any depth of the syntax tree), with relative targets made absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(package, node.module, node.level)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield Import(module, candidate if candidate in known else base, node.lineno)


def _absolute(package: str, name: str | None, level: int) -> str:
    """``from ..x import y`` in ``package`` -> the absolute name of ``..x``."""
    if level == 0:
        return name or ""
    parts = package.split(".")
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, name] if name else base)


def all_imports(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> list[Import]:
    """Every import in every module under ``root/<package>``."""
    known = module_names(root, packages)
    return [found for module, path in known.items() for found in imports_of(module, path, known)]


def within(name: str, *prefixes: str) -> bool:
    """``name`` is one of ``prefixes`` or a module inside one of them."""
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def breaches(imports: Iterable[Import], targets: tuple[str, ...], allowed: Callable[[str], bool]) -> list[Import]:
    """Imports of ``targets`` (or their submodules) by modules that ``allowed`` does not allow."""
    return [found for found in imports if within(found.target, *targets) and not allowed(found.module)]


def cycles(imports: Iterable[Import], package: str) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component of ``package``'s import graph."""
    graph: dict[str, set[str]] = {}
    for found in imports:
        if within(found.module, package) and within(found.target, package):
            graph.setdefault(found.module, set()).add(found.target)
            graph.setdefault(found.target, set())
    components = _strongly_connected(graph)
    loops = [c for c in components if len(c) > 1 or next(iter(c)) in graph[next(iter(c))]]
    return [_cycle_in(graph, component) for component in loops]


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on a deep graph)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    components.append(_pop_component(stack, on_stack, node))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


def _pop_component(stack: list[str], on_stack: set[str], root: str) -> set[str]:
    component: set[str] = set()
    while True:
        node = stack.pop()
        on_stack.discard(node)
        component.add(node)
        if node == root:
            return component


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first, inside the component)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            if start in graph[node]:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            for child in sorted(graph[node] & component - previous.keys() - {start}):
                previous[child] = node
                following.append(child)
        frontier = following
    raise AssertionError(f"no cycle in component {sorted(component)}")


def _unexpected(found: list[Import], rule: str) -> str:
    """The breaches not on the known list, one line each naming the module, the import and its line."""
    return "\n".join(str(f) for f in found if (f.module, f.target) not in KNOWN_VIOLATIONS[rule])


IMPORTS = all_imports()
CLI = ("segpipe.cli",)  # a module today, a package later: both are "within"


def test_only_the_cli_imports_flows() -> None:
    found = breaches(IMPORTS, ("flows",), lambda m: within(m, "flows", *CLI))
    unexpected = _unexpected(found, "flows")
    assert not unexpected, f"segpipe/ imports flows/ outside the CLI:\n{unexpected}"


def test_prefect_is_imported_only_in_flows() -> None:
    found = breaches(IMPORTS, ("prefect",), lambda m: within(m, "flows"))
    unexpected = _unexpected(found, "prefect")
    assert not unexpected, f"Prefect imported outside flows/:\n{unexpected}"


def test_distributed_is_imported_only_in_the_cluster_package_and_flows() -> None:
    found = breaches(IMPORTS, ("distributed",), lambda m: within(m, "segpipe.cluster", "flows"))
    unexpected = _unexpected(found, "distributed")
    assert not unexpected, f"distributed imported outside segpipe/cluster/ and flows/:\n{unexpected}"


MLFLOW_MODULES = ("segpipe.tracking", "segpipe.models.register", "segpipe.models.sources.mlflow_models")


def test_mlflow_is_imported_only_in_tracking_and_the_model_registry_modules() -> None:
    found = breaches(IMPORTS, ("mlflow",), lambda m: within(m, *MLFLOW_MODULES))
    unexpected = _unexpected(found, "mlflow")
    assert not unexpected, f"mlflow imported outside {', '.join(MLFLOW_MODULES)}:\n{unexpected}"


def test_fsspec_is_imported_only_in_storage() -> None:
    found = breaches(IMPORTS, ("fsspec", "s3fs"), lambda m: within(m, "segpipe.storage"))
    unexpected = _unexpected(found, "fsspec")
    assert not unexpected, f"fsspec/s3fs imported outside segpipe/storage/:\n{unexpected}"


def test_nothing_below_the_cli_imports_it() -> None:
    found = breaches(IMPORTS, CLI, lambda m: within(m, *CLI))
    unexpected = _unexpected(found, "cli")
    assert not unexpected, f"the CLI imported by a module below it:\n{unexpected}"


def test_segpipe_has_no_import_cycles() -> None:
    found = "\n".join(" -> ".join(c) for c in cycles(IMPORTS, "segpipe") if frozenset(c) not in KNOWN_CYCLES)
    assert not found, f"import cycles in segpipe/ (function-local imports count too):\n{found}"


def test_the_checker_catches_a_planted_cycle_and_a_forbidden_import(tmp_path: Path) -> None:
    package = tmp_path / "planted"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from planted.sub import b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("def later():\n    from .. import c\n")
    (package / "c.py").write_text("import fsspec\n\n\ndef f():\n    from .a import x\n")
    imports = all_imports(tmp_path, ("planted",))
    assert cycles(imports, "planted") == [["planted.a", "planted.sub.b", "planted.c", "planted.a"]]
    found = breaches(imports, ("fsspec",), lambda m: within(m, "planted.storage"))
    assert [str(f) for f in found] == ["planted.c imports fsspec (line 1)"]


@pytest.mark.parametrize(
    ("package", "name", "level", "expected"),
    [("a.b", "c", 1, "a.b.c"), ("a.b", "c", 2, "a.c"), ("a.b", None, 2, "a"), ("a", "x.y", 0, "x.y")],
)
def test_relative_imports_are_made_absolute(package: str, name: str | None, level: int, expected: str) -> None:
    assert _absolute(package, name, level) == expected


def test_every_known_violation_still_occurs() -> None:
    seen = {(f.module, f.target) for f in IMPORTS}
    stale = sorted(f"{rule}: {pair}" for rule, pairs in KNOWN_VIOLATIONS.items() for pair in pairs - seen)
    assert not stale, "fixed; remove from KNOWN_VIOLATIONS:\n" + "\n".join(stale)
