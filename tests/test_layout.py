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
