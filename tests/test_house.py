"""The house keeps its shape: modules and functions of ``fsbench/`` stay small, and the method
contract sits below the engine (it and the helpers methods share import nothing from it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fsbench"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80

#: Modules below the engine, and the packages each must not import.
BELOW_THE_ENGINE = {
    "fsbench/method.py": ("fsbench.engine", "fsbench.runner", "fsbench.cli", "fsbench.sweep"),
    "fsbench/precision.py": ("fsbench.engine", "fsbench.runner", "fsbench.cli", "fsbench.sweep"),
    "fsbench/learners": ("fsbench.engine", "fsbench.runner", "fsbench.cli", "fsbench.sweep"),
    "fsbench/engine": ("fsbench.runner", "fsbench.cli", "fsbench.sweep", "fsbench_plugins"),
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_no_module_over_the_limit():
    long = {_rel(p): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by job): {long}"


def test_no_function_over_the_limit():
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = node.end_lineno - start + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{_rel(path)}:{node.lineno} {node.name}"] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them): {long}"


def _imports(path: Path) -> set[str]:
    """Absolute names ``path`` imports, function-level and TYPE_CHECKING imports included."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _imports_in(path.read_text(), package)


def _imports_in(source: str, package: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            names |= {base} | {f"{base}.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize("where", sorted(BELOW_THE_ENGINE))
def test_layers_import_nothing_from_above(where):
    target = ROOT / where
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    forbidden = BELOW_THE_ENGINE[where]
    bad = {f"{_rel(f)} imports {name}" for f in files for name in _imports(f)
           if any(name == up or name.startswith(up + ".") for up in forbidden)}
    assert not bad, sorted(bad)


def test_the_checks_see_what_they_look_for():
    """The walkers find a long function and an upward import, relative ones included."""
    source = "def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES
    func = ast.parse(source).body[0]
    assert func.end_lineno - func.lineno + 1 > MAX_FUNCTION_LINES
    assert "fsbench.engine.pretrain" in _imports_in("from ..engine import pretrain\n", "fsbench.learners")
    assert "fsbench.engine.evaluate" in _imports_in("from .evaluate import x\n", "fsbench.engine")
