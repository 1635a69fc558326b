"""`ray start --head` on 127.0.0.1 and `ray job submit` of the demo config, as a cluster user would run it."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pythia_sweep.tracking import SweepReader as Tracker

from conftest import NEOX_REPO

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit_runs_the_sweep_entry_point(hub_cache, tmp_path):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    gcs, dashboard = free_port(), free_port()
    start = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
             f"--port={gcs}", f"--dashboard-port={dashboard}", "--num-cpus=2", "--include-dashboard=true",
             "--disable-usage-stats"]  # fmt: skip
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
    try:
        store = f"sqlite:///{tmp_path}/mlflow.db"  # a persistent path: the job's working dir is temporary
        runtime_env = {"env_vars": {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": hub_cache, "MLFLOW_TRACKING_URI": store}}
        submit = [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--working-dir", str(REPO),
                  "--runtime-env-json", json.dumps(runtime_env), "--",
                  "python", "-m", "jobs.sweep", "jobs/configs/demo.toml", "--model", NEOX_REPO,
                  "--checkpoints", "step0,step1", "--task", "tasks/decimal-seed.toml", "--no-report"]  # fmt: skip
        for _ in range(12):  # the head's job agent can take a while to come up on a busy machine
            done = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=400, cwd=REPO)
            if "No available agent to submit job" not in done.stderr + done.stdout:
                break
            time.sleep(5)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "succeeded" in done.stdout and "2 checkpoints recorded" in done.stdout
        tracker = Tracker(store)
        runs = tracker.checkpoint_runs(tracker.find_sweep())
        assert sorted(r.data.tags["revision"] for r in runs) == ["step0", "step1"]
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
