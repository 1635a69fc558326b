"""Issue 33, item 2: any folder works. A project (and its venv) in a folder whose name has a space: every make target
passes its paths whole, and the demo's first sweep runs there with Ray workers (Ray starts a worker that has a
runtime_env through `bash -c` with the interpreter's path unquoted: run/worker.worker_env quotes it)."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAKE_PYTHON = """#!/bin/bash
printf 'ARG:%s\\n' "$@"
printf 'HF_HUB_CACHE:%s\\n' "${HF_HUB_CACHE-}"
printf 'PYTHIA_TOKENIZER:%s\\n' "${PYTHIA_TOKENIZER-}"
"""


@pytest.fixture
def spaced(tmp_path) -> Path:
    folder = tmp_path / "my projects" / "pythia sweep"
    folder.mkdir(parents=True)
    return folder


# What an outer `make test` (CI) exports would leak into these makes: they must see a user's plain shell.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHIA_TOKENIZER", "HF_HUB_CACHE", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}


def make(folder: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    """`make ARGS` in `folder` with a stand-in for the venv's python that prints the arguments and paths it was given."""
    done = subprocess.run(["make", "--no-print-directory", *args], cwd=folder, capture_output=True, text=True, timeout=60, env=CLEAN_ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    argv = [line.removeprefix("ARG:") for line in lines if line.startswith("ARG:")]
    env = dict(line.split(":", 1) for line in lines if line.startswith(("HF_HUB_CACHE:", "PYTHIA_TOKENIZER:")))
    return argv, env


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_every_make_target_passes_a_path_with_spaces_whole(spaced):
    shutil.copy(REPO / "Makefile", spaced)
    shutil.copy(REPO / "pyproject.toml", spaced)
    python = spaced / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    (spaced / ".venv" / ".installed").touch()  # newer than pyproject.toml: setup has nothing to do
    cache = f"{spaced}/.cache/hf/hub"
    assert make(spaced, "demo") == (["-m", "jobs.demo"], {"HF_HUB_CACHE": cache, "PYTHIA_TOKENIZER": ""})
    assert make(spaced, "demo-study")[1]["HF_HUB_CACHE"] == cache
    assert make(spaced, "sweep", "CONFIG=my configs/a.toml", "TASK=my tasks/t.toml", "CHECKPOINTS=step0,step448")[0] == [
        "-m", "jobs.sweep", "my configs/a.toml", "--task", "my tasks/t.toml", "--checkpoints", "step0,step448"]  # fmt: skip
    assert make(spaced, "report", "SWEEP=my sweep")[0] == ["-m", "jobs.report", "--sweep", "my sweep"]
    assert make(spaced, "refine", "CONFIG=my configs/a.toml")[0] == ["-m", "jobs.refine", "my configs/a.toml"]
    assert make(spaced, "bench", "N=2")[0] == ["-m", "jobs.bench", "--checkpoints", "2"]
    assert make(spaced, "ui")[0][:4] == ["-m", "mlflow", "ui", "--backend-store-uri"]
    assert make(spaced, "ui")[0][4] == f"sqlite:///{spaced}/mlruns/mlflow.db"
    dry = subprocess.run(["make", "-n", "test"], cwd=spaced, capture_output=True, text=True, timeout=60, env=CLEAN_ENV)
    assert f'PYTHIA_TOKENIZER="{spaced}/.cache/pythia-tokenizer/tokenizer.json"' in dry.stdout, dry.stdout + dry.stderr


def venv_in(folder: Path) -> Path:
    """A venv in `folder` whose packages are this one's (its site-packages linked, nothing installed): its python's path
    holds the folder's space, as a venv made there by `make setup` would."""
    venv = folder / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(os.path.realpath(sys.executable))
    shutil.copy(Path(sys.prefix) / "pyvenv.cfg", venv / "pyvenv.cfg")
    packages = venv / Path(sysconfig.get_path("purelib")).relative_to(sys.prefix)
    packages.parent.mkdir(parents=True)
    packages.symlink_to(sysconfig.get_path("purelib"))
    return venv / "bin" / "python"


@pytest.mark.slow
def test_the_demos_first_sweep_runs_with_ray_workers_from_a_folder_with_a_space(hub_cache, spaced):
    """The demo config and its first task (induction-demo) swept with a Ray worker, the project and its venv in
    "my projects/pythia sweep": before the fix the worker never started (`bash: /tmp/.../my: No such file or
    directory`) and Ray retried it for minutes."""
    from conftest import NEOX_REPO

    for name in ("jobs", "pythia_sweep", "tasks"):
        (spaced / name).symlink_to(REPO / name)
    python = venv_in(spaced.parent)
    assert " " in str(python)
    done = subprocess.run([str(python), "-m", "jobs.sweep", "jobs/configs/demo.toml", "--model", NEOX_REPO, "--task",
                           "tasks/induction-demo.toml", "--checkpoints", "step1,step1000", "--workers", "1", "--no-report"],
                          cwd=spaced, env={**os.environ, "HF_HUB_CACHE": hub_cache}, capture_output=True, text=True, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "2 checkpoints recorded (0 failed)" in done.stdout, done.stdout[-2000:]
    assert (spaced / "mlruns" / "mlflow.db").is_file()  # the project's own store, in the folder with the space
