"""notebooks/evaluation.ipynb runs top to bottom on real data (a sample of FERPlus Test), and is
stored without outputs."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from conftest import REAL_FERPLUS, needs_ferplus
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "evaluation.ipynb"


def test_the_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.notebook
@needs_ferplus
def test_the_evaluation_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_NOTEBOOK_FACES", "400")
    monkeypatch.setenv("FERKIT_DATA", str(REAL_FERPLUS))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # a failing cell raises CellExecutionError, failing this test
    text = "\n".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for out in cell.outputs)
    assert "Total params: 5,873,096" in text
    assert "learning rate cut after epochs" in text and "400 test faces" in text
    images = sum("image/png" in out.get("data", {}) for cell in notebook.cells if cell.cell_type == "code"
                 for out in cell.outputs)
    assert images >= 6  # two curves, confusion, ROC, side by side, gallery
    stored = nbformat.read(NOTEBOOK, as_version=4)  # the file stayed clean: outputs exist only in memory
    assert not any(cell.get("outputs") for cell in stored.cells)
