"""Where results are tracked: MLflow, written by the sweep's driver only (workers return records).

Layout in the store: one experiment per model and task ("<task> · <model>", both also as tags); a parent run per sweep (the config as params, the
task as an artifact, `sweep_id` as a tag) whose metrics are logged with `step=` the training step, so the UI
charts each contrast against training; a child run per checkpoint, named by its zero-padded step so runs sort
by training (revision, step, commit and weight hashes; the rates, differences, contrasts and their intervals
as metrics; the full record as an artifact). A checkpoint is recorded at most once with status ok: recording
is idempotent, which makes retried work and resumed sweeps safe.

Two roles, split by who calls them: `SweepRecorder` (the driver writes a sweep) and `SweepReader` (the
report and refine read one back). The metrics a checkpoint run gets are the `compared` part of numbers.numbers,
by their flat names (numbers.named): the same name is the report's column.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import threading
import time
import urllib.parse
from pathlib import Path

from filelock import FileLock
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from tqdm import tqdm

from pythia_sweep.hub.revisions import Checkpoint
from pythia_sweep.config import SweepConfig, config_from_dict
from pythia_sweep.errors import PythiaSweepError
from pythia_sweep.numbers import long_table, named, numbers
from pythia_sweep.records import CheckpointRecord, responses_text
from pythia_sweep.task.definition import Task
from pythia_sweep.task.schema import task_from_dict
from pythia_sweep.tracking.server import TrackingServerLost, is_server, retry_budget_s, retry_policy, unreachable

# One bar per downloaded file is noise when a report reads hundreds of small records; ours counts records.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # "View run" lines per child run: our links say it once
DEFAULT_STORE = "mlruns/mlflow.db"


class TrackingStoreError(PythiaSweepError):
    """The tracking store cannot be used; raised before any checkpoint runs."""


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else the project's SQLite store under mlruns/."""
    return os.environ.get("MLFLOW_TRACKING_URI") or project_store_uri()


def project_store_uri() -> str:
    """The project's own SQLite store under mlruns/ (the one `make ui` serves)."""
    return f"sqlite:///{Path(DEFAULT_STORE).resolve()}"


def study_tag(study: str) -> str:
    """The parent-run tag that puts a sweep in a study (the name is data: the study's runs are found by this tag)."""
    return f"study.{study}"


def experiment_name(model: str, task_name: str) -> str:
    """The experiment's name in the UI, task first: the UI's sidebar cuts long names at the end, and sweeps of one
    model family differ by task. The model and task are also the experiment's tags (identity as data)."""
    return f"{task_name} · {model}"


def legacy_experiment_name(model: str, task_name: str) -> str:
    """The name stores made before the task came first; such an experiment is renamed when next used."""
    return f"{model}/{task_name}"


def is_final(run) -> bool:
    """Whether a checkpoint run holds a final result (measured ok, or a duplicate): its status tag says so and its
    writing finished (a run is terminated FINISHED as the last step of recording it; one left RUNNING was cut off
    part-way, by a lost tracking server or a killed driver, and is measured again)."""
    return run.data.tags.get("checkpoint_status") in ("ok", "duplicate") and run.info.status == "FINISHED"


def is_written(run) -> bool:
    """Whether a checkpoint run's writing finished, ok or failed (a run left RUNNING may lack its record.json)."""
    return run.info.status in ("FINISHED", "FAILED")


def _creation_lock(uri: str) -> contextlib.AbstractContextManager:
    """For a SQLite store, an exclusive lock on a file beside it while the store is opened (and, the first
    time, created and migrated); other stores need none."""
    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    return FileLock(Path(uri.removeprefix("sqlite:///")).with_suffix(".lock"))


