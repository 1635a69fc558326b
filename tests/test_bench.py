"""`make bench` in miniature (two tiny checkpoints), so the command never rots. Not a timed test."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_bench_smoke_prints_the_table_with_the_three_targets(tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "bench" / "results.json"
    done = subprocess.run([sys.executable, "-m", "jobs.bench", "--smoke", "--checkpoints", "2", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results["per_checkpoint_s"]) == {"direct", "seed", "seed_warm", "robust", "floor"}
    assert all(v > 0 for v in results["per_checkpoint_s"].values())
    assert len(results["targets"]) == 3 and "targets:" in done.stdout and "| direct |" in done.stdout
    assert results["seed"]["failed"] == [] and results["robust"]["failed"] == []
