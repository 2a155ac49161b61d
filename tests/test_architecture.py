"""The dependency rules of DESIGN.md ("Shape of the codebase"), checked on the source.

``experiments/`` (launchers; configs that are data) -> ``vae_xai.experiments`` (each
experiment's fields, validation, paper numbers, body) -> the core (``vae_xai`` minus
``vae_xai.experiments``) and ``data_pipelines``. The core imports neither ``experiments`` nor
``data_pipelines``; the configs import only ml_collections, ``experiments.configs.common`` and
the standard library; no project modules import each other in a circle (top-level and
function-local imports alike); importing ``experiments`` has no side effect.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("vae_xai", "data_pipelines", "experiments")


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {
        _module_name(p): p
        for package in PACKAGES
        for p in sorted((ROOT / package).rglob("*.py"))
        if "__pycache__" not in p.parts
    }


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, int]]:
    """Every module ``name`` imports (top-level and inside functions), with its line; an
    ``from a import b`` counts as ``a.b`` when that is a module, else as ``a``."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.append((full if full in MODULES else base, node.lineno))
    return out


def _project_imports(name: str) -> set[str]:
    """The project modules ``name`` imports (a package's submodule import counts as the
    submodule, and ``import a.b`` also as ``a``, whose ``__init__`` runs)."""
    deps = set()
    for imported, _ in _imports(name):
        if imported.split(".")[0] not in PACKAGES:
            continue
        parts = imported.split(".")
        deps.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {d for d in deps if d in MODULES and d != name}


def _is_core(name: str) -> bool:
    return name.split(".")[0] == "vae_xai" and not name.startswith("vae_xai.experiments")


def test_the_modules_are_found():
    assert "vae_xai.workdir" in MODULES and "experiments.launch" in MODULES
    assert "experiments.configs.quickstart" in MODULES and "data_pipelines.batching" in MODULES
    assert "vae_xai.experiments.paper" in MODULES and "vae_xai.encoder_split.nnx" in MODULES


def test_the_core_imports_neither_experiments_nor_data_pipelines():
    bad = [
        f"{name}:{line} imports {imported}"
        for name in MODULES
        if _is_core(name)
        for imported, line in _imports(name)
        if imported.split(".")[0] in ("experiments", "data_pipelines")
    ]
    assert not bad, "\n".join(bad)


def test_vae_xai_experiments_imports_no_launcher_or_config():
    bad = [
        f"{name}:{line} imports {imported}"
        for name in MODULES
        if name.startswith("vae_xai.experiments")
        for imported, line in _imports(name)
        if imported.split(".")[0] == "experiments"
    ]
    assert not bad, "\n".join(bad)


def test_data_pipelines_import_no_experiments():
    bad = [
        f"{name}:{line} imports {imported}"
        for name in MODULES
        if name.startswith("data_pipelines")
        for imported, line in _imports(name)
        if imported.split(".")[0] in ("experiments",) or imported.startswith("vae_xai.experiments")
    ]
    assert not bad, "\n".join(bad)


def test_configs_are_data():
    """``experiments/configs/*`` import ml_collections, ``experiments.configs.common``,
    ``__future__`` and the standard library only."""
    stdlib = sys.stdlib_module_names
    bad = []
    for name in MODULES:
        if not name.startswith("experiments.configs"):
            continue
        for imported, line in _imports(name):
            top = imported.split(".")[0]
            ok = (
                top in ("ml_collections", "__future__")
                or top in stdlib
                or imported in ("experiments.configs.common", "experiments.configs")
            )
            if not ok:
                bad.append(f"{name}:{line} imports {imported}")
    assert not bad, "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _graph() -> dict[str, set[str]]:
    # a package's __init__ importing its own submodules is how a package exposes them, not a
    # circle: edges from a package to modules inside it are left out
    return {
        name: {d for d in _project_imports(name) if not d.startswith(name + ".")}
        for name in MODULES
    }


def test_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


# Circles not yet broken, each with what breaks it; the test fails on any other circle and when
# one of these is gone (then delete its entry).
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def test_no_import_cycles():
    cycles = {tuple(c) for c in _cycles(_graph())}
    new = sorted(cycles - KNOWN_CYCLES)
    assert not new, "modules that import each other (top-level or in a function):\n" + (
        "\n".join(" <-> ".join(c) for c in new)
    )
    assert not KNOWN_CYCLES - cycles, f"broken, delete from KNOWN_CYCLES: {KNOWN_CYCLES - cycles}"


def test_function_local_project_imports_say_why():
    """A project import inside a function needs a reason (a comment on its line or the line
    above): everything else is imported at the top of the module."""
    bad = []
    for name, path in MODULES.items():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines), filename=str(path))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                names.append(getattr(node, "module", None) or "")
                if getattr(node, "level", 0) == 0 and not any(
                    n.split(".")[0] in PACKAGES for n in names
                ):
                    continue
                said = "#" in lines[node.lineno - 1] or lines[node.lineno - 2].strip().startswith(
                    "#"
                )
                if not said:
                    bad.append(f"{name}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not bad, "function-local project imports without a reason:\n" + "\n".join(bad)


def test_config_options_agree_with_the_library():
    """The configs repeat the lists they need as data (they import nothing from vae_xai)."""
    from experiments.configs import dsprites_disentanglement as config
    from vae_xai.experiments import dsprites_disentanglement as lib

    assert tuple(config.METHODS) == tuple(lib.METHODS)


@pytest.mark.parametrize("module", ["experiments", "experiments.configs", "experiments.launch"])
def test_importing_experiments_has_no_side_effect(module):
    """``ml_collections.config_flags`` is the same before and after the import (a fresh
    process; the launchers install the --config fallback when they define their flags)."""
    code = f"""
import importlib
from ml_collections import config_flags
from ml_collections.config_flags import config_flags as impl

def snapshot():
    out = {{}}
    for mod in (config_flags, impl):
        for key, value in vars(mod).items():
            out[(mod.__name__, key)] = id(value)
            if isinstance(value, type):
                for k, v in vars(value).items():
                    out[(mod.__name__, key, k)] = id(v)
    return out

before = snapshot()
importlib.import_module({module!r})
after = snapshot()
changed = sorted(str(k) for k in set(before) | set(after) if before.get(k) != after.get(k))
assert not changed, changed
print("unchanged")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "unchanged" in done.stdout, done.stderr[-2000:]
