"""What a person finds in the MLflow UI: the names the store gives (an experiment per model and task, a tag per
study) and the UI's addresses for a sweep. Text only: the reader supplies the ids (reader.SweepReader's *_url)."""

from __future__ import annotations

import json
import urllib.parse


def experiment_name(model: str, task_name: str) -> str:
    """The experiment's name in the UI, task first: the UI's sidebar cuts long names at the end, and sweeps of one
    model family differ by task. The model and task are also the experiment's tags (identity as data)."""
    return f"{task_name} · {model}"


def study_tag(study: str) -> str:
    """The parent-run tag that puts a sweep in a study (the name is data: the study's runs are found by this tag)."""
    return f"study.{study}"


def ui_query(params: dict[str, str]) -> str:
    """A query string for the MLflow UI: the machine-learning view (MLflow 3.17's UI otherwise opens on its GenAI
    view, whatever the experiment's kind tag, and remembers the last choice per browser), then `params`."""
    return urllib.parse.urlencode({"workflowType": "machine_learning", **params}, quote_via=urllib.parse.quote)


def run_url(base: str, experiment: str, parent: str) -> str:
    """The sweep's parent run in the MLflow UI at `base`, its metrics against training step."""
    return f"{base.rstrip('/')}/#/experiments/{experiment}/runs/{parent}/model-metrics?{ui_query({})}"


def checkpoints_url(base: str, experiment: str, parent: str) -> str:
    """The sweep's checkpoint runs in the MLflow UI at `base`, sorted by training step (the UI's own default is start
    time, which is completion order)."""
    query = ui_query({"searchFilter": f"tags.mlflow.parentRunId = '{parent}'", "orderByKey": "metrics.`training_step`", "orderByAsc": "true"})
    return f"{base.rstrip('/')}/#/experiments/{experiment}/runs?{query}"


def metric_url(base: str, experiment: str, parent: str, keys: list[str]) -> str:
    """One chart of the parent run's `keys` against training step (MLflow's metric page): the headline first,
    where the run page's charts tab opens on every number of the sweep, grouped by name."""
    # the page reads `runs` as the query's first key (MLflow 3.17 parses "?runs"): it goes first, the view switch last
    query = urllib.parse.urlencode({
        "runs": json.dumps([parent]), "metric": json.dumps(keys[0]), "experiments": json.dumps([experiment]),
        "plot_metric_keys": json.dumps(keys), "plot_layout": "{}", "x_axis": "step", "y_axis_scale": "linear", "line_smoothness": "1",
        "show_point": "true", "deselected_curves": "[]", "last_linear_y_axis_range": "[]", "workflowType": "machine_learning",
    }, quote_via=urllib.parse.quote)  # fmt: skip
    return f"{base.rstrip('/')}/#/metric?{query}"
