"""Faults a long sweep meets: corrupt weights, unusable stores, a driver killed or interrupted."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from pythia_sweep.config import SweepConfig
from pythia_sweep.measure.checkpoint import run_checkpoint
from pythia_sweep.demo.hub_cache import repo_folder, save_revision
from pythia_sweep.run.driver import run_sweep
from pythia_sweep.task.schema import load_task
from pythia_sweep.tracking.reader import SweepReader as Tracker
from pythia_sweep.tracking.writer import SweepRecorder
from pythia_sweep.tracking.store import TrackingStoreError

from conftest import NEOX_REPO

REPO = Path(__file__).resolve().parents[1]
FAST = dict(model=NEOX_REPO, task="tasks/decimal-seed.toml", null_subsets=2, max_new_tokens=4, bootstrap_resamples=200, single_heads=False)


def test_corrupt_weight_file_is_a_failed_record_naming_revision_and_file(neox, hub_cache, tmp_path):
    save_revision(neox.model, neox.tokenizer, hub_cache, "tiny-test/corrupt", "step7", tmp_path)
    blob = (repo_folder(hub_cache, "tiny-test/corrupt") / "snapshots").glob("*/model.safetensors").__next__().resolve()
    blob.write_bytes(blob.read_bytes()[:1000])  # a truncated download
    record = run_checkpoint(SweepConfig(**{**FAST, "model": "tiny-test/corrupt"}), "step7")
    assert record.status == "failed"
    assert "CorruptCheckpoint" in record.error and "model.safetensors" in record.error and "'step7'" in record.error


@pytest.mark.parametrize(
    "make_uri, why",
    [
        (lambda tmp: "mlruns/mlflow.db", "is not a tracking URI"),
        (lambda tmp: f"http://127.0.0.1:{_closed_port()}", "cannot be reached"),
        (lambda tmp: _corrupt_db(tmp), "cannot be used"),
        (lambda tmp: _locked_db(tmp), "cannot be used"),
    ],
)
def test_unusable_store_refuses_before_any_checkpoint(hub_cache, tmp_path, make_uri, why):
    uri = make_uri(tmp_path)
    with pytest.raises(TrackingStoreError, match=why) as error:
        run_sweep(SweepConfig(**FAST, checkpoints=("step0",)), tracking_uri=uri, progress=False)
    assert uri in str(error.value)
    assert not ray.is_initialized()  # no worker, no checkpoint ran


def test_ray_that_cannot_start_leaves_no_running_sweep(hub_cache, tmp_path, monkeypatch):
    """The store opens while Ray starts; when Ray fails, the parent run is closed FAILED, not left RUNNING."""
    import pythia_sweep.run.cluster as sweep

    def no_cluster(address=None):
        raise ConnectionError("no Ray cluster at 127.0.0.1:1")

    monkeypatch.setattr(sweep, "connect_ray", no_cluster)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = SweepConfig(**FAST, checkpoints=("step0",), workers=1)  # Ray asked for (one checkpoint alone would run here)
    with pytest.raises(ConnectionError, match="no Ray cluster"):
        run_sweep(config, tracking_uri=uri, progress=False)
    tracker = Tracker(uri)
    parent = tracker.existing_sweep(config, load_task(config.task))
    assert parent and tracker.client.get_run(parent).info.status == "FAILED"
    assert not ray.is_initialized()


def _closed_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _corrupt_db(tmp):
    (tmp / "mlflow.db").write_bytes(b"this is not a database" * 100)
    return f"sqlite:///{tmp}/mlflow.db"


def _locked_db(tmp):
    SweepRecorder(f"sqlite:///{tmp}/mlflow.db").experiment_id("warm-up")  # a valid store (a reader never creates one) ...
    lock = sqlite3.connect(tmp / "mlflow.db", timeout=0)
    lock.execute("BEGIN EXCLUSIVE")  # ... held exclusively by another process
    _locked_db.handle = lock
    return f"sqlite:///{tmp}/mlflow.db"


def _driver(config_path, store, hub_cache, user_environment=False):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": hub_cache, "PYTHONUNBUFFERED": "1"}
    if user_environment:  # as a user's shell has it: Ray's multi-node switch not set by the test session
        env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.sweep", str(config_path), "--no-report", "--tracking-uri", store, "--workers", "1"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def _wait_for_first_record(store, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:  # sqlite3 read-only, not MLflow: an MLflow client opening the file while the driver creates it races its migrations
            with sqlite3.connect(f"file:{store.removeprefix('sqlite:///')}?mode=ro", uri=True, timeout=1) as db:
                if db.execute("SELECT count(*) FROM tags WHERE key = 'kind' AND value = 'checkpoint'").fetchone()[0]:
                    return
        except sqlite3.Error:  # the store, or its tables, not there yet
            pass
        time.sleep(0.3)
    raise AssertionError(f"no checkpoint recorded in time: {proc.poll()} {proc.stderr.read() if proc.poll() is not None else ''}")


REVISIONS = ["step0", "step1", "step2", "step4", "step1000"]


def _config_file(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(
        f'model = "{NEOX_REPO}"\ncheckpoints = {REVISIONS!r}\ntask = "tasks/decimal-robust.toml"\nsingle_heads = true\n'
        "null_subsets = 10\nmax_new_tokens = 8\nbootstrap_resamples = 200\n".replace("'", '"')
    )
    return path


@pytest.mark.slow
def test_driver_killed_then_rerun_keeps_finished_work_without_duplicates(hub_cache, tmp_path):
    store, config = f"sqlite:///{tmp_path}/mlflow.db", _config_file(tmp_path)
    proc = _driver(config, store, hub_cache)
    _wait_for_first_record(store, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    tracker = Tracker(store)
    parent = tracker.find_sweep()
    before = {r.data.tags["revision"] for r in tracker.checkpoint_runs(parent)}
    assert 1 <= len(before) < len(REVISIONS)
    assert tracker.client.get_run(parent).info.status == "RUNNING"  # the killed driver could not close it

    again = _driver(config, store, hub_cache)
    out, err = again.communicate(timeout=400)
    assert again.returncode == 0, err[-3000:]
    runs = tracker.checkpoint_runs(parent)
    assert sorted(r.data.tags["revision"] for r in runs) == sorted(REVISIONS)  # each exactly once
    assert tracker.client.get_run(parent).info.status == "FINISHED"
    assert tracker.find_sweep() == parent and "already done" in out


@pytest.mark.slow
def test_ctrl_c_marks_the_sweep_killed_and_says_how_to_resume(hub_cache, tmp_path):
    """In a user's environment (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER unset), Ctrl-C reaches the driver."""
    store, config = f"sqlite:///{tmp_path}/mlflow.db", _config_file(tmp_path)
    proc = _driver(config, store, hub_cache, user_environment=True)
    _wait_for_first_record(store, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-4000:]
    assert "run the same command again to resume" in err
    tracker = Tracker(store)
    assert tracker.client.get_run(tracker.find_sweep()).info.status == "KILLED"


