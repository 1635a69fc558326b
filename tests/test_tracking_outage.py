"""The tracking server goes away mid-sweep, as a user's sweep meets it: `python -m jobs.sweep` writing to an
`mlflow server` that is killed (its whole process group) after the first checkpoint is saved. Down for less than
MLflow's client retries, the sweep rides it out with nothing lost or twice; down for longer, the sweep stops
with one line saying what was saved, and the same command run again finishes with nothing twice.

No fixed sleeps stand in for "the sweep is writing now": the outage is timed from the sweep's first attempt to reach
the stopped server (MlflowServer.wait_for_a_client), and MLflow's own retry settings (MLFLOW_HTTP_REQUEST_MAX_RETRIES,
MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR) are set short, so each test waits seconds where the defaults would wait minutes."""

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from pythia_sweep.tracking.reader import SweepReader
from pythia_sweep.tracking.server import retry_budget_s

from conftest import NEOX_REPO
from support.servers import MlflowServer

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
REVISIONS = ["step0", "step1", "step2", "step4", "step1000"]
SWEEP = [sys.executable, "-m", "jobs.sweep", "jobs/configs/demo.toml", "--model", NEOX_REPO, "--task", "tasks/decimal-seed.toml",
         "--checkpoints", ",".join(REVISIONS), "--workers", "0", "--no-report"]  # fmt: skip
OUTAGE_S = 5  # after the sweep's first attempt to reach the stopped server; then the server's start-up on top
SHORT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}  # retries 0, 2, 4 ... 64 s apart: 126 s in all


def start_sweep(server: MlflowServer, **env) -> subprocess.Popen:
    environment = {**os.environ, "MLFLOW_TRACKING_URI": server.uri, **env}
    return subprocess.Popen(SWEEP, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(stream, text: str, timeout: float = 300) -> list[str]:
    """Lines of `stream` up to the one holding `text` (the sweep prints a line per saved checkpoint off a terminal)."""
    lines, found = [], threading.Event()

    def read():
        for line in stream:
            lines.append(line)
            if text in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(timeout), f"{text!r} never printed: {''.join(lines)[-3000:]}"
    return lines


def checkpoint_runs(server: MlflowServer) -> list:
    reader = SweepReader(server.uri)
    return reader.checkpoint_runs(reader.find_sweep())


def assert_each_checkpoint_once(server: MlflowServer) -> None:
    runs = checkpoint_runs(server)
    per_revision = Counter(r.data.tags["revision"] for r in runs)
    assert per_revision == Counter(REVISIONS), per_revision  # one result per checkpoint, none twice
    assert {(r.info.status, r.data.tags["checkpoint_status"]) for r in runs} == {("FINISHED", "ok")}


def test_a_server_down_for_seconds_is_ridden_out(tmp_path, hub_cache, monkeypatch):
    for name, value in SHORT.items():
        monkeypatch.setenv(name, value)
    assert retry_budget_s() > OUTAGE_S + 60  # the sweep's settings (7 retries, backoff factor 1): 126 s
    with MlflowServer(tmp_path) as server:
        sweep = start_sweep(server, **SHORT)
        try:
            read_until(sweep.stderr, "checkpoints: 1/5 finished")
            server.stop()  # killed while the sweep measures the second checkpoint
            server.wait_for_a_client()  # the sweep tries to write step1's record: from now on it waits on the server
            time.sleep(OUTAGE_S)
            assert sweep.poll() is None  # still waiting on the server: it cannot finish without writing to it
            server.start()
            out, err = sweep.communicate(timeout=600)
        finally:
            sweep.kill()
        assert sweep.returncode == 0, err[-3000:]
        assert "5 checkpoints recorded (0 failed), 0 already done" in out
        assert_each_checkpoint_once(server)


def test_a_server_gone_past_the_retry_budget_stops_the_sweep_in_one_line_and_the_rerun_finishes(tmp_path, hub_cache):
    short = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}  # 2 s: the test stays short
    with MlflowServer(tmp_path) as server:
        sweep = start_sweep(server, **short)
        try:
            read_until(sweep.stderr, "checkpoints: 1/5 finished")
            server.stop()
            out, err = sweep.communicate(timeout=300)
        finally:
            sweep.kill()
        assert sweep.returncode == 2, err[-3000:]
        said = [line for line in err.splitlines() if line.strip()]
        assert len(said) == 1 and "Traceback" not in err, err[-3000:]  # one line, nothing after it
        assert said[0].startswith(f"error: tracking server {server.uri} stopped answering while step1's record was written")
        assert "retried for 2 s: MLFLOW_HTTP_REQUEST_MAX_RETRIES=2, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1" in said[0]
        assert "Saved there: 1 of 5 checkpoints; not saved: step1 and 3 more. Run the same command again" in said[0]

        server.start()
        rerun = start_sweep(server)
        out, err = rerun.communicate(timeout=600)
        assert rerun.returncode == 0, err[-3000:]
        assert "4 checkpoints recorded (0 failed), 1 already done" in out
        assert_each_checkpoint_once(server)
