"""The borders between the three packages under ``include/``, read from the source (AST).

- ``telegence_activation`` (the product) imports neither ``telegence_simulator`` nor
  ``telegence_local``;
- ``telegence_simulator`` imports nothing of ``telegence_activation`` nor ``telegence_local``:
  clients meet it only over HTTP;
- ``telegence_local`` (stack and demo) is the one place that wires the two together.

Every ``import``/``from ... import`` counts, wherever it is (top level, inside a function, under
``TYPE_CHECKING``), relative ones resolved, and so do ``importlib.import_module("...")`` and
``__import__("...")`` with a literal name.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

INCLUDE = Path(__file__).resolve().parent.parent / "include"
PRODUCT, SIMULATOR, LOCAL = "telegence_activation", "telegence_simulator", "telegence_local"
FORBIDDEN = {
    PRODUCT: (SIMULATOR, LOCAL),
    SIMULATOR: (PRODUCT, LOCAL),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(INCLUDE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of everything ``source`` (the text of ``module``) imports."""
    found: list[tuple[int, str]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                if node.level - 1 > len(base) - 1:
                    found.append(
                        (node.lineno, f"<relative import above the top package: level {node.level}>")
                    )
                    continue
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names if alias.name != "*"]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else ""
            )
            first = node.args[0]
            literal = first.value if isinstance(first, ast.Constant) else None
            if name in ("import_module", "__import__") and isinstance(literal, str):
                found.append((node.lineno, literal))
    return found


def crossings(package: str) -> list[str]:
    """Every import in ``include/<package>`` of a package it must not import."""
    modules = sorted((INCLUDE / package).rglob("*.py"))
    assert len(modules) >= 5, f"no modules found under {INCLUDE / package}"
    bad = []
    for path in modules:
        name = _module_name(path)
        source = path.read_text(encoding="utf-8")
        for line, target in imported_names(source, name, is_package=path.name == "__init__.py"):
            top = target.split(".")[0]
            if top in FORBIDDEN[package] or target.startswith("<relative"):
                bad.append(f"{path.relative_to(INCLUDE)}:{line} imports {target}")
    return bad


def test_the_product_imports_neither_the_simulator_nor_the_local_tooling() -> None:
    assert crossings(PRODUCT) == []


def test_the_simulator_imports_nothing_of_the_product_nor_the_local_tooling() -> None:
    assert crossings(SIMULATOR) == []


def test_the_old_homes_of_simulator_stack_and_demo_are_gone() -> None:
    assert not (INCLUDE / PRODUCT / "simulator").exists()
    assert not (INCLUDE / PRODUCT / "stack.py").exists()
    assert not (INCLUDE / PRODUCT / "demo.py").exists()


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("import telegence_simulator", "telegence_activation.cli", "telegence_simulator"),
        ("import telegence_local.stack as s", "telegence_activation.cli", "telegence_local.stack"),
        (
            "from telegence_simulator.launcher import start_simulator",
            "telegence_activation.x",
            "telegence_simulator.launcher",
        ),
        ("from telegence_local import stack", "telegence_activation.x", "telegence_local.stack"),
        (
            "def f():\n    from telegence_simulator import server\n",
            "telegence_activation.x",
            "telegence_simulator.server",
        ),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import telegence_local\n",
            "telegence_activation.x",
            "telegence_local",
        ),
        (
            "import importlib\nimportlib.import_module('telegence_simulator.server')",
            "telegence_activation.x",
            "telegence_simulator.server",
        ),
        ("__import__('telegence_local.demo')", "telegence_activation.x", "telegence_local.demo"),
        (
            "from telegence_activation.domain import identifiers",
            "telegence_simulator.checks",
            "telegence_activation.domain.identifiers",
        ),
        (
            "from ..domain import identifiers",
            "telegence_activation.hooks.telegence",
            "telegence_activation.domain.identifiers",
        ),
        ("from . import checks", "telegence_simulator.server", "telegence_simulator.checks"),
        ("from .scenario import load_scenario", "telegence_simulator", "telegence_simulator.scenario"),
    ],
)
def test_the_import_reader_sees_every_form_of_import(source: str, module: str, expected: str) -> None:
    """The check above is only as good as this reader: every way of importing is seen."""
    names = [name for _, name in imported_names(source, module, is_package="." not in module)]
    assert expected in names, names


def test_a_relative_import_above_the_top_package_is_reported() -> None:
    names = [name for _, name in imported_names("from ... import x", "telegence_simulator.server")]
    assert any(name.startswith("<relative") for name in names), names


def test_importing_the_whole_simulator_loads_nothing_of_the_product() -> None:
    """At run time too (a fresh interpreter): every simulator module, then ``sys.modules``."""
    modules = sorted(_module_name(p) for p in (INCLUDE / SIMULATOR).rglob("*.py") if p.name != "__main__.py")
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {(PRODUCT, LOCAL)!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=INCLUDE,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(INCLUDE)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
