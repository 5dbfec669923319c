"""The dependency rules of DESIGN.md, checked by walking every import."""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BANNED = {
    "searchspace": {"torch", "blocks", "runners", "analysis"},
    "blocks": {"runners", "analysis"},
    "analysis": {"torch", "blocks", "runners"},
}
ALLOWED_THIRD_PARTY_IN_SEARCHSPACE = {"optuna"}
SPEC_MODULES = ("searchspace.v1", "searchspace.v2", "searchspace.presets")
VERBS = ("ablate", "search", "train", "evaluate", "profile", "export", "data")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def test_packages_import_only_downwards() -> None:
    bad = []
    for pkg, banned in BANNED.items():
        for path in (ROOT / pkg).rglob("*.py"):
            for line, name in _imports(path):
                if name.split(".")[0] in banned:
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def test_nothing_outside_runners_imports_runners() -> None:
    bad = []
    for pkg in ("searchspace", "blocks", "analysis"):
        for path in (ROOT / pkg).rglob("*.py"):
            bad += [f"{path}:{ln}" for ln, n in _imports(path) if n.split(".")[0] == "runners"]
    assert not bad


def test_searchspace_is_standard_library_only() -> None:
    stdlib = set(sys.stdlib_module_names) | {"searchspace", "__future__"}
    stdlib |= ALLOWED_THIRD_PARTY_IN_SEARCHSPACE
    bad = [
        f"{p.relative_to(ROOT)}:{ln} imports {n}"
        for p in (ROOT / "searchspace").rglob("*.py")
        for ln, n in _imports(p)
        if n.split(".")[0] not in stdlib
    ]
    assert not bad, "\n".join(bad)


