"""Every notebook runs end to end in smoke mode (``VILAB_SMOKE=1``, tiny budgets).

Like Pyro's ``tests/test_examples.py``, the notebooks are listed by hand, and a test
fails when a notebook in ``notebooks/`` is missing from the list.
"""

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"

SMOKE_TESTED = [
    "00_bring_your_own_model.ipynb",
    "01_gaussian_latent.ipynb",
    "02_mixture_em_vs_vi.ipynb",
    "03_vae.ipynb",
]


def _load_runner():
    spec = importlib.util.spec_from_file_location("notebook_runner", NOTEBOOK_DIR / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _load_runner()


def test_every_notebook_is_smoke_tested():
    present = {path.name for path in NOTEBOOK_DIR.glob("*.ipynb")}
    assert present - set(SMOKE_TESTED) == set(), "add new notebooks to SMOKE_TESTED"
    assert set(SMOKE_TESTED) - present == set(), "SMOKE_TESTED names a missing notebook"


@pytest.mark.parametrize("name", SMOKE_TESTED)
def test_notebook_runs_in_smoke_mode(name):
    nb = runner.run_notebook(NOTEBOOK_DIR / name, full=False)
    errors = [
        (index, output.get("ename"))
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert errors == []
    assert all(
        cell.get("execution_count") is not None for cell in nb.cells if cell.cell_type == "code"
    )


def _write_notebook(path, *sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in sources])
    nbformat.write(nb, path)
    return path


def test_kernel_runs_this_interpreter_in_the_notebook_folder_in_smoke_mode(tmp_path):
    source = _write_notebook(
        tmp_path / "tiny.ipynb",
        "import os, sys\nprint(os.environ.get('VILAB_SMOKE'), sys.executable, os.getcwd())",
    )
    before = source.read_text(encoding="utf-8")
    nb = runner.run_notebook(source, full=False)
    smoke, executable, cwd = nb.cells[0].outputs[0]["text"].split()
    assert smoke == "1"
    assert Path(executable).resolve() == Path(sys.executable).resolve()
    assert Path(cwd).resolve() == tmp_path.resolve()
    assert source.read_text(encoding="utf-8") == before  # smoke mode saves nothing


def test_full_mode_saves_the_outputs(tmp_path):
    source = _write_notebook(
        tmp_path / "tiny.ipynb", "import os\nprint(os.environ.get('VILAB_SMOKE'))"
    )
    runner.run_notebook(source, full=True)
    saved = nbformat.read(source, as_version=4)
    assert saved.cells[0].outputs[0]["text"].strip() == "None"


def test_a_failing_cell_is_named(tmp_path):
    source = _write_notebook(tmp_path / "broken.ipynb", "x = 1", "raise ValueError('boom')")
    with pytest.raises(runner.NotebookError, match=r"broken\.ipynb.*cell 1") as info:
        runner.run_notebook(source, full=False)
    assert "boom" in str(info.value)