class _Store:
    """A connection to a tracking store, checked when it is opened: a broken store is refused before any
    checkpoint runs. `create`: a writer makes a SQLite store that is not there yet; a reader (create=False) is
    refused instead, and takes no lock (a read-only store can be read)."""

    def __init__(self, uri: str | None = None, create: bool = True):
        self.uri = uri or default_tracking_uri()
        if not self.uri.startswith(("sqlite:///", "http://", "https://", "postgresql", "mysql", "databricks", "file:")):
            raise TrackingStoreError(
                f"MLFLOW_TRACKING_URI={self.uri!r} is not a tracking URI: use sqlite:///path/to/mlflow.db or "
                "http://host:port of a tracking server"
            )
        database = Path(self.uri.removeprefix("sqlite:///")) if self.uri.startswith("sqlite:///") else None
        if database is not None and not create and not database.is_file():
            raise TrackingStoreError(f"no tracking store at {database}: nothing to read (a sweep creates it; point --tracking-uri "
                                     "or MLFLOW_TRACKING_URI at the store that holds your sweeps)")  # fmt: skip
        if database is not None and create:
            database.parent.mkdir(parents=True, exist_ok=True)
        if is_server(self.uri) and (why := unreachable(self.uri)):  # at once, not after minutes of retries mid-sweep
            raise TrackingStoreError(f"tracking server {self.uri} cannot be reached: {why}")
        self._experiments: dict[str, str] = {}  # parent run id -> experiment id
        for name in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables...": not news to a user
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            # two sweeps creating one SQLite store at once would race its migrations; a reader creates nothing
            with _creation_lock(self.uri) if create else contextlib.nullcontext():
                self.client = MlflowClient(tracking_uri=self.uri)
                self.client.search_experiments(max_results=1)
        except Exception as error:  # noqa: BLE001 - corrupt, locked, unwritable: one clear message
            raise TrackingStoreError(f"tracking store {self.uri} cannot be used: {type(error).__name__}: {error}") from error

    def artifact_root(self) -> str | None:
        if self.uri.startswith("sqlite:///"):  # artifacts beside the database, under mlruns/
            return Path(self.uri.removeprefix("sqlite:///")).parent.joinpath("artifacts").resolve().as_uri()
        return None  # a tracking server decides

    def experiment_for(self, model: str, task_name: str) -> str:
        """The id of the experiment holding this model's sweeps of this task (made, or renamed from its legacy name)."""
        name = experiment_name(model, task_name)
        try:
            legacy = self.client.get_experiment_by_name(legacy_experiment_name(model, task_name))
            if legacy is not None and self.client.get_experiment_by_name(name) is None:
                self.client.rename_experiment(legacy.experiment_id, name)
        except Exception as error:  # noqa: BLE001 - any store failure is reported the same clear way
            raise TrackingStoreError(f"tracking store {self.uri} cannot be used: {type(error).__name__}: {error}") from error
        return self.experiment_id(name, {"model": model, "task": task_name})

    def experiment_id(self, name: str, tags: dict[str, str] | None = None) -> str:
        try:
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                if found.lifecycle_stage == "deleted":
                    self.client.restore_experiment(found.experiment_id)
                return found.experiment_id
            try:
                return self.client.create_experiment(
                    name, artifact_location=self.artifact_root(), tags={"mlflow.experimentKind": "custom_model_development", **(tags or {})}
                )
            except Exception:  # noqa: BLE001 - another sweep created it a moment ago: use theirs
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
                return found.experiment_id
        except Exception as error:  # noqa: BLE001 - any store failure is reported the same clear way
            raise TrackingStoreError(f"tracking store {self.uri} cannot be used: {type(error).__name__}: {error}") from error

    def _experiment_of(self, parent: str) -> str:
        if parent not in self._experiments:
            self._experiments[parent] = self.client.get_run(parent).info.experiment_id
        return self._experiments[parent]

    def checkpoint_runs(self, parent: str) -> list:
        """Child runs of a sweep (all statuses), newest first."""
        return self.client.search_runs(
            [self._experiment_of(parent)], filter_string=f"tags.mlflow.parentRunId = '{parent}'",
            order_by=["attributes.start_time DESC"], max_results=5000,
        )  # fmt: skip

    def discovery(self, parent: str) -> dict | None:
        """The discovery pass a sweep ran (checkpoint_run.discover_groups), or None before it has."""
        try:
            path = self.client.download_artifacts(parent, "discovery.json")
        except Exception:  # noqa: BLE001 - not run yet (or a task without a group to discover)
            return None
        return json.loads(Path(path).read_text())

    def unpublished(self, parent: str) -> list[dict]:
        """The revisions the sweep asked for that the model does not publish ([{revision, nearest}]; SweepRecorder.save_unpublished)."""
        try:
            path = self.client.download_artifacts(parent, "unpublished.json")
        except Exception:  # noqa: BLE001 - none asked for
            return []
        return json.loads(Path(path).read_text())

    def existing_sweep(self, config: SweepConfig, task: Task) -> str | None:
        """The parent run of an earlier sweep with the same settings and task (same `sweep_id`), if any."""
        exp = self.experiment_for(config.model, task.name)
        runs = self.client.search_runs(
            [exp], filter_string=f"tags.sweep_id = '{config.sweep_id(task.digest)}' and tags.kind = 'sweep'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )  # fmt: skip
        return runs[0].info.run_id if runs else None


def whole(write):
    """A write to the store that Ctrl-C does not cut in half: the interrupt is held until the write is done, then
    raised. Cut mid-transaction, SQLite keeps the half-done write's lock in the interrupted connection, and closing
    the sweep KILLED then fails with 'database is locked' (exit 1 and a traceback instead of 130 and how to resume).
    Only the main thread receives signals; elsewhere the write runs as it is."""

    @functools.wraps(write)
    def held(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return write(*args, **kwargs)
        pressed = []
        before = signal.signal(signal.SIGINT, lambda *_: pressed.append(True))
        try:
            return write(*args, **kwargs)
        finally:
            signal.signal(signal.SIGINT, before)
            if pressed and callable(before):
                before(signal.SIGINT, None)  # Python's own handler raises KeyboardInterrupt
            elif pressed and before == signal.SIG_DFL:
                raise KeyboardInterrupt

    return held


class SweepRecorder(_Store):
    """What the sweep's driver writes: the parent run, one child run per checkpoint, the report. Each write is
    `whole`: Ctrl-C lands between writes."""

    @whole
    def start_sweep(self, config: SweepConfig, task: Task, published: list[Checkpoint] | None = None, study: str | None = None) -> str:
        """The parent run of this config's sweep: the existing one (resumed) or a new one. The revisions the
        Hub published are saved with it, so the report knows where training ends without asking the Hub. `study`:
        the study it is part of, a tag (`study.<name>` = "1": a sweep may be part of several studies)."""
        exp = self.experiment_for(config.model, task.name)
        run_id = self.existing_sweep(config, task)
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "resumed_at", time.strftime("%Y-%m-%d %H:%M:%S"))
            if study:
                self.client.set_tag(run_id, study_tag(study), "1")
            self._mark_active(run_id, published)
            return run_id
        tags = {"kind": "sweep", "sweep_id": config.sweep_id(task.digest), "model": config.model, "task": task.name,
                **({study_tag(study): "1"} if study else {})}  # fmt: skip
        run = self.client.create_run(exp, run_name=config.label(task.name), tags=tags)
        params = [Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in config.to_dict().items()]
        self.client.log_batch(run.info.run_id, params=params + [Param("task_digest", task.digest)])
        self.client.log_dict(run.info.run_id, config.to_dict(), "config.json")
        self.client.log_dict(run.info.run_id, {"source": task.source, "data": task.data}, "task.json")
        self._mark_active(run.info.run_id, published)
        return run.info.run_id

    @whole
    def save_unpublished(self, parent: str, nearest: dict[str, str]) -> None:
        """The revisions asked for that the model does not publish (the config's `unpublished = "list"`), each with its
        nearest published ones in words: the report lists them as asked for, not published. Joined with those saved
        by earlier runs of the sweep (a resumed sweep may ask for others)."""
        saved = {u["revision"]: u["nearest"] for u in self.unpublished(parent)}
        self.client.log_dict(parent, [{"revision": r, "nearest": n} for r, n in (saved | nearest).items()], "unpublished.json")

    @whole
    def forget(self, parent: str, revisions: list[str]) -> dict[str, list[str]]:
        """Remove revisions' checkpoint runs (their records) from a sweep: a revision recorded by mistake leaves no
        trace in its report. Returns revision -> the statuses of the runs removed. Refuses, removing nothing, a revision
        the sweep has no record of, naming the ones it has."""
        runs = self.checkpoint_runs(parent)
        by_revision: dict[str, list] = {}
        for run in runs:
            by_revision.setdefault(run.data.tags.get("revision", ""), []).append(run)
        unknown = [r for r in revisions if r not in by_revision]
        if unknown:
            failed = sorted(r for r, rs in by_revision.items() if not any(is_final(x) for x in rs))
            final = [r for r in by_revision if r not in failed]
            raise TrackingStoreError(f"revision {unknown[0]!r} has no record in sweep {parent} (recorded: "
                                     f"{len(final)} measured or duplicate, failed: {', '.join(failed) or 'none'})")  # fmt: skip
        removed = {}
        for revision in revisions:
            removed[revision] = [run.data.tags.get("checkpoint_status", "?") for run in by_revision[revision]]
            for run in by_revision[revision]:
                self.client.delete_run(run.info.run_id)
        return removed

    @whole
    def save_discovery(self, parent: str, found: dict) -> None:
        """The heads a discovery pass chose, with the parent run: a resumed sweep measures the same ones. The tags are
        for the MLflow UI's columns; readers read discovery.json."""
        self.client.log_dict(parent, found, "discovery.json")
        for name, group in found["groups"].items():
            self.client.set_tag(parent, f"discovered.{name}", " ".join(f"{layer}.{head}" for layer, head in group["heads"]))
        self.client.set_tag(parent, "discovered_at", found["revision"])

    def _mark_active(self, run_id: str, published: list[Checkpoint] | None = None) -> None:
        """`last_active` (sortable text) makes "the latest sweep" the one last run, resumed or reported (refine does both)."""
        self.client.set_tag(run_id, "last_active", f"{time.time():017.6f}")
        if published:
            self.client.log_dict(run_id, [{"revision": c.revision, "step": c.step} for c in published], "published.json")

    lost = False  # the tracking server stopped answering mid-sweep: nothing more is sent to it

    @whole
    def finish_sweep(self, parent: str, status: str = "FINISHED") -> None:
        if not self.lost:  # a server gone would be retried for minutes more; the rerun resumes the run
            self.client.set_terminated(parent, status=status)

    @whole
    def recorded_ok(self, parent: str) -> set[str]:
        """Revisions with a final result (`is_final`): measured, or recorded as a duplicate of another revision.
        Other runs of those revisions (an earlier failure, a write cut off part-way) are deleted now, so each
        checkpoint has exactly one result in the sweep."""
        runs = self.checkpoint_runs(parent)
        final = {r.data.tags["revision"] for r in runs if is_final(r)}
        for run in runs:
            if run.data.tags.get("revision") in final and not is_final(run):
                self.client.delete_run(run.info.run_id)
        return final

    @whole
    def record_checkpoint(self, parent: str, record: CheckpointRecord) -> str | None:
        """Log one checkpoint's record as a child run; returns its id, or None if already recorded ok. A tracking
        server that stops answering for longer than MLflow's client retries raises TrackingServerLost."""
        try:
            return self._record_checkpoint(parent, record)
        except Exception as error:  # noqa: BLE001 - whichever MLflow or requests error: is the server still there?
            if not is_server(self.uri) or not (why := unreachable(self.uri)):
                raise
            self.lost = True
            raise TrackingServerLost(
                f"tracking server {self.uri} stopped answering while {record.revision}'s record was written "
                f"(MLflow's client retried for {retry_budget_s():.0f} s: {retry_policy()}): {why}", self.uri, record.revision,
            ) from error  # fmt: skip

    def _record_checkpoint(self, parent: str, record: CheckpointRecord) -> str | None:
        """The run is terminated as the last write: a run cut off part-way stays RUNNING, is not `is_final`, and is
        replaced when the checkpoint is recorded again. A previous result for the same revision (failed, or cut
        off) is deleted when the new one lands, so each checkpoint has exactly one result in the sweep."""
        revision = record.revision
        siblings = self.checkpoint_runs(parent)  # one listing serves the idempotency and duplicate checks
        previous = [r for r in siblings if r.data.tags.get("revision") == revision]
        if any(is_final(r) for r in previous):
            return None
        tags = {
            "mlflow.parentRunId": parent,
            "kind": "checkpoint",
            "revision": revision,
            "step": str(record.step),
            "checkpoint_status": record.status,
            "commit": record.commit or "",
            "weights_digest": record.weights_digest or "",
            "sweep_id": record.sweep_id,
        }
        if record.error:
            tags["error"] = record.error[:5000]
        if record.duplicate_of:  # which revisions are one checkpoint is duplicates.identical_weights' rule
            tags["duplicate_of"] = ",".join(record.duplicate_of)
        compared = [n for n in numbers(record) if n.compared]
        metrics = named(compared)
        if record.step is not None:
            metrics["training_step"] = float(record.step)  # numeric: the runs table sorts by it
        run_name = f"step{record.step:07d}" if record.step is not None else revision  # sorts as text too
        run = self.client.create_run(self._experiment_of(parent), run_name=run_name, tags=tags)
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        params = [Param("revision", revision), Param("step", str(record.step)), Param("commit", record.commit or "")]
        params += [Param(f"sha256/{name}", digest) for name, digest in record.weight_sha256.items()]
        items = list(metrics.items())
        for start in range(0, max(len(items), 1), 900):  # log_batch takes at most 1000 metrics
            self.client.log_batch(
                run_id, params=params if start == 0 else [],
                metrics=[Metric(k, v, now, record.step or 0) for k, v in items[start : start + 900]],
            )  # fmt: skip
        self.client.log_dict(run_id, record.to_json(), "record.json")
        if record.responses:
            self.client.log_text(run_id, responses_text(record), "responses.txt")
        if record.step is not None:
            trend = [Metric(k, v, now, record.step) for k, v in named(n for n in compared if n.kind != "time").items()]
            if previous and trend and self._charted(parent, trend[-1].key, record.step):
                trend = []  # a write cut off after the parent's chart had this step: once is enough
            for start in range(0, len(trend), 900):
                self.client.log_batch(parent, metrics=trend[start : start + 900])
        self.client.set_terminated(run_id, status="FAILED" if record.status == "failed" else "FINISHED")
        for old in previous:
            self.client.delete_run(old.info.run_id)
        return run_id

    def _charted(self, parent: str, key: str, step: int) -> bool:
        return any(m.step == step for m in self.client.get_metric_history(parent, key))

    @whole
    def log_report(self, parent: str, folder: str | Path) -> None:
        self.client.log_artifacts(parent, str(folder), "report")

    @whole
    def log_summary(self, parent: str, metrics: dict[str, float | None], verdict: str) -> None:
        """Sweep-level results on the parent run, so the UI's compare view lines sweeps up side by side;
        the verdict as the run's description (MLflow shows a note in full, where a tag is cut off)."""
        now = int(time.time() * 1000)
        values = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None and v == v]
        self.client.log_batch(parent, metrics=values)
        self.client.set_tag(parent, "mlflow.note.content", verdict)
        self._mark_active(parent, None)  # a rebuilt report (refine's) makes its sweep the latest


    @whole
    def log_series(self, parent: str, series: dict[str, dict[int | None, float | None]]) -> None:
        """Numbers known once a sweep is read whole (a circuit's overlap with the final one), charted on the parent run
        against training step: key -> step -> value; a point already charted with the same value is not logged again."""
        now, points = int(time.time() * 1000), []
        for key, by_step in series.items():
            charted = {m.step: m.value for m in self.client.get_metric_history(parent, key)}
            points += [Metric(key, float(v), now, step) for step, v in by_step.items()
                       if v is not None and step is not None and charted.get(step) != float(v)]  # fmt: skip
        if points:
            self.client.log_batch(parent, metrics=points)


