"""The shape of the code: no import cycles, no huge files or classes, layers kept.

The import graph is grimp's (the library under import-linter), built on the
installed view of the package (scripts/installed-view): grimp walks
gossipmesh/ on disk and does not follow setuptools' package-dir, so dns/,
cli/ and simulations/ are symlinked in, as scripts/typecheck does for mypy.
It is built in a subprocess run from the view, since in this process
`gossipmesh` is already imported from the repository's own directory.

When these were written, three checks failed, only on code that others
were refactoring (they are neither skipped nor xfailed: they are the target):
- sizes: gossipmesh/node.py (1294 lines, class Node 1075); session/manager.py
  and discovery/service.py had just been split;
- cycles: node <-> node_links (a TYPE_CHECKING import back), session.keypair
  <-> session.peer (the same), simulations.mesh_metrics <-> mesh_workload;
- contracts: node.py imports discovery, runtime.statefiles, asyncio and
  time; discovery/peer_cache.py imports runtime.statefiles (a layer above).
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

MAX_FILE_LINES = 700
MAX_CLASS_LINES = 400

# Directories under ROOT whose .py files are not the project's source.
NOT_SOURCE = {"tests", "build", "__pycache__", "node_modules", "out"}

# Runs inside the installed view: every direct import between modules of
# gossipmesh, and from them to external (incl. stdlib) top-level packages,
# with the line that makes it. TYPE_CHECKING imports are included (grimp's
# default): an annotation-only import still couples the two modules, and a
# cycle through one is a cycle a reader has to untangle.
_DUMP_GRAPH = """
import json, grimp
graph = grimp.build_graph("gossipmesh", include_external_packages=True, cache_dir=None)
edges = []
for importer in sorted(graph.modules):
    for imported in sorted(graph.find_modules_directly_imported_by(importer)):
        details = graph.get_import_details(importer=importer, imported=imported)
        line = min((d["line_number"] for d in details), default=0)
        edges.append([importer, imported, line])
print(json.dumps({
    "modules": sorted(m for m in graph.modules if not graph.is_module_squashed(m)),
    "edges": edges,
}))
"""

Edge = tuple[str, str, int]


@pytest.fixture(scope="module")
def installed_view(tmp_path_factory: pytest.TempPathFactory) -> Path:
    view = tmp_path_factory.mktemp("installed-view")
    subprocess.run([str(ROOT / "scripts" / "installed-view"), str(view)], check=True)
    return view


@pytest.fixture(scope="module")
def import_graph(installed_view: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _DUMP_GRAPH],
        cwd=installed_view,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    graph: dict[str, Any] = json.loads(done.stdout)
    # The view, not the repository's own gossipmesh/ (which lacks dns/ etc.).
    assert "gossipmesh.dns" in graph["modules"]
    assert "gossipmesh.simulations" in graph["modules"]
    return graph


def _internal_edges(graph: dict[str, Any]) -> dict[str, dict[str, int]]:
    """importer -> {imported: line}, between gossipmesh modules only.

    Edges from a package's __init__ to its own submodules (re-exports) are
    kept. They are not cycles by themselves: grimp records no implicit edge
    from a submodule to its parent package, so `pkg -> pkg.sub` closes a
    cycle only when something under pkg.sub explicitly imports `pkg` (its
    __init__) back. That is a real cycle (the __init__ is half-run when it
    happens) and is flagged like any other.
    """
    modules = set(graph["modules"])
    edges: dict[str, dict[str, int]] = {module: {} for module in modules}
    for importer, imported, line in graph["edges"]:
        if importer in modules and imported in modules and importer != imported:
            edges[importer][imported] = line
    return edges


def _strongly_connected(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's components of more than one module, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(edges[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def _shortest_cycle(edges: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """One shortest cycle through the component's first module, within it."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(edges[node]):
                if successor not in members:
                    continue
                if successor == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if successor not in previous:
                    previous[successor] = node
                    following.append(successor)
        frontier = following
    raise AssertionError(f"no cycle in component {component}")


def test_no_import_cycles(import_graph: dict[str, Any]) -> None:
    edges = _internal_edges(import_graph)
    cycles = []
    for component in _strongly_connected(edges):
        cycle = _shortest_cycle(edges, component)
        hops = " -> ".join(
            f"{imported} (l.{edges[importer][imported]})"
            for importer, imported in itertools.pairwise(cycle)
        )
        cycles.append(f"{cycle[0]} -> {hops}   [component: {', '.join(component)}]")
    assert not cycles, "import cycles (module-level, TYPE_CHECKING included):\n" + "\n".join(cycles)


def test_cycle_finder_names_a_cycle() -> None:
    edges = {
        "a": {"b": 1},
        "b": {"c": 2},
        "c": {"a": 3, "d": 4},
        "d": {},
        "e": {"e": 5},
    }
    components = _strongly_connected(edges)
    assert components == [["a", "b", "c"]]
    assert _shortest_cycle(edges, components[0]) == ["a", "b", "c", "a"]


def _source_files() -> Iterator[Path]:
    for directory, subdirectories, files in os.walk(ROOT):
        subdirectories[:] = sorted(
            name
            for name in subdirectories
            if not name.startswith(".")
            and name not in NOT_SOURCE
            and not name.endswith(".egg-info")
        )
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(directory) / name


def test_no_huge_files_or_classes() -> None:
    """Files over 700 lines or classes over 400 (tests/ excepted) must be split."""
    offenders = []
    for path in _source_files():
        source = path.read_text(encoding="utf-8")
        relative = path.relative_to(ROOT)
        lines = len(source.splitlines())
        if lines > MAX_FILE_LINES:
            offenders.append(f"{relative}: {lines} lines (max {MAX_FILE_LINES})")
        for node in ast.walk(ast.parse(source, filename=str(path))):
            if isinstance(node, ast.ClassDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_CLASS_LINES:
                    offenders.append(
                        f"{relative}:{node.lineno}: class {node.name}: {length} lines"
                        f" (max {MAX_CLASS_LINES})"
                    )
    assert not offenders, "too big:\n" + "\n".join(offenders)


def test_import_contracts_are_kept() -> None:
    """The layers and sans-IO contracts in pyproject.toml ([tool.importlinter])."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "lint-imports")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"lint-imports: broken contracts\n{done.stdout}{done.stderr}"


def test_statefiles_is_a_leaf(import_graph: dict[str, Any]) -> None:
    """statefiles.py imports only the stdlib and gossipmesh.errors.

    Lower layers (the node, discovery's peer cache) read and write state
    files through it, so it must drag nothing else in with it.
    """
    imported = {
        target for source, target, _ in import_graph["edges"] if source == "gossipmesh.statefiles"
    }
    allowed = {"gossipmesh.errors"}
    unexpected = {
        name
        for name in imported - allowed
        if name.startswith("gossipmesh") or name.split(".")[0] not in sys.stdlib_module_names
    }
    assert not unexpected, f"gossipmesh.statefiles imports {sorted(unexpected)}"
