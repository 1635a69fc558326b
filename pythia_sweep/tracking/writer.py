"""The sweep's driver writes a sweep, and only it (workers return records): the parent run, one child run per
checkpoint, the discovery pass, the sweep-level numbers and the report. Each write is `whole`: Ctrl-C lands between
writes, never inside one.

What it writes is the store's current layout: each parent run it creates carries store.VERSION_TAG (the reader checks
it); a sweep made by a newer pythia_sweep is refused rather than resumed.
"""

from __future__ import annotations

import functools
import json
import signal
import threading
import time
from pathlib import Path

from mlflow.entities import Metric, Param

from pythia_sweep.config import SweepConfig
from pythia_sweep.hub.revisions import Checkpoint
from pythia_sweep.numbers import named, numbers
from pythia_sweep.records import CheckpointRecord, responses_text
from pythia_sweep.stats import head_label
from pythia_sweep.task.definition import Task
from pythia_sweep.tracking.links import study_tag
from pythia_sweep.tracking.server import TrackingServerLost, retry_budget_s, retry_policy, unreachable
from pythia_sweep.tracking.status import is_final
from pythia_sweep.tracking.store import STORE_VERSION, VERSION_TAG, Store, StoreKind, TrackingStoreError


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


class SweepRecorder(Store):
    """What the sweep's driver writes: the parent run, one child run per checkpoint, the report. Each write is
    `whole`: Ctrl-C lands between writes."""

    @whole
    def start_sweep(self, config: SweepConfig, task: Task, published: list[Checkpoint] | None = None, study: str | None = None) -> str:
        """The parent run of this config's sweep: the existing one (resumed) or a new one. The revisions the
        Hub published are saved with it, so the report knows where training ends without asking the Hub. `study`:
        the study it is part of, a tag (`study.<name>` = "1": a sweep may be part of several studies)."""
        exp = self.experiment_for(config.model, task.name)
        run_id = self.existing_sweep(config, task, exp)
        if run_id:
            self.store_version(run_id)  # a sweep a newer pythia_sweep wrote is refused, not resumed
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "resumed_at", time.strftime("%Y-%m-%d %H:%M:%S"))
            if study:
                self.client.set_tag(run_id, study_tag(study), "1")
            self._mark_active(run_id, published)
            return run_id
        tags = {"kind": "sweep", "sweep_id": config.sweep_id(task.digest), "model": config.model, "task": task.name,
                VERSION_TAG: str(STORE_VERSION), **({study_tag(study): "1"} if study else {})}  # fmt: skip
        run = self.client.create_run(exp, run_name=config.label(task.name), tags=tags)
        self._experiments[run.info.run_id], self._versions[run.info.run_id] = exp, STORE_VERSION
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
            self.client.set_tag(parent, f"discovered.{name}", " ".join(head_label(layer, head) for layer, head in group["heads"]))
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
            if self.kind is not StoreKind.SERVER or not (why := unreachable(self.uri)):
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
        compared = [n for n in numbers(record) if n.compared]  # what a person compares across runs (numbers.py)
        metrics = named(compared)
        charted = named(n for n in compared if n.measured)  # the parent's charts against training step: no timings
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
            trend = [Metric(k, v, now, record.step) for k, v in charted.items()]
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

