"""The study's notebooks (notebooks/, one per exercise) run top to bottom, as a reader would run them, with
their `SMALL = True` settings; and they are kept in git without outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, write_mnist

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_is_one_notebook_per_exercise():
    exercises = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
    assert sorted(p.stem.split("_", 1)[1] for p in NOTEBOOKS) == exercises


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.outputs for cell in code] == [[] for _ in code]
    assert [cell.execution_count for cell in code] == [None for _ in code]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_end_to_end_and_shows_its_figure_inline(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    write_mnist(tmp_path / "data", n_train=1000, n_test=200)
    # The kernel inherits this environment: runs, data and MLflow store in tmp_path; one torch thread.
    monkeypatch.setenv("TRAINLAB_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend draws the figure
    notebook = nbformat.read(path, as_version=4)
    (parameters,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert "SMALL = False" in parameters.source
    parameters.source = parameters.source.replace("SMALL = False", "SMALL = True")

    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"path": str(tmp_path)}).execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the report's figure, inline
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets  # Lightning's progress bars, as Jupyter widgets (ipywidgets)
    tables = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "FINISHED" in tables and "best-ckpt test" in tables
    assert list(Path(tmp_path / "mlruns").glob("mlflow.db"))
