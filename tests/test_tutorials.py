"""The tutorials run from top to bottom, and are stored without outputs.

Each notebook in ``tutorials/`` is executed with nbclient on the ``python3``
kernel, with ``tutorials/`` as its working directory and the repository root
first on PYTHONPATH, so ``import resnet_np`` finds this checkout whether the
package is installed (editable or not) or not at all. Any cell error fails the
test, and so does a notebook that runs past its time limit.

Notebooks that compare with PyTorch run a second time with ``torch`` hidden:
they must then say so and skip those cells, not fail.
"""
import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("[0-9][0-9]_*.ipynb"))
# Each notebook takes seconds to tens of seconds on two CPU cores; the limit
# leaves room for a slow or busy machine.
NOTEBOOK_TIMEOUT_S = 600


def _read(path):
    return nbformat.read(path, as_version=4)


def _execute(path, monkeypatch, extra_path=()):
    """Run every cell of the notebook at ``path``; raise on the first error or on timeout."""
    python_path = [str(p) for p in extra_path] + [str(ROOT)]
    if os.environ.get("PYTHONPATH"):
        python_path.append(os.environ["PYTHONPATH"])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(python_path))
    deadline = time.monotonic() + NOTEBOOK_TIMEOUT_S
    client = nbclient.NotebookClient(
        _read(path), kernel_name="python3",
        resources={"metadata": {"path": str(TUTORIALS)}},
        # The limit is for the whole notebook: each cell gets what is left of it.
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())))
    client.execute()
    return client.nb


def test_tutorials_exist():
    assert len(NOTEBOOKS) >= 9, f"expected the 9 numbered tutorials in {TUTORIALS}"
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(NOTEBOOKS) + 1)), "tutorials must be numbered 01, 02, ..."


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    nb = _read(path)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} carry outputs or execution counts; clear "
                       "them before committing (jupyter nbconvert --clear-output --inplace)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_structure(path):
    """Each tutorial opens with what it teaches, ends with an exercise, and is in the README."""
    nb = _read(path)
    first, last = nb.cells[0], nb.cells[-1]
    assert first.cell_type == "markdown" and "What you will learn" in first.source, path.name
    assert last.cell_type == "markdown" and "## Exercise" in last.source, path.name
    assert path.name in (TUTORIALS / "README.md").read_text(encoding="utf-8"), \
        f"{path.name} is not listed in tutorials/README.md"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_checks_its_facts(path):
    """Figures and printed values are asserted against another computation inside the
    cells, so a notebook that goes stale fails when it runs, not only when it errors."""
    asserts = sum(line.lstrip().startswith("assert ")
                  for cell in _read(path).cells if cell.cell_type == "code"
                  for line in cell.source.splitlines())
    assert asserts >= 4, f"{path.name}: {asserts} assert statements; check the facts it shows"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch):
    nb = _execute(path, monkeypatch)
    errors = [o for cell in nb.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    assert not errors


USES_TORCH = [p for p in NOTEBOOKS if "import torch" in p.read_text(encoding="utf-8")]


@pytest.mark.parametrize("path", USES_TORCH, ids=lambda p: p.stem)
def test_notebook_runs_without_torch(path, monkeypatch, tmp_path):
    """With ``import torch`` failing, the PyTorch cells announce that they skip."""
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text('raise ImportError("PyTorch is hidden for this test")\n')
    nb = _execute(path, monkeypatch, extra_path=[tmp_path])
    text = "".join(o.get("text", "") for cell in nb.cells for o in cell.get("outputs", []))
    assert "PyTorch is not installed" in text
