"""A cluster, for real, on 127.0.0.1: `mlflow server` as the tracking store (artifacts served through it), a
two-node Ray cluster (`python -m jobs.local_cluster`: Ray's CLI cannot start a second node on loopback, that
module's docstring says why), the sweep submitted with `ray job submit --working-dir .`, workers on both
nodes, and the report rebuilt from the tracking server alone. The README's cluster section shows these same
commands."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pythia_sweep.tracking.reader import SweepReader

from conftest import NEOX_REPO
from support.servers import BIN, free_port, wait_for

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_two_node_cluster_with_a_tracking_server_runs_the_submitted_sweep(hub_cache, tmp_path):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    port = free_port()
    tracking = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    dashboard = free_port()
    cluster = subprocess.Popen([sys.executable, "-m", "jobs.local_cluster", "--nodes", "2", "--dashboard-port", str(dashboard)],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        _submit_and_check(hub_cache, tmp_path, env, tracking, dashboard, cluster, server)
    finally:
        for proc in (cluster, server):  # stopped whatever happened above
            proc.terminate()
            proc.wait(timeout=120)


def _submit_and_check(hub_cache, tmp_path, env, tracking, dashboard, cluster, server):
    wait_for(f"{tracking}/health", server)
    lines = [cluster.stdout.readline() for _ in range(3)]
    assert lines[0].startswith("cluster: 2 nodes on 127.0.0.1"), lines
    wait_for(f"http://127.0.0.1:{dashboard}/api/version", cluster)
    runtime_env = {"env_vars": {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": hub_cache, "MLFLOW_TRACKING_URI": tracking}}
    submit = [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--working-dir", str(REPO),
              "--runtime-env-json", json.dumps(runtime_env), "--",
              "python", "-m", "jobs.sweep", "jobs/configs/demo.toml", "--model", NEOX_REPO,
              "--checkpoints", "step0,step1,step2,step4", "--task", "tasks/decimal-seed.toml", "--workers", "2", "--no-report"]  # fmt: skip
    for _ in range(36):  # the head's job agent can take a while to come up on a busy machine
        done = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
        if "No available agent to submit job" not in done.stderr + done.stdout:
            break
        time.sleep(5)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout and "4 checkpoints recorded" in done.stdout
    cluster.terminate()  # the cluster is gone: what follows reads nothing but the tracking server
    cluster.wait(timeout=120)

    reader = SweepReader(tracking)
    parent = reader.find_sweep()
    records = reader.load_records(parent)
    assert sorted(r.revision for r in records) == ["step0", "step1", "step2", "step4"]
    assert len({r.worker["node"] for r in records}) == 2  # workers ran on both nodes
    report = subprocess.run([sys.executable, "-m", "jobs.report", "--tracking-uri", tracking, "--sweep", parent,
                             "--reports-dir", str(tmp_path / "reports")], cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    summary = json.loads(next((tmp_path / "reports").rglob("summary.json")).read_text())
    assert summary["checkpoints"] == 4 and summary["parent_run_id"] == parent
    page = next((tmp_path / "reports").rglob("report.html")).read_text()
    assert f"{tracking}/#/experiments/" in page  # the page links back to the run on the server