def test_importing_searchspace_and_analysis_loads_no_torch() -> None:
    code = (
        "import sys, importlib, pkgutil\n"
        "import searchspace, analysis\n"
        "for pkg in (searchspace, analysis):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "False", out.stderr


def test_only_the_builder_reads_specs() -> None:
    """A block never sees a spec: only blocks/builder.py imports the spec modules."""
    bad = [
        f"{p.relative_to(ROOT)}:{ln} imports {n}"
        for p in (ROOT / "blocks").rglob("*.py")
        if p != ROOT / "blocks" / "builder.py"
        for ln, n in _imports(p)
        if n.startswith(SPEC_MODULES) or (n == "searchspace" and _imports_spec_names(p))
    ]
    assert not bad, "\n".join(bad)


def _imports_spec_names(path: Path) -> bool:
    """``from searchspace import v2`` is importing a spec module too."""
    tree = ast.parse(path.read_text())
    return any(
        isinstance(node, ast.ImportFrom)
        and node.module == "searchspace"
        and any(f"searchspace.{a.name}" in SPEC_MODULES for a in node.names)
        for node in ast.walk(tree)
    )


def test_runners_library_code_never_imports_analysis() -> None:
    """Only command lines (runners/*/__main__.py) may print through analysis."""
    bad = [
        f"{p.relative_to(ROOT)}:{ln} imports {n}"
        for p in (ROOT / "runners").rglob("*.py")
        if p.name != "__main__.py"
        for ln, n in _imports(p)
        if n.split(".")[0] == "analysis"
    ]
    assert not bad, "\n".join(bad)


def test_every_verb_has_one_home() -> None:
    """No runners/X.py beside a runners/X/ package, and every verb's package is runnable."""
    runners = ROOT / "runners"
    twins = [p.name for p in runners.glob("*.py") if (runners / p.stem).is_dir()]
    assert not twins, f"module and package of one name: {twins}"
    for verb in VERBS:
        assert (runners / verb / "__main__.py").is_file(), f"runners/{verb}/__main__.py"


def test_every_verb_answers_help() -> None:
    code = (
        "import runpy, sys\n"
        "for verb in sys.argv[1:]:\n"
        "    sys.argv = [verb, '--help']\n"
        "    try:\n"
        "        runpy.run_module(f'runners.{verb}', run_name='__main__', alter_sys=True)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, (verb, exc.code)\n"
        "        print(f'ok {verb}')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *VERBS], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert [line for line in out.stdout.splitlines() if line.startswith("ok ")] == [
        f"ok {verb}" for verb in VERBS
    ], out.stdout


def _runners_unit(module: str) -> str | None:
    """The top-level unit of runners a module belongs to: ``runners.train.loop`` -> train,
    ``runners.env`` -> env; None for ``runners`` itself and for anything outside it."""
    parts = module.split(".")
    return parts[1] if parts[0] == "runners" and len(parts) > 1 else None


def _absolute(node: ast.ImportFrom, path: Path, root: Path) -> str:
    """The module a ``from ... import`` names, with a relative one resolved against ``path``."""
    if node.level == 0:
        return node.module or ""
    package = list(path.relative_to(root).with_suffix("").parts)
    base = package[: len(package) - node.level]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path) -> dict[str, dict[str, list[str]]]:
    """unit -> unit it imports -> ["file:line", ...], over every import in runners/
    (function-level ones included: a lazy import is still a dependency)."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted((root / "runners").rglob("*.py")):
        here = path.relative_to(root / "runners").parts
        source = here[0].removesuffix(".py")
        if source == "__init__":
            continue  # the package itself: every import of runners.x runs it anyway
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = _absolute(node, path, root)
                # ``from runners import env`` imports the unit env
                modules = (
                    [f"runners.{a.name}" for a in node.names] if module == "runners" else [module]
                )
            else:
                continue
            for module in modules:
                target = _runners_unit(module)
                if target is not None and target != source:
                    graph[source][target].append(f"{path.relative_to(root)}:{node.lineno}")
    return graph


def find_cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """One cycle (a closed path of units) per strongly connected group of units."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(unit: str) -> None:  # Tarjan's algorithm
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        for nxt in sorted(graph.get(unit, {})):
            if nxt not in index:
                visit(nxt)
                low[unit] = min(low[unit], low[nxt])
            elif nxt in stack:
                low[unit] = min(low[unit], index[nxt])
        if low[unit] == index[unit]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == unit:
                    break
            if len(group) > 1:
                groups.append(group)

    for unit in sorted(graph):
        if unit not in index:
            visit(unit)
    cycles = []
    for group in groups:
        start = min(group)
        # breadth-first from start back to start, inside the group: a shortest cycle
        paths = {start: [start]}
        queue = [start]
        while queue:
            unit = queue.pop(0)
            for nxt in sorted(graph[unit]):
                if nxt == start:
                    cycles.append([*paths[unit], start])
                    queue = []
                    break
                if nxt in group and nxt not in paths:
                    paths[nxt] = [*paths[unit], nxt]
                    queue.append(nxt)
    return cycles


def describe_cycle(cycle: list[str], graph: dict[str, dict[str, list[str]]]) -> str:
    edges = [f"  {a} -> {b}: {', '.join(graph[a][b])}" for a, b in itertools.pairwise(cycle)]
    return " -> ".join(cycle) + "\n" + "\n".join(edges)


def test_runners_units_import_no_cycle() -> None:
    """No import cycle between runners' units (each sub-package, each top-level module):
    a cycle makes the import order matter and keeps a verb from being used alone."""
    graph = import_graph(ROOT)
    assert "train" in graph and "checkpoint" in graph["train"], "the walk found no imports"
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in runners/:\n" + "\n".join(
        describe_cycle(c, graph) for c in cycles
    )


def test_a_lazy_import_cycle_is_found(tmp_path: Path) -> None:
    """The cycle check sees function-level and ``from runners import x`` imports."""
    pkg = tmp_path / "runners"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "core.py").write_text("def f():\n    from runners import b\n")
    (pkg / "b.py").write_text("import runners.a.core\n")
    graph = import_graph(tmp_path)
    cycles = find_cycles(graph)
    assert cycles == [["a", "b", "a"]]
    text = describe_cycle(cycles[0], graph)
    assert "runners/a/core.py:2" in text and "runners/b.py:1" in text
