"""Two sweeps at once on one tracking store (two terminals, two layers): both finish with every record."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NEOX_REPO

from pythia_sweep.tracking.reader import SweepReader

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
REVISIONS = ["step0", "step1", "step2", "step4"]


def test_two_sweeps_on_one_store_both_finish_with_every_record(hub_cache, tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": hub_cache}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "jobs.sweep", "jobs/configs/demo.toml", "--model", NEOX_REPO, "--task", "tasks/decimal-seed.toml",
             "--layer", str(layer), "--checkpoints", ",".join(REVISIONS), "--workers", "1", "--tracking-uri", store, "--no-report"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for layer in (5, 6)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert f"{len(REVISIONS)} checkpoints recorded (0 failed)" in out
    reader = SweepReader(store)
    (experiment,) = [e for e in reader.client.search_experiments() if e.name != "Default"]  # one (model/task), created once
    parents = reader.client.search_runs([experiment.experiment_id], "tags.kind = 'sweep'")
    assert sorted(r.data.params["layer"] for r in parents) == ["5", "6"]
    for parent in parents:
        assert parent.info.status == "FINISHED"  # no half-written run
        runs = reader.checkpoint_runs(parent.info.run_id)
        assert sorted(r.data.tags["revision"] for r in runs) == sorted(REVISIONS)
        assert all(r.data.tags["checkpoint_status"] == "ok" and r.info.status == "FINISHED" for r in runs)
        records = reader.load_records(parent.info.run_id)
        layer = int(parent.data.params["layer"])
        assert {h[0] for r in records for h in r.conditions["even"].heads} == {layer}
