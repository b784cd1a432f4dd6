"""The package's shape: data flows one way, so no module imports its way back to itself."""

import ast
from pathlib import Path

import bgpo

PACKAGE = Path(bgpo.__file__).parent


def _imports() -> dict[str, set[str]]:
    """Module -> the bgpo modules it imports anywhere (top level or inside functions)."""
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bgpo"):
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("bgpo")}
        graph[name] = {m for m in found & modules.keys() if m != name and not name.startswith(m + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return []


def test_no_import_cycles_in_the_package():
    graph = _imports()
    assert "bgpo.train" in graph and "bgpo.evaluate" in graph["bgpo.train"]  # the walk sees real edges
    assert _cycle(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_nothing_but_the_cli_the_experiment_and_the_doctor_depends_on_the_training_loop():
    users = {m for m, deps in _imports().items() if "bgpo.train" in deps}
    assert users <= {"bgpo.experiment", "bgpo.cli", "bgpo.doctor"}, users  # the doctor runs a tiny training
