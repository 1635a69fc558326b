"""Issue 33, item 6: installed, it runs. The wheel built from this checkout, installed (not editable) into a fresh
venv, run as `pythia-sweep` from a folder that is not the checkout: its shipped tasks and configs are found by name,
nothing reaches back into the source tree, and `jobs` (the checkout's `python -m jobs.<command>`) is not installed."""

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from conftest import NEOX_REPO

REPO = Path(__file__).resolve().parents[1]
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".cache", "mlruns", "reports", "build", "*.egg-info", "__pycache__", "tests")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding the wheel and nothing else of ours; the third-party packages are this venv's (a path
    line, so this venv's editable install of the checkout is not seen: its .pth files are not read from there)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=NOT_SOURCE)  # a copy: building writes build/ and egg-info
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                            "-w", str(tmp / "dist"), str(source)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("pythia_sweep-*.whl")
    fresh = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(fresh)
    python = fresh / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(purelib, "third_party.pth").write_text(sysconfig.get_path("purelib") + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
                           str(wheel)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return fresh


def run(venv_dir: Path, cwd: Path, *args: str, env=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv_dir / "bin" / args[0]), *args[1:]], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_the_wheel_holds_the_package_its_tasks_and_configs_and_no_jobs(installed, tmp_path):
    where = run(installed, tmp_path, "python", "-c", "import pythia_sweep, importlib.util; print(pythia_sweep.__file__); "
                "print(importlib.util.find_spec('jobs'))")  # fmt: skip
    assert where.returncode == 0, where.stderr
    package, jobs = where.stdout.split()
    assert Path(package).is_relative_to(installed) and jobs == "None"  # the wheel's, not the checkout's; no `jobs`
    shipped = Path(package).parent / "shipped"
    assert {p.stem for p in (shipped / "tasks").glob("*.toml")} == {p.stem for p in (REPO / "tasks").glob("*.toml")}
    assert {p.stem for p in (shipped / "configs").glob("*.toml")} == {p.stem for p in (REPO / "jobs" / "configs").glob("*.toml")}

    usage = run(installed, tmp_path, "pythia-sweep", "--help")
    assert usage.returncode == 0 and all(f"  {c}" in usage.stdout for c in ("demo", "sweep", "report", "refine", "scan", "compare"))
    helped = run(installed, tmp_path, "pythia-sweep", "sweep", "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: pythia-sweep sweep")
    assert "pythia-sweep sweep jobs/configs/demo.toml" in helped.stdout and "python -m jobs" not in helped.stdout
    wrong = run(installed, tmp_path, "pythia-sweep", "sweeep")
    assert wrong.returncode == 2 and "command 'sweeep' is not one of: demo, demo-study, sweep" in wrong.stderr
    missing = run(installed, tmp_path, "pythia-sweep", "sweep", "no-such-config")
    assert missing.returncode == 2 and "a shipped run config's name (demo, demo-study, methodology" in missing.stderr


@pytest.mark.slow
def test_the_installed_command_sweeps_from_a_folder_outside_the_checkout(installed, hub_cache, tmp_path):
    """A config and a task named as shipped (no file of either in the folder), a Ray worker importing the installed
    package; the store and report land in the user's folder."""
    done = run(installed, tmp_path, "pythia-sweep", "sweep", "demo", "--model", NEOX_REPO, "--task", "induction-demo",
               "--checkpoints", "step1,step1000", "--workers", "1", env={"HF_HUB_CACHE": hub_cache, "HF_HUB_OFFLINE": "1"},
               timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "2 checkpoints recorded (0 failed)" in done.stdout, done.stdout[-2000:]
    assert (tmp_path / "mlruns" / "mlflow.db").is_file() and list((tmp_path / "reports").rglob("report.html"))
