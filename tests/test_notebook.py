"""notebooks/progression.ipynb runs top to bottom on the committed results, without training."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

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
