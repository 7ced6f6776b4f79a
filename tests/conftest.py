"""Fixtures (the MNIST folder, a config writer bound to the test's tmp_path, the tiny config) and the
test tiers. Helpers that need no fixture are plain functions in helpers.py, imported where used."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from helpers import MNIST_FILES, REPO_ROOT, tiny_config, write_yaml

# Tiers: `pytest -m "not slow"` is the everyday tier (no subprocess, no Ray; under a minute); plain
# `pytest` (the README's command, and CI) runs everything. A test that starts the CLI says so with
# @pytest.mark.slow; `data` is set here for every test that reads MNIST.


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "data_dir" in item.fixturenames:
            item.add_marker(pytest.mark.data)


def _has_mnist(path: Path) -> bool:
    return all(
        (path / n).is_file() or (path / f"{n}.gz").is_file() or (path / "MNIST" / "raw" / n).is_file()
        for n in MNIST_FILES
    )


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder with the four MNIST IDX files: $MNIST_DRILL_DATA, else ../shared/data/mnist (these
    machines and CI), else data/mnist (where a first `mnist-drill run` downloads it)."""
    env = os.environ.get("MNIST_DRILL_DATA")
    candidates = [Path(env)] if env else [REPO_ROOT.parent / "shared" / "data" / "mnist", REPO_ROOT / "data" / "mnist"]
    found = next((p for p in candidates if _has_mnist(p)), None)
    if found is None:
        pytest.fail(
            f"MNIST data not found in {' or '.join(map(str, candidates))}; set MNIST_DRILL_DATA to the folder "
            "holding the four IDX files, or run `mnist-drill run step7` once to download them",
            pytrace=False,
        )
    return found


@pytest.fixture
def write_config(tmp_path) -> Callable[..., Path]:
    """write_config(name, content, folder=tmp_path) -> path of the written YAML file."""

    def write(name: str, content: str | dict, folder: Path | None = None) -> Path:
        return write_yaml(folder or tmp_path, name, content)

    return write


@pytest.fixture
def tiny() -> dict:
    """A fresh copy of the tiny test config as a mapping, to modify and write."""
    return tiny_config()


@pytest.fixture
def cuda_that_must_not_be_touched(monkeypatch):
    """CUDA that says it is there, and fails the test on any use of its random state or context."""

    def touched(*args, **kwargs):
        raise AssertionError("a CPU run touched CUDA")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in ("get_rng_state", "get_rng_state_all", "set_rng_state", "set_rng_state_all", "init", "_lazy_init"):
        monkeypatch.setattr(torch.cuda, name, touched)
