"""The layout stays one-way: no import cycle among bench/ modules, counting the imports inside functions too (a
function-level import hides a cycle from Python, not from the reader), and baselines/ never imports the harness
above the registry."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: str) -> dict[str, Path]:
    return {module_name(p): p for p in (REPO / package).rglob("*.py")}


def imported(node: ast.Import | ast.ImportFrom, current: str, is_package: bool, known: set[str]) -> set[str]:
    """Modules of ``known`` that an import statement of module ``current`` loads (``from pkg import sub`` counts as
    pkg.sub, not pkg; relative imports resolved)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names} & known
    base = node.module or ""
    if node.level:
        anchor = current.split(".") if is_package else current.split(".")[:-1]
        anchor = anchor[:len(anchor) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
    subs = {f"{base}.{a.name}" for a in node.names} & known
    return subs | ({base} & known if len(subs) < len(node.names) else set())


def with_packages(deps: set[str], known: set[str], root: str) -> set[str]:
    """Importing ``a.b.c`` runs ``a/b/__init__.py`` first: each package on the way is a dependency too (the root
    package's own ``__init__`` excepted: every module of the tree loads it)."""
    out = set(deps)
    for d in deps:
        parts = d.split(".")
        out |= {".".join(parts[:i]) for i in range(2, len(parts))} & known
    return out - {root}


def import_graph(package: str) -> dict[str, set[str]]:
    mods = modules(package)
    graph = {}
    for name, path in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps |= imported(node, name, path.name == "__init__.py", set(mods))
        deps = with_packages(deps, set(mods), package)
        # a module's own packages are initialised before it: importing from them is not a cycle
        graph[name] = {d for d in deps if d != name and not name.startswith(d + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph("bench")
    assert "bench.metrics" in graph["bench.tolerances"]  # imported inside tolerances.declared()
    assert "bench.suite" in graph["bench.prefetch"]


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_counts_a_package_init_as_a_module():
    """`from bench.launch import slurm` runs bench/launch/__init__.py: a cycle through a package's __init__ counts."""
    node = ast.parse("from bench.launch import slurm").body[0]
    known = {"bench", "bench.launch", "bench.launch.slurm"}
    assert with_packages(imported(node, "bench.cli", False, known), known, "bench") == {"bench.launch", "bench.launch.slurm"}


def test_no_import_cycle_among_bench_modules():
    assert cycles(import_graph("bench")) == []


def test_nothing_imports_the_cli():
    """`bench.cli` is the top floor: the commands it registers may be imported by it, never the other way round."""
    graph = import_graph("bench")
    assert [m for m, deps in graph.items() if "bench.cli" in deps] == []


def test_the_runner_imports_nothing_above_it():
    """The runner sits below the commands, launchers, reports and comparison."""
    above = {"bench.cli", "bench.launch", "bench.launch.slurm", "bench.launch.local", "bench.report", "bench.compare",
             "bench.baseline"}
    assert import_graph("bench")["bench.runner"] & above == set()


def test_baselines_import_only_the_registry_and_low_level_bench_modules():
    """Wrappers sit below the runner: a family file may use the registry, errors and conventions (and the shared
    pieces in baselines/nn), never the runner, metrics, the CLI, reports or launchers."""
    allowed = {"bench.registry", "bench.errors", "bench.conventions"}
    for path in (REPO / "baselines").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "bench":
                names = {f"bench.{a.name}" for a in node.names} if node.module == "bench" else {node.module}
                assert names <= allowed, (str(path.relative_to(REPO)), sorted(names - allowed))
            elif isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "bench" for a in node.names), str(path.relative_to(REPO))
    assert cycles(import_graph("baselines")) == []
