"""The package's import graph has no cycle, imports inside functions included.

import-linter (run by `.ci/run`) checks the layers; a cycle can hide inside one layer, or
behind an import placed in a function to dodge it, so this test walks the whole graph
that grimp builds from every ``import`` statement in the package, wherever it stands.
"""

from __future__ import annotations

import sys

import pytest
from conftest import REPO

pytest.importorskip("grimp")
sys.path.insert(0, str(REPO / "tools"))
import import_graph  # noqa: E402 - tools/ is not a package


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    modules = sorted(graph)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, list[str]]:
    """Module -> modules it imports, for every module of every folder of the package."""
    return import_graph.edges()


def test_no_import_cycles_in_the_package(graph):
    cycles = _cycles(graph)
    assert not cycles, "import cycles (imports inside functions count):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_graph_sees_every_folder_and_imports_inside_functions(graph):
    # Guards on the guard: the cycle test is only worth something if the graph holds the
    # modules of every package folder and the imports that stand inside function bodies
    # (the CLI imports the Python API inside its `run` command).
    for module in ("persona_eval.plugins.generators.hf", "persona_eval.trainers.common",
                   "persona_eval.persona_inference.inference", "persona_eval.leaderboards.build"):
        assert module in graph
    assert "persona_eval.api" in graph["persona_eval.cli"]
