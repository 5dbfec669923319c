"""The dependency rules of DESIGN.md, checked by walking every import."""

from __future__ import annotations

import ast
import subprocess
import sys
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
