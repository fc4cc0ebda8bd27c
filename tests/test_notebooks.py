"""The notebooks in notebooks/ run top to bottom on the committed pipeline outputs.

Each notebook is executed with nbclient in a kernel named ``python3`` that is pinned to the
interpreter running the tests (a temporary kernelspec first on JUPYTER_PATH), with
PIPELINE_ROOT pointing at this repository and a temporary working directory, so the
notebooks must find the outputs through PIPELINE_ROOT. nbclient, nbformat and ipykernel are
test dependencies: if they are missing the tests fail rather than skip.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["plan_durations.ipynb", "calibration_audit.ipynb"]

try:
    import ipykernel  # noqa: F401  (the kernel the notebooks run in)
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    MISSING = None
except ImportError as exc:   # pragma: no cover - exercised only without the test extras
    MISSING = exc


def require_jupyter() -> None:
    if MISSING is not None:
        pytest.fail(f"notebook tests need nbclient, nbformat and ipykernel ({MISSING}): "
                    "install the test extras with  pip install -e '.[test]'", pytrace=False)


@pytest.fixture
def python3_kernel(tmp_path, monkeypatch):
    """A ``python3`` kernelspec running this interpreter, found before any other."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PIPELINE_ROOT", str(ROOT))
    monkeypatch.delenv("MPLBACKEND", raising=False)   # let ipykernel choose its inline backend
    return "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, python3_kernel, tmp_path):
    require_jupyter()
    path = ROOT / "notebooks" / name
    assert path.is_file(), f"{path} is missing"
    nb = nbformat.read(path, as_version=4)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    client = NotebookClient(nb, kernel_name=python3_kernel, timeout=300, allow_errors=False,
                            resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{name}: a cell raised an error:\n{exc}", pytrace=False)
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, f"{name}: error outputs: {[(e['ename'], e['evalue']) for e in errors]}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_reads_pipeline_outputs_and_is_saved_clean(name):
    require_jupyter()
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    text = "\n".join(cell.source for cell in nb.cells)
    assert "reports/" in text, f"{name} should say it reads the pipeline's outputs in reports/"
    assert "metrics/" in text, f"{name} should say it reads the pipeline's metrics/"
    assert "SYNTHETIC" in text, f"{name} should warn that the default input is synthetic"
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{name}: cells {dirty} are saved with outputs or execution counts; clear them "
                       "before committing (JupyterLab: Edit > Clear Outputs of All Cells, then save)")
