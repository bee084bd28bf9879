"""Every teaching notebook is committed without outputs and runs top to bottom in the smoke setting.

Where Debian's Chromium is installed (CI), tests/test_jupyter_offline.py runs each notebook in a real
JupyterLab (Run All, no errors, every plot drawn), which covers the kernel run here; running every notebook
twice cost CI about 9 minutes. Without Chromium the notebooks run here with nbclient (LOTTERY_SMOKE=1, in a
temp dir), so they are never untested.
"""
import importlib.util
import os
from pathlib import Path

import nbformat
import pytest
from browser_support import CHROMIUM
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
# then test_jupyter_offline.py runs them in the browser
IN_JUPYTERLAB = (os.access(CHROMIUM, os.X_OK)
                 and all(importlib.util.find_spec(m) is not None for m in ("jupyterlab", "playwright")))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"


@pytest.mark.skipif(IN_JUPYTERLAB, reason="run in JupyterLab by test_jupyter_offline.py")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_setting(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    monkeypatch.setenv("LOTTERY_SMOKE", "1")
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert (tmp_path / "runs").is_dir()


def test_there_is_a_notebook():
    assert NOTEBOOKS and os.path.basename(NOTEBOOKS[0]).startswith("01_")
