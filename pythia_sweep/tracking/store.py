"""Where results are tracked: the MLflow store, opened and checked once, shared by the sweep's writer and its readers.

Layout in the store: one experiment per model and task (links.experiment_name; the model and task also as tags); a
parent run per sweep (the config as params, the task as an artifact, `sweep_id` as a tag) whose metrics are logged
with `step=` the training step, so the UI charts each contrast against training; a child run per checkpoint, named by
its zero-padded step so runs sort by training (revision, step, commit and weight hashes; the rates, differences,
contrasts and their intervals as metrics; the full record as an artifact). A checkpoint is recorded at most once
with a final status: recording is idempotent, which makes retried work and resumed sweeps safe.

The layout has a version (`STORE_VERSION`, the tag `VERSION_TAG` on each sweep's parent run and experiment). A sweep
without it was written before the tag existed and is read through tracking/legacy.py, the one adapter for old
stores; a version newer than this code knows is refused by name.

Split by who calls it: this module opens and checks a store (`Store`: what the writer and the readers share, the
creation lock, the store's kind); writer.py is the sweep's driver's (`SweepRecorder`), reader.py the report's and
refine's (`SweepReader`), links.py the names and UI addresses, status.py which results are final. What a checkpoint run's metrics are is numbers.py's walk
(its `compared` part by their flat names).
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
from pathlib import Path

from filelock import FileLock
from mlflow.tracking import MlflowClient

from pythia_sweep.config import SweepConfig
from pythia_sweep.errors import PythiaSweepError
from pythia_sweep.task.definition import Task
from pythia_sweep.tracking import legacy
from pythia_sweep.tracking.links import experiment_name
from pythia_sweep.tracking.server import unreachable

# One bar per downloaded file is noise when a report reads hundreds of small records; ours counts records.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # "View run" lines per child run: our links say it once
DEFAULT_STORE = "mlruns/mlflow.db"
STORE_VERSION = 1  # the layout this code writes and reads; a sweep without VERSION_TAG is read by tracking/legacy.py
VERSION_TAG = "pythia_sweep.store_version"  # on each sweep's parent run and each experiment the writer makes


class TrackingStoreError(PythiaSweepError):
    """The tracking store cannot be used; raised before any checkpoint runs."""


class StoreVersionError(TrackingStoreError):
    """A sweep written by a newer pythia_sweep (its store version above STORE_VERSION): refused, never guessed at."""


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else the project's SQLite store under mlruns/."""
    return os.environ.get("MLFLOW_TRACKING_URI") or project_store_uri()


def project_store_uri() -> str:
    """The project's own SQLite store under mlruns/ (the one `make ui` serves)."""
    return f"sqlite:///{Path(DEFAULT_STORE).resolve()}"


class StoreKind(enum.Enum):
    """What a tracking URI points at, by its scheme: the one rule every reader of a URI calls."""

    SQLITE = ("sqlite:///",)  # a database file: created by a writer, locked while it is, artifacts beside it
    SERVER = ("http://", "https://")  # a tracking server: checked for an answer, its outages ridden out, its UI linked
    DATABASE = ("postgresql", "mysql", "databricks", "file:")  # other stores MLflow opens itself


