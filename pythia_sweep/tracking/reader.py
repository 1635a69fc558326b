"""What the report and refine read back: a sweep's config, task and checkpoint records, and where to see it in the
MLflow UI. Opening a reader creates no store and writes nothing: a store that is not there is refused, a read-only
one is read.

Every read of a sweep checks its store version first (store.Store.store_version): a sweep newer than this code is
refused by name; one written before the version tag is read through tracking/legacy.py, the one adapter for old
stores, so every reader gets records in today's form.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm import tqdm

from pythia_sweep.config import SweepConfig, config_from_dict
from pythia_sweep.hub.revisions import Checkpoint
from pythia_sweep.numbers import long_table
from pythia_sweep.records import CheckpointRecord
from pythia_sweep.task.definition import Task
from pythia_sweep.task.schema import task_from_dict
from pythia_sweep.tracking import legacy, links
from pythia_sweep.tracking.links import study_tag
from pythia_sweep.tracking.status import is_final, is_written
from pythia_sweep.tracking.store import Store, StoreKind, TrackingStoreError, sqlite_path, unusable_store


class SweepReader(Store):
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
        database = sqlite_path(self.uri)
        if database is None:
            return True
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
            raise unusable_store(self.uri, error) from error
        if not runs:
            raise TrackingStoreError(f"no sweep of study {study!r} in tracking store {self.uri}: run its config with python -m jobs.sweep first")
        return [r.info.run_id for r in sorted(runs, key=lambda r: (r.data.tags.get("model", ""), r.info.start_time))]

    def sweep_config(self, parent: str) -> SweepConfig:
        self.store_version(parent)
        path = self.client.download_artifacts(parent, "config.json")
        return config_from_dict(json.loads(Path(path).read_text()))

    def sweep_task(self, parent: str) -> Task:
        """The task exactly as the sweep ran it (its content saved with the run, not today's file), with the heads its
        discovery pass found."""
        self.store_version(parent)
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
        """Every checkpoint record of a sweep (one per revision), ordered by training step; a sweep written before the
        store version is upgraded by tracking/legacy.py as it is read."""
        version = self.store_version(parent)
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
        ordered = sorted(records.values(), key=lambda r: (r.step is None, r.step or 0))
        return ordered if version is not None else legacy.upgrade_records(ordered, self.published(parent))

    def _ui_base(self, ui: str | None) -> str | None:
        """Where the MLflow UI is: `ui`, else the tracking server when the store is one, else unknown (None)."""
        return ui or (self.uri if self.kind is StoreKind.SERVER else None)

    def run_url(self, parent: str, ui: str | None = None) -> str | None:
        """The sweep's parent run in the MLflow UI at `ui` (default: the tracking server, when the store is one),
        its metrics against training step (links.run_url)."""
        base = self._ui_base(ui)
        return None if base is None else links.run_url(base, self._experiment_of(parent), parent)

    def checkpoints_url(self, parent: str, ui: str | None = None) -> str | None:
        """The sweep's checkpoint runs in the MLflow UI at `ui` (default: the tracking server), sorted by training
        step (links.checkpoints_url)."""
        base = self._ui_base(ui)
        return None if base is None else links.checkpoints_url(base, self._experiment_of(parent), parent)

    def metric_url(self, parent: str, keys: list[str], ui: str | None = None) -> str | None:
        """One chart of the parent run's `keys` against training step at `ui` (default: the tracking server;
        links.metric_url)."""
        base = self._ui_base(ui)
        return None if base is None else links.metric_url(base, self._experiment_of(parent), parent, keys)


def load_long_table(sweep: str | None = None, *, tracking_uri: str | None = None):
    """A sweep's long table (numbers.long_table; parent run id, sweep_id or name; default the latest), read from
    the tracking store: a polars frame."""
    reader = SweepReader(tracking_uri)
    return long_table(reader.load_records(reader.find_sweep(sweep)))
