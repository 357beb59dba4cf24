"""Execute vilab's notebooks with nbclient.

Usage::

    python notebooks/run.py [--full] [NAME ...]

By default every notebook in this folder runs in *smoke mode*: the kernel sees
``VILAB_SMOKE=1``, every notebook shrinks its budgets (a few NUTS draws, a few
hundred SVI steps), and nothing is saved. ``--full`` runs the full budgets and
saves each notebook in place, with its outputs, once it has run without error
(``make notebooks`` does this). A NAME is a notebook's file name, with or without
``.ipynb``, or the start of one (``00``).

The kernel is started with the interpreter running this script (``sys.executable``),
through a kernelspec written to a temporary folder, so no kernel needs to be
installed; its working directory is this folder.
"""

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

NOTEBOOK_DIR = Path(__file__).resolve().parent
KERNEL_NAME = "vilab-python"
SMOKE_TIMEOUT_S = 600  # per cell
FULL_TIMEOUT_S = 3600  # per cell
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # colours in IPython tracebacks


class NotebookError(RuntimeError):
    """A notebook that failed: which notebook, which cell, and why."""


def notebook_paths(names=()) -> list[Path]:
    """The notebooks of this folder, sorted; or those matching ``names``.

    Raises
    ------
    NotebookError
        If a name matches no notebook, or more than one.
    """
    every = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    if not names:
        return every
    chosen = []
    for name in names:
        stem = Path(name).name.removesuffix(".ipynb")
        exact = [p for p in every if p.stem == stem]
        matches = exact or [p for p in every if p.stem.startswith(stem)]
        if len(matches) != 1:
            found = ", ".join(p.name for p in matches) or "none"
            raise NotebookError(
                f"{name!r} must name one notebook in {NOTEBOOK_DIR}; matches: {found}"
            )
        chosen.append(matches[0])
    return chosen


def _kernel_manager(kernel_dir: Path) -> AsyncKernelManager:
    """A kernel manager whose kernel runs on ``sys.executable``."""
    spec_dir = kernel_dir / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({sys.executable})",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    specs = KernelSpecManager(kernel_dirs=[str(kernel_dir)])
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def _describe(cell, index: int) -> str:
    lines = [line for line in cell.source.splitlines() if line.strip()]
    first = lines[0].strip() if lines else "<empty>"
    return f"cell {index} (counting from 0, markdown included), starting {first[:60]!r},"


def run_notebook(path, *, full: bool = False, save: bool | None = None) -> nbformat.NotebookNode:
    """Execute one notebook and return it with its outputs.

    Parameters
    ----------
    path : path-like
        The ``.ipynb`` file.
    full : bool
        Full budgets (``VILAB_SMOKE`` unset in the kernel) instead of smoke mode.
    save : bool, optional
        Write the executed notebook back to ``path``; default: ``full``. Nothing is
        written when a cell fails.

    Raises
    ------
    NotebookError
        Naming the notebook and the cell that failed, with the error it raised.
    """
    path = Path(path)
    save = full if save is None else save
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ, MPLBACKEND=INLINE_BACKEND)
    env.pop("VILAB_SMOKE", None)
    if not full:
        env["VILAB_SMOKE"] = "1"
    current = {"index": None}

    def on_cell_start(cell, cell_index):
        current["index"] = cell_index

    with tempfile.TemporaryDirectory(prefix="vilab-kernel-") as kernel_dir:
        client = NotebookClient(
            nb,
            km=_kernel_manager(Path(kernel_dir)),
            timeout=FULL_TIMEOUT_S if full else SMOKE_TIMEOUT_S,
            record_timing=False,
            resources={"metadata": {"path": str(path.parent)}},
            on_cell_start=on_cell_start,
        )
        try:
            client.execute(env=env, cleanup_kc=True)
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
            index = current["index"]
            where = _describe(nb.cells[index], index) if index is not None else "kernel start"
            mode = "full" if full else "smoke"
            detail = ANSI_ESCAPE.sub("", str(err))
            raise NotebookError(f"{path.name} ({mode} mode), {where} failed:\n{detail}") from err
    if save:
        nbformat.write(nb, path)
    return nb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all)")
    parser.add_argument(
        "--full", action="store_true", help="full budgets; save the notebooks with outputs"
    )
    args = parser.parse_args(argv)
    try:
        paths = notebook_paths(args.names)
    except NotebookError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    mode = "full" if args.full else "smoke"
    for path in paths:
        print(f"{path.name} ({mode}) ...", end=" ", flush=True)
        start = time.perf_counter()
        try:
            run_notebook(path, full=args.full)
        except NotebookError as err:
            print("FAILED", flush=True)
            print(f"error: {err}", file=sys.stderr)
            return 1
        saved = ", saved" if args.full else ""
        print(f"ok in {time.perf_counter() - start:.1f} s{saved}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
