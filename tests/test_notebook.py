"""docs/workshop.ipynb runs top to bottom: executed with nbclient in this Python's own kernel, its parameter cell
cut to one short training step, a small evaluation and a few tabular steps (the GPU section stays off).

The cut is injected as papermill does: a cell after the one tagged "parameters" that sets the new values.
The kernel is this interpreter (sys.executable), written as a kernelspec of its own into a temporary
JUPYTER_PATH: no `python -m ipykernel install` is needed, and no other Python's kernel can be picked up."""

import json
import os

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

from conftest import ROOT, records

NOTEBOOK = os.path.join(ROOT, "docs", "workshop.ipynb")


@pytest.mark.slow
def test_the_workshop_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    small = ["--tasks_per_step", "2", "--group_size", "2", "--eval_tasks", "4", "--eval_samples", "1", "--ppo_epochs", "1",
             "--minibatches", "1"]  # 4 episodes a step: the notebook's plumbing, not learning (test_train.py's)
    cut = {"STEPS": 1, "OUT": out, "TRAIN_FLAGS": small,
           "EVAL_TASKS": 2, "EVAL_SAMPLES": 2, "SHOW": 1, "TABULAR_STEPS": 2, "INSTALL": False, "POLL_SECONDS": 0.2}
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(at) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    nb.cells.insert(at[0] + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in cut.items())))

    write_kernel_spec(str(tmp_path / "kernels" / "seeupo-test"))  # argv: this very interpreter
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    NotebookClient(nb, kernel_name="seeupo-test", timeout=900,
                   resources={"metadata": {"path": os.path.join(ROOT, "docs")}}).execute()  # raises on a cell's error

    text = {cell.id: "".join(o.get("text", "") for o in cell.get("outputs", [])) for cell in nb.cells if "id" in cell}
    images = {cell.id: sum("image/png" in o.get("data", {}) for o in cell.get("outputs", [])) for cell in nb.cells}
    rows = records(out)  # the run's record: one training step, held-out evaluations at steps 0 and 1
    assert [r["step"] for r in rows if "reward_mean" in r] == [1]
    assert [r["step"] for r in rows if "eval_success_rate" in r] == [0, 1]
    assert images["train"] == 1 and images["plot"] == 1 and images["tabular"] == 1  # the live curve's last frame
    assert text["episode"].count(">>>") >= 2 and "BEFORE training" in text["episode"] and "AFTER" in text["episode"]
    table = json.load(open(os.path.join(out, "eval.json")))["results"]["lookup"]
    assert set(table) == {"base", "adapter"} and table["adapter"]["tasks"] == 2 and table["adapter"]["samples"] == 2
    assert "success_rate" in text["table"] and "adapter" in text["table"]
    assert "expected reward after 2 steps" in text["tabular"]
    assert text["gpu"].startswith("skipped: RUN_GPU_SECTION is False")
