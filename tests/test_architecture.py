"""The package's shape: one import name per module, imports pointing down the layers, no cycles, types check.

import-linter cannot see this package (its `flows/`, `tasks/` and `models/` folders are mapped into `dubforge`
by setuptools' package-dir, which grimp does not follow), so the layer contract is read here from the source.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"dubforge": ROOT / "dubforge", "dubforge.flows": ROOT / "flows", "dubforge.tasks": ROOT / "tasks",
           "dubforge.models": ROOT / "models"}

# Highest first: a module may import its own layer's siblings (within the same entry) and anything below.
LAYERS = [
    {"dubforge.cli", "dubforge.__main__"},
    {"dubforge.runner", "dubforge.summary", "dubforge.service"},
    {"dubforge.flows"},
    {"dubforge.tasks", "dubforge.demo"},
    {"dubforge.models"},
    {"dubforge.lipsync"},
    {"dubforge.core.plan"},  # validation probes the media: the one core module above media
    {"dubforge.media"},
    {"dubforge.core"},
]


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def _layer(module: str) -> int | None:
    best = None
    for index, layer in enumerate(LAYERS):
        for prefix in layer:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    return best[0] if best else None


def _imports(path: Path, module: str) -> list[tuple[int, str, bool]]:
    """(line, imported module, at module level) for every import outside `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                base = child.module
                if child.level:
                    base = ".".join(module.split(".")[: -child.level] + [child.module])
                found.append((child.lineno, base, top))
                found.extend((child.lineno, f"{base}.{alias.name}", top) for alias in child.names)
            else:
                visit(child, top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))

    visit(tree, True)
    return found


def test_nothing_imports_the_folders_by_their_bare_names():
    offenders = []
    for folder in ("dubforge", "flows", "tasks", "models", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for line, name, _top in _imports(path, ""):
                if name.split(".")[0] in ("tasks", "models", "flows"):
                    offenders.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_one_import_name_per_module():
    code = "import dubforge.tasks.fit, sys; import importlib.util as u; sys.exit(u.find_spec('tasks') is not None)"
    result = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True)
    assert result.returncode == 0, result.stderr or "`import tasks` works from outside the repository"


def test_imports_point_down_the_layers():
    modules = _modules()
    violations = []
    for module, path in modules.items():
        own = _layer(module)
        for line, name, _top in _imports(path, module):
            target = _layer(name) if name.startswith("dubforge") else None
            if own is not None and target is not None and target < own:
                violations.append(f"{module} (line {line}) imports {name}, a higher layer")
    assert not violations, "\n".join(violations)


def test_no_import_cycles():
    modules = _modules()
    graph = {m: {n for _l, n, top in _imports(p, m) if top and n in modules and n != m} for m, p in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def strongconnect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                strongconnect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            strongconnect(node)
    assert not cycles, cycles



def test_types_check(tmp_path):
    """mypy over the whole package. mypy does not follow the package-dir mapping either, so it reads the package
    through a folder of symlinks laid out as installed (dubforge/tasks -> tasks/, ...)."""
    farm = tmp_path / "dubforge"
    farm.mkdir()
    for entry in (ROOT / "dubforge").iterdir():
        if entry.name != "__pycache__":
            (farm / entry.name).symlink_to(entry)
    for name in ("tasks", "flows", "models"):
        (farm / name).symlink_to(ROOT / name)
    result = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                             "--cache-dir", str(tmp_path / ".mypy_cache"), "-p", "dubforge"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