class SweepReader(_Store):
    """What the report and refine read back: a sweep's config, task and checkpoint records. Opening one creates no
    store and writes nothing: a store that is not there is refused, a read-only one is read."""

    def __init__(self, uri: str | None = None):
        super().__init__(uri, create=False)

    def find_sweep(self, sweep: str | None = None) -> str:
        """A sweep's parent run id: by run id, by `sweep_id` tag, by run name, or (None) the most recent sweep."""
        if sweep:
            try:
                return self.client.get_run(sweep).info.run_id
            except Exception:  # noqa: BLE001 - not a run id: try it as a sweep_id or a name
                pass
        exps = [e.experiment_id for e in self.client.search_experiments()]
        if not sweep:  # the latest sweep that has checkpoint records (one stopped before any is skipped)
            runs = self.client.search_runs(exps, "tags.kind = 'sweep'", order_by=["attributes.start_time DESC"], max_results=50)
            for run in sorted(runs, key=lambda r: r.data.tags.get("last_active", ""), reverse=True):  # last run or resumed
                if self.checkpoint_runs(run.info.run_id):
                    return run.info.run_id
            raise TrackingStoreError(f"no sweep with checkpoint records in tracking store {self.uri}")
        filters = [f"tags.kind = 'sweep' and tags.sweep_id = '{sweep}'", f"tags.kind = 'sweep' and attributes.run_name = '{sweep}'"]
        for filt in filters:
            runs = self.client.search_runs(exps, filter_string=filt, order_by=["attributes.start_time DESC"], max_results=1)
            if runs:
                return runs[0].info.run_id
        raise TrackingStoreError(f"no sweep with run id, sweep_id or name {sweep!r} in tracking store {self.uri}; {self.latest_sweeps(exps)}")

    def writable(self) -> bool:
        """Whether this process can write to the store: a SQLite store whose database, folder and artifacts are writable
        (a read-only mlruns/ is read, not written back to); a tracking server is assumed to be."""
        if not self.uri.startswith("sqlite:///"):
            return True
        database = Path(self.uri.removeprefix("sqlite:///"))
        artifacts = database.parent / "artifacts"
        paths = [database, database.parent] + ([artifacts] if artifacts.exists() else [])
        return all(os.access(p, os.W_OK) for p in paths)

    def latest_sweeps(self, experiments: list[str], n: int = 5) -> str:
        """The sweeps there are, latest first (last run or reported), a few, in words: what an unknown name is told."""
        runs = self.client.search_runs(experiments, "tags.kind = 'sweep'", max_results=5000) if experiments else []
        if not runs:
            return "it holds no sweep yet"
        runs = sorted(runs, key=lambda r: r.data.tags.get("last_active", ""), reverse=True)
        listed = ", ".join(f"{r.info.run_name} (sweep_id {r.data.tags.get('sweep_id', '?')}, run {r.info.run_id})" for r in runs[:n])
        return f"its {'latest ' if len(runs) > n else ''}sweeps, latest first: {listed}" + (f" and {len(runs) - n} more" if len(runs) > n else "")

    def study_sweeps(self, study: str) -> list[str]:
        """The parent runs of a study's sweeps (tagged study.<name>, in any experiment), ordered by model; refused when none is."""
        try:
            experiments = [e.experiment_id for e in self.client.search_experiments()]
            runs = self.client.search_runs(experiments, filter_string=f"tags.`{study_tag(study)}` = '1' and tags.kind = 'sweep'",
                                           max_results=5000) if experiments else []  # fmt: skip
        except Exception as error:  # noqa: BLE001 - any store failure is reported the same clear way
            raise TrackingStoreError(f"tracking store {self.uri} cannot be used: {type(error).__name__}: {error}") from error
        if not runs:
            raise TrackingStoreError(f"no sweep of study {study!r} in tracking store {self.uri}: run its config with python -m jobs.sweep first")
        return [r.info.run_id for r in sorted(runs, key=lambda r: (r.data.tags.get("model", ""), r.info.start_time))]

    def sweep_config(self, parent: str) -> SweepConfig:
        path = self.client.download_artifacts(parent, "config.json")
        return config_from_dict(json.loads(Path(path).read_text()))

    def sweep_task(self, parent: str) -> Task:
        """The task exactly as the sweep ran it (its content saved with the run, not today's file), with the heads its
        discovery pass found."""
        saved = json.loads(Path(self.client.download_artifacts(parent, "task.json")).read_text())
        task = task_from_dict(saved["data"], saved["source"])
        found = self.discovery(parent) if task.to_discover else None
        return task.found_by(found) if found else task

    def published(self, parent: str) -> list[Checkpoint] | None:
        """The revisions the Hub published when the sweep last ran (None for a sweep saved before they were)."""
        try:
            path = self.client.download_artifacts(parent, "published.json")
        except Exception:  # noqa: BLE001 - an older sweep without the list
            return None
        return [Checkpoint(c["revision"], c["step"]) for c in json.loads(Path(path).read_text())]

    def load_records(self, parent: str) -> list[CheckpointRecord]:
        """Every checkpoint record of a sweep (one per revision), ordered by training step."""
        records: dict[str, CheckpointRecord] = {}
        runs = sorted(filter(is_written, self.checkpoint_runs(parent)), key=is_final, reverse=True)  # final first, then newest
        for run in tqdm(runs, desc="reading records", unit="run", leave=False, disable=None):  # none off a terminal
            revision = run.data.tags.get("revision")
            if revision in records:
                continue
            path = self.client.download_artifacts(run.info.run_id, "record.json")
            try:
                records[revision] = CheckpointRecord.from_json(json.loads(Path(path).read_text()), f"record.json of run {run.info.run_id}")
            except (TypeError, ValueError) as error:
                raise TrackingStoreError(str(error)) from error
        return sorted(records.values(), key=lambda r: (r.step is None, r.step or 0))

    def _ui_base(self, ui: str | None) -> str | None:
        """Where the MLflow UI is: `ui`, else the tracking server when the store is one, else unknown (None)."""
        return ui or (self.uri if self.uri.startswith(("http://", "https://")) else None)

    def run_url(self, parent: str, ui: str | None = None) -> str | None:
        """The sweep's parent run in the MLflow UI at `ui` (default: the tracking server, when the store is one),
        its metrics against training step."""
        base = self._ui_base(ui)
        if base is None:
            return None
        return f"{base.rstrip('/')}/#/experiments/{self._experiment_of(parent)}/runs/{parent}/model-metrics?{ui_query({})}"

    def checkpoints_url(self, parent: str, ui: str | None = None) -> str | None:
        """The sweep's checkpoint runs in the MLflow UI at `ui` (default: the tracking server), sorted by training
        step (the UI's own default is start time, which is completion order)."""
        base = self._ui_base(ui)
        if base is None:
            return None
        query = ui_query({"searchFilter": f"tags.mlflow.parentRunId = '{parent}'", "orderByKey": "metrics.`training_step`", "orderByAsc": "true"})
        return f"{base.rstrip('/')}/#/experiments/{self._experiment_of(parent)}/runs?{query}"


    def metric_url(self, parent: str, keys: list[str], ui: str | None = None) -> str | None:
        """One chart of the parent run's `keys` against training step (MLflow's metric page): the headline first,
        where the run page's charts tab opens on every number of the sweep, grouped by name."""
        base = self._ui_base(ui)
        if base is None:
            return None
        # the page reads `runs` as the query's first key (MLflow 3.17 parses "?runs"): it goes first, the view switch last
        query = urllib.parse.urlencode({
            "runs": json.dumps([parent]), "metric": json.dumps(keys[0]), "experiments": json.dumps([self._experiment_of(parent)]),
            "plot_metric_keys": json.dumps(keys), "plot_layout": "{}", "x_axis": "step", "y_axis_scale": "linear", "line_smoothness": "1",
            "show_point": "true", "deselected_curves": "[]", "last_linear_y_axis_range": "[]", "workflowType": "machine_learning",
        }, quote_via=urllib.parse.quote)  # fmt: skip
        return f"{base.rstrip('/')}/#/metric?{query}"


def ui_query(params: dict[str, str]) -> str:
    """A query string for the MLflow UI: the machine-learning view (MLflow 3.17's UI otherwise opens on its GenAI
    view, whatever the experiment's kind tag, and remembers the last choice per browser), then `params`."""
    return urllib.parse.urlencode({"workflowType": "machine_learning", **params}, quote_via=urllib.parse.quote)


def load_long_table(sweep: str | None = None, *, tracking_uri: str | None = None):
    """A sweep's long table (numbers.long_table; parent run id, sweep_id or name; default the latest), read from
    the tracking store: a polars frame."""
    reader = SweepReader(tracking_uri)
    return long_table(reader.load_records(reader.find_sweep(sweep)))
