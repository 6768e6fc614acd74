"""Every notebook in notebooks/ runs top to bottom without an error (CI executes them all).

The notebooks are jupytext percent scripts (notebooks/*.py, the reviewed source); each is
converted to a notebook in memory and executed with nbclient on a fresh kernel, from a copy of
notebooks/ beside a link to examples/, so their relative paths work and their outputs stay out of
the checkout. A cell that raises fails the test with the cell's traceback. The executed notebook
is kept in the temporary folder for inspection.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))
#: Seconds one notebook may take (all four together stay well under the 4-minute budget).
CELL_TIMEOUT_S = 240


def test_the_four_walkthroughs_are_there() -> None:
    assert [p.stem for p in NOTEBOOKS] == [
        "01_quickstart", "02_one_shot", "03_evaluate", "04_finetune",
    ]  # fmt: skip


@pytest.mark.parametrize("source", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(source: Path, tmp_path: Path) -> None:
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    if source.stem == "04_finetune":
        pytest.importorskip("orbax.checkpoint")
    work = tmp_path / "notebooks"
    work.mkdir()
    (tmp_path / "examples").symlink_to(REPO / "examples", target_is_directory=True)
    shutil.copy(source, work / source.name)
    notebook = jupytext.read(work / source.name)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(work)}},
    )
    client.execute()
    nbformat.write(notebook, work / f"{source.stem}.ipynb")
    errors = [
        out
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors
    # every code cell ran, in order
    counts = [c.execution_count for c in notebook.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1))
