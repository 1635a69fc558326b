"""Whole sweeps online against the Hub server on 127.0.0.1: the demo family with its downloads shown, duplicates
never downloaded, the server dying mid-sweep and coming back. The sweep runs as a user runs it (`python -m
jobs.sweep`, a child process with HF_ENDPOINT set; hub_fixtures.py says why a child), the server counts what it
served."""

import re
import subprocess
import sys
import threading
import time

import pytest
from conftest import NEOX_REPO
from hub_fixtures import REPO, hub, online_env  # noqa: F401 - `hub` is a fixture
from tqdm import tqdm

from pythia_sweep.demo.demo_family import DEMO_REPO, train_family
from pythia_sweep.demo.hub_cache import repo_folder
from support.hub_server import HubServer
from pythia_sweep.tracking.reader import SweepReader

pytestmark = pytest.mark.slow


def sweep(hub, cache, store, *args, timeout=400, progress_bars=False):
    """`python -m jobs.sweep` online against `hub`, its stderr captured (not a terminal); huggingface_hub's
    progress bars switched off (online_env) unless `progress_bars`, as a user who never set HF_HUB_DISABLE_PROGRESS_BARS."""
    cmd = [sys.executable, "-m", "jobs.sweep", "jobs/configs/demo.toml", "--tracking-uri", store, "--no-report", "--workers", "1", *args]
    env = online_env(hub, cache) | {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    if progress_bars:
        del env["HF_HUB_DISABLE_PROGRESS_BARS"]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def by_revision(store):
    reader = SweepReader(store)
    runs = reader.checkpoint_runs(reader.find_sweep())
    return {r.data.tags["revision"]: r for r in runs}, len(runs)


def test_identical_revisions_are_recorded_as_duplicates_without_downloading_them(hub, hub_cache, tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    done = sweep(hub, tmp_path / "client", store, "--model", NEOX_REPO + "-dup", "--checkpoints", "all",
                 "--task", "tasks/decimal-seed.toml")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    runs, n = by_revision(store)
    # step4 is the repo's final revision: the one measurement belongs to it (pythia-2.8b's branches = main, #205)
    assert n == 2 and runs["step4"].data.tags["checkpoint_status"] == "ok"
    assert runs["step2"].data.tags["checkpoint_status"] == "duplicate" and runs["step2"].data.tags["duplicate_of"] == "step4"
    weights = [r for r in hub.requests if r.method == "GET" and r.path.endswith(".safetensors")]
    assert [r.path.split("/")[-2] for r in weights] == [runs["step4"].data.tags["commit"]]  # step2's never fetched
    size = (tmp_path / "client").rglob("*.safetensors").__next__().stat().st_size
    assert hub.weight_bytes_served() == size  # one set of weights crossed HTTP for two revisions
    assert done.stderr.count("checkpoints: ") == 1 and "checkpoints: 1/1 finished" in done.stderr, done.stderr[-3000:]  # step4 measured, step2 not queued (off a terminal: a line per checkpoint)
    assert "model.safetensors:" not in done.stderr  # HF_HUB_DISABLE_PROGRESS_BARS=1 (online_env) switches download bars off


@pytest.fixture(scope="module")
def demo_hub_root(tmp_path_factory):
    """The demo family (`make demo`'s model, trained by pythia_sweep.demo.demo_family) cut to its first four
    optimizer steps, saved as step0, step1, step2 and step4 (distinct weights) in a folder for the Hub server."""
    root = tmp_path_factory.mktemp("demo-hub")
    train_family(root, DEMO_REPO, steps=(0, 1, 2, 4), log=lambda line: None)
    return root


def test_demo_family_sweeps_over_http_showing_each_download_in_bytes(demo_hub_root, tmp_path):
    asked = ["step0", "step2", "step4"]  # step1 is published too, and never asked for
    store = f"sqlite:///{tmp_path}/mlflow.db"
    with HubServer(demo_hub_root) as hub:
        done = sweep(hub, tmp_path / "client", store, "--checkpoints", ",".join(asked), progress_bars=True)
    assert done.returncode == 0, done.stderr[-3000:]
    runs, n = by_revision(store)
    assert n == len(asked) and {r: run.data.tags["checkpoint_status"] for r, run in runs.items()} == dict.fromkeys(asked, "ok")

    folder = repo_folder(demo_hub_root, DEMO_REPO)  # what the server publishes, read from its folder
    weights = {r: (folder / "snapshots" / (folder / "refs" / r).read_text() / "model.safetensors").resolve() for r in asked}
    assert hub.weight_bytes_served() == sum(blob.stat().st_size for blob in set(weights.values()))  # each one once
    for revision, blob in weights.items():  # its bar, finished, on the driver's stderr though that is no terminal
        size = tqdm.format_sizeof(blob.stat().st_size)  # as tqdm draws bytes: 1.69M
        line = rf"{revision} model\.safetensors: 100%\|█+\| {re.escape(size)}/{re.escape(size)} \["
        assert re.search(line, done.stderr), (line, done.stderr[-3000:])


def test_server_dying_mid_sweep_fails_the_affected_checkpoints_and_a_rerun_completes(hub, hub_cache, tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    revisions = ["step0", "step1", "step2", "step4", "step1000"]

    def stop_after_first_weights():
        deadline = time.time() + 300
        while time.time() < deadline and hub.weight_bytes_served() == 0:
            time.sleep(0.01)
        hub.stop()  # connections dropped, the port closed: the Hub is gone

    killer = threading.Thread(target=stop_after_first_weights)
    killer.start()
    first = sweep(hub, tmp_path / "client", store, "--model", NEOX_REPO, "--checkpoints", ",".join(revisions))
    killer.join()
    assert first.returncode == 0, first.stderr[-3000:]
    runs, n = by_revision(store)
    failed = {r: run.data.tags["error"] for r, run in runs.items() if run.data.tags["checkpoint_status"] == "failed"}
    assert n == len(revisions) and failed and len(failed) < len(revisions)  # some kept, some lost with the server
    for revision, error in failed.items():
        assert revision in error or "cannot reach the Hugging Face Hub" in error, error
    kept = {r for r in runs if r not in failed}

    hub.start()  # back on the same port
    second = sweep(hub, tmp_path / "client", store, "--model", NEOX_REPO, "--checkpoints", ",".join(revisions))
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{len(failed)} checkpoints recorded (0 failed), {len(kept)} already done" in second.stdout
    runs, n = by_revision(store)
    assert n == len(revisions) and all(run.data.tags["checkpoint_status"] == "ok" for run in runs.values())