def test_ctrl_c_in_the_middle_of_a_record_lands_after_it_and_the_sweep_closes_killed(tmp_path, monkeypatch):
    """Ctrl-C pressed while a checkpoint's record is being written (the CI failure: cut mid-transaction, SQLite kept
    the lock and closing the sweep KILLED failed 'database is locked', exit 1): the record is finished first, whole,
    then the interrupt is raised, and the sweep closes KILLED."""
    from dataclasses import replace

    from pythia_sweep.measure.checkpoint import base_record

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = SweepConfig(**FAST, checkpoints=("step0",))
    task = load_task(config.task)
    recorder = SweepRecorder(uri)
    parent = recorder.start_sweep(config, task)
    log_batch = recorder.client.log_batch

    def pressed_mid_write(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # delivered at once to this, the main, thread
        return log_batch(*args, **kwargs)

    monkeypatch.setattr(recorder.client, "log_batch", pressed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        recorder.record_checkpoint(parent, replace(base_record(config, task, "step0"), error="x"))
    (run,) = Tracker(uri).checkpoint_runs(parent)
    assert run.info.status == "FAILED" and run.data.tags["revision"] == "step0"  # written whole: terminated, its last write
    recorder.finish_sweep(parent, "KILLED")
    assert Tracker(uri).client.get_run(parent).info.status == "KILLED"


def test_disk_without_room_is_refused_naming_size_and_place(tmp_path):
    from pythia_sweep.hub.fetch import check_free_space
    from pythia_sweep.errors import DiskFull

    check_free_space(1000, tmp_path / "hub", "revision 'step1'")  # fits: no error
    with pytest.raises(DiskFull, match=r"revision 'step1' needs 1000000000.00 GB in .*/hub, but only .* GB is free"):
        check_free_space(10**18, tmp_path / "hub", "revision 'step1'")


def test_model_repo_that_does_not_exist_is_one_clear_line(hub_cache):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": hub_cache}
    done = subprocess.run([sys.executable, "-m", "jobs.sweep", "jobs/configs/demo.toml", "--model", "nobody/no-such-model"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "model 'nobody/no-such-model' has no revisions" in done.stderr


def test_layer_out_of_range_is_refused_before_ray_or_any_run(hub_cache, tmp_path):
    from pythia_sweep.errors import ConfigError

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(ConfigError, match=r"layer=9 is not valid: a layer index in 0\.\.7"):
        run_sweep(SweepConfig(**FAST, layer=9, checkpoints=("step0", "step1")), tracking_uri=uri, progress=False)
    assert not ray.is_initialized()
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store was opened: nothing for `make report` to trip over


def test_a_record_cut_off_part_way_is_measured_again_and_kept_once(hub_cache, tmp_path, monkeypatch):
    """The tracking store fails after a checkpoint's run was written (metrics, record.json, the parent's chart)
    but before it was closed, its last write (a server lost mid-write, a driver killed): that run is not a result.
    The rerun measures the checkpoint again, its one run replaces the cut-off one, and the parent's chart has the
    step once."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = SweepConfig(**FAST, checkpoints=("step0", "step1"), workers=0)
    set_terminated = MlflowClient.set_terminated

    def cut_off_at_step1(self, run_id, status=None, end_time=None):
        if self.get_run(run_id).data.tags.get("revision") == "step1":
            raise ConnectionError("the store went away")
        return set_terminated(self, run_id, status, end_time)

    monkeypatch.setattr(MlflowClient, "set_terminated", cut_off_at_step1)
    with pytest.raises(ConnectionError):
        run_sweep(config, tracking_uri=uri, progress=False)
    reader = Tracker(uri)
    parent = reader.find_sweep()
    cut = [r for r in reader.checkpoint_runs(parent) if r.data.tags["revision"] == "step1"]
    assert [r.info.status for r in cut] == ["RUNNING"]  # tagged ok, its record written, never closed
    assert [r.revision for r in reader.load_records(parent)] == ["step0"]  # a run without its record is not read

    monkeypatch.setattr(MlflowClient, "set_terminated", set_terminated)
    result = run_sweep(config, tracking_uri=uri, progress=False)
    assert result.recorded == ["step1"] and result.skipped == ["step0"]
    runs = reader.checkpoint_runs(parent)
    assert sorted(r.data.tags["revision"] for r in runs) == ["step0", "step1"]  # the cut-off run is gone
    assert {r.info.status for r in runs} == {"FINISHED"}
    headline = next(k for k in reader.client.get_run(parent).data.metrics if k.endswith("/success_rate"))
    assert sorted(m.step for m in reader.client.get_metric_history(parent, headline)) == [0, 1]  # step 1 charted once
