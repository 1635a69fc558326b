"""docs/notebook.ipynb, executed as a researcher would run it (nbclient, a real kernel), against a sweep of the short
induction family: it must load the sweep, draw its figures, print the verdict, and measure a checkpoint in a cell to
the number the sweep recorded (issue 33, item 5: a notebook that cannot rot)."""

import json
import re
from pathlib import Path

import pytest

from conftest import INDUCTION_REPO

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_notebook_goes_from_a_sweep_to_figures_and_remeasures_a_checkpoint(induction_family, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    from pythia_sweep.config import load_config
    from pythia_sweep.run.driver import run_sweep

    task = REPO / "tasks" / "induction-demo.toml"
    config = tmp_path / "notebook.toml"
    config.write_text(f'model = "{INDUCTION_REPO}"\ntask = "{task}"\nworkers = 0\nnull_subsets = 4\n'
                      'single_heads = false\nhead_map = true\nmax_new_tokens = 2\nbootstrap_resamples = 200\n'
                      'checkpoints = ["step0", "step256", "step304"]\n')  # fmt: skip
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_sweep(load_config(config), tracking_uri=uri, progress=False)
    for name, value in (("PYTHIA_SWEEP_CONFIG", str(config)), ("PYTHIA_SWEEP_TASK", str(task)), ("MLFLOW_TRACKING_URI", uri)):
        monkeypatch.setenv(name, value)  # the kernel inherits this process's environment (the test's HF cache too)
    notebook = nbformat.read(REPO / "docs" / "notebook.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # committed without outputs
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()  # its report lands here

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    figures = [json.loads(json.dumps(o["data"]["application/vnd.plotly.v1+json"])) for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 2  # the headline and the head map
    headline, heads = figures
    assert [t["name"] for t in headline["data"] if t.get("name")] == ["95% interval", "induction"]
    assert heads["data"][0]["type"] == "heatmap" and len(heads["data"][0]["y"]) == 16  # 2 layers x 8 heads
    text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert "induction (induction_heads - baseline, success rate)" in text and "\nfinal: " in text, text  # the verdict, labelled lines
    assert list((tmp_path / "reports").rglob("report.html")), "the notebook's report was not written where it runs"
    measured = re.findall(r"induction \((\w+)\) at step304: measured here ([+-][\d.]+); recorded by the sweep ([+-][\d.]+)", text)
    assert [m for m, _, _ in measured] == ["success_rate", "logprob_diff"], text
    for metric, here, there in measured:  # the worker's code in the notebook's process gives the sweep's number
        assert float(here) == pytest.approx(float(there), abs=1e-5), (metric, here, there)
