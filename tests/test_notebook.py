"""The notebooks run top to bottom: progression.ipynb on the committed results, without training; drill.ipynb
trains its loop on a small subset."""

import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from mnist_drill.storage.files import read_metrics

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # starts a Jupyter kernel


def test_progression_notebook_runs_on_committed_results():
    notebook = nbformat.read(REPO / "notebooks" / "progression.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    # one progression plot, the per-epoch plot, eight curves, and the misclassified digits at least
    assert len(images) >= 11
    text = "".join(str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert "step7_lr_scheduler" in text and "| step |" in text


def test_drill_notebook_runs_the_loop_on_a_small_subset(tmp_path, monkeypatch, data_dir):
    """notebooks/drill.ipynb top to bottom on the CPU with its small setting, its runs under tmp_path: no error,
    every run folder it made holds metrics, and the checkout is left as it was."""
    git = ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=all"]
    before = subprocess.run(git, capture_output=True, text=True, check=True).stdout
    for name, value in {
        "MNIST_DRILL_NOTEBOOK_SMALL": "500",
        "MNIST_DRILL_NOTEBOOK_OUT": str(tmp_path / "runs"),
        "MNIST_DRILL_DATA": str(data_dir),
        "CUDA_VISIBLE_DEVICES": "",  # the CPU, even on a machine with a GPU
        "OMP_NUM_THREADS": "1",
    }.items():
        monkeypatch.setenv(name, value)  # the kernel inherits this process's environment
    notebook = nbformat.read(REPO / "notebooks" / "drill.ipynb", as_version=4)
    resources = {"metadata": {"path": str(tmp_path)}}  # the kernel starts outside the checkout
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources=resources)
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4  # curves, misclassified, compare, own plot
    runs = sorted(p.parent for p in (tmp_path / "runs").rglob("config.yaml"))
    assert [p.relative_to(tmp_path / "runs").as_posix() for p in runs] == [
        "step3_dropout/attempt_1",
        "step3_dropout/attempt_2",
    ]
    assert all(len(read_metrics(p / "metrics.csv")) == 2 for p in runs)  # its small setting: 2 epochs
    assert subprocess.run(git, capture_output=True, text=True, check=True).stdout == before
