"""The package's architecture: no import circles, no upward imports, and config/reporting without torch."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "mnist_drill"
# Lowest first. A module may import its own package and any layer below; two packages of one layer not each other.
LAYERS = [
    {"__init__", "errors"},
    {"config", "storage"},
    {"nn", "reporting"},
    {"training"},
    {"runs", "inference", "bench"},
    {"cli", "api"},  # api: the Python API (run, load_run, sweep), beside the CLI on the same code paths
    {"__main__"},
]


def modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): path
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def imports(name: str, path: Path) -> set[str]:
    """The mnist_drill modules `name` imports (relative imports resolved; `from . import x` names the module x)."""
    known, found = modules(), set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in known else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in known and m != name}


def layer(module: str) -> tuple[int, str]:
    top = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, names in enumerate(LAYERS) if top in names), top


GRAPH = {name: imports(name, path) for name, path in modules().items()}


@pytest.mark.parametrize("name", sorted(m for m in GRAPH if m != "mnist_drill.__main__"))  # that one runs the CLI
def test_every_module_imports(name):
    importlib.import_module(name)


def test_every_package_has_a_layer():
    assert all(layer(m) for m in GRAPH)


def test_no_module_imports_a_higher_layer_or_a_sibling_package():
    wrong = []
    for source, targets in GRAPH.items():
        for target in targets:
            (low, pkg), (high, other) = layer(target), layer(source)
            if pkg != other and low >= high and target != "mnist_drill":
                wrong.append(f"{source} -> {target}")
    assert not wrong, wrong


def test_there_is_no_import_circle():
    done, path = set(), []

    def visit(module: str) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        path.append(module)
        for target in sorted(GRAPH[module]):
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)


def test_config_and_reporting_do_not_load_torch():
    names = [m for m in GRAPH if m.startswith(("mnist_drill.config", "mnist_drill.reporting"))]
    code = f"import sys\nfor m in {names!r}: __import__(m)\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=SRC)
    assert out.stdout.strip() == "False", out.stderr


def test_import_mnist_drill_is_cheap_and_its_api_lazy():
    """`import mnist_drill` loads no torch (the CLI's --version, a notebook's first import); its API names load
    mnist_drill.api on first use."""
    code = (
        "import sys, mnist_drill\nprint('torch' in sys.modules)\n"
        "import mnist_drill.api as api\nprint(mnist_drill.run is api.run and mnist_drill.Run is api.Run)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=SRC)
    assert out.stdout.split() == ["False", "True"], out.stderr
