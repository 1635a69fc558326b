"""The command-line entry points: clear one-line refusals and non-zero exits, never a traceback."""

import os
import socket
import subprocess
import sys
from pathlib import Path

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
    assert done.stderr.strip() == "error: site='residual' is not valid: one of head, post-projection"