def store_kind(uri: str) -> StoreKind | None:
    """The kind of store `uri` points at; None: not a tracking URI."""
    return next((kind for kind in StoreKind if uri.startswith(kind.value)), None)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a SQLite store; None for other kinds."""
    return Path(uri.removeprefix("sqlite:///")) if store_kind(uri) is StoreKind.SQLITE else None


def _creation_lock(uri: str) -> contextlib.AbstractContextManager:
    """For a SQLite store, an exclusive lock on a file beside it while the store is opened (and, the first
    time, created and migrated); other stores need none."""
    database = sqlite_path(uri)
    return contextlib.nullcontext() if database is None else FileLock(database.with_suffix(".lock"))


def unusable_store(uri: str, error: Exception) -> TrackingStoreError:
    return TrackingStoreError(f"tracking store {uri} cannot be used: {type(error).__name__}: {error}")


class Store:
    """A connection to a tracking store, checked when it is opened: a broken store is refused before any
    checkpoint runs. `create`: a writer makes a SQLite store that is not there yet; a reader (create=False) is
    refused instead, and takes no lock (a read-only store can be read)."""

    def __init__(self, uri: str | None = None, create: bool = True):
        self.uri = uri or default_tracking_uri()
        self.kind = store_kind(self.uri)
        if self.kind is None:
            raise TrackingStoreError(
                f"MLFLOW_TRACKING_URI={self.uri!r} is not a tracking URI: use sqlite:///path/to/mlflow.db or "
                "http://host:port of a tracking server"
            )
        database = sqlite_path(self.uri)
        if database is not None and not create and not database.is_file():
            raise TrackingStoreError(f"no tracking store at {database}: nothing to read (a sweep creates it; point --tracking-uri "
                                     "or MLFLOW_TRACKING_URI at the store that holds your sweeps)")  # fmt: skip
        if database is not None and create:
            database.parent.mkdir(parents=True, exist_ok=True)
        if self.kind is StoreKind.SERVER and (why := unreachable(self.uri)):  # at once, not after minutes of retries mid-sweep
            raise TrackingStoreError(f"tracking server {self.uri} cannot be reached: {why}")
        self._experiments: dict[str, str] = {}  # parent run id -> experiment id
        self._versions: dict[str, int | None] = {}  # parent run id -> its store version (None: written before the tag)
        for name in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables...": not news to a user
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            # two sweeps creating one SQLite store at once would race its migrations; a reader creates nothing
            with _creation_lock(self.uri) if create else contextlib.nullcontext():
                self.client = MlflowClient(tracking_uri=self.uri)
                self.client.search_experiments(max_results=1)
        except Exception as error:  # noqa: BLE001 - corrupt, locked, unwritable: one clear message
            raise unusable_store(self.uri, error) from error

    def artifact_root(self) -> str | None:
        database = sqlite_path(self.uri)
        if database is not None:  # artifacts beside the database, under mlruns/
            return database.parent.joinpath("artifacts").resolve().as_uri()
        return None  # a tracking server decides

    def experiment_for(self, model: str, task_name: str) -> str:
        """The id of the experiment holding this model's sweeps of this task (made, or adopted from an older store's
        name by tracking/legacy.py)."""
        name, tags = experiment_name(model, task_name), {"model": model, "task": task_name}
        try:
            legacy.adopt_experiment(self.client, model, task_name, name, tags | {VERSION_TAG: str(STORE_VERSION)})
        except Exception as error:  # noqa: BLE001 - any store failure is reported the same clear way
            raise unusable_store(self.uri, error) from error
        return self.experiment_id(name, tags)

    def experiment_id(self, name: str, tags: dict[str, str] | None = None) -> str:
        try:
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                if found.lifecycle_stage == "deleted":
                    self.client.restore_experiment(found.experiment_id)
                return found.experiment_id
            tags = {"mlflow.experimentKind": "custom_model_development", VERSION_TAG: str(STORE_VERSION), **(tags or {})}
            try:
                return self.client.create_experiment(name, artifact_location=self.artifact_root(), tags=tags)
            except Exception:  # noqa: BLE001 - another sweep created it a moment ago: use theirs
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
                return found.experiment_id
        except Exception as error:  # noqa: BLE001 - any store failure is reported the same clear way
            raise unusable_store(self.uri, error) from error

    def _experiment_of(self, parent: str) -> str:
        if parent not in self._experiments:
            self._experiments[parent] = self.client.get_run(parent).info.experiment_id
        return self._experiments[parent]

    def store_version(self, parent: str) -> int | None:
        """The store version a sweep was written with (None: before the tag, read through tracking/legacy.py); a
        version this code does not know is refused, naming the sweep."""
        if parent not in self._versions:
            run = self.client.get_run(parent)
            self._experiments[parent] = run.info.experiment_id  # the same run: not fetched again for its records
            tag = run.data.tags.get(VERSION_TAG)
            if tag is not None and (not tag.isdigit() or int(tag) > STORE_VERSION):
                raise StoreVersionError(
                    f"sweep {run.info.run_name!r} (MLflow parent run {parent}) has {VERSION_TAG}={tag!r}: this pythia_sweep "
                    f"reads store versions up to {STORE_VERSION}; read it with the pythia_sweep that wrote it, or a newer one"
                )  # fmt: skip
            self._versions[parent] = None if tag is None else int(tag)
        return self._versions[parent]

    def checkpoint_runs(self, parent: str) -> list:
        """Child runs of a sweep (all statuses), newest first."""
        return self.client.search_runs(
            [self._experiment_of(parent)], filter_string=f"tags.mlflow.parentRunId = '{parent}'",
            order_by=["attributes.start_time DESC"], max_results=5000,
        )  # fmt: skip

    def discovery(self, parent: str) -> dict | None:
        """The discovery pass a sweep ran (measure.checkpoint.discover_groups), or None before it has."""
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

    def existing_sweep(self, config: SweepConfig, task: Task, exp: str | None = None) -> str | None:
        """The parent run of an earlier sweep with the same settings and task (same `sweep_id`), if any; `exp`: its
        experiment's id where the caller has it already."""
        exp = exp or self.experiment_for(config.model, task.name)
        runs = self.client.search_runs(
            [exp], filter_string=f"tags.sweep_id = '{config.sweep_id(task.digest)}' and tags.kind = 'sweep'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )  # fmt: skip
        return runs[0].info.run_id if runs else None
