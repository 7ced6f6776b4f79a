"""Files from elsewhere are data, never code: no path in src/ can unpickle arbitrary objects, and a
crafted checkpoint met on --resume is refused in one line before it can run anything."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from mnist_drill.config.loader import load_config
from mnist_drill.config.schema import to_yaml

from helpers import error_line, run_cli

SRC = Path(__file__).resolve().parents[1] / "src" / "mnist_drill"

# Calls that can run code from a file: module or attribute name -> the function names.
UNSAFE = {
    "pickle": {"load", "loads", "Unpickler"},
    "marshal": {"load", "loads"},
    "dill": {"load", "loads"},
    "joblib": {"load"},
    "shelve": {"open"},
    "yaml": {"load", "unsafe_load", "full_load", "load_all"},
}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
        ):
            yield node, node.func.value.id, node.func.attr


def unsafe_loads(source: str) -> list[str]:
    """Each call in `source` that could unpickle or construct arbitrary objects, as 'line: call'."""
    found = []
    for node, module, name in _calls(ast.parse(source)):
        if name in UNSAFE.get(module, ()):
            found.append(f"{node.lineno}: {module}.{name}")
        if module == "torch" and name == "load":
            weights_only = next((k.value for k in node.keywords if k.arg == "weights_only"), None)
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"{node.lineno}: torch.load without weights_only=True")
        if name == "load" and any(k.arg == "allow_pickle" for k in node.keywords):
            found.append(f"{node.lineno}: {module}.load(allow_pickle=...)")
    return found


@pytest.mark.parametrize(
    "source, bad",
    [
        ("import pickle\npickle.load(f)", True),
        ("import torch\ntorch.load(p)", True),
        ("import torch\ntorch.load(p, weights_only=False)", True),
        ("import torch\ntorch.load(p, map_location='cpu', weights_only=True)", False),
        ("import yaml\nyaml.load(text, Loader=yaml.Loader)", True),
        ("import yaml\nyaml.safe_load(text)", False),
        ("import numpy as np\nnp.load(p, allow_pickle=True)", True),
    ],
)
def test_the_checker_tells_unsafe_loads_from_safe_ones(source, bad):
    assert bool(unsafe_loads(source)) == bad


@pytest.mark.parametrize("path", sorted(SRC.glob("*.py")), ids=lambda p: p.name)
def test_no_module_loads_a_file_in_a_way_that_can_run_code(path):
    assert unsafe_loads(path.read_text()) == []


class _Hostile:
    """Unpickling this opens (creates) the marker file: a stand-in for any code a crafted file runs."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.slow  # starts the real CLI in subprocesses
def test_a_crafted_checkpoint_on_resume_is_refused_and_runs_nothing(write_config, tiny, data_dir, tmp_path):
    config = write_config("tiny.yaml", tiny)
    run = tmp_path / "out" / "tiny"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(to_yaml(load_config(config)))
    marker = tmp_path / "pwned"
    torch.save({"epoch": 1, "model": _Hostile(marker)}, run / "checkpoint.pt")

    proc = run_cli(["run", config, "--resume", "--out", tmp_path / "out", "--exact", "--data-dir", data_dir])

    assert proc.returncode == 2
    line = error_line(proc)
    assert "checkpoint.pt" in line and "refused" in line
    assert not marker.exists()
