"""The command-line entry points: clear one-line refusals and non-zero exits, never a traceback."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on return: connections are refused


def run(args, **env):
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=full, capture_output=True, text=True, timeout=120)


def test_sweep_without_hub_access_stops_at_once_pointing_to_the_demo():
    done = run(["jobs.sweep", "jobs/configs/pythia160m-log.toml"], HF_HUB_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    assert done.returncode == 2
    assert "cannot reach the Hugging Face Hub" in done.stderr and "make demo" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_config_value_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "EleutherAI/pythia-160m"\nsite = "residual"\n')
    done = run(["jobs.sweep", str(bad)])
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {bad}: site='residual' is not valid: one of head, post-projection"  # the file is named


@pytest.mark.slow
def test_the_terminal_says_what_a_checkpoint_runs_and_names_unpublished_revisions(hub_cache, tmp_path):
    """Issue 19, case 4, and issue 33, item 1: `--checkpoints step1,step999` of a config that says `unpublished = "list"`:
    step999 is named at start with its published neighbours, never recorded, and listed in the report's data; the
    report's final step stays the family's last published one."""
    import json

    from conftest import NEOX_REPO

    config = tmp_path / "demo-listing.toml"
    config.write_text((REPO / "jobs/configs/demo.toml").read_text() + 'unpublished = "list"\n')
    done = subprocess.run([sys.executable, "-m", "jobs.sweep", str(config), "--model", NEOX_REPO, "--task",
                           "tasks/decimal-seed.toml", "--checkpoints", "step1,step999", "--workers", "1",
                           "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--reports-dir", str(tmp_path / "reports")],
                          cwd=REPO, env={**os.environ, "HF_HUB_CACHE": hub_cache}, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "task decimal-seed: 1 prompt x " in out and " rows per checkpoint (" in out and "1 checkpoints scheduled" in out
    start = f"step999: asked for, not published by {NEOX_REPO} (nearest published: step4 before, step1000 after); left out"
    assert start in out and out.index(start) < out.index("MLflow parent run ")
    assert "1 checkpoints recorded (0 failed)" in out and "step999 failed" not in out
    summary = json.loads(next((tmp_path / "reports").rglob("summary.json")).read_text())
    assert summary["final_step"] == 1000  # the published list's end, saved with the sweep; never step999
    assert [u["revision"] for u in summary["asked_for_not_published"]] == ["step999"]
