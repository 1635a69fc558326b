"""Issue 33, item 3: the store as a reader sees it. Reading a sweep (jobs.report, jobs.compare, the notebook loader)
works on a read-only store and never creates one; an unknown sweep is answered with the sweeps there are; a sweep
named twice in a comparison is refused."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import NEOX_REPO
from pythia_sweep.config import SweepConfig
from pythia_sweep.errors import PythiaSweepError

REPO = Path(__file__).resolve().parents[1]
FAST = dict(model=NEOX_REPO, task="tasks/decimal-seed.toml", null_subsets=2, max_new_tokens=4, bootstrap_resamples=200,
            single_heads=False, evidence=False, workers=0, checkpoints=("step0", "step1000"))  # fmt: skip


@pytest.fixture(scope="module")
def store(hub_cache, tmp_path_factory):
    """A store holding two sweeps of the tiny family (the second one run last), swept in this process."""
    from pythia_sweep.run.driver import run_sweep

    folder = tmp_path_factory.mktemp("store") / "mlruns"
    uri = f"sqlite:///{folder}/mlflow.db"
    first = run_sweep(SweepConfig(**FAST, name="first-sweep"), tracking_uri=uri, progress=False)
    second = run_sweep(SweepConfig(**FAST, name="second-sweep", seed=1), tracking_uri=uri, progress=False)
    return folder, uri, first.parent_run_id, second.parent_run_id


def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` and its content's hash: what a reader must leave as it was."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def read_only(folder: Path, command: list[str]) -> list[str]:
    """`command` run with `folder` read-only: a read-only bind mount in a mount namespace of its own (root ignores file
    modes), else the folder's write permissions taken away (restored by the caller)."""
    if os.geteuid() != 0:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        return command
    if not shutil.which("unshare"):
        pytest.skip("needs unshare to make a read-only mount as root")
    mount = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", mount, str(folder), *command]


@pytest.mark.slow  # runs jobs.report / pythia-sweep in a subprocess
def test_a_report_is_built_from_a_read_only_store_and_writes_nothing_there(store, tmp_path):
    folder, uri, _, second = store
    before = digest(folder)
    loader = f"import pythia_sweep; print(len(pythia_sweep.load_long_table({second!r}, tracking_uri={uri!r})), 'numbers')"
    commands = [[sys.executable, "-m", "jobs.report", "--sweep", second, "--tracking-uri", uri, "--reports-dir", str(tmp_path / "reports")],
                [sys.executable, "-c", loader]]  # fmt: skip
    try:
        done = [subprocess.run(read_only(folder, c), cwd=REPO, capture_output=True, text=True, timeout=120) for c in commands]
    finally:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    report, loaded = done
    assert report.returncode == 0, report.stderr[-3000:]
    assert "the tracking store is read-only here: the report is written above, not logged back to its MLflow run" in report.stdout
    assert next((tmp_path / "reports").rglob("report.html")).stat().st_size > 0
    assert loaded.returncode == 0 and loaded.stdout.split()[1] == "numbers" and int(loaded.stdout.split()[0]) > 0, loaded.stderr[-3000:]
    assert digest(folder) == before  # nothing written (a writer's mlflow.lock there could not even be opened for writing)


@pytest.mark.slow  # runs jobs.report / pythia-sweep in a subprocess
def test_a_reader_never_creates_a_store(store, tmp_path):
    """From a folder without mlruns/: one line saying there is no store there, and still none afterwards."""
    from pythia_sweep import load_long_table
    from pythia_sweep.report.compare import compare_sweeps

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = str(Path(sys.executable).parent / "pythia-sweep")  # outside the checkout the command is the installed one
    done = subprocess.run([command, "report"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: no tracking store at {tmp_path}/mlruns/mlflow.db: nothing to read")
    assert list(tmp_path.iterdir()) == []  # no mlruns/, no reports/
    nowhere = f"sqlite:///{tmp_path}/elsewhere/mlflow.db"
    for read in (lambda: load_long_table(tracking_uri=nowhere), lambda: compare_sweeps(["a", "b"], tracking_uri=nowhere, out=tmp_path / "c.html")):
        with pytest.raises(PythiaSweepError, match="^no tracking store at "):
            read()
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_sweep_is_answered_with_the_sweeps_there_are_latest_first(store):
    from pythia_sweep.report.build import build_report

    _, uri, first, second = store
    with pytest.raises(PythiaSweepError) as unknown:
        build_report("nonsense", tracking_uri=uri, log_to_mlflow=False)
    message = str(unknown.value)
    assert message.startswith(f"no sweep with run id, sweep_id or name 'nonsense' in tracking store {uri}; its sweeps, latest first: ")
    assert message.index(f"second-sweep (sweep_id ") < message.index("first-sweep (sweep_id ")
    assert f"run {first})" in message and f"run {second})" in message and "\n" not in message


def test_compare_refuses_a_sweep_named_twice(store, tmp_path, capsys):
    """By its name and by its parent run id: one sweep, drawn twice and its verdict pasted twice, is refused in one line."""
    from pythia_sweep.commands.compare import main

    _, uri, first, second = store
    out = tmp_path / "compare.html"
    assert main(["first-sweep", second, first, "--tracking-uri", uri, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'first-sweep' and " + repr(first) + " are one sweep" in err and not out.exists()
    assert main(["first-sweep", second, "--tracking-uri", uri, "--out", str(out)]) == 0 and out.exists()
